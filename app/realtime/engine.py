"""A leaner Engine.IO transport, plugged into python-socketio and python-engineio.

What it saves, per packet: python-engineio reads every frame through a fresh
task plus `asyncio.wait_for`, and writes every packet through a queue to a
writer task. Here frames are read in a plain loop and packets are written
straight to the transport: `FastSocket.send` never awaits. A recipient whose
socket buffer is full therefore cannot stall a fan-out to everyone else; a
socket whose unsent data exceeds `MAX_WRITE_BUFFER` is aborted instead (a slow
consumer reconnects and catches up with `sync`). Idle: python-engineio keeps
one sleeping task per socket for its next ping and a service task that visits
every socket with its own `wait_for`; here one timer wheel (`_PingWheel`,
half-second slots) sends every ping and finds every missed pong, a PONG that
arrives alone is taken as its bytes come in (`FrameEdges`), and the service
task only sweeps closed sockets. Memory: the per-socket
`asyncio.Queue` is only needed by long-polling; a socket on the pure WebSocket
transport drops it. The gains are measured in docs/benchmarks.md.

A connection that starts on the WebSocket transport leaves aiohttp's HTTP
layer once the upgrade is answered (`FastWebSocket`): the transport's protocol
becomes the socket's own, so an idle connection keeps its transport, aiohttp's
frame parser and queue, and one reading task, not the upgrade request, the
HTTP parser and the request handler's frames.

The protocol is unchanged: `pingInterval`/`pingTimeout` in the handshake, a
PING every interval after the last PONG, and a socket closed with reason
`PING_TIMEOUT` when no PONG came back within `ping_timeout`. Long-polling and
upgrades from polling to WebSocket keep the library's own code.

Library internals this module depends on (both libraries are pinned to the
tested minor versions in pyproject.toml; tests/test_library_internals.py has
one test per internal; docs/upstream-patches.md describes the hooks that would
make most of them unnecessary):

python-engineio
- `AsyncServer.sockets`: replaced by `_SocketTable`, which turns each
  `AsyncSocket` the server stores (`AsyncServer._handle_connect`) into a
  `FastSocket` by assigning its `__class__` (the server has no socket-class hook).
- `AsyncServer._async["websocket"]` and `["translate_request"]`: the aiohttp
  driver's WebSocket wrapper is replaced by `FastWebSocket` (no
  permessage-deflate, synchronous write) and its request translation by
  `_translate_request` (interned environ keys).
- `AsyncServer._service_task`: overridden; pings and their timeouts live on
  the wheel.
- `AsyncSocket.schedule_ping`, `.receive`, `.send`, `.close`,
  `.handle_post_request`, `._websocket_handler`: overridden in `FastSocket`;
  it reads and writes the socket's `last_ping`, `queue`, `upgrading`,
  `upgraded`, `connected`, `closed` and `closing`.
- `async_drivers.aiohttp.WebSocket.__call__` (and its `_sock`, `handler`).
- `async_drivers.aiohttp.translate_request`: its environ keys
  `aiohttp.request` and `wsgi.input`, dropped from a WebSocket's environ.

aiohttp (pinned to the tested minor version too)
- `WebSocketResponse._reader` / `._parser`: the frame queue and parser that
  `prepare` creates and hands to the request handler (`set_parser`), taken over.
- `WebSocketResponse._eof_sent`: set so that aiohttp's `write_eof` at the end
  of the request does not close a WebSocket that lives on.
- `WebSocketDataQueue._protocol`, and that the queue pauses and resumes
  reading through that protocol's `pause_reading`, `resume_reading` and
  `_reading_paused`.
- `web_protocol.RequestHandler`: its `transport`, `_payload_parser`,
  `_reading_paused`, and that `connection_lost(None)` forgets the connection
  (the server's connection table) without closing a transport it no longer has.

python-socketio
- `AsyncServer._engineio_server_class`: returns `FastEngineServer`.
- `AsyncServer._handle_event`: overridden to check the connection's limits
  before the library's dispatch, `_handle_event_internal`, which it calls.
- `AsyncServer._handle_connect`: overridden (a CONNECT spends a token; a
  connection that joined, as the manager's `sid_from_eio_sid` tells, loses
  its join deadline).
- `AsyncServer._handle_eio_connect`: extended (the namespace-join deadline).
- `AsyncServer._send_eio_packet` and `._send_packet`: overridden to write
  synchronously on the WebSocket transport.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import math
import struct
import sys
import time

import engineio
import socketio
from aiohttp import EofStream, WSCloseCode, WSMsgType
from aiohttp.http import WebSocketError
from aiohttp.web import Response, WebSocketResponse
from engineio import packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet

from app.realtime.limits import (
    FLOOD_HOLD,
    MAX_WAITING,
    ConnectionLimits,
    EventBudget,
    rate_limited_ack,
)
from app.realtime.packets import FastPacket, PacketGuard

log = logging.getLogger("parley.engine")

# Unsent bytes a socket may hold in its transport before it is aborted as a
# slow consumer (a few thousand chat events; the client resyncs on reconnect).
MAX_WRITE_BUFFER = 1024 * 1024
# The same for long-polling, in packets waiting for the client's next GET: a
# client that keeps its session alive by posting PONGs but never collects what
# is queued for it would otherwise grow the queue with every event it is sent.
MAX_POLLING_QUEUE = 4096
TICK = 0.5  # timer-wheel slot, seconds

# How long a closed connection may take to accept its last data (the CLOSE
# frame) before it is cut off.
CLOSE_TIMEOUT = 10.0

_CLOSE_CODE = struct.Struct("!H").pack
_PACK2 = struct.Struct("!BBH").pack
_PACK8 = struct.Struct("!BBQ").pack
_PING_FRAME = b"\x81\x012"  # FIN + text, length 1, Engine.IO PING "2"
_PING_PKT = packet.Packet(packet.PING)
_TASKS: set[asyncio.Task] = set()  # strong references to fire-and-forget tasks


def ws_frame(data: str | bytes) -> bytes:
    """One unmasked, uncompressed RFC 6455 frame (server → client)."""
    if isinstance(data, str):
        data = data.encode()
        op = 0x81
    else:
        op = 0x82
    n = len(data)
    if n < 126:
        return bytes((op, n)) + data
    if n < 65536:
        return _PACK2(op, 126, n) + data
    return _PACK8(op, 127, n) + data


def _control_frame(op: int, payload: bytes) -> bytes:
    return bytes((op, len(payload))) + payload  # control payloads are ≤ 125 bytes


def _close_frame(code: int) -> bytes:
    return _control_frame(0x88, _CLOSE_CODE(code))


def _translate_request(request):
    """engineio's environ, with its `HTTP_*` keys interned (python-socketio keeps
    every connection's environ, and each built its own copies of the same keys)
    and the real peer address as REMOTE_ADDR (the driver's is a placeholder,
    and a WebSocket's environ does not keep the request)."""
    environ = eio_aiohttp.translate_request(request)
    environ["REMOTE_ADDR"] = request.remote
    return {sys.intern(k): v for k, v in environ.items()}


def _spawn(coro) -> None:
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


class _NoQueue:
    """Stands in for the per-socket asyncio.Queue once a socket is on the pure
    WebSocket transport, where nothing is queued (sends go straight out)."""

    __slots__ = ()

    def empty(self):
        return True

    def qsize(self):
        return 0

    def put_nowait(self, item):
        pass

    async def put(self, item):
        pass

    def get_nowait(self):
        raise asyncio.QueueEmpty

    async def get(self):  # pragma: no cover - only long-polling reads the queue
        raise asyncio.QueueEmpty

    def task_done(self):
        pass

    async def join(self):
        pass


_NO_QUEUE = _NoQueue()


class FrameEdges:
    """Whether the bytes a client has sent so far end between two WebSocket
    frames: what aiohttp's parser knows but does not show (its C reader keeps
    its state private). Only the frame headers' lengths are read (RFC 6455
    5.2); the parser still checks everything else.

    It lets a lone PONG skip the parser, its queue and the read task's wake-up:
    with 10,000 idle connections, 400 pongs a second are most of an idle
    server's work. It starts at an edge: an Engine.IO client sends nothing
    before the OPEN packet, which goes out after the connection is taken over.
    (A client that does anyway can only misframe its own connection, which the
    parser then closes as a protocol error.)"""

    __slots__ = ("skip", "head")

    def __init__(self) -> None:
        self.skip = 0  # bytes of the current frame still to come
        self.head = b""  # the start of a frame header cut off by the last chunk

    @property
    def between(self) -> bool:
        return not self.skip and not self.head

    def feed(self, data: bytes) -> None:
        n = len(data)
        i = self.skip
        if i >= n:
            self.skip = i - n
            return
        if self.head:
            data = self.head + data
            n = len(data)
        while n - i >= 2:
            b1 = data[i + 1]
            size = b1 & 0x7F
            start = i + (6 if b1 & 0x80 else 2)  # the 4-byte mask, when there is one
            if size == 126:
                if n - i < 4:
                    break
                size = (data[i + 2] << 8) | data[i + 3]
                start += 2
            elif size == 127:
                if n - i < 10:
                    break
                size = int.from_bytes(data[i + 2:i + 10], "big")
                start += 8
            i = start + size
        if i < n:  # a header's first bytes: keep them for the next chunk
            self.head = data[i:]
            self.skip = 0
        else:
            self.head = b""
            self.skip = i - n


class FastWebSocket(eio_aiohttp.WebSocket, asyncio.Protocol):
    """engineio's aiohttp WebSocket wrapper without permessage-deflate (zlib per
    recipient on every fan-out; Node's socket.io disables it by default too),
    with a synchronous, non-blocking `write`, and, on a connection that starts
    on the WebSocket transport, without aiohttp's HTTP machinery.

    aiohttp answers the upgrade (`WebSocketResponse.prepare`: the handshake
    checks, the 101, the frame parser). Then this object takes the transport
    over as its asyncio protocol: aiohttp's request handler forgets the
    connection without closing it and its task ends, so the upgrade request,
    the HTTP parser, the handler and middleware frames are freed, not kept
    alive for the hours a WebSocket lasts. Frames still go through aiohttp's
    parser and its queue (with its flow control); one task per connection reads
    that queue (`FastSocket._websocket_handler`). A lone PONG is the exception:
    it is answered in `data_received`. An upgrade from long-polling
    keeps aiohttp's `WebSocketResponse` for its whole life, as the library's
    probe handshake reads and writes through it."""

    transport = None
    _frames = None  # aiohttp's WebSocketDataQueue, once the transport is ours
    _parser = None
    _edges = None  # FrameEdges, once the transport is ours
    on_pong = None  # the socket's PONG handler, called for a PONG that came alone
    _reading_paused = False
    held = False  # reading stopped for good (shutdown): flow control must not resume it
    closing = False

    async def __call__(self, environ):
        request = environ["aiohttp.request"]
        ws = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size,
                               compress=False)
        try:
            await ws.prepare(request)
        except ConnectionResetError:
            return await self._client_gone()
        if getattr(self.handler, "__self__", None) is None or self.handler.__self__.connected:
            self._sock = ws
            self.transport = request.transport
            await self.handler(self)
            return ws
        self._take_over(request, ws)
        # The socket keeps its environ (python-socketio's `environ[sid]`): it
        # must not keep the request, and through it aiohttp's protocol, alive.
        environ.pop("aiohttp.request", None)
        environ.pop("wsgi.input", None)
        _spawn(self.handler(self))
        return ws

    async def _client_gone(self) -> Response:
        """The client left before its 101 went out (it gave up waiting while the
        server was busy, e.g. in a reconnect storm). A new connection's Engine.IO
        socket is closed now rather than at its ping timeout (returning, not
        raising, lets engineio forget it); an upgrade from long-polling leaves
        that session as it is. aiohttp's attempt to send the returned response
        fails quietly, as for any client that hung up."""
        sock = getattr(self.handler, "__self__", None)
        if sock is not None and not sock.connected:
            await sock.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
        return Response(status=499, reason="Client Closed Request")

    def _take_over(self, request, ws: WebSocketResponse) -> None:
        handler = request.protocol
        transport = request.transport
        self._frames = ws._reader
        self._parser = ws._parser
        self._edges = FrameEdges()
        self._frames._protocol = self  # the queue pauses and resumes reading through us
        self._reading_paused = handler._reading_paused
        # aiohttp's handler lets go: no parser to end, no transport to close.
        handler._payload_parser = None
        handler.transport = None
        transport.set_protocol(self)
        self.transport = transport
        handler.connection_lost(None)
        # aiohttp ends the handler's response with write_eof, which for a
        # WebSocketResponse sends a CLOSE frame: it was never this response's to end.
        ws._eof_sent = True
        if not self._reading_paused and not transport.is_reading() and not transport.is_closing():
            transport.resume_reading()

    # asyncio.Protocol, once the transport is ours

    def data_received(self, data: bytes) -> None:
        edges = self._edges
        # A chunk that is exactly one masked text frame holding "3" (the 4-byte
        # mask XOR the payload byte) is an Engine.IO PONG; taken here, it wakes
        # no task. Anything else, or a PONG cut or joined, takes the read loop.
        if (len(data) == 7 and data[0] == 0x81 and data[1] == 0x81
                and data[2] ^ data[6] == 0x33 and edges.between and self.on_pong is not None):
            self.on_pong()
            return
        edges.feed(data)
        # A protocol error is stored in the queue: the read loop sees it, closes.
        self._parser.feed_data(data)

    def eof_received(self):
        return None  # the transport closes itself

    def connection_lost(self, exc) -> None:
        self.closing = True
        self._frames.feed_eof()

    def pause_reading(self) -> None:
        self._reading_paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self._reading_paused = False
        if not self.held and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def hold(self) -> None:
        """Read nothing more from the peer. What it sends from now on is neither
        read nor acked, so it sends that again after reconnecting elsewhere."""
        self.held = True
        t = self.transport
        if t is not None and not t.is_closing():
            t.pause_reading()

    async def read(self):
        """The next WSMessage; None when the connection has ended (after a
        protocol error, with a CLOSE frame that says why)."""
        try:
            return await self._frames.read()
        except EofStream:
            return None
        except WebSocketError as exc:
            log.info("engine.io: WebSocket protocol error (%s), closing the connection", exc)
            self.shut(exc.code)
            return None

    def write(self, frame: bytes) -> bool:
        """Queue one encoded frame on the transport; never waits. False when the
        connection is gone, or was just aborted because it is not reading."""
        t = self.transport
        if t is None or self.closing or t.is_closing():
            return False
        t.write(frame)
        if t.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("engine.io: aborting a connection with %d unsent bytes (slow consumer)",
                        t.get_write_buffer_size())
            t.abort()  # the read loop sees the connection end and closes the socket
            return False
        return True

    def shut(self, code: int = WSCloseCode.OK) -> None:
        """Send a CLOSE frame and close the transport once its data is out; a
        peer that does not take that data within CLOSE_TIMEOUT is cut off."""
        t = self.transport
        if t is None or self.closing:
            return
        self.closing = True
        if not t.is_closing():
            t.write(_close_frame(code))
            t.close()
            if t.get_write_buffer_size():
                asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, t.abort)

    async def close(self):
        if self._frames is None:
            return await super().close()
        self.shut()


class FastSocket(AsyncSocket):
    _ws: FastWebSocket | None = None  # set while on the pure WebSocket transport
    # Loop time by which it must join a Socket.IO namespace, checked when a ping
    # is due (so kept to within a ping interval); None once it has joined one,
    # or with no deadline (AsyncServer._handle_eio_connect, ._handle_connect).
    join_by: float | None = None
    # The budget this connection's events spend (app/realtime/limits.py): its own
    # until it authenticates, then its user's.
    budget: EventBudget | None = None
    # The task disconnecting it for flooding: nothing more is read or handled.
    flood_dropped: asyncio.Task | None = None

    def send_now(self, pkt) -> bool:
        """Write the packet on the pure WebSocket transport, synchronously; False
        when not on it (long-polling, mid-upgrade): use the library's `send`."""
        ws = self._ws
        if ws is None or self.upgrading:
            return False
        frame = getattr(pkt, "ws_frame", None)
        if frame is None:
            # A fan-out sends one packet object to every recipient: frame it once.
            frame = pkt.ws_frame = ws_frame(pkt.encode())
        ws.write(frame)
        return True

    async def send(self, pkt):
        if self.send_now(pkt):
            return None
        if self.queue.qsize() >= MAX_POLLING_QUEUE:
            if not (self.closed or self.closing):
                log.warning("engine.io: closing a long-polling connection with %d uncollected "
                            "packets (slow consumer)", self.queue.qsize())
                await self.close(wait=False, abort=True,
                                 reason=self.server.reason.TRANSPORT_ERROR)
            return None
        return await super().send(pkt)

    def hold(self) -> None:
        """Read no more events (a graceful shutdown, before the socket is closed);
        long-polling and upgraded sockets are read until they close."""
        ws = self._ws
        if ws is not None:
            ws.hold()

    def schedule_ping(self):
        # Same rule as the library: only after the previous ping was answered.
        if self.last_ping:
            self.last_ping = None
            self.server._wheel.add(self, self.server.ping_interval, None)

    def send_ping(self) -> None:
        self.last_ping = time.time()
        ws = self._ws
        if ws is not None and not self.upgrading:
            ws.write(_PING_FRAME)
        else:
            self.queue.put_nowait(_PING_PKT)  # long-polling / upgrading: the queue

    async def receive(self, pkt):
        if pkt.packet_type == packet.PONG:
            self.schedule_ping()
        else:
            await super().receive(pkt)

    async def handle_post_request(self, environ):
        try:
            return await super().handle_post_request(environ)
        except (ValueError, IndexError):
            # A long-polling body that is not an Engine.IO payload: end the
            # session (400) as a malformed WebSocket frame does, without the
            # library's traceback.
            log.info("engine.io: malformed long-polling payload, closing the connection")
            # Closed here without waiting: the library's close would wait for
            # the client's next GET to collect the CLOSE packet.
            await self.close(wait=False, abort=True,
                             reason=self.server.reason.TRANSPORT_ERROR)
            raise engineio.exceptions.EngineIOError() from None

    async def close(self, wait=True, abort=False, reason=None):
        ws = self._ws
        await super().close(wait=wait, abort=abort, reason=reason)
        if ws is not None:
            self._ws = None
            await ws.close()  # unblocks the read loop

    async def _websocket_handler(self, ws):
        if self.connected:
            # An upgrade from long-polling: keep the library's probe handshake.
            return await super()._websocket_handler(ws)
        self.connected = True
        self.upgraded = True
        # Packets queued before the transport existed (the OPEN packet).
        while not self.queue.empty():
            pending = self.queue.get_nowait()
            if pending is not None:
                ws.write(ws_frame(pending.encode()))
        self.queue = _NO_QUEUE
        self._ws = ws
        if ws._edges is not None:  # the transport is the socket's own
            ws.on_pong = self.schedule_ping
        on_message = self.server.handlers.get("message")
        if not asyncio.iscoroutinefunction(on_message):
            on_message = None  # not python-socketio's: every packet takes the library path
        sid = self.sid
        try:
            while not self.closed:
                try:
                    msg = await ws.read()
                except Exception:  # not a protocol error nor the end: unexpected, say so once
                    log.warning("engine.io: reading a WebSocket failed; closing it",
                                exc_info=True, extra={"fields": {"sid": sid}})
                    break
                if msg is None:
                    break
                kind = msg.type
                if kind is WSMsgType.TEXT:
                    data = msg.data
                    # Socket.IO over Engine.IO: "4" + a packet that starts with a
                    # digit is a MESSAGE whose data is the rest, exactly as
                    # engineio's Packet decodes it (its JSON attempt refuses a
                    # leading digit). PONG needs no Packet either.
                    if on_message is not None and data[:1] == "4" and data[1:2].isdigit():
                        try:
                            await on_message(sid, data[1:])
                        except Exception:
                            log.exception("engine.io message handler error",
                                          extra={"fields": {"sid": sid}})
                        budget = self.budget
                        if budget is not None and budget.throttled:
                            # Backpressure (app/realtime/limits.py): after a refusal,
                            # read nothing more until the bucket holds a token again.
                            # (At SOCKET_MAX_INFLIGHT, AsyncServer._handle_event holds
                            # this loop instead.)
                            await asyncio.sleep(budget.refill_delay(time.monotonic()))
                        if self.flood_dropped is not None:
                            # Being dropped (AsyncServer._drop tells the client why
                            # first): read nothing more meanwhile.
                            await asyncio.wait((self.flood_dropped,))
                        continue
                    if data == "3":
                        self.schedule_ping()
                        continue
                elif kind is WSMsgType.BINARY:
                    data = msg.data
                elif kind is WSMsgType.PING:
                    ws.write(_control_frame(0x8A, msg.data))  # PONG with the same payload
                    continue
                elif kind is WSMsgType.PONG:
                    continue
                else:
                    break  # CLOSE: answered by ws.close() below
                try:
                    pkt = packet.Packet(encoded_packet=data)
                except (ValueError, IndexError):
                    # Not an Engine.IO packet at all: the peer does not speak the
                    # protocol, so end the connection as engine.io does ("parse error").
                    log.info("engine.io: malformed packet, closing the connection")
                    break
                try:
                    await self.receive(pkt)
                except engineio.exceptions.UnknownPacketError:
                    log.info("engine.io: unknown packet ignored",
                             extra={"fields": {"sid": sid, "head": repr(data[:16])}})
                except engineio.exceptions.SocketIsClosedError:
                    break
                except Exception:
                    log.exception("engine.io receive error", extra={"fields": {"sid": sid}})
        finally:
            self._ws = None
            ws.on_pong = None
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
            await ws.close()
            # What engineio's request handler does when a WebSocket ends; here
            # that handler returned at the upgrade.
            if self.server.sockets.get(sid) is self:
                del self.server.sockets[sid]


class _PingWheel:
    """Every ping and every pong deadline of the server on one timer wheel.

    An entry is (socket, stamp): stamp None means "send the next PING"; a float
    is the `last_ping` of a PING already sent, and if the socket still has that
    same `last_ping` when the slot comes due, no PONG arrived in time."""

    def __init__(self, server: FastEngineServer) -> None:
        self.server = server
        self.slots: dict[int, list] = {}
        self.cursor: int | None = None
        self.task: asyncio.Task | None = None

    def add(self, sock, delay: float, stamp) -> None:
        slot = math.ceil((asyncio.get_running_loop().time() + delay) / TICK)
        bucket = self.slots.get(slot)
        if bucket is None:
            self.slots[slot] = [(sock, stamp)]
        else:
            bucket.append((sock, stamp))
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self.cursor = math.floor(loop.time() / TICK)
        while True:
            await asyncio.sleep((self.cursor + 1) * TICK - loop.time())
            now = math.floor(loop.time() / TICK)
            while self.cursor < now:
                self.cursor += 1
                bucket = self.slots.pop(self.cursor, None)
                if bucket:
                    try:
                        self._fire(bucket)
                    except Exception:  # pragma: no cover - never let the wheel die
                        log.exception("engine.io ping wheel")
            if not self.slots:  # no sockets left: no task either (add() restarts it)
                self.task = None
                return

    def _fire(self, bucket) -> None:
        server = self.server
        timeout = server.ping_timeout
        now = asyncio.get_running_loop().time()
        for sock, stamp in bucket:
            if sock.closed or sock.closing:
                continue
            if stamp is None:
                if sock.join_by is not None and now >= sock.join_by:
                    _spawn(sock.close(wait=False, abort=False,
                                      reason=server.reason.SERVER_DISCONNECT))
                    continue
                if sock.last_ping is None:
                    sock.send_ping()
                    self.add(sock, timeout, sock.last_ping)
            elif sock.last_ping == stamp:
                # Same reason and the same CLOSE packet as the library's check.
                _spawn(sock.close(wait=False, abort=False, reason=server.reason.PING_TIMEOUT))

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self.slots.clear()


class _SocketTable(dict):
    """engineio creates every socket as AsyncSocket and stores it here; the
    table hands back a FastSocket (same object, same state, leaner transport)."""

    def __setitem__(self, sid, sock):
        if type(sock) is AsyncSocket:
            sock.__class__ = FastSocket
        super().__setitem__(sid, sock)


_gc_frozen = False


# Young-generation threshold (CPython's default is 700 allocations). A group
# fan-out allocates a few objects per recipient that all die within the emit;
# at the default, collections run mid-fan-out and promote them, and the promoted
# garbage keeps triggering full collections.
GC_THRESHOLDS = (20_000, 10, 10)


async def _tune_gc(app) -> None:
    """Once per process, after start-up: start-up objects (modules, ORM metadata,
    templates) live for the whole process, so they are moved out of the
    collector's reach (`gc.freeze`); otherwise every full collection walks them,
    a pause that holds every delivery behind it (docs/benchmarks.md)."""
    global _gc_frozen
    if not _gc_frozen:
        _gc_frozen = True
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)


class FastEngineServer(engineio.AsyncServer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sockets = _SocketTable()
        self._wheel = _PingWheel(self)
        if self._async.get("websocket") is eio_aiohttp.WebSocket:
            self._async = dict(self._async, websocket=FastWebSocket,
                               translate_request=_translate_request)

    def attach(self, app, engineio_path="engine.io"):
        super().attach(app, engineio_path)
        app.on_startup.append(_tune_gc)  # runs after the cleanup contexts started

    async def _service_task(self):
        """Pings and timeouts live on the wheel; this only forgets closed sockets
        (those that never come back to be looked up), once per ping timeout."""
        self.service_task_event = self.create_event()
        while True:
            try:
                await asyncio.wait_for(self.service_task_event.wait(), self.ping_timeout)
                break
            except TimeoutError:
                pass
            for sid in [sid for sid, s in self.sockets.items() if s.closed]:
                self.sockets.pop(sid, None)

    async def shutdown(self):
        self._wheel.stop()
        await super().shutdown()

    def send_now(self, sid, pkt) -> bool:
        """Write an Engine.IO packet to a socket on the pure WebSocket transport
        synchronously (no task, no coroutine). False when that is not possible —
        unknown or closed sid, long-polling, mid-upgrade — and the caller must use
        `await send_packet(...)`, which does what the library does in those cases.

        For fan-out loops: `for sid in ...: send_now(sid, pkt) or <task for send_packet>`."""
        sock = self.sockets.get(sid)
        if sock is None or sock.closed or not isinstance(sock, FastSocket):
            return False
        return sock.send_now(pkt)


class AsyncServer(PacketGuard, socketio.AsyncServer):
    def __init__(self, *args, limits: ConnectionLimits | None = None, metrics=None,
                 connect_timeout: float = 45.0, **kwargs):
        kwargs.setdefault("serializer", FastPacket)
        super().__init__(*args, **kwargs)
        self.limits = limits or ConnectionLimits()
        # An Engine.IO connection that has joined no namespace by then is closed
        # (at its next ping): it is not signed in, and would otherwise hold a
        # socket, answering pings, for as long as its client likes. Socket.IO's
        # own server does the same (`connectTimeout`, 45 s).
        self.connect_timeout = connect_timeout
        self.metrics = metrics
        self._refused_counter = None
        # Signed-in users' budgets, shared by their connections on this process and
        # kept after the last one closes until they are as good as new (a client
        # that reconnects does not get a fresh budget).
        self._user_budgets: dict[str, EventBudget] = {}
        self._next_sweep = 0.0

    def bind_user_budget(self, eio_sid, user_id: str) -> None:
        """After authentication: the connection spends its user's budget from now on."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is None:
            return
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + 60
            self._user_budgets = {u: b for u, b in self._user_budgets.items()
                                  if not b.as_good_as_new(now)}
        budget = self._user_budgets.get(user_id)
        if budget is None:
            budget = self._user_budgets[user_id] = EventBudget(self.limits, now)
        sock.budget = budget

    async def _handle_event(self, eio_sid, namespace, id, data):
        """python-socketio's dispatch of one client event, with the connection's
        limits checked first: a refused event costs its ack and nothing else (no
        task, no handler, no database)."""
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if not self.manager.is_connected(sid, namespace):
            return
        sock = self.eio.sockets.get(eio_sid)
        if sock is None:
            return
        if getattr(sock, "flood_dropped", None) is not None:
            return
        now = time.monotonic()
        budget = self._budget(sock, now)
        if budget.full:
            # Wait for room before anything is done for this event. On a WebSocket
            # this holds the socket's read loop: nothing more is read meanwhile.
            if budget.waiting >= MAX_WAITING:
                self._refuse_over_limit(sock, budget, sid, eio_sid, namespace, id, 1.0, now)
                return
            budget.waiting += 1
            try:
                await budget.wait_for_room()
            finally:
                budget.waiting -= 1
            if sock.flood_dropped is not None:
                return
            now = time.monotonic()
        retry_after = budget.take(now)
        if retry_after:
            self._refuse_over_limit(sock, budget, sid, eio_sid, namespace, id, retry_after, now)
            return
        # The loop's own create_task: ensure_future first asks what it was given.
        task = asyncio.get_running_loop().create_task(
            self._handle_event_internal(self, sid, eio_sid, data, namespace, id))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        task.add_done_callback(budget.done)

    def _budget(self, sock, now: float) -> EventBudget:
        budget = getattr(sock, "budget", None)
        if budget is None:
            budget = sock.budget = EventBudget(self.limits, now)
        return budget

    async def _handle_eio_connect(self, eio_sid, environ):
        await super()._handle_eio_connect(eio_sid, environ)
        sock = self.eio.sockets.get(eio_sid)
        if isinstance(sock, FastSocket) and self.connect_timeout:
            sock.join_by = asyncio.get_running_loop().time() + self.connect_timeout

    async def _handle_connect(self, eio_sid, namespace, data):
        """A namespace CONNECT authenticates (a database read): it spends a token of
        the connection's bucket like an event, so repeating it is no way around."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None:
            if getattr(sock, "flood_dropped", None) is not None:
                return
            now = time.monotonic()
            budget = self._budget(sock, now)
            if budget.spend(now):
                self._refuse_over_limit(sock, budget, None, eio_sid, namespace or "/", None, 1.0, now)
                pkt = self.packet_class(sio_packet.CONNECT_ERROR, data={
                    "message": "rate_limited"}, namespace=namespace or "/")
                await self._send_packet(eio_sid, pkt)
                return
        await super()._handle_connect(eio_sid, namespace, data)
        if sock is not None and self.manager.sid_from_eio_sid(eio_sid, namespace or "/"):
            sock.join_by = None

    def _refuse_over_limit(self, sock, budget, sid, eio_sid, namespace, id, retry_after, now) -> None:
        drop = budget.refuse(now)
        if budget.refused == 1:
            # Once per 10 s window of refusals, not once per event.
            log.warning("connection over its event limit; refusing events",
                        extra={"fields": {"sid": sid or eio_sid}})
        counter = self._refused_counter
        if counter is None and self.metrics is not None:
            counter = self._refused_counter = self.metrics.event_errors.labels(
                code="rate_limited")
        if counter is not None:
            counter.inc()
        if id is not None:
            pkt = self.packet_class(sio_packet.ACK, namespace=namespace, id=id,
                                    data=[rate_limited_ack(retry_after)])
            eio_pkt = packet.Packet(packet.MESSAGE, data=pkt.encode())
            if not self.eio.send_now(eio_sid, eio_pkt):
                _spawn(self.eio.send_packet(eio_sid, eio_pkt))
        if drop:
            log.warning("disconnecting a connection that keeps flooding",
                        extra={"fields": {"sid": sid or eio_sid, "refused": budget.refused}})
            sock.flood_dropped = task = asyncio.ensure_future(self._drop(sock, sid, namespace))
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)

    async def _drop(self, sock, sid, namespace) -> None:
        # Held first, unread (it costs nothing: its frames wait in its own TCP
        # buffers), so a flooder that reconnects at once can do so only once per
        # FLOOD_HOLD instead of making us authenticate it in a loop. Then the
        # namespace DISCONNECT tells the client it was the server's decision
        # (socket.io clients do not reconnect by themselves after it).
        try:
            await asyncio.sleep(FLOOD_HOLD)
            if sid is not None and not sock.closed:
                await self.disconnect(sid, namespace=namespace)
        finally:
            await sock.close(wait=False, abort=True)

    def _engineio_server_class(self):
        return FastEngineServer

    # python-socketio's per-recipient send path is three coroutines deep
    # (_send_eio_packet -> eio.send_packet -> socket.send) and acks go through
    # one more (_send_packet -> eio.send); on the WebSocket transport the write
    # is synchronous, so these call it directly and fall back to the library.

    async def _send_eio_packet(self, eio_sid, eio_pkt):
        if not self.eio.send_now(eio_sid, eio_pkt):
            await self.eio.send_packet(eio_sid, eio_pkt)

    async def _send_packet(self, eio_sid, pkt):
        encoded = pkt.encode()
        for ep in encoded if isinstance(encoded, list) else (encoded,):
            eio_pkt = packet.Packet(packet.MESSAGE, data=ep)
            if not self.eio.send_now(eio_sid, eio_pkt):
                await self.eio.send_packet(eio_sid, eio_pkt)
