// Groups: create from contacts, the info panel (members and roles, add/remove,
// rename, announcement, invite link with QR code, leave/dissolve), join by link.
import { h, clear, icon, avatar, toast } from "./dom.js";
import { t } from "./i18n.js";
import { api } from "./api.js";
import { S, go, el, upsertSummary, renderList, errorText, backButton, displayNameOf, rememberUsers } from "./app.js";

function contactsSorted() {
  return [...S.contacts.values()].sort((a, b) => (a.remark || a.user.display_name).localeCompare(b.remark || b.user.display_name));
}

function picker(exclude = new Set()) {
  const chosen = new Set();
  const node = h("div", { class: "picker" }, contactsSorted().filter((c) => !exclude.has(c.user.id)).map((c) =>
    h("label", { class: "pick-row", dataset: { user: c.user.id } },
      h("input", { type: "checkbox", value: c.user.id, onchange: (e) => { if (e.target.checked) chosen.add(c.user.id); else chosen.delete(c.user.id); } }),
      avatar(c.remark || c.user.display_name, c.user.id, "small"), h("span", {}, c.remark || c.user.display_name))));
  return { node, chosen };
}

function pane(title, back, ...body) {
  return h("div", { class: "pane" },
    h("header", { class: "chat-header" }, backButton(back), h("div", { class: "chat-title" }, h("h2", {}, title))),
    h("div", { class: "pane-body narrow" }, ...body));
}

export function renderCreate(main) {
  const name = h("input", { class: "input", name: "group_name", maxlength: "64", required: true, placeholder: t("groupName"), "aria-label": t("groupName") });
  const pick = picker();
  const form = h("form", { class: "settings-form", "data-form": "new-group" },
    h("label", { class: "field" }, h("span", {}, t("groupName")), name),
    h("div", { class: "field" }, h("span", {}, t("chooseMembers")), pick.node),
    h("button", { class: "primary", type: "submit" }, t("createGroup")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!pick.chosen.size) return toast(t("chooseMembers"));
    try {
      const { conversation } = await api("POST", "/groups", { name: name.value.trim(), member_ids: [...pick.chosen] });
      upsertSummary(conversation);
      renderList();
      go(`#/chats/${encodeURIComponent(conversation.id)}`);
    } catch (err) { toast(errorText(err)); }
  });
  clear(main, pane(t("newGroup"), "#/chats", form));
  name.focus();
}

let openInfo = null;

export function refreshIfOpen(convId) {
  if (openInfo === convId && S.route.sub === "info") renderInfo(el.main, S.convs.get(convId));
}

export async function renderInfo(main, conv) {
  openInfo = conv.id;
  let g;
  try { ({ group: g } = await api("GET", `/groups/${encodeURIComponent(conv.id)}`)); } catch (err) { return toast(errorText(err)); }
  rememberUsers(g.members.map((m) => m.user));
  const admin = g.my_role === "owner" || g.my_role === "admin";
  const owner = g.my_role === "owner";
  const back = `#/chats/${encodeURIComponent(conv.id)}`;
  const patch = async (body) => {
    try { await api("PATCH", `/groups/${encodeURIComponent(conv.id)}`, body); toast(t("saved")); renderInfo(main, conv); } catch (err) { toast(errorText(err)); }
  };
  const members = h("div", { class: "members" }, g.members.map((m) => {
    const canRemove = admin && m.user.id !== S.me.id && m.role !== "owner" && (owner || m.role === "member");
    return h("div", { class: "member", dataset: { user: m.user.id } },
      avatar(m.user.display_name, m.user.id, "small"),
      h("span", { class: "member-name" }, displayNameOf(m.user.id)),
      m.role !== "member" ? h("span", { class: `tag ${m.role === "owner" ? "green" : ""}` }, t(`role_${m.role}`)) : null,
      owner && m.role !== "owner" ? h("button", { class: "link small", type: "button", onclick: async () => {
        try { await api("PATCH", `/groups/${encodeURIComponent(conv.id)}/members/${encodeURIComponent(m.user.id)}`, { role: m.role === "admin" ? "member" : "admin" }); renderInfo(main, conv); } catch (err) { toast(errorText(err)); }
      } }, m.role === "admin" ? t("removeAdmin") : t("makeAdmin")) : null,
      canRemove ? h("button", { class: "link small danger-text", type: "button", "data-action": "remove-member", onclick: async () => {
        try { await api("DELETE", `/groups/${encodeURIComponent(conv.id)}/members/${encodeURIComponent(m.user.id)}`); renderInfo(main, conv); } catch (err) { toast(errorText(err)); }
      } }, t("remove")) : null);
  }));
  const inGroup = new Set(g.members.map((m) => m.user.id));
  const addPick = picker(inGroup);
  const addForm = h("form", { class: "settings-form", "data-form": "add-members" }, addPick.node,
    h("button", { class: "secondary", type: "submit" }, t("addMembers")));
  addForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!addPick.chosen.size) return;
    try { await api("POST", `/groups/${encodeURIComponent(conv.id)}/members`, { user_ids: [...addPick.chosen] }); renderInfo(main, conv); } catch (err) { toast(errorText(err)); }
  });
  const name = h("input", { class: "input", name: "group_name", value: g.name, maxlength: "64" });
  const nameForm = h("form", { class: "inline", "data-form": "rename" }, name, h("button", { class: "secondary", type: "submit" }, t("save")));
  nameForm.addEventListener("submit", (e) => { e.preventDefault(); patch({ name: name.value.trim() }); });
  const ann = h("textarea", { class: "input", name: "announcement", maxlength: "2000", rows: "3" });
  ann.value = g.announcement || "";
  const annForm = h("form", { class: "settings-form", "data-form": "announcement" }, ann, h("button", { class: "secondary", type: "submit" }, t("save")));
  annForm.addEventListener("submit", (e) => { e.preventDefault(); patch({ announcement: ann.value }); });
  const invite = h("div", { class: "invite" });
  const canInvite = admin || g.members_can_invite;
  const makeInvite = async () => {
    try {
      const inv = await api("POST", `/groups/${encodeURIComponent(conv.id)}/invites`, {});
      const url = new URL(`/join/${encodeURIComponent(inv.token)}`, location.origin).href;
      clear(invite,
        h("img", { class: "qr", src: `/qr.svg?text=${encodeURIComponent(url)}`, alt: t("inviteQr"), width: "180", height: "180" }),
        h("div", { class: "invite-url" }, h("code", {}, url),
          h("button", { class: "secondary", type: "button", onclick: () => navigator.clipboard?.writeText(url).then(() => toast(t("copied"))) }, t("copy"))));
    } catch (err) { toast(errorText(err)); }
  };
  const leave = async () => {
    if (!confirm(owner ? t("confirmDissolve") : t("confirmLeave"))) return;
    try {
      if (owner) await api("DELETE", `/groups/${encodeURIComponent(conv.id)}`);
      else await api("DELETE", `/groups/${encodeURIComponent(conv.id)}/members/${encodeURIComponent(S.me.id)}`);
      conv.left = true;
      renderList();
      go("#/chats");
    } catch (err) { toast(errorText(err)); }
  };
  clear(main, pane(g.name, back,
    h("h3", {}, t("members", { n: g.member_count })), members,
    admin || g.members_can_invite ? [h("h3", {}, t("addMembers")), addForm] : null,
    admin ? [h("h3", {}, t("groupName")), nameForm] : h("p", {}, h("strong", {}, t("groupName")), " ", g.name),
    h("h3", {}, t("announcement")),
    admin ? annForm : h("p", { class: "announcement" }, g.announcement || "—"),
    canInvite ? [h("h3", {}, t("inviteLink")), h("button", { class: "secondary", type: "button", "data-action": "invite", onclick: makeInvite }, t("createInvite")), invite] : null,
    h("div", { class: "actions" }, h("button", { class: "danger", type: "button", "data-action": "leave", onclick: leave }, owner ? t("dissolveGroup") : t("leaveGroup")))));
}

export async function joinByToken(token) {
  try {
    const preview = await api("GET", `/groups/invites/${encodeURIComponent(token)}`);
    if (!preview.already_member && !confirm(t("confirmJoin", { name: preview.group.name }))) return;
    const { conversation } = preview.already_member
      ? { conversation: { id: preview.group.id } }
      : await api("POST", "/groups/join", { token });
    if (conversation.type) upsertSummary(conversation);
    location.hash = `#/chats/${encodeURIComponent(conversation.id)}`;
  } catch (err) { toast(errorText(err)); }
}
