// Search: the results of the chat list's search box (Contacts / Group chats /
// Chat history) and the "Search chat history" panel of one chat. Found text
// is drawn with its matches marked from the server's highlight offsets
// (UTF-16 code units, which is what String.prototype.slice counts).
import { h, clear, avatar, toast } from "./dom.js";
import { t } from "../lib/i18n.js";
import { ctx, go } from "./context.js";
import { convTitle, shortTime, errorText } from "./format.js";

/** `text` as nodes, the [start, end) ranges wrapped in <mark>. */
export function marked(text, ranges) {
  const out = [];
  let at = 0;
  for (const [a, b] of ranges || []) {
    if (a < at || b > text.length) continue;
    if (a > at) out.push(text.slice(at, a));
    out.push(h("mark", {}, text.slice(a, b)));
    at = b;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

function resultText(msg, highlights, field) {
  if (field === "media.name") return marked(msg.media?.name || "", highlights);
  if (msg.type !== "text" && !msg.text) return t(msg.type === "image" ? "photo" : msg.type);
  return marked(msg.text || "", highlights);
}

/** Open a chat at a message, highlighted. */
export async function openAt(convId, seq) {
  const store = ctx.store;
  const conv = store.convs.get(convId);
  if (!conv) return;
  go(`#/chats/${encodeURIComponent(convId)}`);
  await store.jumpTo(conv, seq);
}

async function openContact(userId) {
  try {
    const { conversation } = await ctx.store.api("POST", "/conversations/direct", { user_id: userId });
    ctx.store.upsertSummary(conversation);
    go(`#/chats/${encodeURIComponent(conversation.id)}`);
  } catch (err) { toast(errorText(err)); }
}

function section(title, items) {
  if (!items.length) return null;
  return h("section", { class: "search-section" }, h("h2", {}, title), h("ul", { class: "list" }, items));
}

/** Draw the search box's answer into `box`. */
export function renderResults(box, res, query = "") {
  const store = ctx.store;
  const contacts = res.contacts.map((c) => {
    const name = c.remark || c.user.display_name;
    return h("li", {}, h("button", { class: "chat-item search-hit", type: "button", dataset: { kind: "contact", id: c.user.id }, onclick: () => openContact(c.user.id) },
      avatar(name, c.user.id), h("div", { class: "chat-item-body" }, h("span", { class: "title" }, name),
        h("div", { class: "preview" }, c.remark ? c.user.display_name : `@${c.user.username}`))));
  });
  const groups = res.groups.map((g) => {
    store.upsertSummary(g, { quiet: true });
    return h("li", {}, h("button", { class: "chat-item search-hit", type: "button", dataset: { kind: "group", id: g.id }, onclick: () => go(`#/chats/${encodeURIComponent(g.id)}`) },
      avatar(g.title || "G", g.id, "group"), h("div", { class: "chat-item-body" }, h("span", { class: "title" }, g.title))));
  });
  const chats = res.conversations_with_matches.map((m) => {
    const conv = store.upsertSummary(m.conversation, { quiet: true });
    const title = convTitle(conv);
    const body = m.match_count === 1
      ? h("div", { class: "preview" }, resultText(m.latest, m.highlights))
      : h("div", { class: "preview" }, t("relatedN", { n: `${m.match_count}${m.more ? "+" : ""}` }));
    return h("li", {}, h("button", { class: "chat-item search-hit", type: "button", dataset: { kind: "chat", id: conv.id, seq: m.latest.seq },
      onclick: () => (m.match_count === 1 ? openAt(conv.id, m.latest.seq) : openChatSearch(conv.id, query)) },
    avatar(title, conv.peer?.id || conv.id), h("div", { class: "chat-item-body" },
      h("div", { class: "row" }, h("span", { class: "title" }, title), h("span", { class: "time" }, shortTime(m.latest.created_at))), body)));
  });
  const parts = [section(t("contacts"), contacts), section(t("groupChats"), groups), section(t("chatHistory"), chats)].filter(Boolean);
  clear(box, parts.length ? parts : h("p", { class: "empty" }, t("noResults")));
}

let boxTimer = 0;
let boxSeq = 0;

/** The chat list's search box: debounced, newest answer wins. */
export function onBoxInput(box, list, q) {
  clearTimeout(boxTimer);
  const query = q.trim();
  if (!query) { box.hidden = true; list.hidden = false; clear(box); return; }
  boxTimer = setTimeout(async () => {
    const mine = ++boxSeq;
    try {
      const res = await ctx.store.searchAll(query);
      if (mine !== boxSeq) return;
      box.hidden = false;
      list.hidden = true;
      renderResults(box, res, query);
    } catch (err) {
      if (mine === boxSeq && err.status !== 400) toast(errorText(err));
    }
  }, 300);
}

// ------------------------------------------------------------ in-chat search

let panel = null;

/** "Search chat history" of one conversation: query, member, dates, type. */
export function openChatSearch(convId, q = "") {
  const store = ctx.store;
  const conv = store.convs.get(convId);
  if (!conv) return;
  if (store.openId !== convId) { // open the chat first; the panel goes on top of it
    addEventListener("hashchange", () => setTimeout(() => openChatSearch(convId, q), 0), { once: true });
    go(`#/chats/${encodeURIComponent(convId)}`);
    return;
  }
  closeChatSearch();
  const input = h("input", { type: "search", class: "search", placeholder: t("searchHistory"), "aria-label": t("searchHistory"), "data-role": "chat-search" });
  const members = new Map();
  const group = store.groups.get(convId);
  const addMembers = (g) => {
    for (const m of g?.members || []) members.set(m.user_id || m.user?.id, m.user?.display_name || store.nameOf(m.user_id) || "");
  };
  addMembers(group);
  if (conv.peer) { members.set(conv.peer.id, convTitle(conv)); members.set(store.me.id, store.me.display_name); }
  const sender = h("select", { "aria-label": t("member"), "data-role": "member" });
  const fillSender = () => clear(sender, h("option", { value: "" }, t("anyMember")),
    [...members].map(([id, name]) => h("option", { value: id, selected: id === sender.value }, name || id)));
  fillSender();
  const type = h("select", { "aria-label": t("mediaType"), "data-role": "type" }, h("option", { value: "" }, t("anyType")),
    ["text", "image", "video", "file"].map((k) => h("option", { value: k }, t(`type_${k}`))));
  const after = h("input", { type: "date", "aria-label": t("fromDate"), "data-role": "after" });
  const before = h("input", { type: "date", "aria-label": t("toDate"), "data-role": "before" });
  const results = h("ul", { class: "list search-results", "aria-live": "polite" });
  const more = h("button", { type: "button", class: "link", hidden: true }, t("moreResults"));
  let cursor = null;
  let timer = 0;
  const run = async (append = false) => {
    const q = input.value.trim();
    if (!q) { clear(results); more.hidden = true; return; }
    const params = { q, conversation_id: convId, limit: 20 };
    if (sender.value) params.sender_id = sender.value;
    if (type.value) params.type = type.value;
    if (after.value) params.after = new Date(`${after.value}T00:00:00`).toISOString();
    if (before.value) params.before = new Date(new Date(`${before.value}T00:00:00`).getTime() + 864e5).toISOString();
    if (append && cursor) params.cursor = cursor;
    const ack = await store.searchMessages(params);
    if (!ack.ok) { if (ack.error?.code !== "invalid") toast(errorText(ack.error)); return; }
    cursor = ack.next_cursor;
    more.hidden = !cursor;
    const items = ack.results.map((r) => h("li", {}, h("button", {
      type: "button", class: "chat-item search-hit", dataset: { kind: "message", seq: r.message.seq },
      onclick: () => { closeChatSearch(); openAt(convId, r.message.seq); },
    }, h("div", { class: "chat-item-body" },
      h("div", { class: "row" }, h("span", { class: "title" }, store.nameOf(r.message.sender_id) || ""), h("span", { class: "time" }, shortTime(r.message.created_at))),
      h("div", { class: "preview" }, resultText(r.message, r.highlights, r.highlight_field))))));
    if (append) results.append(...items);
    else clear(results, items.length ? items : h("li", { class: "empty" }, t("noResults")));
  };
  const later = () => { clearTimeout(timer); timer = setTimeout(() => run(), 300); };
  input.addEventListener("input", later);
  for (const f of [sender, type, after, before]) f.addEventListener("change", () => run());
  more.addEventListener("click", () => run(true));
  panel = h("div", { class: "chat-search", role: "dialog", "aria-label": t("searchHistory") },
    h("div", { class: "row" }, input, h("button", { type: "button", class: "icon-btn", "aria-label": t("closeSearch"), onclick: closeChatSearch }, "×")),
    h("div", { class: "row filters" }, sender, type, after, before), results, more);
  ctx.el.main.append(panel);
  if (!group && conv.type === "group") {
    // The members come from the chat's own fetch; a panel opened before it
    // answers gets them in its filter when it does.
    const opened = panel;
    store.group(convId).then((g) => { if (panel === opened) { addMembers(g); fillSender(); } }).catch(() => {});
  }
  input.value = q;
  if (q) run();
  input.focus();
}

export function closeChatSearch() {
  panel?.remove();
  panel = null;
}
