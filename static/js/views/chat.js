// One open chat: header, the message list, the composer (with @mentions).
// A new message appends one row; a recalled or deleted one changes one row;
// only history pages and sync redraw the whole list.
import { h, clear, icon, avatar, toast } from "./dom.js";
import { t } from "../lib/i18n.js";
import { ctx, go } from "./context.js";
import { backButton } from "./ui.js";
import { displayNameOf, parseTime, sameDay, hhmm, dayLabel, systemText, previewOf, convTitle,
  presenceText, errorText } from "./format.js";
import * as media from "./media.js";
import { openChatSearch, closeChatSearch } from "./search.js";
import * as richer from "./richer.js";

let view = null; // {conv, scroller, list, header, input, replyBar, composer, extra, picker}

export function currentChat() { return view?.conv ?? null; }

export function closeChat() {
  closeChatSearch();
  view = null;
  closeMenu();
}

export function openChat(main, conv) {
  const store = ctx.store;
  const scroller = h("div", { class: "messages", tabindex: "0", role: "region", "aria-label": t("messagesOf", { name: convTitle(conv) }) });
  const list = h("ol", { class: "msg-list", "aria-label": t("messages") });
  scroller.append(list);
  const header = h("header", { class: "chat-header" });
  const replyBar = h("div", { class: "reply-bar", hidden: true });
  const input = h("textarea", {
    class: "composer-input", rows: "1", placeholder: t("typeMessage"), maxlength: String(ctx.config.maxText),
    "aria-label": t("typeMessage"),
  });
  input.value = store.drafts.get(conv.id) || "";
  const sendBtn = h("button", { class: "send-btn", type: "submit" }, t("send"));
  const tools = h("div", { class: "composer-tools", role: "toolbar", "aria-label": t("composerTools") });
  const picker = h("ul", { class: "mention-picker", role: "listbox", id: "mention-picker", "aria-label": t("mentionPicker"), hidden: true });
  const composer = h("form", { class: "composer" }, tools, picker, h("div", { class: "composer-row" }, input, sendBtn));
  const extra = h("div", { class: "composer-extra" });
  const pinned = richer.pinnedBar(conv);
  const selectBar = h("div", { class: "select-bar", hidden: true });
  view = { conv, scroller, list, header, input, replyBar, composer, extra, picker, mentions: new Map(), pickIndex: 0,
    pinned, selectBar, selected: null };
  clear(main, h("div", { class: "chat" }, header, pinned, scroller, replyBar, extra, selectBar, composer));

  const submit = () => {
    const text = input.value.trim();
    if (!text) return;
    const mentions = [...view.mentions.entries()].filter(([name]) => text.includes(`@${name}`)).map(([, id]) => id);
    const fields = { text, reply_to: ctx.replyTo };
    const all = mentions.includes("all");
    if (mentions.length) fields.mentions = mentions.filter((id) => id !== "all");
    if (all) fields.mention_all = true;
    store.send(conv, fields);
    input.value = "";
    view.mentions.clear();
    store.drafts.delete(conv.id);
    setReply(null);
    autosize(input);
    store.sendTyping(conv, "idle");
    scrollToBottom();
  };
  composer.addEventListener("submit", (e) => { e.preventDefault(); submit(); input.focus(); });
  input.addEventListener("keydown", (e) => {
    if (!picker.hidden && handlePickerKey(e)) return;
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
    if (e.key === "Escape") setReply(null);
  });
  input.addEventListener("input", () => {
    autosize(input);
    if (input.value) { store.drafts.set(conv.id, input.value); store.sendTyping(conv, "typing"); }
    else { store.drafts.delete(conv.id); store.sendTyping(conv, "idle"); }
    if (conv.type === "group" && ctx.config.groups) updatePicker();
  });
  input.addEventListener("blur", () => { store.sendTyping(conv, "idle"); setTimeout(() => hidePicker(), 150); });
  scroller.addEventListener("scroll", () => {
    if (scroller.scrollTop < 120) store.loadOlder(conv);
    if (atBottom(scroller)) { store.markRead(conv); if (conv.hasNewer) store.loadNewer(conv); }
  });
  if (ctx.config.media) media.mountTools(tools, extra, conv);
  const tool = (label, action, onclick, glyph) => h("button", { class: "tool", type: "button", title: label, "aria-label": label, dataset: { action }, onclick },
    h("span", { class: "tool-glyph", "aria-hidden": "true" }, glyph));
  tools.append(tool(t("shareContact"), "share-contact", () => richer.openShareContact(conv), "👤"),
    tool(t("sendLocation"), "send-location", () => richer.openLocation(conv), "📍"));
  renderChatHeader();
  renderMessages(true);
  autosize(input);
  if (!matchMedia("(pointer: coarse)").matches) input.focus();
  if (!conv.loaded) store.loadOlder(conv, true);
  else store.markRead(conv);
  // The picker reads the members from this fetch; someone who types "@" before it
  // answers gets the picker when it does, not only on the next key.
  if (conv.type === "group" && ctx.config.groups) {
    store.group(conv.id).then(() => {
      if (view?.conv === conv && document.activeElement === view.input) updatePicker();
    }).catch(() => {});
  }
}

function autosize(ta) {
  ta.style.height = "auto";
  ta.style.height = `${Math.min(ta.scrollHeight, 160)}px`;
}

function atBottom(s) { return s.scrollHeight - s.scrollTop - s.clientHeight < 40; }

function scrollToBottom() { if (view) view.scroller.scrollTop = view.scroller.scrollHeight; }

// ------------------------------------------------------------ @mention picker

function mentionQuery() {
  const { input } = view;
  const upto = input.value.slice(0, input.selectionStart);
  const m = upto.match(/(?:^|\s)@([^\s@]{0,32})$/);
  return m ? { query: m[1], start: upto.length - m[1].length - 1 } : null;
}

function candidates(query) {
  const store = ctx.store;
  const group = store.groups.get(view.conv.id);
  if (!group) return [];
  const q = query.toLowerCase();
  const out = [];
  const admin = group.my_role === "owner" || group.my_role === "admin";
  if (admin && (!q || "all".startsWith(q) || t("everyone").toLowerCase().includes(q))) out.push({ id: "all", name: t("mentionAll") });
  for (const m of group.members) {
    if (m.user.id === store.me.id) continue;
    const name = displayNameOf(m.user.id);
    if (!q || name.toLowerCase().includes(q) || m.user.username.toLowerCase().startsWith(q)) out.push({ id: m.user.id, name });
  }
  return out.slice(0, 8);
}

function updatePicker() {
  const mq = mentionQuery();
  const items = mq ? candidates(mq.query) : [];
  if (!items.length) return hidePicker();
  view.pickItems = items;
  view.pickIndex = Math.min(view.pickIndex, items.length - 1);
  drawPicker();
}

function drawPicker() {
  const { picker, input } = view;
  clear(picker, view.pickItems.map((it, i) => h("li", {
    role: "option", id: `mention-${i}`, class: `mention-opt${i === view.pickIndex ? " active" : ""}`,
    "aria-selected": i === view.pickIndex ? "true" : "false", dataset: { user: it.id },
    onmousedown: (e) => { e.preventDefault(); choose(it); },
  }, it.id === "all" ? icon("at", "icon small") : avatar(it.name, it.id, "tiny"), it.name)));
  picker.hidden = false;
  input.setAttribute("aria-controls", "mention-picker");
  input.setAttribute("aria-activedescendant", `mention-${view.pickIndex}`);
}

function hidePicker() {
  if (!view) return;
  view.picker.hidden = true;
  view.pickIndex = 0;
  view.input.removeAttribute("aria-activedescendant");
}

function handlePickerKey(e) {
  const n = view.pickItems?.length || 0;
  if (e.key === "ArrowDown") view.pickIndex = (view.pickIndex + 1) % n;
  else if (e.key === "ArrowUp") view.pickIndex = (view.pickIndex + n - 1) % n;
  else if (e.key === "Enter" || e.key === "Tab") { choose(view.pickItems[view.pickIndex]); }
  else if (e.key === "Escape") hidePicker();
  else return false;
  e.preventDefault();
  if (!view.picker.hidden) drawPicker();
  return true;
}

function choose(item) {
  const mq = mentionQuery();
  const { input } = view;
  if (!mq || !item) return hidePicker();
  const before = input.value.slice(0, mq.start);
  const after = input.value.slice(input.selectionStart);
  const token = `@${item.name} `;
  input.value = before + token + after;
  const pos = before.length + token.length;
  input.setSelectionRange(pos, pos);
  view.mentions.set(item.name, item.id);
  hidePicker();
  input.focus();
}

// ------------------------------------------------------------ header

export function renderChatHeader() {
  if (!view) return;
  const store = ctx.store;
  const conv = view.conv;
  let sub = "";
  const typers = [...(store.typing.get(conv.id) || new Map()).entries()];
  if (typers.length) {
    const [uid, { state }] = typers[0];
    sub = t(state === "recording" ? "recording" : "typing", { name: displayNameOf(uid) });
  } else if (conv.type === "direct" && conv.peer) {
    sub = presenceText(store.presenceOf(conv.peer.id));
  }
  const title = convTitle(conv);
  const count = conv.type === "group" && conv.member_count ? ` (${conv.member_count})` : "";
  const info = conv.type === "group" && ctx.config.groups
    ? h("button", { class: "icon-btn", type: "button", title: t("groupInfo"), "aria-label": t("groupInfo"), "data-action": "group-info", onclick: () => go(`#/chats/${encodeURIComponent(conv.id)}/info`) }, icon("more"))
    : null;
  const muteLabel = t(conv.muted ? "unmuteChat" : "muteChat");
  const mute = h("button", {
    class: `icon-btn${conv.muted ? " on" : ""}`, type: "button", title: muteLabel, "aria-label": muteLabel,
    "aria-pressed": conv.muted ? "true" : "false", "data-action": "toggle-mute",
    onclick: () => store.toggleMute(conv).catch((err) => toast(errorText(err))),
  }, icon("bell"));
  clear(view.header,
    backButton("#/chats"),
    h("div", { class: "chat-title" },
      h("h2", {}, h("span", { class: "chat-name" }, title), count ? h("span", { class: "member-count" }, count) : null),
      sub ? h("div", { class: `chat-sub${typers.length ? " typing" : ""}`, "aria-live": "polite" }, sub) : null),
    h("div", { class: "header-actions" }, h("button", {
      class: "icon-btn", type: "button", title: t("searchHistory"), "aria-label": t("searchHistory"),
      "data-action": "search-history", onclick: () => openChatSearch(conv.id),
    }, icon("search")), mute, info));
}

// ------------------------------------------------------------ messages

/** The marks of a direct chat: ✓✓ "Read" under my newest message the peer read; under my
 * newest otherwise ✓ "Delivered" once a device of theirs received it, else "Sent". */
function marks(conv) {
  const out = { readId: null, sentId: null, deliveredId: null };
  if (conv.type !== "direct") return out;
  const me = ctx.store.me.id;
  let last = null; let lastRead = null;
  for (const m of conv.msgs) {
    if (m.sender_id !== me || m.recalled) continue;
    last = m;
    if (m.seq <= (conv.peer_read_seq || 0)) lastRead = m;
  }
  out.readId = lastRead?.id ?? null;
  if (last && last.id !== out.readId && !conv.pending.length) {
    if (last.seq <= (conv.delivered_seq || 0)) out.deliveredId = last.id;
    else out.sentId = last.id;
  }
  return out;
}

function separators(prev, m) {
  const d = parseTime(m.created_at);
  if (!prev) return [h("li", { class: "day-sep" }, h("span", {}, dayLabel(d)))];
  const p = parseTime(prev.created_at);
  if (!sameDay(p, d)) return [h("li", { class: "day-sep" }, h("span", {}, dayLabel(d)))];
  if (d - p > 5 * 60e3) return [h("li", { class: "time-sep" }, hhmm(d))];
  return [];
}

function continues(prev, m) {
  return !!prev && prev.type !== "system" && !prev.recalled && prev.sender_id === m.sender_id
    && sameDay(parseTime(prev.created_at), parseTime(m.created_at))
    && parseTime(m.created_at) - parseTime(prev.created_at) <= 5 * 60e3;
}

function itemNode(conv, m, prev, mk) {
  const store = ctx.store;
  if (m.type === "system") return h("li", { class: "sys-line", dataset: { seq: m.seq, id: m.id } }, systemText(m));
  if (m.recalled) {
    const mine = m.sender_id === store.me.id;
    return h("li", { class: "sys-line recalled", dataset: { seq: m.seq, id: m.id } },
      mine ? t("recalledMine") : t("recalledTheirs", { name: displayNameOf(m.sender_id) }));
  }
  const mark = !m.id ? null : m.id === mk.readId ? "read" : m.id === mk.deliveredId ? "delivered" : m.id === mk.sentId ? "sent" : null;
  return messageRow(conv, m, continues(prev, m), mark);
}

function renderMessages(forceBottom = false) {
  const { conv, scroller, list } = view;
  const wasAtBottom = forceBottom || atBottom(scroller);
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const nodes = [];
  if (conv.loaded && !conv.hasOlder) nodes.push(h("li", { class: "sys-line faint" }, t("beginning")));
  else if (conv.hasOlder && conv.msgs.length) nodes.push(h("li", { class: "sys-line faint loading" }, t("loadingOlder")));
  const mk = marks(conv);
  let prev = null;
  for (const m of [...conv.msgs, ...conv.pending]) {
    nodes.push(...separators(prev, m), itemNode(conv, m, prev, mk));
    prev = m;
  }
  clear(list, nodes);
  view.lastRendered = conv.msgs[conv.msgs.length - 1] || null;
  if (wasAtBottom && !conv.hasNewer) scroller.scrollTop = scroller.scrollHeight;
  else scroller.scrollTop = scroller.scrollHeight - fromBottom;
  showFound(conv);
}

/** Opened at a found message: bring it into view, highlighted for a moment. */
function showFound(conv) {
  const node = conv.focusSeq ? rowOf("seq", conv.focusSeq) : null;
  if (node) {
    conv.foundSeq = conv.focusSeq;
    conv.foundUntil = Date.now() + 4000;
    conv.focusSeq = null;
    node.scrollIntoView({ block: "center" });
    setTimeout(() => { if (view?.conv === conv) rowOf("seq", conv.foundSeq)?.classList.remove("found"); }, 4000);
  }
  // Redraws (a page loading) keep the highlight while it lasts.
  if (conv.foundSeq && Date.now() < conv.foundUntil) rowOf("seq", conv.foundSeq)?.classList.add("found");
}

function rowOf(attr, value) {
  if (!value) return null;
  return view.list.querySelector(`[data-${attr}="${CSS.escape(String(value))}"]`);
}

function firstPendingNode() { return view.list.querySelector(".msg.local"); }

/** A message arrived (live or acked): replace its local copy, or append one row. */
export function onMessageAdded(conv, m) {
  if (!view || view.conv !== conv) return;
  const { scroller, list } = view;
  const wasAtBottom = atBottom(scroller) || m.sender_id === ctx.store.me.id;
  const local = rowOf("cmid", m.client_msg_id);
  const last = view.lastRendered;
  const idx = conv.msgs.indexOf(m);
  const prev = idx > 0 ? conv.msgs[idx - 1] : null;
  if (local && local.classList.contains("local") && prev === last) {
    local.replaceWith(itemNode(conv, m, prev, marks(conv)));
    view.lastRendered = m;
  } else if (idx === conv.msgs.length - 1 && prev === last) {
    local?.remove();
    const before = firstPendingNode();
    for (const n of [...separators(prev, m), itemNode(conv, m, prev, marks(conv))]) list.insertBefore(n, before);
    view.lastRendered = m;
  } else {
    return renderMessages();
  }
  updateMarks();
  if (wasAtBottom) scroller.scrollTop = scroller.scrollHeight;
}

export function onMessageUpdated(conv, m) {
  if (!view || view.conv !== conv) return;
  const node = rowOf("id", m.id);
  if (!node) return;
  const idx = conv.msgs.indexOf(m);
  node.replaceWith(itemNode(conv, m, idx > 0 ? conv.msgs[idx - 1] : null, marks(conv)));
}

export function onMessageRemoved(conv, id) {
  if (!view || view.conv !== conv) return;
  rowOf("id", id)?.remove();
  view.lastRendered = conv.msgs[conv.msgs.length - 1] || null;
}

export function onMessages(conv) {
  if (view && view.conv === conv) renderMessages();
}

/** A local message changed state: draw, redraw or drop its row. */
export function onPending(conv, p) {
  if (!view || view.conv !== conv) return;
  const node = rowOf("cmid", p.client_msg_id);
  if (p.status === "sent" || p.status === "dropped") {
    if (node?.classList.contains("local")) node.remove();
    updateMarks();
    return;
  }
  const fresh = messageRow(conv, p, false, null);
  if (node) node.replaceWith(fresh);
  else { view.list.append(fresh); scrollToBottom(); }
}

export function updateMarks() {
  if (!view) return;
  const conv = view.conv;
  const mk = marks(conv);
  for (const el of view.list.querySelectorAll(".read-mark:not(.failed-text)")) el.remove();
  for (const [id, mark] of [[mk.readId, "read"], [mk.deliveredId, "delivered"], [mk.sentId, "sent"]]) {
    const body = rowOf("id", id)?.querySelector(".msg-body");
    if (body) body.append(h("div", { class: `read-mark ${mark}` }, t(mark)));
  }
}

function messageRow(conv, m, continued, mark) {
  const store = ctx.store;
  const mine = m.sender_id === store.me.id;
  const name = displayNameOf(m.sender_id);
  const bubble = h("div", { class: `bubble type-${m.type}` });
  if (m.reply_preview) {
    const rp = m.reply_preview;
    bubble.append(rp.unavailable
      ? h("div", { class: "quote" }, t("unavailablePreview"))
      : h("div", { class: "quote" },
        h("span", { class: "quote-name" }, displayNameOf(rp.sender_id)), ": ",
        rp.recalled ? t("recalledPreview") : previewOf(rp)));
  }
  if (m.type === "text") bubble.append(h("div", { class: "text" }, m.text));
  else if (!richer.renderBody(bubble, m)) media.renderBody(bubble, m, conv);
  if (m.edited_at) bubble.append(h("span", { class: "edited-mark" }, t("edited")));
  let status = null;
  if (m.local) {
    status = m.status === "failed"
      ? h("button", { class: "status failed", type: "button", title: t("retry"), "aria-label": t("retry"), dataset: { action: "retry" }, onclick: () => store.retry(conv, m) }, icon("alert", "icon small"))
      : h("span", { class: "status pending", title: t("sending"), role: "img", "aria-label": t("sending") }, icon("clock", "icon small spin"));
  }
  const row = h("li", {
    class: `msg ${mine ? "mine" : "theirs"}${continued ? " continued" : ""}${m.local ? ` local ${m.status}` : ""}`,
    dataset: { seq: m.seq ?? "", id: m.id ?? "", cmid: m.client_msg_id ?? "" },
  },
  avatar(name, m.sender_id, "small", store.avatarOf(m.sender_id)),
  h("div", { class: "msg-body" },
    conv.type === "group" && !mine && !continued ? h("div", { class: "sender" }, name) : null,
    h("div", { class: "bubble-row" }, status, bubble),
    m.local ? null : richer.reactionChips(conv, m),
    mark ? h("div", { class: `read-mark ${mark}` }, t(mark)) : null,
    m.local && m.status === "failed" ? h("div", { class: "read-mark failed-text" }, t("failed"), " · ",
      h("button", { class: "link", type: "button", onclick: () => store.retry(conv, m) }, t("retry"))) : null));
  if (!m.local) attachMenu(bubble, conv, m);
  if (view?.selected && !m.local && m.id) {
    const box = h("input", { type: "checkbox", class: "select-box", "aria-label": t("select"), checked: view.selected.has(m.id) });
    box.addEventListener("change", () => toggleSelected(m, box.checked));
    row.prepend(box);
    row.classList.add("selectable");
  }
  return row;
}

// ------------------------------------------------------------ pins and multi-select

export function onPins(conv) {
  if (view && view.conv === conv) richer.refreshPinned(conv, view.pinned);
}

function startSelect(m) {
  view.selected = new Set(m ? [m.id] : []);
  renderSelectBar();
  renderMessages();
}

function stopSelect() {
  if (!view) return;
  view.selected = null;
  view.selectBar.hidden = true;
  renderMessages();
}

function toggleSelected(m, on) {
  if (on && view.selected.size >= 100) return;
  if (on) view.selected.add(m.id); else view.selected.delete(m.id);
  renderSelectBar();
}

function renderSelectBar() {
  const { selectBar, conv } = view;
  selectBar.hidden = false;
  const chosen = () => conv.msgs.filter((x) => view.selected.has(x.id));
  clear(selectBar,
    h("span", { class: "select-count" }, t("selectedCount", { n: view.selected.size })),
    h("button", { class: "primary", type: "button", dataset: { action: "forward-selected" }, disabled: !view.selected.size,
      onclick: () => richer.openForward(chosen(), stopSelect) }, t("forward")),
    h("button", { class: "link", type: "button", onclick: stopSelect }, t("cancel")));
}

// ------------------------------------------------------------ reply

export function setReply(msg) {
  ctx.replyTo = msg ? { id: msg.id, seq: msg.seq, sender_id: msg.sender_id, type: msg.type, text: (msg.text || "").slice(0, 200), recalled: false } : null;
  const bar = view?.replyBar;
  if (!bar) return;
  bar.hidden = !msg;
  if (msg) {
    clear(bar,
      h("div", { class: "reply-bar-text" }, h("strong", {}, t("replyingTo", { name: displayNameOf(msg.sender_id) })), " ", previewOf(msg)),
      h("button", { class: "icon-btn", type: "button", title: t("cancel"), "aria-label": t("cancel"), onclick: () => setReply(null) }, icon("close")));
    view.input.focus();
  }
}

// ------------------------------------------------------------ message menu

function attachMenu(target, conv, m) {
  // Keyboard: the bubble is focusable and opens its menu with Enter, Space or the context-menu key.
  target.tabIndex = 0;
  target.setAttribute("aria-haspopup", "menu");
  target.setAttribute("aria-label", `${displayNameOf(m.sender_id)}: ${previewOf(m)}`);
  target.addEventListener("contextmenu", (e) => { e.preventDefault(); showMenu(e.clientX, e.clientY, conv, m, target); });
  target.addEventListener("keydown", (e) => {
    if (e.target !== target) return;
    if (e.key === "Enter" || e.key === " " || e.key === "ContextMenu" || (e.shiftKey && e.key === "F10")) {
      e.preventDefault();
      const r = target.getBoundingClientRect();
      showMenu(r.left, r.bottom, conv, m, target);
    }
  });
  let timer = null;
  target.addEventListener("touchstart", (e) => {
    const touch = e.touches[0];
    timer = setTimeout(() => showMenu(touch.clientX, touch.clientY, conv, m, target), 500);
  }, { passive: true });
  for (const ev of ["touchend", "touchmove", "touchcancel"]) target.addEventListener(ev, () => clearTimeout(timer));
}

let menuReturn = null;

function closeMenu() {
  const menu = document.querySelector(".ctx-menu");
  if (!menu) return;
  menu.remove();
  menuReturn?.focus?.();
  menuReturn = null;
}

function showMenu(x, y, conv, m, from) {
  closeMenu();
  const store = ctx.store;
  const items = [];
  if (m.type === "text") {
    items.push([t("copy"), "copy", () => navigator.clipboard?.writeText(m.text).then(() => toast(t("copied")), () => {})]);
  }
  items.push([t("reply"), "reply", () => setReply(m)]);
  items.push([t("forward"), "forward", () => richer.openForward([m])]);
  items.push([t("select"), "select", () => startSelect(m)]);
  if (richer.canEdit(m)) items.push([t("edit"), "edit", () => richer.startEdit(conv, m, from)]);
  items.push([m.pinned ? t("unpin") : t("pin"), m.pinned ? "unpin" : "pin", async () => {
    const ack = await store.pin(conv, m, !m.pinned);
    if (!ack.ok) toast(errorText(ack.error));
  }]);
  const age = (Date.now() - parseTime(m.created_at)) / 1000;
  if (m.sender_id === store.me.id && age < ctx.config.recallWindow) {
    items.push([t("recall"), "recall", async () => {
      const ack = await store.recall(conv, m);
      if (!ack.ok) toast(errorText(ack.error));
    }]);
  }
  items.push([t("deleteForMe"), "delete", async () => {
    const ack = await store.deleteForMe(conv, m);
    if (!ack.ok) toast(errorText(ack.error));
  }]);
  const buttons = items.map(([label, action, fn]) =>
    h("button", { role: "menuitem", type: "button", tabindex: "-1", dataset: { action }, onclick: () => { closeMenu(); fn(); } }, label));
  const menu = h("div", { class: "ctx-menu", role: "menu", "aria-label": t("messageActions") },
    richer.reactionBar(conv, m, closeMenu), buttons);
  menu.addEventListener("keydown", (e) => {
    const i = buttons.indexOf(document.activeElement);
    if (e.key === "ArrowDown") { e.preventDefault(); buttons[(i + 1) % buttons.length].focus(); }
    if (e.key === "ArrowUp") { e.preventDefault(); buttons[(i + buttons.length - 1) % buttons.length].focus(); }
    if (e.key === "Tab") { e.preventDefault(); closeMenu(); }
  });
  document.body.append(menu);
  menuReturn = from;
  const r = menu.getBoundingClientRect();
  menu.style.left = `${Math.max(8, Math.min(x, innerWidth - r.width - 8))}px`;
  menu.style.top = `${Math.max(8, Math.min(y, innerHeight - r.height - 8))}px`;
  buttons[0].focus();
}

document.addEventListener("click", (e) => { if (!e.target.closest(".ctx-menu")) closeMenu(); });
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeMenu(); });
