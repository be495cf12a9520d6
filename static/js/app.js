// Parley web client: state, the /chat socket, routing and the main screens.
import { h, clear, icon, avatar, toast, uuid } from "./dom.js";
import { t, lang, setLanguage, LANGUAGES } from "./i18n.js";
import { api, accessToken, session, deviceLabel } from "./api.js";
import { renderAuth } from "./auth.js";
import * as people from "./people.js";
import * as settingsView from "./settings.js";
import * as groupsView from "./groups.js";
import * as media from "./media.js";

const root = document.getElementById("app");
export const CONFIG = {
  vendor: root.dataset.vendor,
  codeLogin: root.dataset.codeLogin === "true",
  recallWindow: Number(root.dataset.recallWindow || 120),
  maxText: Number(root.dataset.maxText || 16000),
  groups: root.dataset.groups === "true",
  media: root.dataset.media === "true",
};

// ---------------------------------------------------------------- state

export const S = {
  me: null,
  convs: new Map(),          // id → conversation (summary + msgs + pending)
  contacts: new Map(),       // user id → {user, remark, presence}
  incoming: [], outgoing: [],
  blocks: new Set(),
  users: new Map(),          // user id → public user (cache)
  presence: new Map(),       // user id → {online, last_seen}
  typing: new Map(),         // conv id → Map(user id → {state, timer})
  socket: null,
  connected: false,
  everConnected: false,
  route: { view: "chats", id: null, sub: null },
  replyTo: null,
  drafts: new Map(),
};
window.__parley = S; // handy in the console and for the browser tests

const el = {}; // persistent nodes of the shell

// ---------------------------------------------------------------- helpers

export function displayNameOf(userId) {
  if (!userId) return t("system");
  if (S.me && userId === S.me.id) return S.me.display_name;
  const c = S.contacts.get(userId);
  if (c) return c.remark || c.user.display_name;
  const u = S.users.get(userId);
  if (u) return u.display_name;
  fetchUser(userId);
  return t("unknownUser");
}

const pendingUsers = new Set();
async function fetchUser(id) {
  if (pendingUsers.has(id)) return;
  pendingUsers.add(id);
  try {
    const { user } = await api("GET", `/users/${encodeURIComponent(id)}`);
    S.users.set(id, user);
    renderList();
    rerenderChat();
  } catch { /* unknown user: keep the placeholder */ }
}

export function rememberUsers(users) {
  for (const u of users) if (u?.id) S.users.set(u.id, u);
}

function parseTime(iso) { return iso ? new Date(iso) : new Date(); }

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth()
    && a.getDate() === b.getDate();
}

function hhmm(d) {
  return d.toLocaleTimeString(lang(), { hour: "2-digit", minute: "2-digit", hour12: false });
}

export function shortTime(iso) {
  const d = parseTime(iso);
  const now = new Date();
  if (sameDay(d, now)) return hhmm(d);
  const y = new Date(now); y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return t("yesterday");
  if (now - d < 6 * 86400e3) return d.toLocaleDateString(lang(), { weekday: "short" });
  return d.toLocaleDateString(lang(), { year: "2-digit", month: "numeric", day: "numeric" });
}

function dayLabel(d) {
  const now = new Date();
  if (sameDay(d, now)) return t("today");
  const y = new Date(now); y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return t("yesterday");
  return d.toLocaleDateString(lang(), { year: "numeric", month: "long", day: "numeric", weekday: "short" });
}

export function duration(ms) {
  const s = Math.max(0, Math.round((ms || 0) / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export function systemText(msg) {
  const sys = msg.system || {};
  const actor = sys.actor_id ? (sys.actor_id === S.me?.id ? t("you") : displayNameOf(sys.actor_id)) : "";
  const targets = (sys.target_ids || []).map((id) => (id === S.me?.id ? t("you") : displayNameOf(id)))
    .join(t("listSep"));
  const key = `sys_${sys.event}`;
  const text = t(key, { actor, targets, name: sys.name ?? "", text: sys.text ?? "", role: sys.role ?? "" });
  return text === key ? t("sys_generic", { actor }) : text;
}

export function previewOf(msg, conv) {
  if (!msg) return "";
  if (msg.recalled) return t("recalledPreview");
  let body;
  switch (msg.type) {
    case "system": return systemText(msg);
    case "image": body = t("photo"); break;
    case "voice": body = `${t("voice")} ${duration(msg.media?.duration_ms)}`; break;
    case "video": body = t("video"); break;
    case "file": body = `${t("file")} ${msg.media?.name || ""}`.trim(); break;
    default: body = msg.text || "";
  }
  if (conv?.type === "group" && msg.sender_id && msg.sender_id !== S.me?.id) {
    return `${displayNameOf(msg.sender_id)}: ${body}`;
  }
  return body;
}

function convTitle(conv) {
  if (conv.type === "direct" && conv.peer) {
    const c = S.contacts.get(conv.peer.id);
    return c?.remark || conv.peer.display_name || conv.title;
  }
  return conv.title || t("group");
}

export function presenceOf(userId) {
  return S.presence.get(userId) ?? S.contacts.get(userId)?.presence ?? null;
}

export function errorText(err) {
  if (!err) return t("errorGeneric");
  if (err.code === "not_contact") return t("notContact");
  if (err.code === "recall_expired") return t("recallExpired");
  return err.message || t("errorGeneric");
}

// ---------------------------------------------------------------- conversations

function makeConv(summary) {
  const conv = {
    ...summary,
    msgs: [], pending: [], loaded: false, hasOlder: true, loadingOlder: false,
    held: summary.last_seq || 0,
    peer_read_seq: summary.peer_read_seq ?? 0,
  };
  if (summary.peer) rememberUsers([summary.peer]);
  S.convs.set(conv.id, conv);
  return conv;
}

export function upsertSummary(summary) {
  let conv = S.convs.get(summary.id);
  if (!conv) return makeConv(summary);
  const { messages, has_more, ...rest } = summary;
  for (const [k, v] of Object.entries(rest)) {
    if (k === "last_seq") conv.last_seq = Math.max(conv.last_seq || 0, v);
    else if (k === "last_message") {
      if (v && (!conv.last_message || v.seq >= conv.last_message.seq)) conv.last_message = v;
    } else if (k === "peer_read_seq") conv.peer_read_seq = Math.max(conv.peer_read_seq || 0, v || 0);
    else conv[k] = v;
  }
  if (summary.peer) rememberUsers([summary.peer]);
  return conv;
}

function sortedConvs() {
  return [...S.convs.values()]
    .filter((c) => !c.left && !c.dissolved)
    .sort((a, b) => (b.last_activity_at || b.created_at || "").localeCompare(a.last_activity_at || a.created_at || ""));
}

/** Merge server messages into a conversation; returns true if a seq gap appeared. */
function addMessages(conv, messages) {
  let gap = false;
  for (const m of messages) {
    const i = conv.msgs.findIndex((x) => x.seq >= m.seq);
    if (i === -1) conv.msgs.push(m);
    else if (conv.msgs[i].seq === m.seq) conv.msgs[i] = m;
    else conv.msgs.splice(i, 0, m);
    conv.pending = conv.pending.filter((p) => p.client_msg_id !== m.client_msg_id || m.sender_id !== S.me.id);
    if (m.seq === conv.held + 1) conv.held = m.seq;
    else if (m.seq > conv.held + 1) gap = true;
    if (m.seq >= (conv.last_seq || 0)) {
      conv.last_seq = m.seq;
      conv.last_message = m;
      if (!conv.last_activity_at || m.created_at > conv.last_activity_at) conv.last_activity_at = m.created_at;
    }
  }
  return gap;
}

function countsAsUnread(m) {
  return m.sender_id && m.sender_id !== S.me.id && m.type !== "system" && !m.recalled;
}

// ---------------------------------------------------------------- socket

function emit(event, data, timeout = 10000) {
  if (!S.socket?.connected) return Promise.resolve({ ok: false, error: { code: "offline", message: t("offlineBanner") } });
  return S.socket.timeout(timeout).emitWithAck(event, data)
    .catch(() => ({ ok: false, error: { code: "timeout", message: t("errorGeneric") } }));
}

async function connectSocket() {
  const { io } = await import(CONFIG.vendor);
  const socket = io("/chat", {
    transports: ["websocket", "polling"],
    auth: (cb) => { accessToken().then((token) => cb({ token }), () => cb({ token: "" })); },
    reconnectionDelay: 500,
    reconnectionDelayMax: 4000,
  });
  S.socket = socket;
  socket.on("connect", () => {
    S.connected = true;
    S.everConnected = true;
    renderBanner();
    runSync();
    retryFailedAfterReconnect();
  });
  // The server's live feed had a gap (e.g. Redis blinked): fill it from sync.
  socket.on("resync", () => runSync());
  socket.on("disconnect", (reason) => {
    S.connected = false;
    renderBanner();
    if (reason === "io server disconnect") {
      // Signed out elsewhere, or the session was ended from the devices page.
      accessToken(true).then(() => socket.connect(), () => signOutLocal());
    }
  });
  socket.on("connect_error", (err) => {
    S.connected = false;
    renderBanner();
    if (err?.message === "unauthorized") {
      accessToken(true).then(() => setTimeout(() => socket.connect(), 300), () => signOutLocal());
    }
  });
  socket.on("message:new", onMessageNew);
  socket.on("message:recalled", ({ conversation_id, message_id }) => {
    const conv = S.convs.get(conversation_id);
    if (!conv) return;
    for (const m of conv.msgs) if (m.id === message_id) { m.recalled = true; m.text = ""; delete m.media; }
    if (conv.last_message?.id === message_id) conv.last_message = { ...conv.last_message, recalled: true, text: "" };
    for (const m of conv.msgs) {
      if (m.reply_preview?.id === message_id) m.reply_preview = { ...m.reply_preview, recalled: true, text: "" };
    }
    if (conv.unread_count > 0 && conv.msgs.some((m) => m.id === message_id && m.seq > conv.read_seq && m.sender_id !== S.me.id)) conv.unread_count -= 1;
    renderList(); renderNavBadges();
    if (isOpen(conv)) rerenderChat();
  });
  socket.on("message:deleted", ({ conversation_id, message_id }) => {
    const conv = S.convs.get(conversation_id);
    if (!conv) return;
    conv.msgs = conv.msgs.filter((m) => m.id !== message_id);
    if (isOpen(conv)) rerenderChat();
  });
  socket.on("conversation:read", ({ conversation_id, user_id, read_seq }) => {
    const conv = S.convs.get(conversation_id);
    if (!conv) return;
    if (user_id === S.me.id) {
      if (read_seq > (conv.read_seq || 0)) {
        conv.read_seq = read_seq;
        conv.unread_count = read_seq >= conv.last_seq ? 0
          : conv.msgs.filter((m) => m.seq > read_seq && countsAsUnread(m)).length;
        if (read_seq >= conv.last_seq) conv.mention_count = 0;
      }
      renderList(); renderNavBadges();
    } else if (conv.type === "direct") {
      conv.peer_read_seq = Math.max(conv.peer_read_seq || 0, read_seq);
      if (isOpen(conv)) rerenderChat();
    }
  });
  socket.on("typing", ({ conversation_id, user_id, state }) => setTyping(conversation_id, user_id, state));
  socket.on("conversation:updated", (summary) => {
    const conv = upsertSummary(summary);
    if (S.groupCache) S.groupCache.delete(conv.id);
    renderList();
    if (isOpen(conv)) { renderChatHeader(); groupsView.refreshIfOpen(conv.id); }
  });
  socket.on("contact:request", ({ request }) => {
    S.incoming = [request, ...S.incoming.filter((r) => r.id !== request.id)];
    renderNavBadges(); people.refresh();
    notify(t("newFriends"), `${request.from_user.display_name}: ${request.message || ""}`, "contacts");
  });
  socket.on("contact:accepted", ({ contact, conversation }) => {
    S.contacts.set(contact.user.id, contact);
    S.outgoing = S.outgoing.filter((r) => r.to_user.id !== contact.user.id);
    if (conversation) upsertSummary(conversation);
    renderList(); people.refresh();
  });
  socket.on("contact:updated", ({ contact }) => {
    S.contacts.set(contact.user.id, contact);
    renderList(); people.refresh(); renderChatHeader();
  });
  socket.on("contact:removed", ({ user_id }) => {
    S.contacts.delete(user_id);
    renderList(); people.refresh();
  });
  socket.on("presence", ({ user_id, online, last_seen }) => {
    S.presence.set(user_id, { online, last_seen });
    const c = S.contacts.get(user_id);
    if (c) c.presence = { online, last_seen };
    renderList(); renderChatHeader(); people.refresh();
  });
}

function onMessageNew(m) {
  let conv = S.convs.get(m.conversation_id);
  if (!conv) {
    // A chat we did not know yet (new group, new contact): sync fetches its summary.
    runSync();
    return;
  }
  const fresh = !conv.msgs.some((x) => x.seq === m.seq) && m.seq > (conv.last_seq || 0);
  const gap = addMessages(conv, [m]);
  if (fresh && countsAsUnread(m) && m.seq > (conv.read_seq || 0)) {
    conv.unread_count = (conv.unread_count || 0) + 1;
    if (m.mention_all || (m.mentions || []).includes(S.me.id)) conv.mention_count = (conv.mention_count || 0) + 1;
  }
  if (m.sender_id && m.sender_id !== S.me.id) setTyping(conv.id, m.sender_id, "idle", true);
  if (gap) runSync([conv.id]);
  if (fresh && countsAsUnread(m) && (document.hidden || !isOpen(conv)) && !conv.muted) {
    notify(convTitle(conv), previewOf(m, conv), conv.id);
  }
  renderList(); renderNavBadges();
  if (isOpen(conv)) { rerenderChat(); markRead(conv); }
}

let syncing = null;
let syncAgain = null;

/** Fill every gap: all conversations, or only `ids`. Runs one at a time. */
export async function runSync(ids) {
  if (syncing) {
    syncAgain = ids && syncAgain !== "all" ? [...new Set([...(syncAgain || []), ...ids])] : "all";
    return syncing;
  }
  syncing = (async () => {
    let cursors = {};
    for (const conv of S.convs.values()) {
      if (!ids || ids.includes(conv.id)) cursors[conv.id] = conv.held;
    }
    for (let round = 0; round < 50; round++) {
      const ack = await emit("sync", { cursors, limit: 200 }, 15000);
      if (!ack.ok) break;
      const next = {};
      for (const c of ack.conversations) {
        let conv = S.convs.get(c.id);
        const known = !!conv && c.id in cursors;
        if (!conv) conv = makeConv(c);
        else if (!known) upsertSummary(c);
        const { messages = [], has_more } = c;
        if (!known) {
          // Newest page of a chat this tab did not have.
          conv.msgs = [];
          conv.held = messages.length ? messages[0].seq - 1 : c.last_seq;
          addMessages(conv, messages);
          conv.held = c.last_seq;
          conv.loaded = true;
          conv.hasOlder = has_more;
        } else {
          const before = conv.held;
          addMessages(conv, messages);
          if (messages.length) conv.held = Math.max(before, messages[messages.length - 1].seq);
          if (has_more) next[c.id] = conv.held;
          else conv.held = Math.max(conv.held, c.last_seq);
          for (const m of messages) {
            if (document.hidden && countsAsUnread(m) && m.seq > (c.read_seq || 0) && !conv.muted) {
              notify(convTitle(conv), previewOf(m, conv), conv.id);
            }
          }
        }
        for (const k of ["read_seq", "unread_count", "left", "last_seq"]) if (k in c) conv[k] = c[k];
      }
      if (!Object.keys(next).length) break;
      cursors = next;
    }
    renderList(); renderNavBadges();
    const open = currentConv();
    if (open) { rerenderChat(); markRead(open); }
  })().finally(() => {
    syncing = null;
    if (syncAgain) {
      const again = syncAgain === "all" ? undefined : syncAgain;
      syncAgain = null;
      runSync(again);
    }
  });
  return syncing;
}

// ---------------------------------------------------------------- sending

export function sendMessage(conv, fields) {
  const p = {
    local: true,
    client_msg_id: uuid(),
    conversation_id: conv.id,
    sender_id: S.me.id,
    type: fields.type || "text",
    text: fields.text || "",
    reply_to: fields.reply_to?.id ?? null,
    reply_preview: fields.reply_to ? { ...fields.reply_to } : undefined,
    media_id: fields.media_id,
    media: fields.media,
    created_at: new Date().toISOString(),
    status: "pending",
  };
  conv.pending.push(p);
  askNotificationPermission();
  rerenderChat(true);
  if (fields.deferred) {
    // Media: sent once the upload finished (media.js calls ready / fail).
    p.progress = 0;
    p.ready = () => { delete p.progress; deliver(conv, p); };
    p.fail = (err) => { p.status = "failed"; p.error = err; rerenderChat(); };
  } else deliver(conv, p);
  return p;
}

async function deliver(conv, p) {
  p.status = "pending";
  rerenderChat();
  const payload = { conversation_id: conv.id, client_msg_id: p.client_msg_id, type: p.type, text: p.text };
  if (p.reply_to) payload.reply_to = p.reply_to;
  if (p.media_id) payload.media_id = p.media_id;
  const ack = await emit("message:send", payload);
  if (ack.ok) {
    conv.pending = conv.pending.filter((x) => x !== p);
    const gap = addMessages(conv, [ack.message]);
    conv.read_seq = Math.max(conv.read_seq || 0, ack.message.seq);
    if (gap) runSync([conv.id]);
  } else {
    p.status = "failed";
    p.error = ack.error;
    if (ack.error?.code !== "offline" && ack.error?.code !== "timeout") toast(errorText(ack.error));
  }
  renderList();
  if (isOpen(conv)) rerenderChat();
}

export function retry(conv, p) {
  if (p.type !== "text" && !p.media_id) { conv.pending = conv.pending.filter((x) => x !== p); rerenderChat(); return; }
  deliver(conv, p);
}

function retryFailedAfterReconnect() {
  // Only the ones that failed for lack of a connection: reuse their client_msg_id.
  for (const conv of S.convs.values()) {
    for (const p of conv.pending) {
      if (p.status === "failed" && ["offline", "timeout"].includes(p.error?.code)) deliver(conv, p);
    }
  }
}

export async function markRead(conv) {
  if (!conv || document.hidden || !S.connected) return;
  const last = conv.last_seq || 0;
  if (last <= (conv.read_seq || 0) && !conv.unread_count) return;
  const ack = await emit("message:read", { conversation_id: conv.id, seq: last });
  if (ack.ok) {
    conv.read_seq = ack.read_seq;
    conv.unread_count = ack.unread_count;
    if (!ack.unread_count) conv.mention_count = 0;
    renderList(); renderNavBadges();
  }
}

// ---------------------------------------------------------------- typing

function setTyping(convId, userId, state, silent = false) {
  if (!S.typing.has(convId)) S.typing.set(convId, new Map());
  const map = S.typing.get(convId);
  const prev = map.get(userId);
  if (prev) clearTimeout(prev.timer);
  if (state === "idle") map.delete(userId);
  else map.set(userId, { state, timer: setTimeout(() => setTyping(convId, userId, "idle"), 6000) });
  if (!silent && S.route.id === convId) renderChatHeader();
}

let typingSent = { conv: null, state: "idle", at: 0 };
export function sendTyping(conv, state) {
  const now = Date.now();
  if (typingSent.conv === conv.id && typingSent.state === state && (state === "idle" || now - typingSent.at < 3000)) return;
  typingSent = { conv: conv.id, state, at: now };
  emit("typing", { conversation_id: conv.id, state });
}

// ---------------------------------------------------------------- notifications

function askNotificationPermission() {
  if ("Notification" in window && Notification.permission === "default" && !localStorage.getItem("parley.notify_asked")) {
    localStorage.setItem("parley.notify_asked", "1");
    Notification.requestPermission().catch(() => {});
  }
}

function notify(title, body, tag) {
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") return;
  try {
    const n = new Notification(title, { body: String(body).slice(0, 140), tag, icon: document.querySelector("link[rel=icon]")?.href });
    n.onclick = () => { window.focus(); if (S.convs.has(tag)) go(`#/chats/${tag}`); n.close(); };
  } catch { /* some browsers only allow notifications from a service worker */ }
}

// ---------------------------------------------------------------- routing

export function go(hash) {
  if (location.hash === hash) onRoute();
  else location.hash = hash;
}

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const view = ["chats", "contacts", "settings"].includes(parts[0]) ? parts[0] : "chats";
  return { view, id: parts[1] || null, sub: parts[2] || null };
}

export function currentConv() {
  return S.route.view === "chats" && S.route.id ? S.convs.get(S.route.id) : null;
}

function isOpen(conv) { return conv && S.route.view === "chats" && S.route.id === conv.id; }

async function onRoute() {
  const prev = S.route;
  S.route = parseRoute();
  el.shell.dataset.view = S.route.view;
  el.shell.dataset.pane = S.route.id ? "main" : "list";
  if (prev.view !== S.route.view || prev.id !== S.route.id) S.replyTo = null;
  renderNav();
  renderListHeader();
  renderList();
  renderMain(prev);
}

// ---------------------------------------------------------------- shell

function buildShell() {
  el.banner = h("div", { class: "banner", role: "status", hidden: true });
  el.navAvatar = h("div", { class: "nav-me" });
  el.navChats = h("a", { class: "nav-btn", href: "#/chats", title: t("chats"), dataset: { view: "chats" } },
    icon("chat"), h("span", { class: "nav-label" }, t("chats")), h("span", { class: "badge", hidden: true }));
  el.navContacts = h("a", { class: "nav-btn", href: "#/contacts", title: t("contacts"), dataset: { view: "contacts" } },
    icon("contacts"), h("span", { class: "nav-label" }, t("contacts")), h("span", { class: "badge", hidden: true }));
  el.navSettings = h("a", { class: "nav-btn", href: "#/settings", title: t("settings"), dataset: { view: "settings" } },
    icon("settings"), h("span", { class: "nav-label" }, t("me")));
  el.nav = h("nav", { class: "sidebar" }, el.navAvatar, el.navChats, el.navContacts, h("div", { class: "spacer" }), el.navSettings);
  el.listHeader = h("div", { class: "list-header" });
  el.list = h("div", { class: "list", role: "list" });
  el.listPane = h("section", { class: "list-pane" }, el.listHeader, el.list);
  el.main = h("main", { class: "main-pane" });
  el.shell = h("div", { class: "shell" }, el.nav, el.listPane, el.main);
  clear(root, el.banner, el.shell);
}

export function renderNav() {
  clear(el.navAvatar, avatar(S.me.display_name, S.me.id, "small"));
  el.navAvatar.title = S.me.display_name;
  for (const b of [el.navChats, el.navContacts, el.navSettings]) {
    b.classList.toggle("active", b.dataset.view === S.route.view);
  }
  renderNavBadges();
}

export function renderNavBadges() {
  const unread = sortedConvs().filter((c) => !c.muted).reduce((n, c) => n + (c.unread_count || 0), 0);
  setBadge(el.navChats.querySelector(".badge"), unread);
  setBadge(el.navContacts.querySelector(".badge"), S.incoming.length);
  document.title = unread ? `(${unread}) Parley` : "Parley";
}

export function setBadge(b, n) {
  if (!b) return;
  b.hidden = !n;
  b.textContent = n > 99 ? "99+" : String(n);
}

function renderBanner() {
  document.body.dataset.connected = String(S.connected);
  const offline = !navigator.onLine;
  if (S.connected) { el.banner.hidden = true; return; }
  el.banner.hidden = false;
  el.banner.textContent = offline || S.everConnected ? (offline ? t("offlineBanner") : t("reconnecting")) : t("reconnecting");
  el.banner.classList.toggle("offline", offline);
}

function renderListHeader() {
  const v = S.route.view;
  const title = v === "chats" ? t("chats") : v === "contacts" ? t("contacts") : t("settings");
  const actions = [];
  if (v === "chats" && CONFIG.groups) {
    actions.push(h("button", { class: "icon-btn", title: t("newGroup"), "aria-label": t("newGroup"), onclick: () => go("#/chats/new-group") }, icon("plus")));
  }
  if (v === "contacts") {
    actions.push(h("button", { class: "icon-btn", title: t("addContact"), "aria-label": t("addContact"), "data-action": "add-contact", onclick: () => go("#/contacts/add") }, icon("person_add")));
  }
  const filter = v === "chats" ? h("input", {
    class: "search", type: "search", placeholder: t("search"), value: S.filter || "",
    oninput: (e) => { S.filter = e.target.value; renderList(); },
  }) : null;
  clear(el.listHeader, h("div", { class: "list-title" }, h("h1", {}, title), ...actions), filter);
}

export function renderList() {
  if (!el.list) return;
  const v = S.route.view;
  if (v === "chats") return renderChatList();
  if (v === "contacts") return people.renderContactList(el.list);
  return settingsView.renderMenu(el.list);
}

function renderChatList() {
  const q = (S.filter || "").trim().toLowerCase();
  let convs = sortedConvs();
  if (q) convs = convs.filter((c) => convTitle(c).toLowerCase().includes(q));
  if (!convs.length) {
    clear(el.list, h("div", { class: "empty" }, t("noChats")));
    return;
  }
  clear(el.list, convs.map((conv) => {
    const title = convTitle(conv);
    const av = conv.type === "group" ? groupAvatar(conv) : avatar(title, conv.peer?.id || conv.id);
    const pres = conv.type === "direct" && conv.peer ? presenceOf(conv.peer.id) : null;
    const draft = S.drafts.get(conv.id);
    const lm = conv.last_message;
    const preview = h("div", { class: "preview" },
      conv.mention_count ? h("span", { class: "at-me" }, t("atMe")) : null,
      draft && !isOpen(conv) ? h("span", { class: "at-me" }, t("draft")) : null,
      draft && !isOpen(conv) ? draft : previewOf(lm, conv));
    const unread = conv.unread_count || 0;
    const badge = unread ? h("span", { class: conv.muted ? "badge dot" : "badge" }, conv.muted ? "" : unread > 99 ? "99+" : String(unread)) : null;
    return h("a", {
      class: `chat-item${isOpen(conv) ? " active" : ""}`, href: `#/chats/${encodeURIComponent(conv.id)}`,
      role: "listitem", dataset: { conv: conv.id, title },
    },
    h("div", { class: "avatar-wrap" }, av, badge, pres ? h("span", { class: `presence ${pres.online ? "on" : "off"}`, title: pres.online ? t("online") : t("offline") }) : null),
    h("div", { class: "chat-item-body" },
      h("div", { class: "row" }, h("span", { class: "title" }, title), h("span", { class: "time" }, lm || conv.last_activity_at ? shortTime(lm?.created_at || conv.last_activity_at) : "")),
      h("div", { class: "row" }, preview, conv.muted ? h("span", { class: "muted-ico", title: t("muted") }, icon("bell", "icon tiny")) : null)));
  }));
}

export function groupAvatar(conv) {
  const a = avatar(conv.title || "G", conv.id, "group");
  a.replaceChildren(icon("group", "icon"));
  return a;
}

// ---------------------------------------------------------------- main pane

function renderMain(prev) {
  const r = S.route;
  if (r.view === "chats") {
    if (r.id === "new-group" && CONFIG.groups) return groupsView.renderCreate(el.main);
    const conv = r.id ? S.convs.get(r.id) : null;
    if (!conv) {
      if (r.id && r.id !== "new-group") { el.shell.dataset.pane = "list"; }
      return clear(el.main, placeholder(t("selectChat")));
    }
    if (r.sub === "info" && conv.type === "group" && CONFIG.groups) return groupsView.renderInfo(el.main, conv);
    if (prev && prev.view === "chats" && prev.id === r.id && prev.sub === r.sub && el.chat?.conv === conv) return;
    return openChat(conv);
  }
  if (r.view === "contacts") return people.renderMain(el.main, r);
  return settingsView.renderMain(el.main, r);
}

export function placeholder(text) {
  return h("div", { class: "placeholder" }, h("img", { src: document.querySelector("link[rel=icon]")?.href, alt: "" }), h("p", {}, text));
}

export function backButton(hash) {
  return h("button", { class: "icon-btn back", title: t("back"), "aria-label": t("back"), onclick: () => go(hash) }, icon("back"));
}

function openChat(conv) {
  const scroller = h("div", { class: "messages", tabindex: "0" });
  const header = h("header", { class: "chat-header" });
  const replyBar = h("div", { class: "reply-bar", hidden: true });
  const input = h("textarea", {
    class: "composer-input", rows: "1", placeholder: t("typeMessage"), maxlength: String(CONFIG.maxText),
    "aria-label": t("typeMessage"),
  });
  input.value = S.drafts.get(conv.id) || "";
  const sendBtn = h("button", { class: "send-btn", type: "submit" }, t("send"));
  const tools = h("div", { class: "composer-tools" });
  const composer = h("form", { class: "composer" }, tools, h("div", { class: "composer-row" }, input, sendBtn));
  const extra = h("div", { class: "composer-extra" });
  el.chat = { conv, scroller, header, input, replyBar, composer, extra };
  clear(el.main, h("div", { class: "chat" }, header, scroller, replyBar, extra, composer));

  const submit = () => {
    const text = input.value.trim();
    if (!text) return;
    sendMessage(conv, { text, reply_to: S.replyTo });
    input.value = "";
    S.drafts.delete(conv.id);
    setReply(null);
    autosize(input);
    sendTyping(conv, "idle");
  };
  composer.addEventListener("submit", (e) => { e.preventDefault(); submit(); input.focus(); });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
    if (e.key === "Escape") setReply(null);
  });
  input.addEventListener("input", () => {
    autosize(input);
    if (input.value) { S.drafts.set(conv.id, input.value); sendTyping(conv, "typing"); }
    else { S.drafts.delete(conv.id); sendTyping(conv, "idle"); }
  });
  input.addEventListener("blur", () => sendTyping(conv, "idle"));
  scroller.addEventListener("scroll", () => {
    if (scroller.scrollTop < 120) loadOlder(conv);
    if (atBottom(scroller)) markRead(conv);
  });
  if (CONFIG.media) media.mountTools(tools, extra, conv);
  renderChatHeader();
  renderMessages(true);
  autosize(input);
  if (!matchMedia("(pointer: coarse)").matches) input.focus();
  if (!conv.loaded) loadOlder(conv, true);
  else markRead(conv);
}

function autosize(ta) {
  ta.style.height = "auto";
  ta.style.height = `${Math.min(ta.scrollHeight, 160)}px`;
}

function atBottom(s) { return s.scrollHeight - s.scrollTop - s.clientHeight < 40; }

async function loadOlder(conv, first = false) {
  if (conv.loadingOlder || (!first && (!conv.hasOlder || !conv.loaded))) return;
  conv.loadingOlder = true;
  const oldest = conv.msgs.find((m) => m.seq)?.seq;
  const payload = { conversation_id: conv.id, limit: 50 };
  if (!first || (conv.loaded && oldest)) payload.before_seq = oldest;
  const ack = await emit("history", payload);
  conv.loadingOlder = false;
  if (!ack.ok) return;
  const held = conv.held;
  addMessages(conv, ack.messages);
  conv.held = Math.max(held, first && ack.messages.length ? ack.messages[ack.messages.length - 1].seq : held);
  conv.hasOlder = ack.has_more;
  conv.loaded = true;
  if (isOpen(conv)) { rerenderChat(); markRead(conv); }
}

export function setReply(msg) {
  S.replyTo = msg ? { id: msg.id, seq: msg.seq, sender_id: msg.sender_id, type: msg.type, text: (msg.text || "").slice(0, 200), recalled: false } : null;
  const bar = el.chat?.replyBar;
  if (!bar) return;
  bar.hidden = !msg;
  if (msg) {
    clear(bar,
      h("div", { class: "reply-bar-text" }, h("strong", {}, t("replyingTo", { name: displayNameOf(msg.sender_id) })), " ", previewOf(msg)),
      h("button", { class: "icon-btn", type: "button", title: t("cancel"), "aria-label": t("cancel"), onclick: () => setReply(null) }, icon("close")));
    el.chat.input.focus();
  }
}

export function renderChatHeader() {
  const c = el.chat;
  if (!c || !isOpen(c.conv)) return;
  const conv = c.conv;
  let sub = "";
  const typers = [...(S.typing.get(conv.id) || new Map()).entries()];
  if (typers.length) {
    const [uid, { state }] = typers[0];
    sub = t(state === "recording" ? "recording" : "typing", { name: displayNameOf(uid) });
  } else if (conv.type === "direct" && conv.peer) {
    const p = presenceOf(conv.peer.id);
    if (p) sub = p.online ? t("online") : p.last_seen ? t("lastSeen", { time: shortTime(p.last_seen) }) : t("offline");
  } else if (conv.type === "group") {
    sub = conv.member_count ? t("members", { n: conv.member_count }) : "";
  }
  const info = conv.type === "group" && CONFIG.groups
    ? h("button", { class: "icon-btn", title: t("groupInfo"), "aria-label": t("groupInfo"), "data-action": "group-info", onclick: () => go(`#/chats/${encodeURIComponent(conv.id)}/info`) }, icon("more"))
    : null;
  const muteLabel = t(conv.muted ? "unmuteChat" : "muteChat");
  const mute = h("button", {
    class: `icon-btn${conv.muted ? " on" : ""}`, title: muteLabel, "aria-label": muteLabel,
    "aria-pressed": conv.muted ? "true" : "false", "data-action": "toggle-mute",
    onclick: () => toggleMute(conv),
  }, icon("bell"));
  clear(c.header,
    backButton("#/chats"),
    h("div", { class: "chat-title" },
      h("h2", {}, convTitle(conv)),
      h("div", { class: `chat-sub${typers.length ? " typing" : ""}` }, sub)),
    mute, info);
}

async function toggleMute(conv) {
  try {
    const { conversation } = await api("PATCH", `/conversations/${encodeURIComponent(conv.id)}`, { muted: !conv.muted });
    conv.muted = conversation.muted;
    renderChatHeader();
    renderList();
  } catch (err) {
    toast(err.message || String(err));
  }
}

export function rerenderChat(forceBottom = false) {
  if (!el.chat || !isOpen(el.chat.conv)) return;
  renderMessages(forceBottom);
}

function renderMessages(forceBottom = false) {
  const { conv, scroller } = el.chat;
  const wasAtBottom = forceBottom || atBottom(scroller);
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const items = [...conv.msgs, ...conv.pending];
  const nodes = [];
  if (conv.loaded && !conv.hasOlder) nodes.push(h("div", { class: "sys-line faint" }, t("beginning")));
  else if (conv.hasOlder && conv.msgs.length) nodes.push(h("div", { class: "sys-line faint loading" }, t("loadingOlder")));
  // Read marks in direct chats: "Read" under my last message the peer has read,
  // "Sent" under my newest message when it is newer than that.
  let readId = null; let sentId = null;
  if (conv.type === "direct") {
    const mine = conv.msgs.filter((m) => m.sender_id === S.me.id && !m.recalled);
    const readMine = mine.filter((m) => m.seq <= (conv.peer_read_seq || 0));
    readId = readMine.length ? readMine[readMine.length - 1].id : null;
    const last = mine[mine.length - 1];
    if (last && last.id !== readId && !conv.pending.length) sentId = last.id;
  }
  let prevDate = null; let prevSender = null;
  for (const m of items) {
    const d = parseTime(m.created_at);
    if (!prevDate || !sameDay(prevDate, d)) {
      nodes.push(h("div", { class: "day-sep" }, h("span", {}, dayLabel(d))));
      prevSender = null;
    } else if (d - prevDate > 5 * 60e3) {
      nodes.push(h("div", { class: "time-sep" }, hhmm(d)));
      prevSender = null;
    }
    prevDate = d;
    if (m.type === "system") {
      nodes.push(h("div", { class: "sys-line", dataset: { seq: m.seq } }, systemText(m)));
      prevSender = null;
      continue;
    }
    if (m.recalled) {
      const mine = m.sender_id === S.me.id;
      nodes.push(h("div", { class: "sys-line recalled", dataset: { seq: m.seq, id: m.id } },
        mine ? t("recalledMine") : t("recalledTheirs", { name: displayNameOf(m.sender_id) })));
      prevSender = null;
      continue;
    }
    nodes.push(messageRow(conv, m, prevSender === m.sender_id, m.id === readId ? "read" : m.id === sentId ? "sent" : null));
    prevSender = m.sender_id;
  }
  clear(scroller, nodes);
  if (wasAtBottom) scroller.scrollTop = scroller.scrollHeight;
  else scroller.scrollTop = scroller.scrollHeight - fromBottom;
}

function messageRow(conv, m, continued, mark) {
  const mine = m.sender_id === S.me.id;
  const name = displayNameOf(m.sender_id);
  const bubble = h("div", { class: `bubble type-${m.type}` });
  if (m.reply_preview) {
    const rp = m.reply_preview;
    bubble.append(h("div", { class: "quote" },
      h("span", { class: "quote-name" }, displayNameOf(rp.sender_id)), ": ",
      rp.recalled ? t("recalledPreview") : previewOf(rp)));
  }
  if (m.type === "text") bubble.append(h("div", { class: "text" }, m.text));
  else media.renderBody(bubble, m, conv);
  let status = null;
  if (m.local) {
    status = m.status === "failed"
      ? h("button", { class: "status failed", type: "button", title: t("retry"), "aria-label": t("retry"), dataset: { action: "retry" }, onclick: () => retry(conv, m) }, icon("alert", "icon small"))
      : h("span", { class: "status pending", title: t("sending") }, icon("clock", "icon small spin"));
  }
  const row = h("div", {
    class: `msg ${mine ? "mine" : "theirs"}${continued ? " continued" : ""}${m.local ? ` local ${m.status}` : ""}`,
    dataset: { seq: m.seq ?? "", id: m.id ?? "", cmid: m.client_msg_id ?? "" },
  },
  avatar(name, m.sender_id, "small"),
  h("div", { class: "msg-body" },
    conv.type === "group" && !mine && !continued ? h("div", { class: "sender" }, name) : null,
    h("div", { class: "bubble-row" }, status, bubble),
    mark ? h("div", { class: `read-mark ${mark}` }, t(mark)) : null,
    m.local && m.status === "failed" ? h("div", { class: "read-mark failed-text" }, t("failed"), " · ",
      h("button", { class: "link", type: "button", onclick: () => retry(conv, m) }, t("retry"))) : null));
  if (!m.local) attachMenu(bubble, conv, m);
  return row;
}

// ---------------------------------------------------------------- message menu

function attachMenu(target, conv, m) {
  target.addEventListener("contextmenu", (e) => { e.preventDefault(); showMenu(e.clientX, e.clientY, conv, m); });
  let timer = null;
  target.addEventListener("touchstart", (e) => {
    const touch = e.touches[0];
    timer = setTimeout(() => showMenu(touch.clientX, touch.clientY, conv, m), 500);
  }, { passive: true });
  for (const ev of ["touchend", "touchmove", "touchcancel"]) target.addEventListener(ev, () => clearTimeout(timer));
}

function closeMenu() { document.querySelector(".ctx-menu")?.remove(); }

function showMenu(x, y, conv, m) {
  closeMenu();
  const items = [];
  if (m.type === "text") {
    items.push([t("copy"), "copy", () => navigator.clipboard?.writeText(m.text).then(() => toast(t("copied")), () => {})]);
  }
  items.push([t("reply"), "reply", () => setReply(m)]);
  const age = (Date.now() - parseTime(m.created_at)) / 1000;
  if (m.sender_id === S.me.id && age < CONFIG.recallWindow) {
    items.push([t("recall"), "recall", async () => {
      const ack = await emit("message:recall", { message_id: m.id });
      if (!ack.ok) toast(errorText(ack.error));
      else { m.recalled = true; m.text = ""; if (conv.last_message?.id === m.id) conv.last_message = { ...m }; rerenderChat(); renderList(); }
    }]);
  }
  items.push([t("deleteForMe"), "delete", async () => {
    const ack = await emit("message:delete", { message_id: m.id });
    if (!ack.ok) toast(errorText(ack.error));
    else { conv.msgs = conv.msgs.filter((x) => x.id !== m.id); rerenderChat(); }
  }]);
  const menu = h("div", { class: "ctx-menu", role: "menu" }, items.map(([label, action, fn]) =>
    h("button", { role: "menuitem", type: "button", dataset: { action }, onclick: () => { closeMenu(); fn(); } }, label)));
  document.body.append(menu);
  const r = menu.getBoundingClientRect();
  menu.style.left = `${Math.min(x, innerWidth - r.width - 8)}px`;
  menu.style.top = `${Math.min(y, innerHeight - r.height - 8)}px`;
}

document.addEventListener("click", (e) => { if (!e.target.closest(".ctx-menu")) closeMenu(); });
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeMenu(); });

// ---------------------------------------------------------------- start / stop

async function loadEverything() {
  const [{ user }, contacts, requests] = await Promise.all([
    api("GET", "/me"), api("GET", "/contacts"), api("GET", "/contacts/requests"),
  ]);
  S.me = user;
  for (const c of contacts.contacts) S.contacts.set(c.user.id, c);
  S.incoming = requests.incoming;
  S.outgoing = requests.outgoing;
  try { S.blocks = new Set((await api("GET", "/blocks")).blocks.map((b) => b.user.id)); } catch { /* optional */ }
  let cursor = null;
  for (let i = 0; i < 100; i++) {
    const page = await api("GET", `/conversations?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    for (const c of page.conversations) upsertSummary(c);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
}

export async function startApp() {
  clear(root, h("div", { class: "boot" }, h("div", { class: "boot-logo" }, "Parley")));
  try {
    await loadEverything();
  } catch (err) {
    if (err.status === 401) return signOutLocal();
    clear(root, h("div", { class: "boot" }, h("p", {}, errorText(err)), h("button", { class: "primary", onclick: () => startApp() }, t("retry"))));
    return;
  }
  buildShell();
  await handleJoinPath();
  onRoute();
  renderBanner();
  await connectSocket();
}

async function handleJoinPath() {
  const m = location.pathname.match(/^\/join\/([^/]+)$/);
  if (!m) return;
  history.replaceState(null, "", "/");
  if (CONFIG.groups) await groupsView.joinByToken(decodeURIComponent(m[1]));
}

export async function signOut() {
  try { await api("POST", "/auth/logout"); } catch { /* already gone */ }
  signOutLocal();
}

export function signOutLocal() {
  session.clear();
  S.socket?.disconnect();
  location.hash = "";
  location.reload();
}

export function relabel() {
  // Language switch: rebuild every screen in the new language.
  buildShell();
  S.route = { view: null };
  onRoute();
  renderBanner();
}

window.addEventListener("hashchange", () => { if (el.shell) onRoute(); });
window.addEventListener("online", () => { if (el.banner) renderBanner(); S.socket?.connect(); });
window.addEventListener("offline", () => { if (el.banner) renderBanner(); });
document.addEventListener("visibilitychange", () => { if (!document.hidden) markRead(currentConv()); });
window.addEventListener("storage", (e) => {
  // Signed out in another tab.
  if (e.key === "parley.refresh" && !e.newValue && S.me) signOutLocal();
});

export { deviceLabel, setLanguage, LANGUAGES, el };

export function boot() {
  if (session.signedIn) startApp();
  else renderAuth(root, startApp);
}
