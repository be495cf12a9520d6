// Drives Parley with the official socket.io-client (npm): connect with a token,
// send a message with an ack, and print what arrives. Used by tests/test_interop.py.
// usage: node chat_client.mjs <base_url> <token> <mode> [conversation_id]
//   mode "send":    emitWithAck message:send, print the ack as one JSON line
//   mode "receive": print the first message:new as one JSON line
import { io } from "socket.io-client";

const [baseUrl, token, mode, conversationId, transport] = process.argv.slice(2);
const socket = io(`${baseUrl}/chat`, {
  auth: { token },
  transports: transport === "polling" ? ["polling"] : ["websocket"],
  reconnection: false,
});
const done = (obj, code = 0) => {
  process.stdout.write(JSON.stringify(obj) + "\n");
  socket.close();
  process.exit(code);
};
setTimeout(() => done({ error: "timeout" }, 2), 10000);
socket.on("connect_error", (err) => done({ connect_error: err.message }, 3));
socket.on("message:new", (msg) => { if (mode === "receive") done({ received: msg }); });
socket.on("connect", async () => {
  if (mode === "ready" || mode === "receive") process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  if (mode === "send") {
    const ack = await socket.timeout(5000).emitWithAck("message:send", {
      conversation_id: conversationId,
      client_msg_id: "node-" + Date.now(),
      type: "text",
      text: "hello from socket.io-client",
    });
    done({ ack });
  }
});
