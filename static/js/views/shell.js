// The signed-in shell: nav rail, list pane, main pane, connection banner,
// hash routing. It subscribes to the store and sends each topic to the one
// view that shows it.
import { h, clear, icon, avatar, toast, setBadge } from "./dom.js";
import { t } from "../lib/i18n.js";
import { ctx, go } from "./context.js";
import { placeholder } from "./ui.js";
import { convTitle, previewOf, errorText } from "./format.js";
import { renderChatList, updateChatRow, markActive } from "./chatlist.js";
import * as chat from "./chat.js";
import * as people from "./people.js";
import * as settingsView from "./settings.js";
import * as groupsView from "./groups.js";
import { onBoxInput } from "./search.js";

const el = ctx.el;

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const view = ["chats", "contacts", "settings"].includes(parts[0]) ? parts[0] : "chats";
  return { view, id: parts[1] || null, sub: parts[2] || null };
}

export function buildShell(root) {
  el.banner = h("div", { class: "banner", role: "status", "aria-live": "polite", hidden: true });
  el.navAvatar = h("div", { class: "nav-me" });
  const navLink = (view, ico, label) => h("a", { class: "nav-btn", href: `#/${view}`, title: label, "aria-label": label, dataset: { view } },
    icon(ico), h("span", { class: "nav-label" }, label), h("span", { class: "badge", hidden: true, "aria-hidden": "true" }));
  el.navChats = navLink("chats", "chat", t("chats"));
  el.navContacts = navLink("contacts", "contacts", t("contacts"));
  el.navSettings = navLink("settings", "settings", t("me"));
  el.nav = h("nav", { class: "sidebar", "aria-label": t("mainNav") }, el.navAvatar, el.navChats, el.navContacts, h("div", { class: "spacer" }), el.navSettings);
  el.listHeader = h("div", { class: "list-header" });
  el.list = h("ul", { class: "list" });
  el.searchBox = h("div", { class: "search-box-results", "aria-live": "polite", hidden: true });
  el.listPane = h("section", { class: "list-pane" }, el.listHeader, el.searchBox, el.list);
  el.main = h("main", { class: "main-pane" });
  el.shell = h("div", { class: "shell" }, el.nav, el.listPane, el.main);
  clear(root, el.banner, el.shell);
}

export function renderNav() {
  const me = ctx.store.me;
  clear(el.navAvatar, avatar(me.display_name, me.id, "small", me.avatar_url));
  el.navAvatar.title = me.display_name;
  for (const b of [el.navChats, el.navContacts, el.navSettings]) {
    const active = b.dataset.view === ctx.route.view;
    b.classList.toggle("active", active);
    if (active) b.setAttribute("aria-current", "page"); else b.removeAttribute("aria-current");
  }
  renderNavBadges();
}

export function renderNavBadges() {
  const store = ctx.store;
  const unread = store.unreadTotal();
  setBadge(el.navChats.querySelector(".badge"), unread);
  setBadge(el.navContacts.querySelector(".badge"), store.incoming.length);
  el.navChats.setAttribute("aria-label", unread ? `${t("chats")}, ${t("unreadN", { n: unread })}` : t("chats"));
  el.navContacts.setAttribute("aria-label", store.incoming.length ? `${t("contacts")}, ${t("requestsN", { n: store.incoming.length })}` : t("contacts"));
  document.title = unread ? `(${unread}) Parley` : "Parley";
}

export function renderBanner() {
  const store = ctx.store;
  document.body.dataset.connected = String(store.connected);
  if (!el.banner) return;
  const offline = !navigator.onLine;
  if (store.connected) { el.banner.hidden = true; return; }
  el.banner.hidden = false;
  el.banner.textContent = offline ? t("offlineBanner") : t("reconnecting");
  el.banner.classList.toggle("offline", offline);
}

function renderListHeader() {
  const v = ctx.route.view;
  const title = v === "chats" ? t("chats") : v === "contacts" ? t("contacts") : t("settings");
  const actions = [];
  if (v === "chats" && ctx.config.groups) {
    actions.push(h("button", { class: "icon-btn", type: "button", title: t("newGroup"), "aria-label": t("newGroup"), "data-action": "new-group", onclick: () => go("#/chats/new-group") }, icon("plus")));
  }
  if (v === "contacts") {
    actions.push(h("button", { class: "icon-btn", type: "button", title: t("addContact"), "aria-label": t("addContact"), "data-action": "add-contact", onclick: () => go("#/contacts/add") }, icon("person_add")));
  }
  const filter = v === "chats" ? h("input", {
    class: "search", type: "search", placeholder: t("search"), "aria-label": t("searchChats"), value: ctx.filter || "",
    oninput: (e) => { ctx.filter = e.target.value; renderChatList(el.list); onBoxInput(el.searchBox, el.list, e.target.value); },
  }) : null;
  if (v !== "chats" || !(ctx.filter || "").trim()) { el.searchBox.hidden = true; el.list.hidden = false; }
  el.list.setAttribute("aria-label", title);
  clear(el.listHeader, h("div", { class: "list-title" }, h("h1", {}, title), ...actions), filter);
}

export function renderList() {
  if (!el.list) return;
  const v = ctx.route.view;
  if (v === "chats") return renderChatList(el.list);
  if (v === "contacts") return people.renderContactList(el.list);
  return settingsView.renderMenu(el.list);
}

function renderMain(prev) {
  const r = ctx.route;
  const store = ctx.store;
  if (r.view !== "chats" || r.sub) groupsView.closeInfo();
  if (r.view === "chats") {
    if (r.id === "new-group" && ctx.config.groups) { chat.closeChat(); return groupsView.renderCreate(el.main); }
    const conv = r.id ? store.convs.get(r.id) : null;
    if (!conv) {
      if (r.id && r.id !== "new-group") el.shell.dataset.pane = "list";
      chat.closeChat();
      return clear(el.main, placeholder(t("selectChat")));
    }
    if (r.sub === "info" && conv.type === "group" && ctx.config.groups) { chat.closeChat(); return groupsView.renderInfo(el.main, conv); }
    if (prev && prev.view === "chats" && prev.id === r.id && prev.sub === r.sub && chat.currentChat() === conv) return;
    return chat.openChat(el.main, conv);
  }
  chat.closeChat();
  if (r.view === "contacts") return people.renderMain(el.main, r);
  return settingsView.renderMain(el.main, r);
}

export function onRoute() {
  const prev = ctx.route;
  ctx.route = parseRoute();
  const r = ctx.route;
  el.shell.dataset.view = r.view;
  el.shell.dataset.pane = r.id ? "main" : "list";
  if (prev.view !== r.view || prev.id !== r.id) ctx.replyTo = null;
  ctx.store.openId = r.view === "chats" && r.id && !r.sub ? r.id : null;
  renderNav();
  if (prev.view !== r.view || !el.list.firstChild) {
    renderListHeader();
    renderList();
  } else if (r.view === "chats") markActive(el.list);
  else renderList();
  renderMain(prev);
  if (ctx.store.openId) ctx.store.setOpen(ctx.store.openId);
}

function notify(title, body, tag) {
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") return;
  try {
    const n = new Notification(title, { body: String(body).slice(0, 140), tag });
    n.onclick = () => { window.focus(); if (ctx.store.convs.has(tag)) go(`#/chats/${tag}`); n.close(); };
  } catch { /* some browsers only allow notifications from a service worker */ }
}

/** Route store topics to the views that show them. */
export function wire() {
  const store = ctx.store;
  const chatsShown = () => ctx.route.view === "chats" && el.list;
  store.on("conv", (conv) => {
    if (chatsShown()) updateChatRow(el.list, conv);
    if (chat.currentChat() === conv) chat.renderChatHeader();
  });
  store.on("convs", () => { if (chatsShown()) renderChatList(el.list); });
  // Several changes close together: one redraw of the badges and the title (a
  // timer, not an animation frame, so a background tab's title still counts).
  let badgesTimer = 0;
  store.on("badges", () => {
    if (!badgesTimer) badgesTimer = setTimeout(() => { badgesTimer = 0; renderNavBadges(); }, 30);
  });
  store.on("msg:add", (conv, m) => chat.onMessageAdded(conv, m));
  store.on("msg:update", (conv, m) => chat.onMessageUpdated(conv, m));
  store.on("msg:remove", (conv, id) => chat.onMessageRemoved(conv, id));
  store.on("msgs", (conv) => chat.onMessages(conv));
  store.on("marks", (conv) => { if (chat.currentChat() === conv) chat.updateMarks(); });
  store.on("pins", (conv) => chat.onPins(conv));
  store.on("pending", (conv, p) => chat.onPending(conv, p));
  store.on("typing", (convId) => { if (chat.currentChat()?.id === convId) chat.renderChatHeader(); });
  store.on("presence", (userId) => {
    for (const conv of store.convs.values()) if (conv.peer?.id === userId && chatsShown()) updateChatRow(el.list, conv);
    if (chat.currentChat()?.peer?.id === userId) chat.renderChatHeader();
    people.refresh();
  });
  store.on("contacts", () => { people.refresh(); if (chatsShown()) renderChatList(el.list); renderNavBadges(); });
  store.on("user", () => {
    if (chatsShown()) renderChatList(el.list);
    if (chat.currentChat()) { chat.onMessages(chat.currentChat()); chat.renderChatHeader(); }
  });
  store.on("group", (convId) => groupsView.refreshIfOpen(convId));
  store.on("me", () => { renderNav(); if (ctx.route.view === "settings") renderList(); });
  store.on("connection", (reason) => {
    renderBanner();
    if (reason === "io server disconnect") {
      // Signed out elsewhere, or the session was ended from the devices page.
      ctx.actions.reauth?.();
    } else if (reason === "unauthorized") ctx.actions.reauth?.();
  });
  store.on("error", (err) => toast(errorText(err)));
  store.on("notify", (n) => {
    if (n.kind === "request") notify(t("newFriends"), `${n.request.from_user.display_name}: ${n.request.message || ""}`, "contacts");
    else notify(convTitle(n.conv), previewOf(n.msg, n.conv), n.conv.id);
  });
  window.addEventListener("hashchange", () => { if (el.shell) onRoute(); });
  window.addEventListener("online", () => { renderBanner(); store.socket?.connect(); });
  window.addEventListener("offline", () => renderBanner());
  document.addEventListener("visibilitychange", () => store.setVisible(!document.hidden));
  store.visible = !document.hidden;
}


/** Language switch: rebuild every screen in the new language. */
export function relabel(root) {
  buildShell(root);
  ctx.route = { view: null };
  onRoute();
  renderBanner();
}
