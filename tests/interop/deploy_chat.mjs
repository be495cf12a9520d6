// Drives Parley's container deployment with the official socket.io-client (npm).
// Used by tests/test_deploy_docker.py; prints one JSON object per line.
//
// usage: node deploy_chat.mjs converse '<json>'
//   {alice: {url, token}, bob: {url, token}, cid}: Alice and Bob on different
//   servers exchange one message each way; prints what each ack and receipt held.
// usage: node deploy_chat.mjs load '<json>'
//   {url, users: [{name, token}], cid, n, window, warm}: every user connects to
//   url (a balancer) with reconnection on, prints {event: "connected"}, sends
//   messages with `window` in flight (a send without an ack is retried with the
//   same client_msg_id, after a reconnect if the socket dropped), prints
//   {event: "warm"} once `warm` messages were acked in all, and keeps sending
//   until each user has n acked AND a line "stopped" came on stdin (so the load
//   lasts through whatever the caller does meanwhile); then syncs the
//   conversation from seq 0 and prints {event: "done", users: {...}}.
import { io } from "socket.io-client";

const [mode, raw] = process.argv.slice(2);
const cfg = JSON.parse(raw);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Exit once stdout is flushed: a pipe is written asynchronously, and a bare
// process.exit() would cut the last (long) line.
const exit = (code) => process.stdout.write("", () => process.exit(code));
setTimeout(() => { out({ event: "error", error: "timeout" }); exit(2); }, cfg.timeout_ms ?? 90000);

function connect(url, token, reconnection) {
  const socket = io(`${url}/chat`, {
    auth: { token },
    transports: ["websocket"],
    reconnection,
    reconnectionDelay: 200,
    reconnectionDelayMax: 1000,
  });
  const stats = { connects: 0, disconnects: 0 };
  socket.on("connect", () => { stats.connects += 1; });
  socket.on("disconnect", () => { stats.disconnects += 1; });
  const ready = new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    if (!reconnection) socket.once("connect_error", (e) => reject(e));
  });
  return { socket, stats, ready };
}

const untilConnected = (socket) =>
  socket.connected ? Promise.resolve() : new Promise((r) => socket.once("connect", r));

const nextEvent = (socket, name) => new Promise((r) => socket.once(name, r));

async function converse() {
  const a = connect(cfg.alice.url, cfg.alice.token, false);
  const b = connect(cfg.bob.url, cfg.bob.token, false);
  await Promise.all([a.ready, b.ready]);
  const send = (s, text, cmid) => s.timeout(10000).emitWithAck("message:send", {
    conversation_id: cfg.cid, client_msg_id: cmid, type: "text", text,
  });
  const bobGets = nextEvent(b.socket, "message:new");
  const aliceAck = await send(a.socket, "hello Bob, from container A", "conv-a-1");
  const bobGot = await bobGets;
  const aliceGets = nextEvent(a.socket, "message:new");
  const bobAck = await send(b.socket, "hi Alice, from container B", "conv-b-1");
  const aliceGot = await aliceGets;
  out({ event: "done", alice_ack: aliceAck, bob_got: bobGot, bob_ack: bobAck, alice_got: aliceGot });
  a.socket.close();
  b.socket.close();
}

async function syncAll(socket) {
  const messages = [];
  let cursor = 0;
  for (let page = 0; page < 100; page++) {
    const ack = await socket.timeout(10000).emitWithAck("sync", { cursors: { [cfg.cid]: cursor }, limit: 200 });
    if (!ack.ok) throw new Error("sync: " + JSON.stringify(ack));
    const conv = ack.conversations.find((c) => c.id === cfg.cid);
    if (!conv || conv.messages.length === 0) break;
    for (const m of conv.messages) {
      messages.push({ seq: m.seq, id: m.id, client_msg_id: m.client_msg_id, sender_id: m.sender_id });
    }
    cursor = conv.messages[conv.messages.length - 1].seq;
    if (!conv.has_more) break;
  }
  return messages;
}

let stopped = false;
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { if (chunk.includes("stopped")) stopped = true; });

async function load() {
  const clients = cfg.users.map((u) => ({ ...u, ...connect(cfg.url, u.token, true), acked: {}, retries: 0 }));
  await Promise.all(clients.map((c) => c.ready));
  out({ event: "connected" });
  let ackedTotal = 0;
  let warmed = false;

  async function sendOne(c, cmid, text) {
    for (;;) {
      await untilConnected(c.socket);
      let ack;
      try {
        ack = await c.socket.timeout(5000).emitWithAck("message:send", {
          conversation_id: cfg.cid, client_msg_id: cmid, type: "text", text,
        });
      } catch {
        c.retries += 1; // no ack (socket dropped or timed out): same client_msg_id again
        await sleep(100);
        continue;
      }
      if (ack.ok) {
        c.acked[cmid] = { id: ack.message.id, seq: ack.message.seq };
        ackedTotal += 1;
        if (!warmed && ackedTotal >= cfg.warm) { warmed = true; out({ event: "warm" }); }
        return;
      }
      if (["unavailable", "rate_limited"].includes(ack.error?.code)) {
        c.retries += 1;
        await sleep(100);
        continue;
      }
      throw new Error(`${c.name} ${cmid}: ${JSON.stringify(ack)}`);
    }
  }

  async function sendAll(c) {
    let next = 0;
    const worker = async () => {
      // A cap, so a caller that never says "stopped" still gets an answer.
      while ((next < cfg.n || !stopped) && next < cfg.n * 20) {
        const i = next++;
        await sendOne(c, `${c.name}-${i}`, `${c.name} message ${i}`);
      }
    };
    await Promise.all(Array.from({ length: cfg.window }, worker));
  }

  await Promise.all(clients.map(sendAll));
  const users = {};
  for (const c of clients) {
    await untilConnected(c.socket);
    users[c.name] = { acked: c.acked, retries: c.retries, ...c.stats, synced: await syncAll(c.socket) };
  }
  out({ event: "done", users });
  for (const c of clients) c.socket.close();
  process.stdin.destroy();
}

try {
  if (mode === "converse") await converse();
  else if (mode === "load") await load();
  else throw new Error("unknown mode " + mode);
  exit(0);
} catch (e) {
  out({ event: "error", error: String(e?.stack ?? e) });
  exit(1);
}
