"""Bench clients: how the load generator talks to a target.

A *client protocol* (``ClientProtocol``) is the adaptor a Target hands to the scenarios.
It answers four questions:

* where to connect (``path(user, group)``) and how to authenticate (``auth``),
* what one outgoing message looks like, as a pre-encoded byte *template* with four
  ``%d`` slots ``(ack_id, step, n, ts)`` — formatting bytes is the only per-message
  encoding work the generator does,
* how to turn a received event body into ``(src, step, n, ts)`` (``extract``),
* which client class speaks it (``client_class``).

``RawJsonProtocol`` speaks L0's trivial framing; ``SocketIOProtocol`` speaks Engine.IO v4 /
Socket.IO v5 over WebSocket and is configurable by namespace, event names, auth,
payload template and extractor — a Parley adaptor is a subclass of it.
"""

import asyncio
from dataclasses import dataclass

import msgspec

from .stats import Recorder
from .ws import WSClient, frame

PAD = "x" * 40  # makes the reference payloads ~120 bytes on the wire


class RefMsg(msgspec.Struct):
    """The fields the generator needs from a reference payload (others are ignored)."""

    f: int  # sender index
    s: int  # step id
    n: int  # per-sender sequence number within the step
    ts: int  # scheduled send time, µs, CLOCK_MONOTONIC


_ref_event = msgspec.json.Decoder(tuple[str, RefMsg]).decode
_ref_msg = msgspec.json.Decoder(RefMsg).decode


class BenchClient(WSClient):
    """One simulated user.  ``pending`` maps ack id → scheduled send time (µs)."""

    def __init__(self, proto, host, port, idx: int, user: str, group, rec: Recorder) -> None:
        super().__init__(host, port, proto.path(user, group))
        self.proto = proto
        self.idx = idx
        self.user = user
        self.group = group
        self.rec = rec
        self.pending: dict[int, int] = {}
        self.ack_id = 0

    def send_msg(self, tmpl: bytes, step: int, n: int, ts: int) -> None:
        self.ack_id = aid = self.ack_id + 1
        self.pending[aid] = ts
        self.transport.write(frame(tmpl % (aid, step, n, ts)))

    def connection_lost(self, exc) -> None:
        if self.ready.done() and not self.closed:
            self.rec.disconnects += 1
        super().connection_lost(exc)


# -- L0: raw JSON frames -------------------------------------------------------------------
class RawJsonClient(BenchClient):
    def on_open(self) -> None:
        self.ready.set_result(None)  # no application-level handshake

    def on_text(self, p: bytes) -> None:
        if p.startswith(b'{"ack":'):
            self.rec.on_ack(self.pending, int(p[7:-1]))
            return
        try:
            m = _ref_msg(p)
        except msgspec.DecodeError:
            self.rec.undecodable += 1
            return
        self.rec.on_msg(self.idx, m.f, m.s, m.n, m.ts)


class RawJsonProtocol:
    """L0 framing: text frame = the JSON message; server replies ``{"ack":<a>}``."""

    name = "raw-json"
    client_class = RawJsonClient

    def path(self, user: str, group: str | None) -> str:
        return f"/ws?user={user}" + (f"&group={group}" if group else "")

    def template(self, src_idx: int, src_user: str, to: str) -> bytes:
        return (
            b'{"to":"%s","f":%d,"a":%%d,"s":%%d,"n":%%d,"ts":%%d,"pad":"%s"}'
            % (to.encode(), src_idx, PAD.encode())
        )


# -- Engine.IO v4 / Socket.IO v5 ------------------------------------------------------------
_PONG = frame(b"3")


class SocketIOClient(BenchClient):
    """Engine.IO open ``0{..}`` → send ``40[/ns,][auth]``; ping ``2`` → pong ``3``;
    ``40`` = connected, ``44`` = refused, ``42`` = event, ``43<id>`` = ack."""

    def on_text(self, p: bytes) -> None:
        c = p[0]
        if c == 0x34:  # '4' engine.io message → socket.io packet
            t = p[1]
            body = p[2:]
            if body[:1] == b"/":  # namespace prefix "/chat,"
                body = body[body.index(b",") + 1 :]
            if t == 0x32:  # '2' EVENT
                if body[:1] != b"[":  # server asked for an ack; the references never do
                    body = body[body.index(b"[") :]
                try:
                    got = self.proto.extract(body)
                except (msgspec.DecodeError, ValueError):
                    self.rec.undecodable += 1
                    return
                if got is not None:
                    self.rec.on_msg(self.idx, *got)
            elif t == 0x33:  # '3' ACK
                self.rec.on_ack(self.pending, int(body[: body.index(b"[")]))
            elif t == 0x30:  # '0' CONNECT ok
                if not self.ready.done():
                    self.ready.set_result(None)
            elif t == 0x34:  # '4' CONNECT_ERROR
                self.fail(ConnectionRefusedError(body.decode(errors="replace")))
            elif t == 0x31:  # '1' DISCONNECT
                self.close()
        elif c == 0x32:  # '2' engine.io ping
            self.transport.write(_PONG)
        elif c == 0x30:  # '0' engine.io open: now join the namespace
            self.send(self.proto.connect_packet(self.user, self.group))
        elif c == 0x31:  # '1' engine.io close
            self.close()


@dataclass
class SocketIOProtocol:
    """Socket.IO adaptor.  Defaults are the reference relay (L1 / P)."""

    namespace: str = "/"
    send_event: str = "send"
    recv_event: str = "msg"
    name: str = "socket.io"
    client_class = SocketIOClient

    def path(self, user: str, group: str | None) -> str:
        return "/socket.io/?EIO=4&transport=websocket"

    def auth(self, user: str, group: str | None) -> dict | None:
        return {"user": user, "group": group} if group else {"user": user}

    def connect_packet(self, user: str, group: str | None) -> bytes:
        ns = b"" if self.namespace == "/" else self.namespace.encode() + b","
        auth = self.auth(user, group)
        return b"40" + ns + (msgspec.json.encode(auth) if auth is not None else b"")

    def data_template(self, src_idx: int, src_user: str, to: str) -> bytes:
        """JSON of the event argument with three ``%d`` slots: step, n, ts."""
        return b'{"to":"%s","f":%d,"s":%%d,"n":%%d,"ts":%%d,"pad":"%s"}' % (
            to.encode(), src_idx, PAD.encode())

    def template(self, src_idx: int, src_user: str, to: str) -> bytes:
        ns = b"" if self.namespace == "/" else self.namespace.encode() + b","
        data = self.data_template(src_idx, src_user, to)
        return b'42' + ns + b'%d["' + self.send_event.encode() + b'",' + data + b"]"

    def extract(self, body: bytes):
        """``["msg", {...}]`` → (src, step, n, ts), or None for other events."""
        name, m = _ref_event(body)
        if name != self.recv_event:
            return None
        return m.f, m.s, m.n, m.ts


# -- connecting ----------------------------------------------------------------------------
async def open_client(proto, host, port, idx, user, group, rec, connect_timeout: float):
    loop = asyncio.get_running_loop()
    client = proto.client_class(proto, host, port, idx, user, group, rec)
    async with asyncio.timeout(connect_timeout):
        await loop.create_connection(lambda: client, host, port)
        try:
            await client.ready
        except BaseException:
            client.close()
            raise
    return client


async def open_many(proto, host, port, specs, rec, *, concurrency=100, connect_timeout=15.0):
    """Open one client per (user, group) spec with bounded concurrency.  ``port`` is an
    int or a callable ``(idx, user) -> port`` (multi-process targets).

    Returns (clients in spec order — None where the connect failed, list of errors)."""
    sem = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(i, user, group):
        async with sem:
            try:
                p = port(i, user) if callable(port) else port
                return await open_client(proto, host, p, i, user, group, rec, connect_timeout)
            except (OSError, TimeoutError, ConnectionError) as exc:
                errors.append(f"{user}: {type(exc).__name__}: {exc}")
                return None

    clients = await asyncio.gather(*(one(i, u, g) for i, (u, g) in enumerate(specs)))
    return list(clients), errors


async def close_all(clients, wait: float = 2.0) -> None:
    live = [c for c in clients if c is not None]
    for c in live:
        c.close()
    deadline = asyncio.get_running_loop().time() + wait
    # polling: thousands of clients, no per-client event worth the bookkeeping
    while any(not c.closed for c in live) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
