// The client's state and everything that changes it: the /chat socket's events,
// sync, sending with retries, read state. No DOM: views subscribe to the topics
// below and redraw only what a topic names.
//
// Topics (listeners get the arguments shown):
//   conv (conv)              one conversation's row changed (title, preview, badge, order)
//   convs ()                 many rows changed: redraw the list
//   msg:add (conv, msg)      one message arrived (live or just acked)
//   msg:update (conv, msg)   one message changed in place (recalled, edited, reactions, pin)
//   pins (conv)              a chat's pinned messages changed
//   msg:remove (conv, id)    one message is gone (deleted for me)
//   msgs (conv)              a chat's timeline changed in bulk (history page, sync)
//   pending (conv, p)        a local message changed state (sending, failed, acked)
//   badges ()                unread totals or request count changed
//   contacts ()              contacts, requests or blocks changed
//   presence (userId)        someone went online/offline
//   typing (convId)          typing indicators of a chat changed
//   user (userId)            a user's public profile became known
//   connection ()            connected / disconnected
//   notify ({title, body, tag})  something worth a system notification
//   error (err)              an action failed in the background (e.g. a send)
//   signedOut ()             the session is gone
//   export (export)          my data export is ready (export:ready)
import { Emitter, uuid } from "../lib/util.js";

// Send refusals that mean "not now" (docs/protocol.md): retried by the store itself.
const RETRY_LATER = new Set(["busy", "unavailable", "rate_limited"]);
const MAX_ATTEMPTS = 5;
// Delivered receipts go out at most once per conversation per this many ms: each
// costs the server about half a message, so they are batched, not sent per message.
const DELIVERED_BATCH_MS = 2000;
// A seq gap in the live feed waits this long for the missing messages before a
// sync: one sent through another server process can arrive just after a later one.
// Half a second, as Telegram's clients wait for a pts gap to fill.
const GAP_GRACE_MS = 500;
// Connection refusals that mean "not now" (docs/protocol.md, `connect_error`):
// socket.io retries a dropped connection by itself, never a refused one, so
// the store does, waiting twice as long each time, up to the cap.
const REFUSED_FOR_NOW = new Set(["unavailable", "internal", "rate_limited"]);
const REFUSAL_RETRY_MS = 1000;
const REFUSAL_RETRY_MAX_MS = 30000;

export class Store extends Emitter {
  /**
   * @param {object} deps
   * @param {(method: string, path: string, body?: any) => Promise<any>} deps.api REST client
   * @param {() => object} [deps.createSocket] returns a socket.io-like client
   * @param {number} [deps.gapGraceMs] how long a seq gap waits before a sync
   * @param {number} [deps.refusalRetryMs] the first wait after a "not now" refusal
   */
  constructor({ api, createSocket, gapGraceMs = GAP_GRACE_MS,
    refusalRetryMs = REFUSAL_RETRY_MS } = {}) {
    super();
    this.api = api;
    this.createSocket = createSocket;
    this.gapGraceMs = gapGraceMs;
    this.refusalRetryMs = refusalRetryMs;
    this.gapTimers = new Map();    // conv id → timer of a gap waiting to fill
    this.me = null;
    this.convs = new Map();        // id → conversation (summary + msgs + pending)
    this.contacts = new Map();     // user id → {user, remark, presence}
    this.incoming = [];
    this.outgoing = [];
    this.blocks = new Set();
    this.users = new Map();        // user id → public user
    this.presence = new Map();     // user id → {online, last_seen}
    this.typing = new Map();       // conv id → Map(user id → {state, timer})
    this.groups = new Map();       // conv id → group details (GET /groups/{id})
    this.drafts = new Map();
    this.socket = null;
    this.connected = false;
    this.everConnected = false;
    this.refusals = 0;             // connection refusals in a row ("not now" ones)
    this.refusalTimer = null;
    this.openId = null;            // the chat on screen (set by the views)
    this.visible = true;           // the page is visible (set by the views)
    this.syncing = null;
    this.listCursor = null; // the chat list pages still to load after the first
    this.syncAgain = null;
    this.pendingUsers = new Set();
    this.typingSent = { conv: null, state: "idle", at: 0 };
    this.sorted = null;            // cached sortedConvs()
    this.undelivered = new Map();  // conv id → highest seq received, not yet acked
    this.deliveredTimer = null;
  }

  // ------------------------------------------------------------ people

  /** A name for a user id, or null while unknown (a fetch is started). */
  nameOf(userId) {
    if (!userId) return null;
    if (this.me && userId === this.me.id) return this.me.display_name;
    const c = this.contacts.get(userId);
    if (c) return c.remark || c.user.display_name;
    const u = this.users.get(userId);
    if (u) return u.display_name;
    this.fetchUser(userId);
    return null;
  }

  /** The avatar URL of a user already known here (no fetch: nameOf starts those). */
  avatarOf(userId) {
    if (this.me && userId === this.me.id) return this.me.avatar_url || null;
    return this.contacts.get(userId)?.user.avatar_url || this.users.get(userId)?.avatar_url || null;
  }

  async fetchUser(id) {
    if (this.pendingUsers.has(id) || !this.api) return;
    this.pendingUsers.add(id);
    try {
      const { user } = await this.api("GET", `/users/${encodeURIComponent(id)}`);
      this.users.set(id, user);
      this.emit("user", id);
    } catch { /* unknown user: the views keep their placeholder */ }
  }

  rememberUsers(users) {
    for (const u of users) if (u?.id) this.users.set(u.id, u);
  }

  presenceOf(userId) {
    return this.presence.get(userId) ?? this.contacts.get(userId)?.presence ?? null;
  }

  // ------------------------------------------------------------ conversations

  makeConv(summary) {
    const conv = {
      ...summary,
      msgs: [], pending: [], loaded: false, hasOlder: true, loadingOlder: false,
      // Every seq up to `held` is here or was seen; `ahead` are seqs received past a gap.
      held: summary.last_seq || 0,
      ahead: new Set(),
      peer_read_seq: summary.peer_read_seq ?? 0,
      delivered_seq: summary.delivered_seq ?? 0,
    };
    delete conv.messages;
    delete conv.has_more;
    if (summary.peer) this.rememberUsers([summary.peer]);
    this.convs.set(conv.id, conv);
    this.sorted = null;
    return conv;
  }

  /** Merge a conversation summary (REST, sync, conversation:updated). */
  upsertSummary(summary, { quiet = false } = {}) {
    let conv = this.convs.get(summary.id);
    if (!conv) conv = this.makeConv(summary);
    else {
      const { messages, has_more, ...rest } = summary;
      for (const [k, v] of Object.entries(rest)) {
        if (k === "last_seq") conv.last_seq = Math.max(conv.last_seq || 0, v);
        else if (k === "last_message") {
          if (v && (!conv.last_message || v.seq >= conv.last_message.seq)) conv.last_message = v;
        } else if (k === "peer_read_seq") conv.peer_read_seq = Math.max(conv.peer_read_seq || 0, v || 0);
        else if (k === "delivered_seq") conv.delivered_seq = Math.max(conv.delivered_seq || 0, v || 0);
        else if (k === "change_seq") { /* only sync moves the change cursor */ }
        else conv[k] = v;
      }
      if (summary.peer) this.rememberUsers([summary.peer]);
      this.sorted = null;
    }
    if (!quiet) { this.emit("conv", conv); this.emit("badges"); }
    return conv;
  }

  /** Visible chats, newest activity first (cached until something changes). */
  sortedConvs() {
    if (!this.sorted) {
      const key = (c) => c.last_activity_at || c.created_at || "";
      this.sorted = [...this.convs.values()]
        .filter((c) => !c.left && !c.dissolved)
        .sort((a, b) => { const x = key(a); const y = key(b); return x < y ? 1 : x > y ? -1 : 0; });
    }
    return this.sorted;
  }

  unreadTotal() {
    let n = 0;
    for (const c of this.sortedConvs()) if (!c.muted) n += c.unread_count || 0;
    return n;
  }

  isOpen(conv) { return !!conv && this.openId === conv.id; }

  setOpen(id) {
    this.openId = id || null;
    const conv = id ? this.convs.get(id) : null;
    if (conv) this.markRead(conv);
  }

  setVisible(visible) {
    const changed = visible !== this.visible;
    this.visible = visible;
    // The server pushes to phones and closed tabs only while no page of ours is in front.
    if (changed) this.reportState();
    if (visible && this.openId) this.markRead(this.convs.get(this.openId));
  }

  reportState() {
    if (this.socket?.connected) this.socket.emit("client:state", { state: this.visible ? "foreground" : "background" });
  }

  countsAsUnread(m) {
    return !!m.sender_id && m.sender_id !== this.me?.id && m.type !== "system" && !m.recalled;
  }

  /** Merge server messages into a conversation; returns true if a seq gap appeared.
   * History pages (`live: false`) leave the live feed's bookkeeping (`held`) alone. */
  addMessages(conv, messages, { live = true } = {}) {
    let gap = false;
    for (const m of messages) {
      const last = conv.msgs[conv.msgs.length - 1];
      // Opened at a found message: newer ones come by loadNewer, in order.
      if (!last || last.seq < m.seq) { if (!conv.hasNewer) conv.msgs.push(m); }
      else {
        const i = conv.msgs.findIndex((x) => x.seq >= m.seq);
        if (conv.msgs[i].seq === m.seq) conv.msgs[i] = m;
        else conv.msgs.splice(i, 0, m);
      }
      if (m.sender_id === this.me?.id && m.client_msg_id) {
        conv.pending = conv.pending.filter((p) => p.client_msg_id !== m.client_msg_id);
      }
      if (!live) { /* a page of history */ }
      else if (m.seq === conv.held + 1) this.raiseHeld(conv, m.seq);
      else if (m.seq > conv.held + 1) { conv.ahead.add(m.seq); gap = true; }
      if (m.seq >= (conv.last_seq || 0)) {
        conv.last_seq = m.seq;
        conv.last_message = m;
        if (!conv.last_activity_at || m.created_at > conv.last_activity_at) {
          conv.last_activity_at = m.created_at;
          this.sorted = null;
        }
      }
    }
    return gap;
  }

  /** Everything up to `seq` is held: move `held` there, and on over seqs already ahead. */
  raiseHeld(conv, seq) {
    if (seq > conv.held) conv.held = seq;
    while (conv.ahead.delete(conv.held + 1)) conv.held += 1;
    for (const s of conv.ahead) if (s <= conv.held) conv.ahead.delete(s);
  }

  /** A message this tab has not had yet, live or from sync (not one seen before a gap). */
  isNew(conv, seq) {
    return seq > conv.held && !conv.ahead.has(seq);
  }

  /** A live message left a seq gap: sync that chat unless the gap fills within the grace. */
  awaitGap(conv) {
    if (this.gapTimers.has(conv.id)) return;
    this.gapTimers.set(conv.id, setTimeout(() => {
      this.gapTimers.delete(conv.id);
      if (conv.ahead.size) this.sync([conv.id]);
    }, this.gapGraceMs));
  }

  // ------------------------------------------------------------ socket

  /** Connect again after a refusal for a passing reason; `socket.active` is
   * false once the server refused (true while socket.io retries by itself). */
  retryRefused(socket, reason) {
    if (socket.active || !REFUSED_FOR_NOW.has(reason) || this.refusalTimer) return;
    const wait = Math.min(REFUSAL_RETRY_MAX_MS, this.refusalRetryMs * 2 ** this.refusals++);
    this.refusalTimer = setTimeout(() => {
      this.refusalTimer = null;
      if (this.socket === socket && !socket.connected) socket.connect();
    }, wait * (0.5 + Math.random() / 2));
  }

  emitAck(event, data, timeout = 10000) {
    if (!this.socket?.connected) {
      return Promise.resolve({ ok: false, error: { code: "offline" } });
    }
    return this.socket.timeout(timeout).emitWithAck(event, data)
      .catch(() => ({ ok: false, error: { code: "timeout" } }));
  }

  /** Connect the /chat socket (createSocket) or adopt a given one. */
  connect(socket = this.createSocket()) {
    this.socket = socket;
    socket.on("connect", () => {
      this.connected = true;
      this.everConnected = true;
      this.refusals = 0;
      if (!this.visible) this.reportState(); // a new socket counts as foreground until told
      this.emit("connection");
      this.sync();
      this.retryFailed();
      if (this.undelivered.size && !this.deliveredTimer) {
        this.deliveredTimer = setTimeout(() => this.flushDelivered(), DELIVERED_BATCH_MS);
      }
    });
    // The server's live feed had a gap (e.g. Redis blinked): fill it from sync.
    socket.on("resync", () => this.sync());
    socket.on("security:new_session", (e) => this.emit("security", e));
    socket.on("export:ready", ({ export: e }) => this.emit("export", e));
    socket.on("disconnect", (reason) => {
      this.connected = false;
      this.emit("connection", reason);
    });
    socket.on("connect_error", (err) => {
      this.connected = false;
      this.emit("connection", err?.message);
      this.retryRefused(socket, err?.message);
    });
    socket.on("message:new", (m) => this.onMessageNew(m));
    socket.on("message:recalled", (e) => this.onRecalled(e));
    socket.on("message:deleted", (e) => this.onDeleted(e));
    socket.on("conversation:read", (e) => this.onRead(e));
    socket.on("conversation:delivered", (e) => this.onDelivered(e));
    socket.on("message:reactions", (e) => this.patchMessage(e, (m) => {
      if (Object.keys(e.counts).length) m.reactions = e.counts; else delete m.reactions;
      m.my_reactions = e.mine;
    }));
    socket.on("message:edited", (e) => this.patchMessage(e, (m) => {
      m.text = e.text; m.edited_at = e.edited_at;
      if ("mentions" in e) { m.mentions = e.mentions; m.mention_all = e.mention_all; }
    }));
    socket.on("message:pinned", (e) => this.onPinned(e, true));
    socket.on("message:unpinned", (e) => this.onPinned(e, false));
    socket.on("typing", ({ conversation_id, user_id, state }) => this.setTyping(conversation_id, user_id, state));
    socket.on("conversation:updated", (summary) => {
      this.groups.delete(summary.id);
      const before = this.convs.get(summary.id);
      const wasGone = before && (before.left || before.dissolved);
      const conv = this.upsertSummary(summary);
      if (wasGone !== (conv.left || conv.dissolved)) this.emit("convs");
      this.emit("group", conv.id);
    });
    socket.on("contact:request", ({ request }) => {
      this.incoming = [request, ...this.incoming.filter((r) => r.id !== request.id)];
      this.emit("contacts"); this.emit("badges");
      this.emit("notify", { kind: "request", request });
    });
    socket.on("contact:accepted", ({ contact, conversation }) => {
      this.contacts.set(contact.user.id, contact);
      this.outgoing = this.outgoing.filter((r) => r.to_user.id !== contact.user.id);
      if (conversation) this.upsertSummary(conversation);
      this.emit("contacts");
    });
    socket.on("contact:updated", ({ contact }) => {
      this.contacts.set(contact.user.id, contact);
      this.emit("contacts"); this.emit("user", contact.user.id);
    });
    socket.on("contact:removed", ({ user_id }) => {
      this.contacts.delete(user_id);
      this.emit("contacts"); this.emit("user", user_id);
    });
    socket.on("presence", ({ user_id, online, last_seen }) => {
      this.presence.set(user_id, { online, last_seen });
      const c = this.contacts.get(user_id);
      if (c) c.presence = { online, last_seen };
      this.emit("presence", user_id);
    });
    return socket;
  }

  onMessageNew(m) {
    const conv = this.convs.get(m.conversation_id);
    if (!conv) {
      // A chat we did not know yet (new group, new contact): sync fetches its summary.
      this.sync();
      return;
    }
    // A late message (its seq below one already here) is as new as any other.
    const fresh = !conv.msgs.some((x) => x.seq === m.seq) && this.isNew(conv, m.seq);
    const hadPending = conv.pending.some((p) => p.client_msg_id && p.client_msg_id === m.client_msg_id
      && m.sender_id === this.me?.id);
    const gap = this.addMessages(conv, [m]);
    // In the chat on screen a message is read as it arrives: no badge flickers up.
    const readNow = this.isOpen(conv) && this.visible && this.connected;
    if (fresh && !readNow && this.countsAsUnread(m) && m.seq > (conv.read_seq || 0)) {
      conv.unread_count = (conv.unread_count || 0) + 1;
      if (m.mention_all || (m.mentions || []).includes(this.me.id)) conv.mention_count = (conv.mention_count || 0) + 1;
    }
    if (m.sender_id && m.sender_id !== this.me?.id) this.setTyping(conv.id, m.sender_id, "idle");
    if (gap) this.awaitGap(conv);
    if (fresh && this.countsAsUnread(m) && (!this.visible || !this.isOpen(conv)) && !conv.muted) {
      this.emit("notify", { kind: "message", conv, msg: m });
    }
    this.emit("conv", conv);
    this.emit("badges");
    if (fresh || hadPending) this.emit("msg:add", conv, m);
    if (this.isOpen(conv)) this.markRead(conv);
    if (m.sender_id !== this.me?.id) this.noteDelivered(conv, m.seq);
  }

  /** Apply a live change to a message this tab holds (sync is the source of truth). */
  patchMessage({ conversation_id, message_id }, change) {
    const conv = this.convs.get(conversation_id);
    const m = conv?.msgs.find((x) => x.id === message_id);
    if (!m) return;
    change(m);
    if (conv.last_message?.id === m.id) { conv.last_message = m; this.emit("conv", conv); }
    this.emit("msg:update", conv, m);
  }

  /** Replace held messages with their current state (sync `changes`). */
  applyChanges(conv, changed) {
    for (const fresh of changed) {
      const i = conv.msgs.findIndex((x) => x.id === fresh.id);
      if (i < 0) continue;
      const old = conv.msgs[i];
      if (fresh.recalled && !old.recalled) { this.applyRecall(conv, old); }
      for (const k of Object.keys(old)) if (!(k in fresh)) delete old[k];
      Object.assign(old, fresh);
      this.emit("msg:update", conv, old);
    }
    if (changed.length) { delete conv.pins; this.emit("pins", conv); }
  }

  onPinned(e, on) {
    this.patchMessage(e, (m) => { if (on) m.pinned = e.pinned; else delete m.pinned; });
    const conv = this.convs.get(e.conversation_id);
    if (conv) { delete conv.pins; this.emit("pins", conv); }
  }

  onDelivered({ conversation_id, user_id, delivered_seq }) {
    const conv = this.convs.get(conversation_id);
    if (!conv || user_id === this.me?.id) return;
    if (delivered_seq > (conv.delivered_seq || 0)) {
      conv.delivered_seq = delivered_seq;
      this.emit("marks", conv);
    }
  }

  /** Received up to `seq`: told to the server batched (one event per chat per second). */
  noteDelivered(conv, seq) {
    if (!seq || seq <= (this.undelivered.get(conv.id) || 0)) return;
    this.undelivered.set(conv.id, seq);
    if (this.deliveredTimer) return;
    this.deliveredTimer = setTimeout(() => this.flushDelivered(), DELIVERED_BATCH_MS);
  }

  flushDelivered() {
    this.deliveredTimer = null;
    if (!this.socket?.connected) return; // kept: sent once connected again
    const batch = [...this.undelivered.entries()];
    this.undelivered.clear();
    for (const [id, upTo] of batch) this.emitAck("message:delivered", { conversation_id: id, up_to_seq: upTo });
  }

  onRecalled({ conversation_id, message_id }) {
    const conv = this.convs.get(conversation_id);
    if (!conv) return;
    const m = conv.msgs.find((x) => x.id === message_id);
    if (m) this.applyRecall(conv, m);
    else if (conv.last_message?.id === message_id) {
      conv.last_message = { ...conv.last_message, recalled: true, text: "" };
      this.emit("conv", conv);
    }
  }

  applyRecall(conv, m) {
    const wasUnread = this.countsAsUnread(m) && m.seq > (conv.read_seq || 0);
    m.recalled = true; m.text = ""; delete m.media;
    if (conv.last_message?.id === m.id) conv.last_message = { ...conv.last_message, recalled: true, text: "" };
    for (const x of conv.msgs) {
      if (x.reply_preview?.id === m.id) {
        x.reply_preview = { ...x.reply_preview, recalled: true, text: "" };
        this.emit("msg:update", conv, x);
      }
    }
    if (wasUnread && conv.unread_count > 0) conv.unread_count -= 1;
    this.emit("msg:update", conv, m);
    this.emit("conv", conv);
    this.emit("badges");
  }

  onDeleted({ conversation_id, message_id }) {
    const conv = this.convs.get(conversation_id);
    if (!conv) return;
    const before = conv.msgs.length;
    conv.msgs = conv.msgs.filter((m) => m.id !== message_id);
    if (conv.msgs.length !== before) this.emit("msg:remove", conv, message_id);
  }

  onRead({ conversation_id, user_id, read_seq }) {
    const conv = this.convs.get(conversation_id);
    if (!conv) return;
    if (user_id === this.me.id) {
      if (read_seq > (conv.read_seq || 0)) {
        conv.read_seq = read_seq;
        conv.unread_count = read_seq >= conv.last_seq ? 0
          : conv.msgs.filter((m) => m.seq > read_seq && this.countsAsUnread(m)).length;
        if (read_seq >= conv.last_seq) conv.mention_count = 0;
        this.emit("conv", conv);
        this.emit("badges");
      }
    } else if (conv.type === "direct") {
      conv.peer_read_seq = Math.max(conv.peer_read_seq || 0, read_seq);
      this.emit("marks", conv);
    }
  }

  /** Fill every gap: all conversations, or only `ids`. One sync runs at a time. */
  sync(ids) {
    if (this.syncing) {
      this.syncAgain = ids && this.syncAgain !== "all" ? [...new Set([...(this.syncAgain || []), ...ids])] : "all";
      return this.syncing;
    }
    this.syncing = this.runSync(ids).finally(() => {
      this.syncing = null;
      if (this.syncAgain) {
        const again = this.syncAgain === "all" ? undefined : this.syncAgain;
        this.syncAgain = null;
        this.sync(again);
      }
    });
    return this.syncing;
  }

  async runSync(ids) {
    let cursors = {};
    let changes = {};
    for (const conv of this.convs.values()) {
      if (!ids || ids.includes(conv.id)) {
        cursors[conv.id] = conv.held;
        if (conv.change_seq != null) changes[conv.id] = conv.change_seq;
      }
    }
    const touched = new Set();
    // Conversations come a page at a time (`next_cursor`); chats with more news
    // than one page (`has_more`) are asked again once every page was read.
    let page = null;
    let next = {};
    for (let round = 0; round < 200; round++) {
      const req = { cursors, changes, limit: 200 };
      if (page) req.cursor = page;
      const ack = await this.emitAck("sync", req, 15000);
      if (!ack.ok) break;
      for (const c of ack.conversations) {
        let conv = this.convs.get(c.id);
        const known = !!conv && c.id in cursors;
        if (!conv) conv = this.makeConv(c);
        else if (!known) this.upsertSummary(c, { quiet: true });
        const { messages = [], has_more } = c;
        if (!known) {
          // Newest page of a chat this tab did not have.
          conv.msgs = [];
          conv.ahead = new Set();
          conv.held = messages.length ? messages[0].seq - 1 : c.last_seq;
          this.addMessages(conv, messages);
          this.raiseHeld(conv, c.last_seq);
          conv.loaded = true;
          conv.hasOlder = has_more;
        } else {
          // Messages that already came live were notified then.
          const news = messages.filter((m) => this.isNew(conv, m.seq));
          this.addMessages(conv, messages);
          if (messages.length) this.raiseHeld(conv, messages[messages.length - 1].seq);
          if (has_more) next[c.id] = conv.held;
          else this.raiseHeld(conv, c.last_seq);
          for (const m of news) {
            if (!this.visible && this.countsAsUnread(m) && m.seq > (c.read_seq || 0) && !conv.muted) {
              this.emit("notify", { kind: "message", conv, msg: m });
            }
          }
        }
        for (const k of ["read_seq", "unread_count", "mention_count", "left", "last_seq"]) if (k in c) conv[k] = c[k];
        if (c.changes) this.applyChanges(conv, c.changes);
        if (c.changes_more) next[c.id] = conv.held;
        if ("change_seq" in c) conv.change_seq = c.change_seq;
        const theirs = messages.filter((m) => m.sender_id && m.sender_id !== this.me?.id);
        if (theirs.length) this.noteDelivered(conv, theirs[theirs.length - 1].seq);
        this.sorted = null;
        touched.add(conv);
      }
      page = ack.next_cursor || null;
      if (page) continue;
      if (!Object.keys(next).length) break;
      cursors = next;
      changes = Object.fromEntries(Object.keys(next).filter((id) => this.convs.get(id)?.change_seq != null)
        .map((id) => [id, this.convs.get(id).change_seq]));
      next = {};
    }
    if (touched.size) {
      this.emit("convs");
      this.emit("badges");
      for (const conv of touched) this.emit("msgs", conv);
    }
    const open = this.openId && this.convs.get(this.openId);
    // A chat opened before the socket was up (a reload on its URL) gets its history now.
    if (open && !open.loaded) this.loadOlder(open, true);
    else if (open) this.markRead(open);
  }

  async loadOlder(conv, first = false) {
    if (conv.loadingOlder || (!first && (!conv.hasOlder || !conv.loaded))) return;
    conv.loadingOlder = true;
    const oldest = conv.msgs.find((m) => m.seq)?.seq;
    const payload = { conversation_id: conv.id, limit: 50 };
    if (!first || (conv.loaded && oldest)) payload.before_seq = oldest;
    const ack = await this.emitAck("history", payload);
    conv.loadingOlder = false;
    if (!ack.ok) return;
    this.addMessages(conv, ack.messages, { live: false });
    if (first && ack.messages.length) this.raiseHeld(conv, ack.messages[ack.messages.length - 1].seq);
    conv.hasOlder = ack.has_more;
    conv.loaded = true;
    this.emit("msgs", conv);
    if (this.isOpen(conv)) this.markRead(conv);
  }

  // ------------------------------------------------------------ search

  /** The search box: {contacts, groups, conversations_with_matches}. */
  searchAll(q) {
    return this.api("GET", `/search?q=${encodeURIComponent(q)}&limit=20`);
  }

  /** `search:messages` with its filters; {ok, results, next_cursor} or {ok: false, error}. */
  searchMessages(params) {
    return this.emitAck("search:messages", params);
  }

  /** Show `conv` at message `seq`: the page around it (history `around_seq`) when
   * it is not loaded yet; older and newer pages load as the reader scrolls. */
  async jumpTo(conv, seq) {
    conv.focusSeq = seq;
    if (conv.loaded && conv.msgs.some((m) => m.seq === seq)) { this.emit("msgs", conv); return; }
    const ack = await this.emitAck("history", { conversation_id: conv.id, around_seq: seq, limit: 40 });
    if (!ack.ok) return;
    conv.msgs = [];
    conv.hasNewer = false;
    this.addMessages(conv, ack.messages, { live: false });
    conv.hasOlder = ack.has_more;
    conv.hasNewer = ack.has_more_after;
    conv.loaded = true;
    this.emit("msgs", conv);
  }

  /** The page after the newest loaded message of a chat opened at a found one. */
  async loadNewer(conv) {
    if (!conv.hasNewer || conv.loadingNewer) return;
    const last = conv.msgs[conv.msgs.length - 1];
    if (!last) return;
    conv.loadingNewer = true;
    // around_seq = last + 20 with limit 40: the 20 after `last`, then 20 more.
    const ack = await this.emitAck("history", { conversation_id: conv.id, around_seq: last.seq + 20, limit: 40 });
    conv.loadingNewer = false;
    if (!ack.ok) return;
    conv.hasNewer = false;
    this.addMessages(conv, ack.messages.filter((m) => m.seq > last.seq), { live: false });
    conv.hasNewer = ack.has_more_after;
    this.emit("msgs", conv);
  }

  // ------------------------------------------------------------ sending

  /** Optimistic send: the message shows at once and is delivered with a client_msg_id. */
  send(conv, fields) {
    if (conv.hasNewer) { // viewing older history: back to the newest page first
      conv.hasNewer = false;
      conv.msgs = [];
      conv.loaded = false;
      this.loadOlder(conv, true);
    }
    const p = {
      local: true,
      client_msg_id: uuid(),
      conversation_id: conv.id,
      sender_id: this.me.id,
      type: fields.type || "text",
      text: fields.text || "",
      reply_to: fields.reply_to?.id ?? null,
      reply_preview: fields.reply_to ? { ...fields.reply_to } : undefined,
      mentions: fields.mentions?.length ? fields.mentions : undefined,
      mention_all: fields.mention_all || undefined,
      media_id: fields.media_id,
      media: fields.media,
      created_at: new Date().toISOString(),
      status: "pending",
    };
    conv.pending.push(p);
    this.emit("pending", conv, p);
    if (fields.deferred) {
      // Media: delivered once the upload finished (the media view calls ready / fail).
      p.progress = 0;
      p.ready = () => { delete p.progress; this.deliver(conv, p); };
      p.fail = (err) => { p.status = "failed"; p.error = err; this.emit("pending", conv, p); };
    } else this.deliver(conv, p);
    return p;
  }

  async deliver(conv, p) {
    p.status = "pending";
    this.emit("pending", conv, p);
    const payload = { conversation_id: conv.id, client_msg_id: p.client_msg_id, type: p.type, text: p.text };
    if (p.reply_to) payload.reply_to = p.reply_to;
    if (p.media_id) payload.media_id = p.media_id;
    if (p.mentions) payload.mentions = p.mentions;
    if (p.mention_all) payload.mention_all = true;
    const ack = await this.emitAck("message:send", payload);
    if (ack.ok) {
      const m = ack.message;
      const already = conv.msgs.some((x) => x.seq === m.seq);
      conv.pending = conv.pending.filter((x) => x !== p);
      const gap = this.addMessages(conv, [m]);
      conv.read_seq = Math.max(conv.read_seq || 0, m.seq);
      p.status = "sent";
      p.message = m;
      this.emit("pending", conv, p);
      if (!already) this.emit("msg:add", conv, m);
      this.emit("conv", conv);
      if (gap) this.awaitGap(conv);
    } else if (RETRY_LATER.has(ack.error?.code) && (p.attempts = (p.attempts || 0) + 1) <= MAX_ATTEMPTS) {
      // The server asked to come back later: the message stays "sending" and goes
      // again, same client_msg_id, after the wait it named (or a growing one).
      const seconds = ack.error.details?.retry_after ?? Math.min(8, 2 ** (p.attempts - 1));
      setTimeout(() => { if (conv.pending.includes(p) && p.status === "pending") this.deliver(conv, p); }, seconds * 1000);
    } else {
      p.status = "failed";
      p.error = ack.error;
      this.emit("pending", conv, p);
      if (!["offline", "timeout"].includes(ack.error?.code)) this.emit("error", ack.error);
    }
    return ack;
  }

  retry(conv, p) {
    p.attempts = 0;
    if (p.type !== "text" && !p.media_id) {
      conv.pending = conv.pending.filter((x) => x !== p);
      p.status = "dropped";
      this.emit("pending", conv, p);
      return null;
    }
    return this.deliver(conv, p);
  }

  /** After a reconnect: resend what failed for lack of a connection, same client_msg_id. */
  retryFailed() {
    for (const conv of this.convs.values()) {
      for (const p of conv.pending) {
        if (p.status === "failed" && ["offline", "timeout"].includes(p.error?.code)) this.deliver(conv, p);
      }
    }
  }

  async markRead(conv) {
    if (!conv || !this.visible || !this.connected) return;
    const last = conv.last_seq || 0;
    if (last <= (conv.read_seq || 0) && !conv.unread_count) return;
    const ack = await this.emitAck("message:read", { conversation_id: conv.id, seq: last });
    if (ack.ok) {
      conv.read_seq = ack.read_seq;
      conv.unread_count = ack.unread_count;
      if (!ack.unread_count) conv.mention_count = 0;
      this.emit("conv", conv);
      this.emit("badges");
    }
  }

  async recall(conv, m) {
    const ack = await this.emitAck("message:recall", { message_id: m.id });
    if (ack.ok) this.applyRecall(conv, m);
    return ack;
  }

  async react(conv, m, emoji, on) {
    const ack = await this.emitAck("message:react", { message_id: m.id, emoji, on });
    if (ack.ok) this.patchMessage({ conversation_id: conv.id, message_id: m.id }, (x) => {
      if (Object.keys(ack.counts).length) x.reactions = ack.counts; else delete x.reactions;
      x.my_reactions = ack.mine;
    });
    return ack;
  }

  async edit(conv, m, text) {
    const ack = await this.emitAck("message:edit", { message_id: m.id, text });
    if (ack.ok) this.patchMessage(ack, (x) => { x.text = ack.text; x.edited_at = ack.edited_at; });
    return ack;
  }

  async pin(conv, m, on) {
    const ack = await this.emitAck(on ? "message:pin" : "message:unpin", { message_id: m.id });
    if (ack.ok) { delete conv.pins; this.emit("pins", conv); }
    return ack;
  }

  /** The chat's pinned messages (cached until a pin changes). */
  async pinsOf(conv) {
    if (!conv.pins) conv.pins = (await this.api("GET", `/conversations/${encodeURIComponent(conv.id)}/pins`)).pins;
    return conv.pins;
  }

  /** Forward messages to chats, each as a copy or merged into one chat record. */
  async forward(messageIds, targetIds, mode) {
    return this.emitAck("message:forward", { message_ids: messageIds, to: targetIds, mode, client_msg_id: uuid() }, 20000);
  }

  /** Send a message of another kind (contact_card, location) right away. */
  async sendTyped(conv, fields) {
    const ack = await this.emitAck("message:send", { conversation_id: conv.id, client_msg_id: uuid(), text: "", ...fields });
    if (ack.ok) {
      const gap = this.addMessages(conv, [ack.message]);
      this.emit("msg:add", conv, ack.message);
      this.emit("conv", conv);
      if (gap) this.awaitGap(conv);
    }
    return ack;
  }

  async deleteForMe(conv, m) {
    const ack = await this.emitAck("message:delete", { message_id: m.id });
    if (ack.ok) this.onDeleted({ conversation_id: conv.id, message_id: m.id });
    return ack;
  }

  // ------------------------------------------------------------ typing

  setTyping(convId, userId, state) {
    if (!this.typing.has(convId)) this.typing.set(convId, new Map());
    const map = this.typing.get(convId);
    const prev = map.get(userId);
    if (prev) clearTimeout(prev.timer);
    if (state === "idle") {
      if (!prev) return;
      map.delete(userId);
    } else map.set(userId, { state, timer: setTimeout(() => this.setTyping(convId, userId, "idle"), 6000) });
    this.emit("typing", convId);
  }

  sendTyping(conv, state) {
    const now = Date.now();
    const last = this.typingSent;
    if (last.conv === conv.id && last.state === state && (state === "idle" || now - last.at < 3000)) return;
    this.typingSent = { conv: conv.id, state, at: now };
    this.emitAck("typing", { conversation_id: conv.id, state });
  }

  // ------------------------------------------------------------ REST-backed actions

  async load() {
    const api = this.api;
    const [{ user }, contacts, requests] = await Promise.all([
      api("GET", "/me"), api("GET", "/contacts"), api("GET", "/contacts/requests"),
    ]);
    this.me = user;
    for (const c of contacts.contacts) this.contacts.set(c.user.id, c);
    this.incoming = requests.incoming;
    this.outgoing = requests.outgoing;
    try { this.blocks = new Set((await api("GET", "/blocks")).blocks.map((b) => b.user.id)); } catch { /* optional */ }
    this.listCursor = await this.loadListPage(null);
  }

  /** The chats after the first page (see `load`), then one redraw. The shell is
   * already up, so someone with a thousand chats sees the newest at once. */
  async loadRest() {
    for (let i = 0; i < 100 && this.listCursor; i++) {
      this.listCursor = await this.loadListPage(this.listCursor);
    }
    this.emit("convs");
    this.emit("badges");
  }

  /** One page of the chat list, newest activity first; returns the next cursor. */
  async loadListPage(cursor) {
    const page = await this.api("GET", `/conversations?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    for (const c of page.conversations) {
      const conv = this.upsertSummary(c, { quiet: true });
      // The list shows their newest message: this device received it.
      if (c.unread_count) this.noteDelivered(conv, c.last_seq);
    }
    return page.next_cursor || null;
  }

  async toggleMute(conv) {
    const { conversation } = await this.api("PATCH", `/conversations/${encodeURIComponent(conv.id)}`, { muted: !conv.muted });
    conv.muted = conversation.muted;
    this.emit("conv", conv);
    this.emit("badges");
  }

  async group(convId, { fresh = false } = {}) {
    if (!fresh && this.groups.has(convId)) return this.groups.get(convId);
    const { group } = await this.api("GET", `/groups/${encodeURIComponent(convId)}`);
    this.rememberUsers(group.members.map((m) => m.user));
    this.groups.set(convId, group);
    const conv = this.convs.get(convId);
    if (conv && conv.member_count !== group.member_count) {
      conv.member_count = group.member_count;
      this.emit("conv", conv);
    }
    return group;
  }

  setContact(contact) {
    this.contacts.set(contact.user.id, contact);
    this.emit("contacts");
    this.emit("user", contact.user.id);
  }
}
