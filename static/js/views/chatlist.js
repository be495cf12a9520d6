// The chat list: one keyed row per conversation. A store change to one chat
// rebuilds that row only and moves it to its place; the rest stays untouched.
// Long lists draw only the rows near the visible part (fixed-height rows between
// two spacers), so an update costs the same with ten chats or ten thousand.
import { h, clear, icon, avatar } from "./dom.js";
import { t } from "../lib/i18n.js";
import { ctx } from "./context.js";
import { convTitle, previewOf, shortTime } from "./format.js";

const rows = new Map(); // conv id → row element currently in the list
const ROW_HEIGHT = 66;  // px, .list.windowed > .chat-row
const WINDOW_FROM = 150; // chats: longer lists are windowed
const BUFFER = 12;      // rows drawn beyond each edge of the visible part
const win = { on: false, top: null, bottom: null, frame: 0 };
const drawn = new WeakMap(); // row element → the signature it was drawn from

/** Everything a row shows, as one string: equal signatures draw equal rows. */
function signature(conv) {
  const store = ctx.store;
  const lm = conv.last_message;
  const pres = conv.type === "direct" && conv.peer ? store.presenceOf(conv.peer.id) : null;
  return [convTitle(conv), lm?.id, lm?.recalled, lm?.seq, previewOf(lm, conv), conv.unread_count || 0,
    conv.mention_count || 0, conv.muted, pres?.online, store.isOpen(conv),
    store.isOpen(conv) ? "" : store.drafts.get(conv.id) || "", conv.last_activity_at].join("\u0001");
}

function matches(conv) {
  const q = ctx.filter.trim().toLowerCase();
  return !q || convTitle(conv).toLowerCase().includes(q);
}

export function groupAvatar(conv) {
  if (conv.avatar_url) return avatar(conv.title || "G", conv.id, "", conv.avatar_url);
  const a = avatar(conv.title || "G", conv.id, "group");
  a.replaceChildren(icon("group", "icon"));
  return a;
}

function row(conv) {
  const store = ctx.store;
  const open = store.isOpen(conv);
  const title = convTitle(conv);
  const av = conv.type === "group" ? groupAvatar(conv) : avatar(title, conv.peer?.id || conv.id, "", conv.avatar_url || conv.peer?.avatar_url);
  const pres = conv.type === "direct" && conv.peer ? store.presenceOf(conv.peer.id) : null;
  const draft = !open && store.drafts.get(conv.id);
  const lm = conv.last_message;
  const preview = h("div", { class: "preview" },
    conv.mention_count ? h("span", { class: "at-me" }, t("atMe")) : null,
    draft ? h("span", { class: "at-me" }, t("draft")) : null,
    draft || previewOf(lm, conv));
  const unread = conv.unread_count || 0;
  const badge = unread ? h("span", { class: conv.muted ? "badge dot" : "badge" }, conv.muted ? "" : unread > 99 ? "99+" : String(unread)) : null;
  const when = lm || conv.last_activity_at ? shortTime(lm?.created_at || conv.last_activity_at) : "";
  const label = [title, unread ? t("unreadN", { n: unread }) : "", previewOf(lm, conv), when].filter(Boolean).join(", ");
  const li = h("li", { class: "chat-row", dataset: { conv: conv.id } },
    h("a", {
      class: `chat-item${open ? " active" : ""}`, href: `#/chats/${encodeURIComponent(conv.id)}`,
      dataset: { conv: conv.id, title }, "aria-label": label, "aria-current": open ? "page" : null,
    },
    h("div", { class: "avatar-wrap" }, av, badge, pres ? h("span", { class: `presence ${pres.online ? "on" : "off"}` }) : null),
    h("div", { class: "chat-item-body" },
      h("div", { class: "row" }, h("span", { class: "title" }, title), h("span", { class: "time" }, when)),
      h("div", { class: "row" }, preview, conv.muted ? h("span", { class: "muted-ico", title: t("muted") }, icon("bell", "icon tiny")) : null))));
  drawn.set(li, signature(conv));
  return li;
}

/** Redraw the whole list (route change, filter, sync). */
export function renderChatList(list) {
  rows.clear();
  const convs = ctx.store.sortedConvs().filter(matches);
  win.on = convs.length > WINDOW_FROM;
  list.classList.toggle("windowed", win.on);
  if (!convs.length) {
    clear(list, h("li", { class: "empty" }, t("noChats")));
    return;
  }
  if (win.on) {
    win.top = h("li", { class: "spacer", "aria-hidden": "true" });
    win.bottom = h("li", { class: "spacer", "aria-hidden": "true" });
    clear(list, win.top, win.bottom);
    if (!list.dataset.windowHooked) {
      list.dataset.windowHooked = "1";
      list.addEventListener("scroll", () => { if (win.on) scheduleWindow(list); }, { passive: true });
    }
    drawWindow(list, convs);
    return;
  }
  clear(list, convs.map((conv) => {
    const r = row(conv);
    rows.set(conv.id, r);
    return r;
  }));
}

function scheduleWindow(list) {
  if (win.frame) return;
  win.frame = requestAnimationFrame(() => { win.frame = 0; if (win.on) drawWindow(list); });
}

/** Draw the rows near the visible part; keep every row whose content did not change. */
function drawWindow(list, convs = ctx.store.sortedConvs().filter(matches)) {
  const first = Math.max(0, Math.floor(list.scrollTop / ROW_HEIGHT) - BUFFER);
  const count = Math.ceil((list.clientHeight || innerHeight) / ROW_HEIGHT) + 2 * BUFFER;
  const slice = convs.slice(first, first + count);
  win.top.style.height = `${first * ROW_HEIGHT}px`;
  win.bottom.style.height = `${(convs.length - first - slice.length) * ROW_HEIGHT}px`;
  const keep = new Set(slice.map((c) => c.id));
  for (const [id, r] of rows) if (!keep.has(id)) { r.remove(); rows.delete(id); }
  let cursor = win.top.nextSibling;
  for (const conv of slice) {
    let node = rows.get(conv.id);
    if (node && drawn.get(node) !== signature(conv)) {
      if (cursor === node) cursor = node.nextSibling;
      node.remove();
      node = null;
    }
    if (!node) { node = row(conv); rows.set(conv.id, node); }
    if (node === cursor) cursor = cursor.nextSibling;
    else list.insertBefore(node, cursor);
  }
}

/** One conversation changed: replace its row and move it where it sorts now. */
export function updateChatRow(list, conv) {
  const old = rows.get(conv.id);
  const visible = !conv.left && !conv.dissolved && matches(conv);
  if (!visible) {
    if (win.on) return scheduleWindow(list);
    if (old) { old.remove(); rows.delete(conv.id); }
    return;
  }
  if (!old && !rows.size) return renderChatList(list);
  if (win.on) return scheduleWindow(list);
  const sorted = ctx.store.sortedConvs();
  const i = sorted.indexOf(conv);
  if (old && drawn.get(old) === signature(conv)) {
    // Same content: keep the row, unless it has to move.
    let nextConv = null;
    for (let j = i + 1; j < sorted.length; j++) if (rows.has(sorted[j].id)) { nextConv = sorted[j]; break; }
    const want = nextConv ? rows.get(nextConv.id) : null;
    if (old.nextElementSibling === want) return;
  }
  const fresh = row(conv);
  rows.set(conv.id, fresh);
  // The row that should follow this one (the next visible conversation already shown).
  let next = null;
  for (let j = i + 1; j < sorted.length; j++) {
    const r = rows.get(sorted[j].id);
    if (r && r !== old) { next = r; break; }
  }
  if (old && (old.nextElementSibling === next || (!next && !old.nextElementSibling))) old.replaceWith(fresh);
  else {
    old?.remove();
    list.insertBefore(fresh, next);
  }
}

export function markActive(list) {
  for (const a of list.querySelectorAll(".chat-item")) {
    const open = a.dataset.conv === ctx.store.openId;
    a.classList.toggle("active", open);
    if (open) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
}
