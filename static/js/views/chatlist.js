// The chat list: one keyed row per conversation. A store change to one chat
// rebuilds that row only and moves it to its place; the rest stays untouched.
import { h, clear, icon, avatar } from "./dom.js";
import { t } from "../lib/i18n.js";
import { ctx } from "./context.js";
import { convTitle, previewOf, shortTime } from "./format.js";

const rows = new Map(); // conv id → row element currently in the list
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
  const a = avatar(conv.title || "G", conv.id, "group");
  a.replaceChildren(icon("group", "icon"));
  return a;
}

function row(conv) {
  const store = ctx.store;
  const open = store.isOpen(conv);
  const title = convTitle(conv);
  const av = conv.type === "group" ? groupAvatar(conv) : avatar(title, conv.peer?.id || conv.id);
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
  if (!convs.length) {
    clear(list, h("li", { class: "empty" }, t("noChats")));
    return;
  }
  clear(list, convs.map((conv) => {
    const r = row(conv);
    rows.set(conv.id, r);
    return r;
  }));
}

/** One conversation changed: replace its row and move it where it sorts now. */
export function updateChatRow(list, conv) {
  const old = rows.get(conv.id);
  const visible = !conv.left && !conv.dissolved && matches(conv);
  if (!visible) {
    if (old) { old.remove(); rows.delete(conv.id); }
    return;
  }
  if (!old && !rows.size) return renderChatList(list);
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
