// Contacts: the list, friend requests, adding people, a contact's card.
import { h, clear, icon, avatar, toast, setBadge } from "./dom.js";
import { t } from "../lib/i18n.js";
import { api } from "../store/api.js";
import { ctx, go } from "./context.js";
import { errorText, presenceText } from "./format.js";
import { placeholder, backButton } from "./ui.js";

function nameOf(c) { return c.remark || c.user.display_name; }

export function renderContactList(list) {
  const contacts = [...ctx.store.contacts.values()].sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
  const reqBadge = h("span", { class: "badge", hidden: true });
  setBadge(reqBadge, ctx.store.incoming.length);
  const route = ctx.route;
  const items = [
    h("a", { class: `chat-item compact${route.id === "requests" ? " active" : ""}`, href: "#/contacts/requests", dataset: { action: "requests" } },
      h("div", { class: "avatar-wrap" }, h("div", { class: "avatar small tile orange" }, icon("person_add")), reqBadge),
      h("div", { class: "chat-item-body" }, h("span", { class: "title" }, t("newFriends")))),
  ];
  if (contacts.length) items.push(h("div", { class: "list-sep" }, t("contacts")));
  for (const c of contacts) {
    const p = ctx.store.presenceOf(c.user.id);
    items.push(h("a", {
      class: `chat-item compact${route.id === c.user.id ? " active" : ""}`, href: `#/contacts/${encodeURIComponent(c.user.id)}`,
      dataset: { user: c.user.id, title: nameOf(c) },
    },
    h("div", { class: "avatar-wrap" }, avatar(nameOf(c), c.user.id, "small", c.user.avatar_url), p ? h("span", { class: `presence ${p.online ? "on" : "off"}` }) : null),
    h("div", { class: "chat-item-body" }, h("span", { class: "title" }, nameOf(c)),
      ctx.store.blocks.has(c.user.id) ? h("span", { class: "tag" }, t("blocked")) : null)));
  }
  if (!contacts.length) items.push(h("div", { class: "empty" }, t("noContacts")));
  clear(list, items.map((x) => h("li", { class: "chat-row" }, x)));
}

/** Contacts, requests or blocks changed: redraw the list and the open contact screen. */
export function refresh() {
  if (ctx.route.view !== "contacts") return;
  renderContactList(ctx.el.list);
  if (ctx.route.id === "requests") renderRequests(ctx.el.main);
  else if (ctx.route.id && ctx.route.id !== "add") renderCard(ctx.el.main, ctx.route.id);
}

export function renderMain(main, route) {
  if (route.id === "add") return renderAdd(main);
  if (route.id === "requests") return renderRequests(main);
  if (route.id) return renderCard(main, route.id);
  clear(main, placeholder(t("contacts")));
}

function paneHeader(title) {
  return h("header", { class: "chat-header" }, backButton("#/contacts"), h("div", { class: "chat-title" }, h("h2", {}, title)));
}

function renderAdd(main) {
  const q = h("input", { type: "search", class: "input", name: "q", placeholder: t("searchPeople"), "aria-label": t("searchPeople") });
  const results = h("div", { class: "results" });
  const form = h("form", { class: "search-form", "data-form": "find-people" }, q, h("button", { class: "primary", type: "submit" }, icon("search", "icon small"), t("find")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = q.value.trim();
    if (!value) return;
    try {
      const { users } = await api("GET", `/users/search?q=${encodeURIComponent(value)}`);
      ctx.store.rememberUsers(users);
      if (!users.length) return clear(results, h("p", { class: "muted" }, t("noMatch")));
      clear(results, users.map((u) => personResult(u)));
    } catch (err) { toast(errorText(err)); }
  });
  clear(main, h("div", { class: "pane" }, paneHeader(t("addContact")),
    h("div", { class: "pane-body narrow" }, h("p", { class: "muted" }, t("addHint")), form, results)));
  q.focus();
}

function personResult(u) {
  const isMe = u.id === ctx.store.me.id;
  const known = ctx.store.contacts.has(u.id);
  const greeting = h("input", { class: "input", name: "greeting", maxlength: "200", value: t("greetingDefault", { name: ctx.store.me.display_name }), "aria-label": t("greeting") });
  const action = h("div", { class: "result-actions" });
  if (known) {
    action.append(h("button", { class: "primary", type: "button", onclick: () => go(`#/contacts/${encodeURIComponent(u.id)}`) }, t("message")));
  } else if (!isMe) {
    const btn = h("button", { class: "primary", type: "button", "data-action": "send-request" }, t("sendRequest"));
    btn.addEventListener("click", async () => {
      try {
        const out = await api("POST", "/contacts/requests", { user_id: u.id, message: greeting.value.trim() });
        if (out.contact) {
          if (out.conversation) ctx.store.upsertSummary(out.conversation);
          ctx.store.setContact(out.contact);
          toast(t("accepted"));
        } else {
          ctx.store.outgoing = [out.request, ...ctx.store.outgoing.filter((r) => r.id !== out.request.id)];
          toast(t("requestSent"));
        }
        btn.disabled = true;
        btn.textContent = out.contact ? t("accepted") : t("requestSent");
      } catch (err) { toast(errorText(err)); }
    });
    action.append(greeting, btn);
  }
  return h("div", { class: "person-card" }, avatar(u.display_name, u.id, "", u.avatar_url),
    h("div", { class: "person-info" }, h("div", { class: "title" }, u.display_name), h("div", { class: "muted" }, `@${u.username}`),
      u.bio ? h("div", { class: "bio" }, u.bio) : null),
    action);
}

function renderRequests(main) {
  const incoming = ctx.store.incoming.map((r) => h("div", { class: "person-card", dataset: { request: r.id } },
    avatar(r.from_user.display_name, r.from_user.id, "", r.from_user.avatar_url),
    h("div", { class: "person-info" }, h("div", { class: "title" }, r.from_user.display_name),
      h("div", { class: "muted" }, r.message || `@${r.from_user.username}`)),
    h("div", { class: "result-actions" },
      h("button", { class: "primary", type: "button", "data-action": "accept", onclick: () => answer(r, "accept") }, t("accept")),
      h("button", { class: "secondary", type: "button", "data-action": "reject", onclick: () => answer(r, "reject") }, t("reject")))));
  const outgoing = ctx.store.outgoing.map((r) => h("div", { class: "person-card" },
    avatar(r.to_user.display_name, r.to_user.id, "", r.to_user.avatar_url),
    h("div", { class: "person-info" }, h("div", { class: "title" }, r.to_user.display_name), h("div", { class: "muted" }, r.message)),
    h("span", { class: "tag" }, t("waiting"))));
  clear(main, h("div", { class: "pane" }, paneHeader(t("newFriends")),
    h("div", { class: "pane-body narrow" },
      h("div", { class: "row-end" }, h("button", { class: "secondary", type: "button", onclick: () => go("#/contacts/add") }, icon("person_add", "icon small"), t("addContact"))),
      h("h3", {}, t("incoming")), incoming.length ? incoming : h("p", { class: "muted" }, t("noRequests")),
      outgoing.length ? [h("h3", {}, t("outgoing")), outgoing] : null)));
}

async function answer(r, what) {
  try {
    const out = await api("POST", `/contacts/requests/${encodeURIComponent(r.id)}/${what}`);
    ctx.store.incoming = ctx.store.incoming.filter((x) => x.id !== r.id);
    if (out.conversation) ctx.store.upsertSummary(out.conversation);
    if (out.contact) ctx.store.setContact(out.contact);
    ctx.store.emit("badges");
    ctx.store.emit("contacts");
    if (what === "accept" && out.conversation) go(`#/chats/${encodeURIComponent(out.conversation.id)}`);
  } catch (err) { toast(errorText(err)); }
}

function renderCard(main, userId) {
  const c = ctx.store.contacts.get(userId);
  if (!c) return clear(main, placeholder(t("noContacts")));
  const p = ctx.store.presenceOf(userId);
  const remark = h("input", { class: "input", name: "remark", maxlength: "64", value: c.remark || "", placeholder: c.user.display_name, "aria-label": t("remark") });
  const remarkForm = h("form", { class: "inline", "data-form": "remark" }, remark, h("button", { class: "secondary", type: "submit" }, t("save")));
  remarkForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const { contact } = await api("PATCH", `/contacts/${encodeURIComponent(userId)}`, { remark: remark.value.trim() });
      ctx.store.setContact(contact);
      toast(t("saved"));
    } catch (err) { toast(errorText(err)); }
  });
  const message = async () => {
    try {
      const { conversation } = await api("POST", "/conversations/direct", { user_id: userId });
      ctx.store.upsertSummary(conversation);
      go(`#/chats/${encodeURIComponent(conversation.id)}`);
    } catch (err) { toast(errorText(err)); }
  };
  const blocked = ctx.store.blocks.has(userId);
  clear(main, h("div", { class: "pane" }, paneHeader(nameOf(c)),
    h("div", { class: "pane-body narrow" },
      h("div", { class: "profile-head" }, avatar(nameOf(c), userId, "large", c.user.avatar_url),
        h("div", {}, h("h2", {}, nameOf(c)),
          c.remark ? h("div", { class: "muted" }, `${t("displayName")}: ${c.user.display_name}`) : null,
          h("div", { class: "muted" }, `@${c.user.username}`),
          p ? h("div", { class: "muted" }, presenceText(p)) : null)),
      c.user.bio ? h("p", { class: "bio" }, c.user.bio) : null,
      h("label", { class: "field" }, h("span", {}, t("remark")), remarkForm),
      h("div", { class: "actions" },
        h("button", { class: "primary", type: "button", "data-action": "message", onclick: message }, icon("chat", "icon small"), t("message")),
        h("button", { class: "secondary", type: "button", "data-action": "block", onclick: () => toggleBlock(userId, blocked, nameOf(c)) }, blocked ? t("unblock") : t("block")),
        h("button", { class: "danger", type: "button", "data-action": "delete-contact", onclick: () => removeContact(userId, nameOf(c)) }, t("deleteContact"))))));
}

async function toggleBlock(userId, blocked, name) {
  if (!blocked && !confirm(t("confirmBlock", { name }))) return;
  try {
    if (blocked) { await api("DELETE", `/blocks/${encodeURIComponent(userId)}`); ctx.store.blocks.delete(userId); }
    else { await api("POST", "/blocks", { user_id: userId }); ctx.store.blocks.add(userId); }
    ctx.store.emit("contacts");
  } catch (err) { toast(errorText(err)); }
}

async function removeContact(userId, name) {
  if (!confirm(t("confirmDelete", { name }))) return;
  try {
    await api("DELETE", `/contacts/${encodeURIComponent(userId)}`);
    ctx.store.contacts.delete(userId);
    go("#/contacts");
    ctx.store.emit("contacts");
  } catch (err) { toast(errorText(err)); }
}
