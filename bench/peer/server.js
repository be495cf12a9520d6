// P ("peer") target: the same relay as bench/refs/l1_socketio.py on Node's socket.io v4.
// auth {user, group?} -> join rooms; "send" {to,...} -> io.to(to).emit("msg", data); ack {ok:true}.
// Usage: node server.js PORT
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const httpServer = http.createServer();
const io = new Server(httpServer);

io.use((socket, next) => {
  const user = socket.handshake.auth && socket.handshake.auth.user;
  if (!user) return next(new Error("unauthorized"));
  next();
});

io.on("connection", (socket) => {
  const { user, group } = socket.handshake.auth;
  socket.join(user);
  if (group) socket.join(group);
  socket.on("send", (data, ack) => {
    io.to(data.to).emit("msg", data);
    if (typeof ack === "function") ack({ ok: true });
  });
});

httpServer.listen(port, "127.0.0.1", 4096);
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
