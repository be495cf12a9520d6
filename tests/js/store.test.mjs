// Unit tests of the web client's store (static/js/store/store.js), run by
// node's test runner (tests/test_web_store.py runs them under pytest). The
// socket is a scripted stand-in answering the way docs/protocol.md says; the
// real server is exercised by the browser suite.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Store } from "../../static/js/store/store.js";

const ME = { id: "me", display_name: "Me", username: "me" };
const PEER = { id: "bob", display_name: "Bob", username: "bob" };

function msg(seq, extra = {}) {
  return {
    id: `m${seq}`, conversation_id: "c1", seq, sender_id: "bob", type: "text", text: `hello ${seq}`,
    created_at: new Date(Date.UTC(2026, 0, 1, 12, 0, seq)).toISOString(), ...extra,
  };
}

/** A socket.io-like client whose acks come from `handlers[event](data)`. */
class FakeSocket {
  constructor(handlers = {}) {
    this.handlers = handlers;
    this.listeners = {};
    this.connected = false;
    this.sent = [];
  }

  on(event, fn) { (this.listeners[event] ||= []).push(fn); }

  fire(event, ...args) { for (const fn of this.listeners[event] || []) fn(...args); }

  timeout() {
    return {
      emitWithAck: async (event, data) => {
        this.sent.push([event, structuredClone(data)]);
        const handler = this.handlers[event];
        if (!handler) return { ok: true };
        const out = await handler(data);
        if (out instanceof Error) throw out;
        return out;
      },
    };
  }

  up() { this.connected = true; this.fire("connect"); }

  down() { this.connected = false; this.fire("disconnect", "transport close"); }

  sentOf(event) { return this.sent.filter(([e]) => e === event).map(([, d]) => d); }
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function settle(store) {
  for (let i = 0; i < 5; i++) { await flush(); if (store.syncing) await store.syncing; }
}

/** A store with one direct conversation holding messages 1..n, read up to `read`. */
function storeWith({ n = 2, read = n, handlers = {}, gapGraceMs = 30 } = {}) {
  const store = new Store({ api: async () => { throw new Error("no REST in these tests"); }, gapGraceMs });
  store.me = ME;
  const conv = store.upsertSummary({
    id: "c1", type: "direct", peer: PEER, last_seq: n, read_seq: read, unread_count: n - read,
    last_activity_at: msg(n).created_at,
  }, { quiet: true });
  store.addMessages(conv, Array.from({ length: n }, (_, i) => msg(i + 1)));
  conv.loaded = true;
  const socket = new FakeSocket({ sync: () => ({ ok: true, conversations: [] }), ...handlers });
  store.connect(socket);
  const events = [];
  for (const topic of ["conv", "msg:add", "msg:update", "msg:remove", "msgs", "pending", "badges", "notify"]) {
    store.on(topic, (...args) => events.push([topic, ...args]));
  }
  return { store, conv, socket, events };
}

// ------------------------------------------------------------ seq gaps and sync

/** A `sync` answer for c1 (read up to 2) from what `server.messages` holds when asked. */
function syncFrom(server) {
  return ({ cursors }) => ({
    ok: true,
    conversations: [{ id: "c1", type: "direct", last_seq: 2 + server.messages.length, read_seq: 2,
      unread_count: server.messages.length, has_more: false,
      messages: server.messages.filter((m) => m.seq > cursors.c1) }],
  });
}

test("a message right after the last one held needs no sync", async () => {
  const { store, conv, socket } = storeWith();
  socket.up();
  await settle(store);
  socket.sent.length = 0;
  socket.fire("message:new", msg(3));
  await settle(store);
  assert.deepEqual(conv.msgs.map((m) => m.seq), [1, 2, 3]);
  assert.equal(conv.held, 3);
  assert.equal(socket.sentOf("sync").length, 0);
});

test("a seq gap waits the grace, then is filled from sync, without duplicates", async () => {
  const server = { messages: [] };
  const { store, conv, socket } = storeWith({ handlers: { sync: syncFrom(server) } });
  socket.up();
  await settle(store);
  socket.sent.length = 0;
  server.messages = [msg(3), msg(4), msg(5)];
  socket.fire("message:new", msg(5)); // 3 and 4 were lost on the way
  await settle(store);
  assert.equal(socket.sentOf("sync").length, 0, "a gap first waits for the missing messages");
  await sleep(60);
  await settle(store);
  const syncs = socket.sentOf("sync");
  assert.equal(syncs.length, 1);
  assert.deepEqual(syncs[0].cursors, { c1: 2 }); // asks from the last seq held without a gap
  assert.deepEqual(conv.msgs.map((m) => m.seq), [1, 2, 3, 4, 5]);
  assert.equal(conv.held, 5);
  assert.equal(conv.unread_count, 3);
});

test("a late message within the grace fills the gap: no sync, shown in order, counted and notified", async () => {
  const { store, conv, socket, events } = storeWith();
  socket.up();
  await settle(store);
  socket.sent.length = 0;
  socket.fire("message:new", msg(4));
  socket.fire("message:new", msg(3)); // sent through another server process, it crossed later
  await sleep(60);
  await settle(store);
  assert.equal(socket.sentOf("sync").length, 0);
  assert.deepEqual(conv.msgs.map((m) => m.seq), [1, 2, 3, 4]);
  assert.equal(conv.held, 4);
  assert.equal(conv.unread_count, 2);
  assert.deepEqual(events.filter(([t]) => t === "msg:add").map(([, , m]) => m.seq), [4, 3]);
  assert.deepEqual(events.filter(([t]) => t === "notify").map(([, e]) => e.msg.seq), [4, 3]);
  assert.equal(conv.last_message.seq, 4, "the chat row still previews the newest message");
  socket.fire("message:new", msg(4)); // the same one again: counted once
  assert.equal(conv.unread_count, 2);
});

test("a message seen past a gap is not notified again when sync brings it", async () => {
  const server = { messages: [] };
  const { store, conv, socket, events } = storeWith({ handlers: { sync: syncFrom(server) } });
  socket.up();
  await settle(store);
  store.visible = false;
  socket.sent.length = 0;
  events.length = 0;
  server.messages = [msg(3), msg(4)];
  socket.fire("message:new", msg(4)); // 3 never comes live
  await sleep(60);
  await settle(store);
  assert.deepEqual(socket.sentOf("sync").map((s) => s.cursors.c1), [2]);
  assert.deepEqual(conv.msgs.map((m) => m.seq), [1, 2, 3, 4]);
  assert.equal(conv.held, 4);
  assert.deepEqual(conv.ahead, new Set());
  assert.deepEqual(events.filter(([t]) => t === "notify").map(([, e]) => e.msg.seq), [4, 3]);
});

test("sync pages through has_more with the cursor it got back", async () => {
  const pages = { 2: [msg(3), msg(4)], 4: [msg(5)] };
  const { store, conv, socket } = storeWith({
    handlers: {
      sync: ({ cursors }) => ({
        ok: true,
        conversations: [{ id: "c1", type: "direct", last_seq: 5, has_more: cursors.c1 === 2, messages: pages[cursors.c1] || [] }],
      }),
    },
  });
  socket.up();
  await settle(store);
  assert.deepEqual(socket.sentOf("sync").map((s) => s.cursors.c1), [2, 4]);
  assert.deepEqual(conv.msgs.map((m) => m.seq), [1, 2, 3, 4, 5]);
});

test("sync follows next_cursor across conversation pages, then has_more", async () => {
  // The server pages conversations: c1 first (with more news), then g2 on a second page.
  const { store, conv, socket } = storeWith({
    handlers: {
      sync: ({ cursors, cursor }) => {
        if (cursor === "p2") {
          return { ok: true, next_cursor: null, conversations: [{ id: "g2", type: "group", title: "Later",
            last_seq: 1, has_more: false, messages: [{ ...msg(1), conversation_id: "g2" }] }] };
        }
        if (cursors.c1 === 3) {
          return { ok: true, next_cursor: null, conversations: [{ id: "c1", type: "direct", last_seq: 4,
            has_more: false, messages: [msg(4)] }] };
        }
        return { ok: true, next_cursor: "p2", conversations: [{ id: "c1", type: "direct", last_seq: 4,
          has_more: true, messages: [msg(3)] }] };
      },
    },
  });
  socket.up();
  await settle(store);
  const syncs = socket.sentOf("sync");
  assert.deepEqual(syncs.map((s) => [s.cursor ?? null, s.cursors.c1 ?? null]), [[null, 2], ["p2", 2], [null, 3]]);
  assert.deepEqual(conv.msgs.map((m) => m.seq), [1, 2, 3, 4]);
  assert.ok(store.convs.get("g2"), "the conversation of the second page is known");
});

test("a message for an unknown chat makes sync fetch that chat", async () => {
  const { store, socket } = storeWith({
    handlers: {
      sync: () => ({ ok: true, conversations: [{ id: "g1", type: "group", title: "Trip", last_seq: 1, has_more: false,
        messages: [{ ...msg(1), conversation_id: "g1", created_at: "2026-02-01T00:00:00Z" }],
        last_activity_at: "2026-02-01T00:00:00Z" }] }),
    },
  });
  socket.connected = true;
  socket.fire("message:new", { ...msg(1), conversation_id: "g1", created_at: "2026-02-01T00:00:00Z" });
  await settle(store);
  assert.equal(store.convs.get("g1").msgs.length, 1);
  assert.equal(store.sortedConvs()[0].id, "g1");
});

// ------------------------------------------------------------ optimistic send and retry

test("a message shows at once and is replaced by the acked one", async () => {
  const { store, conv, socket, events } = storeWith({
    handlers: { "message:send": (d) => ({ ok: true, message: msg(3, { sender_id: "me", client_msg_id: d.client_msg_id, text: d.text }) }) },
  });
  socket.connected = true;
  const p = store.send(conv, { text: "hi" });
  assert.equal(conv.pending.length, 1); // shown before the ack
  assert.equal(events.find(([t]) => t === "pending")[2], p);
  await settle(store);
  assert.equal(conv.pending.length, 0);
  assert.equal(conv.msgs.at(-1).client_msg_id, p.client_msg_id);
  assert.equal(conv.msgs.length, 3);
  assert.equal(conv.read_seq, 3);
  assert.equal(p.status, "sent");
});

test("a failed send is retried with the same client_msg_id, and lands once", async () => {
  let fail = true;
  const { store, conv, socket } = storeWith({
    handlers: {
      "message:send": (d) => (fail ? new Error("ack timeout")
        : { ok: true, message: msg(3, { sender_id: "me", client_msg_id: d.client_msg_id, text: d.text }) }),
    },
  });
  socket.connected = true;
  const p = store.send(conv, { text: "again" });
  await settle(store);
  assert.equal(p.status, "failed");
  assert.equal(p.error.code, "timeout");
  fail = false;
  await store.retry(conv, p);
  const sends = socket.sentOf("message:send");
  assert.equal(sends.length, 2);
  assert.equal(sends[0].client_msg_id, sends[1].client_msg_id);
  assert.equal(conv.msgs.filter((m) => m.client_msg_id === p.client_msg_id).length, 1);
  assert.equal(conv.pending.length, 0);
});

test("sent while offline: fails at once, resent on reconnect with the same client_msg_id", async () => {
  const { store, conv, socket } = storeWith({
    handlers: { "message:send": (d) => ({ ok: true, message: msg(3, { sender_id: "me", client_msg_id: d.client_msg_id }) }) },
  });
  const p = store.send(conv, { text: "later" });
  await settle(store);
  assert.equal(p.status, "failed");
  assert.equal(p.error.code, "offline");
  assert.equal(socket.sentOf("message:send").length, 0);
  socket.up();
  await settle(store);
  const sends = socket.sentOf("message:send");
  assert.equal(sends.length, 1);
  assert.equal(sends[0].client_msg_id, p.client_msg_id);
  assert.equal(conv.pending.length, 0);
  assert.deepEqual(conv.msgs.map((m) => m.seq), [1, 2, 3]);
});

test("my own message:new arriving before the ack is not shown twice", async () => {
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const { store, conv, socket, events } = storeWith({
    handlers: { "message:send": async (d) => { await gate; return { ok: true, message: msg(3, { sender_id: "me", client_msg_id: d.client_msg_id }) }; } },
  });
  socket.connected = true;
  const p = store.send(conv, { text: "race" });
  await flush();
  socket.fire("message:new", msg(3, { sender_id: "me", client_msg_id: p.client_msg_id }));
  release();
  await settle(store);
  assert.equal(conv.msgs.filter((m) => m.seq === 3).length, 1);
  assert.equal(events.filter(([t, , m]) => t === "msg:add" && m.seq === 3).length, 1);
  assert.equal(conv.pending.length, 0);
});

test("a refused send fails with the server's error and is not retried on reconnect", async () => {
  const { store, conv, socket } = storeWith({
    handlers: { "message:send": () => ({ ok: false, error: { code: "not_contact", message: "nope" } }) },
  });
  const errors = [];
  store.on("error", (e) => errors.push(e.code));
  socket.connected = true;
  const p = store.send(conv, { text: "x" });
  await settle(store);
  assert.equal(p.status, "failed");
  assert.deepEqual(errors, ["not_contact"]);
  socket.down();
  socket.up();
  await settle(store);
  assert.equal(socket.sentOf("message:send").length, 1);
});

test("a connection refused for now is tried again, each wait longer; one refused for good is not", async () => {
  const store = new Store({ api: async () => { throw new Error("no REST here"); }, refusalRetryMs: 20 });
  const socket = new FakeSocket({ sync: () => ({ ok: true, conversations: [] }) });
  socket.active = false; // socket.io after the server's CONNECT_ERROR: it will not retry
  const at = [];
  const started = Date.now();
  socket.connect = () => { at.push(Date.now() - started); socket.fire("connect_error", { message: "unavailable" }); };
  store.connect(socket);
  socket.fire("connect_error", { message: "unavailable" });
  await sleep(120);
  // Waits of 10-20, 20-40 then 40-80 ms: three tries within 120 ms, the gaps growing.
  assert.ok(at.length >= 2 && at.length <= 4, JSON.stringify(at));
  assert.ok(at[1] - at[0] >= 18, JSON.stringify(at));
  socket.connect = () => { at.push("again"); socket.up(); };
  await sleep(200);
  assert.ok(socket.connected && store.connected && store.refusals === 0);
  const tries = at.length;
  socket.connected = false;
  socket.fire("connect_error", { message: "unauthorized" }); // the token: reauth's business
  await sleep(60);
  assert.equal(at.length, tries);
});

test("'busy' and 'rate_limited' sends are retried after the wait, same client_msg_id", async () => {
  const answers = [
    { ok: false, error: { code: "busy", message: "busy", details: { retry_after: 0.01 } } },
    { ok: false, error: { code: "rate_limited", message: "slow down", details: { retry_after: 0.01 } } },
  ];
  const { store, conv, socket } = storeWith({
    handlers: {
      "message:send": (d) => answers.shift()
        || { ok: true, message: msg(3, { sender_id: "me", client_msg_id: d.client_msg_id }) },
    },
  });
  const errors = [];
  store.on("error", (e) => errors.push(e));
  socket.connected = true;
  const p = store.send(conv, { text: "patience" });
  await new Promise((resolve) => setTimeout(resolve, 100));
  await settle(store);
  const sends = socket.sentOf("message:send");
  assert.equal(sends.length, 3);
  assert.equal(new Set(sends.map((s) => s.client_msg_id)).size, 1);
  assert.equal(p.status, "sent");
  assert.equal(conv.msgs.filter((m) => m.client_msg_id === p.client_msg_id).length, 1);
  assert.deepEqual(errors, []); // nothing to tell the user: it went through
});

// ------------------------------------------------------------ unread counting

test("unread counts messages of others only, and mentions of me", async () => {
  const { store, conv, socket } = storeWith();
  socket.connected = true;
  store.visible = true;
  socket.fire("message:new", msg(3));
  socket.fire("message:new", msg(4, { sender_id: "me" }));
  socket.fire("message:new", msg(5, { type: "system", sender_id: null, system: { event: "renamed" } }));
  socket.fire("message:new", msg(6, { mentions: ["me"] }));
  socket.fire("message:new", msg(6)); // the same seq again (e.g. from sync): counted once
  assert.equal(conv.unread_count, 2);
  assert.equal(conv.mention_count, 1);
  assert.equal(store.unreadTotal(), 2);
  conv.muted = true;
  assert.equal(store.unreadTotal(), 0); // muted chats do not count in the total
});

test("opening a chat marks it read up to its last seq", async () => {
  const { store, conv, socket } = storeWith({
    n: 4, read: 1,
    handlers: { "message:read": ({ seq }) => ({ ok: true, read_seq: seq, unread_count: 0 }) },
  });
  socket.connected = true;
  store.connected = true;
  store.setOpen("c1");
  await settle(store);
  assert.deepEqual(socket.sentOf("message:read"), [{ conversation_id: "c1", seq: 4 }]);
  assert.equal(conv.unread_count, 0);
  assert.equal(conv.read_seq, 4);
  // A message arriving in the open chat is read at once, and never counted in the total.
  socket.fire("message:new", msg(5));
  await settle(store);
  assert.equal(socket.sentOf("message:read").at(-1).seq, 5);
  assert.equal(conv.unread_count, 0);
});

test("a hidden page does not mark the open chat read and notifies", async () => {
  const { store, conv, socket, events } = storeWith();
  socket.connected = true;
  store.connected = true;
  store.openId = "c1";
  store.visible = false;
  socket.fire("message:new", msg(3));
  await settle(store);
  assert.equal(socket.sentOf("message:read").length, 0);
  assert.equal(conv.unread_count, 1);
  assert.equal(events.filter(([t]) => t === "notify").length, 1);
});

test("a read receipt from another device of mine recounts unread", async () => {
  const { store, conv, socket } = storeWith({ n: 5, read: 1 });
  assert.equal(conv.unread_count, 4);
  socket.fire("conversation:read", { conversation_id: "c1", user_id: "me", read_seq: 3 });
  assert.equal(conv.unread_count, 2);
  socket.fire("conversation:read", { conversation_id: "c1", user_id: "me", read_seq: 5 });
  assert.equal(conv.unread_count, 0);
  socket.fire("conversation:read", { conversation_id: "c1", user_id: "bob", read_seq: 4 });
  assert.equal(conv.peer_read_seq, 4);
});

// ------------------------------------------------------------ recall and delete

test("a recalled unread message leaves the unread count and the previews", async () => {
  const { store, conv, socket, events } = storeWith({ n: 3, read: 1 });
  conv.msgs.push(msg(4, { reply_preview: { id: "m3", seq: 3, sender_id: "bob", type: "text", text: "hello 3" } }));
  conv.held = 4; conv.last_seq = 4; conv.last_message = conv.msgs.at(-1); conv.unread_count = 3;
  socket.fire("message:recalled", { conversation_id: "c1", message_id: "m3" });
  const m3 = conv.msgs.find((m) => m.id === "m3");
  assert.equal(m3.recalled, true);
  assert.equal(m3.text, "");
  assert.equal(conv.unread_count, 2);
  assert.equal(conv.msgs.at(-1).reply_preview.recalled, true);
  assert.equal(conv.msgs.at(-1).reply_preview.text, "");
  // One changed row each, never a redraw of the timeline.
  assert.deepEqual(events.filter(([t]) => t === "msg:update").map(([, , m]) => m.id).sort(), ["m3", "m4"]);
  assert.equal(events.filter(([t]) => t === "msgs").length, 0);
});

test("recalling the last message updates the chat row's preview", async () => {
  const { store, conv, socket } = storeWith({ n: 2, read: 2 });
  socket.fire("message:recalled", { conversation_id: "c1", message_id: "m2" });
  assert.equal(conv.last_message.recalled, true);
  assert.equal(conv.unread_count, 0); // it was read: nothing to take back
});

test("my recall goes through the ack", async () => {
  const { store, conv, socket } = storeWith({
    handlers: { "message:recall": ({ message_id }) => (message_id === "m1" ? { ok: true } : { ok: false, error: { code: "recall_expired" } }) },
  });
  socket.connected = true;
  assert.equal((await store.recall(conv, conv.msgs[1])).error.code, "recall_expired");
  assert.equal(conv.msgs[1].recalled, undefined);
  assert.equal((await store.recall(conv, conv.msgs[0])).ok, true);
  assert.equal(conv.msgs[0].recalled, true);
});

test("deleting for me removes one message, here and from my other devices", async () => {
  const { store, conv, socket, events } = storeWith({ n: 3, handlers: { "message:delete": () => ({ ok: true }) } });
  socket.connected = true;
  await store.deleteForMe(conv, conv.msgs[0]);
  assert.deepEqual(conv.msgs.map((m) => m.seq), [2, 3]);
  socket.fire("message:deleted", { conversation_id: "c1", message_id: "m3" });
  assert.deepEqual(conv.msgs.map((m) => m.seq), [2]);
  assert.deepEqual(events.filter(([t]) => t === "msg:remove").map(([, , id]) => id), ["m1", "m3"]);
  socket.fire("message:deleted", { conversation_id: "c1", message_id: "nope" });
  assert.equal(events.filter(([t]) => t === "msg:remove").length, 2);
});

// ------------------------------------------------------------ list order

test("a new message moves its chat to the top of the list", () => {
  const { store, socket } = storeWith();
  store.upsertSummary({ id: "c2", type: "direct", peer: { id: "carol", display_name: "Carol" }, last_seq: 0,
    last_activity_at: "2026-06-01T00:00:00Z" }, { quiet: true });
  assert.deepEqual(store.sortedConvs().map((c) => c.id), ["c2", "c1"]);
  socket.fire("message:new", msg(3, { created_at: "2026-07-01T00:00:00Z" }));
  assert.deepEqual(store.sortedConvs().map((c) => c.id), ["c1", "c2"]);
});
