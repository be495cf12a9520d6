"""The python-socketio, python-engineio and aiohttp internals Parley overrides or calls.

app/realtime/engine.py, packets.py, rooms.py, managers.py and queue.py replace
private methods of the two libraries and swap their socket classes (each
module's docstring lists what and why). pyproject.toml pins both libraries to
the tested minor versions; these tests are what an upgrade must pass: one test
per internal, failing with a message that names it, by checking that it
exists, that its signature is the one our override is written against, and
where it is cheap, that the library still calls it the way we rely on.
"""

from __future__ import annotations

import asyncio
import inspect

import engineio
import pytest
import socketio
from aiohttp.web import WebSocketResponse
from engineio import async_server as eio_async_server
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet

from app.realtime.engine import AsyncServer, FastEngineServer, FastSocket, FastWebSocket
from app.realtime.managers import DirectEmit, LocalManager
from app.realtime.packets import FastPacket

HINT = ("app/realtime/ overrides this internal; read the library's new code, adapt the "
        "override (or drop it), then update this test and the pin in pyproject.toml")


def _name(owner) -> str:
    cls = owner if isinstance(owner, type) else type(owner)
    return f"{cls.__module__}.{cls.__qualname__}"


def internal(owner, name: str) -> object:
    """The attribute `owner.name` (a class or an instance), or a failure naming it."""
    what = f"{_name(owner)}.{name}"
    if not hasattr(owner, name):
        pytest.fail(f"library internal {what} is gone. {HINT}")
    return getattr(owner, name)


def params(owner, name: str, expected: str) -> None:
    """The internal's parameters, as written in our override, e.g. "(self, sid, pkt)"."""
    what = f"{_name(owner)}.{name}"
    found = str(inspect.signature(internal(owner, name)))
    if found != expected:
        pytest.fail(f"library internal {what} changed its signature: was {expected}, "
                    f"is {found}. {HINT}")


def source_has(func, *needles: str) -> None:
    what = f"{func.__module__}.{func.__qualname__}"
    text = inspect.getsource(func)
    for needle in needles:
        if needle not in text:
            pytest.fail(f"library internal {what} no longer contains {needle!r}, which "
                        f"app/realtime/ relies on. {HINT}")


# --- python-socketio: the server -------------------------------------------------


def test_sio_engineio_server_class():
    """engine.AsyncServer._engineio_server_class: how FastEngineServer is plugged in."""
    params(socketio.AsyncServer, "_engineio_server_class", "(self)")
    server = AsyncServer(async_mode="aiohttp")
    assert isinstance(server.eio, FastEngineServer), \
        "socketio.AsyncServer no longer builds its engine from _engineio_server_class()"


def test_sio_handle_event():
    """engine.AsyncServer._handle_event: the connection limits run before dispatch."""
    params(socketio.AsyncServer, "_handle_event", "(self, eio_sid, namespace, id, data)")


def test_sio_handle_event_internal():
    """engine.AsyncServer._handle_event calls the library's dispatch of one event."""
    params(socketio.AsyncServer, "_handle_event_internal",
           "(self, server, sid, eio_sid, data, namespace, id)")
    # The library calls it as a plain function with the server first.
    source_has(socketio.AsyncServer._handle_event, "self._handle_event_internal(self, sid")


def test_sio_handle_connect():
    """engine.AsyncServer._handle_connect: a namespace CONNECT spends a token."""
    params(socketio.AsyncServer, "_handle_connect", "(self, eio_sid, namespace, data)")


def test_sio_handle_eio_connect():
    """engine.AsyncServer._handle_eio_connect: sets the namespace-join deadline after
    the library's own; the library registers it as the engine's connect handler."""
    params(socketio.AsyncServer, "_handle_eio_connect", "(self, eio_sid, environ)")
    server = AsyncServer(async_mode="aiohttp")
    assert server.eio.handlers.get("connect") == server._handle_eio_connect, \
        "socketio.AsyncServer no longer hands _handle_eio_connect to its engine"


def test_sio_manager_sid_from_eio_sid():
    """engine.AsyncServer._handle_connect: a connection has joined once the manager
    maps its Engine.IO sid to a namespace sid (after a successful CONNECT)."""
    params(socketio.AsyncManager, "sid_from_eio_sid", "(self, eio_sid, namespace)")


def test_sio_send_eio_packet():
    """engine.AsyncServer._send_eio_packet: the synchronous WebSocket write; also
    called by managers.DirectEmit.deliver for long-polling sockets."""
    params(socketio.AsyncServer, "_send_eio_packet", "(self, eio_sid, eio_pkt)")


def test_sio_send_packet():
    """engine.AsyncServer._send_packet: acks written without the library's coroutines."""
    params(socketio.AsyncServer, "_send_packet", "(self, eio_sid, pkt)")


def test_sio_handle_eio_message_and_binary_packet_table():
    """packets.PacketGuard._handle_eio_message: every incoming packet is checked
    first; it keeps pending BINARY_* packets in the library's `_binary_packet`."""
    params(socketio.AsyncServer, "_handle_eio_message", "(self, eio_sid, data)")
    server = AsyncServer(async_mode="aiohttp")
    table = internal(server, "_binary_packet")
    assert isinstance(table, dict), "socketio.AsyncServer._binary_packet is no longer a dict"
    # The engine hands every MESSAGE to the Socket.IO server through this handler.
    assert server.eio.handlers["message"] == server._handle_eio_message


def test_sio_handle_ack_and_disconnect():
    """packets.PacketGuard dispatches ACK and DISCONNECT to the library's handlers."""
    params(socketio.AsyncServer, "_handle_ack", "(self, eio_sid, namespace, id, data)")
    params(socketio.AsyncServer, "_handle_disconnect",
           "(self, eio_sid, namespace, reason=None)")
    assert AsyncServer(async_mode="aiohttp").reason.CLIENT_DISCONNECT


def test_sio_packet_data_is_binary():
    """packets.FastPacket.data_is_binary: consulted by Packet.__init__ for every packet."""
    method = internal(sio_packet.Packet, "data_is_binary")
    assert inspect.ismethod(method), "socketio Packet.data_is_binary is no longer a classmethod"

    class NeverBinary(sio_packet.Packet):
        @classmethod
        def data_is_binary(cls, data):
            return False

    assert NeverBinary(sio_packet.EVENT, data=["x", b"1"]).packet_type == sio_packet.EVENT, \
        "socketio Packet.__init__ no longer asks cls.data_is_binary"
    assert FastPacket(sio_packet.EVENT, data=["x", b"1"]).packet_type == \
        sio_packet.BINARY_EVENT


# --- python-socketio: the client manager -------------------------------------------


def local_manager() -> LocalManager:
    return AsyncServer(async_mode="aiohttp", client_manager=LocalManager()).manager


def test_manager_basic_enter_and_leave_room():
    """rooms.SidRoomIndex and queue.QueueManager follow every room change through
    basic_enter_room / basic_leave_room; connect and enter_room must call them."""
    params(socketio.AsyncManager, "basic_enter_room", "(self, sid, namespace, room, eio_sid=None)")
    params(socketio.AsyncManager, "basic_leave_room", "(self, sid, namespace, room)")
    params(socketio.AsyncManager, "enter_room", "(self, sid, namespace, room, eio_sid=None)")

    async def probe():
        m = local_manager()
        sid = await m.connect("e1", "/")
        await m.enter_room(sid, "/", "u:1")
        ours = sorted(map(str, m.get_rooms(sid, "/")))
        theirs = sorted(map(str, socketio.AsyncManager.get_rooms(m, sid, "/")))
        assert ours == theirs == sorted([sid, "u:1"]), \
            "socketio's manager no longer enters rooms through basic_enter_room"
        await m.leave_room(sid, "/", "u:1")
        assert m.get_rooms(sid, "/") == [sid], \
            "socketio's manager no longer leaves rooms through basic_leave_room"

    asyncio.run(probe())


def test_manager_basic_disconnect():
    """rooms.SidRoomIndex.basic_disconnect replaces the library's scan of every
    room; it clears what the library's version clears."""
    params(socketio.AsyncManager, "basic_disconnect", "(self, sid, namespace, **kwargs)")
    m = socketio.AsyncManager()
    for name in ("rooms", "callbacks", "pending_connect", "pending_disconnect", "eio_to_sid"):
        if not hasattr(m, name):
            pytest.fail(f"socketio manager attribute {name!r} is gone "
                        f"(rooms.SidRoomIndex.basic_disconnect uses it). {HINT}")
    # What the library's basic_disconnect touches besides the rooms: if it
    # starts clearing more, ours must too.
    source_has(socketio.base_manager.BaseManager.basic_disconnect,
               "self.callbacks", "self.pending_disconnect")

    async def probe():
        m = local_manager()
        sid = await m.connect("e1", "/")
        other = await m.connect("e2", "/")
        await m.enter_room(sid, "/", "u:1")
        await m.enter_room(other, "/", "u:1")
        await m.disconnect(sid, "/")
        assert not m.is_connected(sid, "/")
        assert [s for s, _ in m.get_participants("/", "u:1")] == [other]
        assert ("/", sid) not in m._sid_rooms

    asyncio.run(probe())


def test_manager_get_rooms():
    """rooms.SidRoomIndex.get_rooms answers from its index."""
    params(socketio.AsyncManager, "get_rooms", "(self, sid, namespace)")


def test_manager_emit_and_participants():
    """managers.DirectEmit.emit / deliver: the library's emit signature, and what
    deliver walks (get_participants yields (sid, eio_sid))."""
    params(socketio.AsyncManager, "emit",
           "(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, "
           "**kwargs)")
    params(socketio.AsyncManager, "get_participants", "(self, namespace, room)")
    params(socketio.AsyncManager, "initialize", "(self)")

    async def probe():
        m = local_manager()
        sid = await m.connect("e1", "/")
        assert list(m.get_participants("/", sid)) == [(sid, "e1")]

    asyncio.run(probe())
    assert issubclass(LocalManager, DirectEmit)


# --- python-engineio: the server -------------------------------------------------


def test_eio_socket_table():
    """engine._SocketTable: the engine stores each new socket with
    `self.sockets[sid] = AsyncSocket(...)`, and the table turns it into a FastSocket."""
    source_has(eio_async_server.AsyncServer._handle_connect, "async_socket.AsyncSocket(",
               "self.sockets[sid] = s")
    server = FastEngineServer(async_mode="aiohttp")
    sock = AsyncSocket(server, "s1")
    server.sockets["s1"] = sock
    assert type(server.sockets["s1"]) is FastSocket


def test_eio_async_driver_table():
    """engine.FastEngineServer swaps `_async["websocket"]` and `_async["translate_request"]`."""
    plain = engineio.AsyncServer(async_mode="aiohttp")
    table = internal(plain, "_async")
    for key in ("websocket", "translate_request"):
        if key not in table:
            pytest.fail(f"engineio AsyncServer._async has no {key!r} any more. {HINT}")
    assert table["websocket"] is eio_aiohttp.WebSocket
    fast = FastEngineServer(async_mode="aiohttp")
    assert fast._async["websocket"] is FastWebSocket


def test_eio_service_task():
    """engine.FastEngineServer._service_task: pings moved to the timer wheel."""
    params(engineio.AsyncServer, "_service_task", "(self)")
    source_has(eio_async_server.AsyncServer._handle_connect, "self._service_task")
    assert hasattr(engineio.AsyncServer(async_mode="aiohttp"), "service_task_event")


def test_eio_send_packet():
    """engine.FastEngineServer.send_now falls back to the library's send_packet."""
    params(engineio.AsyncServer, "send_packet", "(self, sid, pkt)")


# --- python-engineio: the socket -------------------------------------------------


def test_eio_socket_state():
    """FastSocket reads and writes the library socket's state."""
    sock = AsyncSocket(engineio.AsyncServer(async_mode="aiohttp"), "s1")
    for name in ("last_ping", "queue", "upgrading", "upgraded", "connected", "closed",
                 "closing"):
        if not hasattr(sock, name):
            pytest.fail(f"engineio AsyncSocket attribute {name!r} is gone "
                        f"(engine.FastSocket uses it). {HINT}")


def test_eio_socket_send():
    params(AsyncSocket, "send", "(self, pkt)")


def test_eio_socket_schedule_ping():
    """FastSocket.schedule_ping: the library's rule (only after the previous ping
    was answered, marked by last_ping) on the timer wheel."""
    params(AsyncSocket, "schedule_ping", "(self)")
    source_has(AsyncSocket.schedule_ping, "self.last_ping")
    source_has(AsyncSocket.receive, "self.schedule_ping()")


def test_eio_socket_receive():
    params(AsyncSocket, "receive", "(self, pkt)")


def test_eio_socket_handle_post_request():
    params(AsyncSocket, "handle_post_request", "(self, environ)")


def test_eio_socket_close():
    params(AsyncSocket, "close", "(self, wait=True, abort=False, reason=None)")


def test_eio_socket_websocket_handler():
    """FastSocket._websocket_handler: the WebSocket read loop."""
    params(AsyncSocket, "_websocket_handler", "(self, ws)")
    source_has(AsyncSocket._upgrade_websocket, "self._websocket_handler")


def test_eio_aiohttp_websocket():
    """engine.FastWebSocket replaces the aiohttp driver's WebSocket wrapper."""
    params(eio_aiohttp.WebSocket, "__init__", "(self, handler, server)")
    params(eio_aiohttp.WebSocket, "__call__", "(self, environ)")
    for name in ("close", "send", "wait"):
        internal(eio_aiohttp.WebSocket, name)


def test_eio_aiohttp_translate_request():
    """engine._translate_request wraps the aiohttp driver's own."""
    name = "engineio.async_drivers.aiohttp.translate_request"
    if not hasattr(eio_aiohttp, "translate_request"):
        pytest.fail(f"library internal {name} is gone. {HINT}")
    found = str(inspect.signature(eio_aiohttp.translate_request))
    if found != "(request)":
        pytest.fail(f"library internal {name} changed its signature: was (request), "
                    f"is {found}. {HINT}")


def test_eio_aiohttp_environ_keys():
    """engine.FastWebSocket drops `aiohttp.request` and `wsgi.input` from a
    WebSocket's environ so it does not keep the request alive; a new key that
    holds the request would defeat that."""
    source_has(eio_aiohttp.translate_request, "'aiohttp.request': request",
               "'wsgi.input': request.content")


# --- aiohttp: taking a WebSocket's transport over (engine.FastWebSocket) ---------


def test_aiohttp_websocket_response_parser_and_queue():
    """`prepare` creates the frame queue and parser FastWebSocket takes over, and
    hands the parser to the request handler."""
    source_has(WebSocketResponse._post_start, "self._reader = WebSocketDataQueue(",
               "self._parser = WebSocketReader(", "request.protocol.set_parser(self._parser")


def test_aiohttp_websocket_response_write_eof():
    """`_eof_sent` keeps aiohttp's end of the request from closing the WebSocket."""
    source_has(WebSocketResponse.write_eof, "if self._eof_sent:\n            return")


def test_aiohttp_frame_queue_flow_control():
    """The queue pauses and resumes reading through its `_protocol`."""
    # The compiled queue cannot be read; its Python twin is the same code.
    from aiohttp._websocket import reader_py
    from aiohttp._websocket.reader import WebSocketDataQueue

    source_has(reader_py.WebSocketDataQueue.feed_data, "self._protocol._reading_paused",
               "self._protocol.pause_reading()")
    source_has(reader_py.WebSocketDataQueue._read_from_buffer, "self._protocol.resume_reading()")
    loop = asyncio.new_event_loop()
    try:
        queue = WebSocketDataQueue(object(), 16, loop=loop)
        queue._protocol = marker = object()
        assert queue._protocol is marker
    finally:
        loop.close()


def test_aiohttp_request_handler_lets_go():
    """With its `transport` and `_payload_parser` cleared, `connection_lost(None)`
    removes the handler from the server's table and closes nothing."""
    from aiohttp.web_protocol import RequestHandler

    for name in ("transport", "_payload_parser", "_reading_paused"):
        if name not in RequestHandler.__slots__ and not any(
                name in getattr(c, "__slots__", ()) for c in RequestHandler.__mro__):
            pytest.fail(f"library internal aiohttp.web_protocol.RequestHandler.{name} is "
                        f"gone. {HINT}")
    params(RequestHandler, "connection_lost", "(self, exc: BaseException | None) -> None")
    source_has(RequestHandler.connection_lost, "self._manager.connection_lost(self, exc)",
               "self.force_close()", "if self._payload_parser is not None:")
    source_has(RequestHandler.force_close, "if self.transport is not None:")


def test_eio_packet_decoding():
    """engine.FastSocket's read loop builds Packets from frames and tells a
    MESSAGE by its leading "4", as the library's encoding does."""
    pkt = eio_packet.Packet(encoded_packet="42[\"x\"]")
    assert pkt.packet_type == eio_packet.MESSAGE and pkt.data == '2["x"]'
    assert eio_packet.Packet(eio_packet.MESSAGE, data="2").encode() == "42"
