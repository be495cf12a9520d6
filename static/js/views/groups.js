// Groups: create from contacts, the info panel (members and roles, add/remove,
// mute a member, transfer ownership, rename, announcement, who may send, invite
// links with QR code and revoke, leave/dissolve), join by link.
import { h, clear, avatar, toast } from "./dom.js";
import { t } from "../lib/i18n.js";
import { api } from "../store/api.js";
import { ctx, go } from "./context.js";
import { errorText, displayNameOf, shortTime } from "./format.js";
import { pane } from "./ui.js";
import { avatarEditor } from "./avatar-editor.js";

const MUTE_HOURS = 24;

function contactsSorted() {
  return [...ctx.store.contacts.values()].sort((a, b) => (a.remark || a.user.display_name).localeCompare(b.remark || b.user.display_name));
}

function picker(exclude = new Set(), label = t("chooseMembers")) {
  const chosen = new Set();
  const rows = contactsSorted().filter((c) => !exclude.has(c.user.id)).map((c) =>
    h("li", {}, h("label", { class: "pick-row", dataset: { user: c.user.id } },
      h("input", { type: "checkbox", value: c.user.id, onchange: (e) => { if (e.target.checked) chosen.add(c.user.id); else chosen.delete(c.user.id); } }),
      avatar(c.remark || c.user.display_name, c.user.id, "small"), h("span", {}, c.remark || c.user.display_name))));
  const node = h("ul", { class: "picker", "aria-label": label }, rows);
  return { node, chosen, empty: !rows.length };
}

export function renderCreate(main) {
  const name = h("input", { class: "input", name: "group_name", maxlength: "64", required: true, placeholder: t("groupName") });
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
      ctx.store.upsertSummary(conversation);
      go(`#/chats/${encodeURIComponent(conversation.id)}`);
    } catch (err) { toast(errorText(err)); }
  });
  clear(main, pane(t("newGroup"), "#/chats", form));
  name.focus();
}

let openInfo = null;
// The invite link shown last, kept across redraws of the panel (which follow every change).
let lastInvite = null; // {convId, inv, revoked}
let inviteBox = null;    // where the panel on screen shows it
let activeLinksBox = null; // the list of active links on screen (owner and admins)

/** Show the last invite link (QR code, copy, revoke) in the panel on screen. */
function drawInvite() {
  if (!inviteBox || !lastInvite || lastInvite.convId !== openInfo) return;
  const { inv, convId } = lastInvite;
  if (lastInvite.revoked) return clear(inviteBox, h("p", { class: "muted" }, t("inviteRevoked")));
  const url = inv.url || new URL(`/join/${encodeURIComponent(inv.token)}`, location.origin).href;
  const revoke = ctx.config.inviteRevoke
    ? h("button", { class: "danger", type: "button", "data-action": "revoke-invite", onclick: async () => {
      try {
        await api("DELETE", `/groups/${encodeURIComponent(convId)}/invites/${encodeURIComponent(inv.token)}`);
        lastInvite = { convId, inv, revoked: true };
        drawInvite();
        if (activeLinksBox) drawActiveLinks(activeLinksBox, convId);
      } catch (err) { toast(errorText(err)); }
    } }, t("revokeInvite"))
    : null;
  clear(inviteBox,
    h("img", { class: "qr", src: `/qr.svg?text=${encodeURIComponent(url)}`, alt: t("inviteQr"), width: "180", height: "180" }),
    h("div", { class: "invite-url" }, h("code", {}, url),
      h("button", { class: "secondary", type: "button", onclick: () => navigator.clipboard?.writeText(url).then(() => toast(t("copied"))) }, t("copy")),
      revoke));
}

/** The group's active links (owner and admins), each with Revoke, when the server lists them. */
async function drawActiveLinks(box, convId) {
  let invites;
  try { ({ invites } = await api("GET", `/groups/${encodeURIComponent(convId)}/invites`)); } catch { return; }
  if (openInfo !== convId || !invites.length) return clear(box);
  clear(box, h("h4", { class: "sub-head" }, t("activeLinks")), h("ul", { class: "links", "aria-label": t("activeLinks") }, invites.map((inv) => {
    const url = inv.url || new URL(`/join/${encodeURIComponent(inv.token)}`, location.origin).href;
    return h("li", { class: "link-row", dataset: { token: inv.token } },
      h("code", {}, url),
      h("span", { class: "muted small" }, t("linkUses", { uses: inv.uses ?? 0, max: inv.max_uses ?? "∞" })),
      h("button", { class: "link small danger-text", type: "button", "data-action": "revoke-link", onclick: async () => {
        try {
          await api("DELETE", `/groups/${encodeURIComponent(convId)}/invites/${encodeURIComponent(inv.token)}`);
          if (lastInvite?.inv.token === inv.token) { lastInvite.revoked = true; drawInvite(); }
          drawActiveLinks(box, convId);
        } catch (err) { toast(errorText(err)); }
      } }, t("revokeInvite")));
  })));
}

export function refreshIfOpen(convId) {
  if (openInfo === convId && ctx.route.sub === "info") renderInfo(ctx.el.main, ctx.store.convs.get(convId));
}

export function closeInfo() { openInfo = null; }

export async function renderInfo(main, conv) {
  openInfo = conv.id;
  const store = ctx.store;
  const gid = encodeURIComponent(conv.id);
  let g;
  try { g = await store.group(conv.id, { fresh: true }); } catch (err) { return toast(errorText(err)); }
  if (openInfo !== conv.id || ctx.route.sub !== "info") return;
  const admin = g.my_role === "owner" || g.my_role === "admin";
  const owner = g.my_role === "owner";
  const rank = { owner: 2, admin: 1, member: 0 };
  const back = `#/chats/${gid}`;
  const redraw = () => renderInfo(main, conv);
  const call = async (method, path, body, ok) => {
    try { await api(method, path, body); if (ok) toast(ok); redraw(); } catch (err) { toast(errorText(err)); }
  };
  const patch = (body) => call("PATCH", `/groups/${gid}`, body, t("saved"));

  const members = h("ul", { class: "members", "aria-label": t("members", { n: g.member_count }) }, g.members.map((m) => {
    const uid = encodeURIComponent(m.user.id);
    const me = m.user.id === store.me.id;
    const above = rank[g.my_role] > rank[m.role];
    const mutedUntil = m.muted_until && new Date(m.muted_until) > new Date() ? m.muted_until : null;
    const name = displayNameOf(m.user.id);
    const actions = [];
    if (owner && !me) {
      actions.push(h("button", { class: "link small", type: "button", "data-action": "toggle-admin", onclick: () => call("PATCH", `/groups/${gid}/members/${uid}`, { role: m.role === "admin" ? "member" : "admin" }) },
        m.role === "admin" ? t("removeAdmin") : t("makeAdmin")));
      actions.push(h("button", { class: "link small", type: "button", "data-action": "transfer", onclick: () => {
        if (confirm(t("confirmTransfer", { name }))) call("POST", `/groups/${gid}/transfer`, { user_id: m.user.id }, t("saved"));
      } }, t("transferOwner")));
    }
    if (above && !me) {
      actions.push(h("button", { class: "link small", type: "button", "data-action": mutedUntil ? "unmute-member" : "mute-member", onclick: () => call("PATCH", `/groups/${gid}/members/${uid}`,
        { muted_until: mutedUntil ? null : new Date(Date.now() + MUTE_HOURS * 3600e3).toISOString() }) },
      mutedUntil ? t("unmuteMember") : t("muteMember", { n: MUTE_HOURS })));
      actions.push(h("button", { class: "link small danger-text", type: "button", "data-action": "remove-member", onclick: () => call("DELETE", `/groups/${gid}/members/${uid}`) }, t("remove")));
    }
    return h("li", { class: "member", dataset: { user: m.user.id } },
      avatar(m.user.display_name, m.user.id, "small", m.user.avatar_url),
      h("span", { class: "member-name" }, name),
      m.role !== "member" ? h("span", { class: `tag ${m.role === "owner" ? "green" : ""}` }, t(`role_${m.role}`)) : null,
      mutedUntil ? h("span", { class: "tag", title: shortTime(mutedUntil) }, t("mutedMember")) : null,
      actions.length ? h("span", { class: "member-actions" }, actions) : null);
  }));

  const canAdd = admin || g.members_can_invite;
  const inGroup = new Set(g.members.map((m) => m.user.id));
  const addPick = picker(inGroup, t("addMembers"));
  const addForm = h("form", { class: "settings-form", "data-form": "add-members" }, addPick.empty ? h("p", { class: "muted" }, t("noOneToAdd")) : addPick.node,
    addPick.empty ? null : h("button", { class: "secondary", type: "submit" }, t("addSelected")));
  addForm.addEventListener("submit", (e) => {
    e.preventDefault();
    if (addPick.chosen.size) call("POST", `/groups/${gid}/members`, { user_ids: [...addPick.chosen] });
  });

  const name = h("input", { class: "input", name: "group_name", value: g.name, maxlength: "64", "aria-label": t("groupName") });
  const nameForm = h("form", { class: "inline", "data-form": "rename" }, name, h("button", { class: "secondary", type: "submit" }, t("save")));
  nameForm.addEventListener("submit", (e) => { e.preventDefault(); patch({ name: name.value.trim() }); });

  const ann = h("textarea", { class: "input", name: "announcement", maxlength: "2000", rows: "3", "aria-label": t("announcement"), placeholder: t("noAnnouncement") });
  ann.value = g.announcement || "";
  const annForm = h("form", { class: "settings-form", "data-form": "announcement" }, ann, h("button", { class: "secondary", type: "submit" }, t("save")));
  annForm.addEventListener("submit", (e) => { e.preventDefault(); patch({ announcement: ann.value }); });

  const toggle = (key, label) => h("label", { class: "switch-row" }, h("span", {}, label),
    h("input", { type: "checkbox", name: key, checked: g[key], onchange: (e) => patch({ [key]: e.target.checked }) }));

  const invite = h("div", { class: "invite" });
  inviteBox = invite;
  const links = h("div", { class: "active-links" });
  activeLinksBox = admin && ctx.config.inviteList ? links : null;
  if (activeLinksBox) drawActiveLinks(links, conv.id);
  const makeInvite = async () => {
    try {
      lastInvite = { convId: conv.id, inv: await api("POST", `/groups/${gid}/invites`, {}), revoked: false };
      drawInvite();
      if (admin && ctx.config.inviteList) drawActiveLinks(links, conv.id);
    } catch (err) { toast(errorText(err)); }
  };
  drawInvite();
  const leave = async () => {
    if (!confirm(owner ? t("confirmDissolve") : t("confirmLeave"))) return;
    try {
      if (owner) await api("DELETE", `/groups/${gid}`);
      else await api("DELETE", `/groups/${gid}/members/${encodeURIComponent(store.me.id)}`);
      conv.left = true;
      store.sorted = null;
      store.emit("convs");
      go("#/chats");
    } catch (err) { toast(errorText(err)); }
  };
  const picture = admin ? [h("h3", {}, t("groupPhoto")), h("div", { "data-section": "group-avatar" },
    g.avatar_url ? avatar(g.name, g.id, "large", g.avatar_url) : null,
    avatarEditor({ path: `/groups/${gid}/avatar`, hasAvatar: !!g.avatar_url, onSaved: ({ group }) => {
      conv.avatar_url = group.avatar_url;
      store.emit("conv", conv);
      redraw();
    } }))] : null;
  clear(main, pane(g.name, back,
    picture,
    h("h3", {}, t("members", { n: g.member_count })), members,
    canAdd ? [h("h3", {}, t("addMembers")), addForm] : null,
    admin ? [h("h3", {}, t("groupName")), nameForm] : null,
    h("h3", {}, t("announcement")),
    admin ? annForm : h("p", { class: g.announcement ? "announcement" : "announcement muted" }, g.announcement || t("noAnnouncement")),
    admin ? [h("h3", {}, t("groupSettings")), toggle("only_admins_can_send", t("onlyAdminsCanSend")), toggle("members_can_invite", t("membersCanInvite")), toggle("members_can_pin", t("membersCanPin"))] : null,
    canAdd ? [h("h3", {}, t("inviteLink")), h("button", { class: "secondary", type: "button", "data-action": "invite", onclick: makeInvite }, t("createInvite")), invite, links] : null,
    h("div", { class: "actions" }, h("button", { class: "danger", type: "button", "data-action": "leave", onclick: leave }, owner ? t("dissolveGroup") : t("leaveGroup")))));
}

export async function joinByToken(token) {
  try {
    const preview = await api("GET", `/groups/invites/${encodeURIComponent(token)}`);
    if (!preview.already_member && !confirm(t("confirmJoin", { name: preview.group.name }))) return;
    const { conversation } = preview.already_member
      ? { conversation: { id: preview.group.id } }
      : await api("POST", "/groups/join", { token });
    if (conversation.type) ctx.store.upsertSummary(conversation);
    location.hash = `#/chats/${encodeURIComponent(conversation.id)}`;
  } catch (err) { toast(errorText(err)); }
}
