"""The Engine.IO / Socket.IO transport (app/realtime/engine.py, app/realtime/packets.py)
against the real app on a real port: the ping wheel (pings, pongs, dead peers),
long-polling and polling→WebSocket upgrades, binary packets both ways, slow
consumers, and the packet class's binary check."""

from __future__ import annotations

import asyncio
import base64
import gc
import itertools
import json
import logging
import os
import socket

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as hs
from socketio.packet import Packet
from yarl import URL

from app.realtime import engine
from app.realtime.chat import EVENTS
from app.realtime.packets import FastPacket, has_binary
from app.server import SIO_KEY
from tests.factories import call, connect, make_user, until

EIO_WS = "/socket.io/?EIO=4&transport=websocket"


@pytest.fixture
def settings_overrides():
    return {"ping_interval": 1, "ping_timeout": 1}


@pytest.fixture
def sio(server):
    return server.app[SIO_KEY]


async def _text(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> str:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return msg.data


async def _open_raw(session: aiohttp.ClientSession, base_url: str):
    ws = await session.ws_connect(base_url + EIO_WS)
    opened = await _text(ws)
    assert opened[0] == "0"
    return ws, json.loads(opened[1:])


async def test_handshake_announces_ping_settings_and_socket_is_fast(sio, base_url):
    async with aiohttp.ClientSession() as session:
        ws, hello = await _open_raw(session, base_url)
        assert hello["pingInterval"] == 1000 and hello["pingTimeout"] == 1000
        assert hello["upgrades"] == []
        sock = sio.eio.sockets[hello["sid"]]
        assert type(sock) is engine.FastSocket
        assert sock.queue is engine._NO_QUEUE  # the per-socket asyncio.Queue is gone
        await ws.close()


async def test_pings_keep_coming_while_pongs_answer(sio, base_url):
    async with aiohttp.ClientSession() as session:
        ws, hello = await _open_raw(session, base_url)
        for _ in range(3):
            assert await _text(ws) == "2"
            await ws.send_str("3")
        assert hello["sid"] in sio.eio.sockets
        assert not sio.eio.sockets[hello["sid"]].closed
        await ws.close()


async def test_peer_that_stops_answering_is_closed_with_ping_timeout(sio, base_url):
    reasons = []
    # Listen on the Engine.IO layer (after python-socketio's own handler).
    original = sio.eio.handlers["disconnect"]

    async def disconnect(sid, reason):
        reasons.append(reason)
        return await original(sid, reason)

    sio.eio.handlers["disconnect"] = disconnect
    async with aiohttp.ClientSession() as session:
        ws, hello = await _open_raw(session, base_url)
        assert await _text(ws) == "2"  # and no PONG
        assert await _text(ws) == "1"  # CLOSE packet, as python-engineio sends it
        msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert reasons == [sio.eio.reason.PING_TIMEOUT]
    for _ in range(100):
        if hello["sid"] not in sio.eio.sockets:
            break
        await asyncio.sleep(0.05)
    assert hello["sid"] not in sio.eio.sockets


def _client_frame(payload: bytes, mask: bytes | None = b"\x5a\xc3\x17\x88") -> bytes:
    """One text frame as a client sends it (RFC 6455 5.2); `mask` None: unmasked."""
    n = len(payload)
    flag = 0 if mask is None else 0x80
    if n < 126:
        head = bytes((0x81, flag | n))
    elif n < 65536:
        head = bytes((0x81, flag | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, flag | 127)) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    keys = (mask * (n // 4 + 1))[:n]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")
    return head + mask + masked.to_bytes(n, "big")


async def test_a_lone_pong_is_taken_as_its_bytes_arrive(sio, base_url):
    async with aiohttp.ClientSession() as session:
        ws, hello = await _open_raw(session, base_url)
        assert await _text(ws) == "2"
        sock = sio.eio.sockets[hello["sid"]]
        assert sock.last_ping  # waiting for the PONG
        sock._ws.data_received(_client_frame(b"3"))
        assert sock.last_ping is None  # at once: no read task had a turn
        assert await _text(ws) == "2"  # and the next PING follows
        await ws.send_str("3")
        assert await _text(ws) == "2"
        await ws.close()


async def test_bytes_that_look_like_a_pong_inside_a_frame_stay_in_it(sio, base_url):
    """A frame arrives in three chunks, the middle one 7 bytes shaped like a
    masked "3": it is the frame's payload, and the frame is read whole."""
    url = URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {EIO_WS} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())

    async def frame_text() -> str:
        _, b1 = await reader.readexactly(2)
        assert b1 < 126  # the server's answers here are short
        return (await reader.readexactly(b1)).decode()

    try:
        assert b" 101 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert (await asyncio.wait_for(frame_text(), 10))[0] == "0"  # OPEN
        # A Socket.IO CONNECT with a token that is no token. At payload offset
        # 20 (a multiple of 4), "@@A" masked by C1 C1 00 is 81 81 41, and "r"
        # masked by 00 is 41 ^ 33.
        text = b'40/chat,{"token":"ab@@Axyzrbbbb"}'
        wire = _client_frame(text, mask=b"\xc1\xc1\x00\x00")
        start = 6 + 20
        middle = wire[start:start + 7]
        assert middle[:2] == b"\x81\x81" and middle[2] ^ middle[6] == 0x33
        for chunk in (wire[:start], middle, wire[start + 7:]):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.2)  # each chunk on its own
        answer = await asyncio.wait_for(frame_text(), 10)
        while answer == "2":  # a PING came first (a slow machine): answer it
            writer.write(_client_frame(b"3"))
            answer = await asyncio.wait_for(frame_text(), 10)
        assert answer.startswith("44/chat,"), answer  # refused: the frame was read whole
        assert len(sio.eio.sockets) == 1
    finally:
        writer.close()


@settings(max_examples=300, deadline=None)
@given(frames=hs.lists(hs.tuples(hs.integers(0, 200) | hs.sampled_from(
                           [125, 126, 127, 65535, 65536, 70_000]), hs.booleans()),
                       min_size=1, max_size=6),
       cuts=hs.lists(hs.integers(0, 10**6), max_size=12))
def test_frame_edges_know_where_every_frame_ends(frames, cuts):
    """Any frames (sizes of every length form, masked or not), cut anywhere."""
    parts = [_client_frame(b"x" * size, mask=b"mask" if masked else None)
             for size, masked in frames]
    stream = b"".join(parts)
    ends = set(itertools.accumulate(len(p) for p in parts))
    edges = engine.FrameEdges()
    assert edges.between
    done = 0
    for cut in sorted({c % (len(stream) + 1) for c in cuts} | {len(stream)}):
        if cut == done:
            continue
        edges.feed(stream[done:cut])
        done = cut
        assert edges.between == (cut in ends), cut


async def test_unsolicited_pong_does_not_double_the_pings(sio, base_url):
    async with aiohttp.ClientSession() as session:
        ws, hello = await _open_raw(session, base_url)
        for _ in range(5):
            await ws.send_str("3")  # PONG without a PING: ignored, as in the library
        sock = sio.eio.sockets[hello["sid"]]
        pending = sum(1 for slot in sio.eio._wheel.slots.values() for s, _ in slot if s is sock)
        assert pending == 1
        await ws.close()


async def test_wheel_task_ends_when_no_socket_is_left(sio, base_url):
    async with aiohttp.ClientSession() as session:
        ws, _ = await _open_raw(session, base_url)
        assert sio.eio._wheel.task is not None
        await ws.close()
    for _ in range(200):
        if sio.eio._wheel.task is None:
            break
        await asyncio.sleep(0.05)
    assert sio.eio._wheel.task is None and not sio.eio._wheel.slots
    async with aiohttp.ClientSession() as session:  # and starts again
        ws, _ = await _open_raw(session, base_url)
        assert await _text(ws) == "2"
        await ws.close()


async def test_send_now_writes_on_websocket_and_declines_otherwise(deps, sio, base_url):
    from engineio.packet import MESSAGE
    from engineio.packet import Packet as EioPacket

    assert sio.eio.send_now("no-such-sid", EioPacket(MESSAGE, data="x")) is False
    async with aiohttp.ClientSession() as session:
        ws, hello = await _open_raw(session, base_url)
        assert sio.eio.send_now(hello["sid"], EioPacket(MESSAGE, data="hello")) is True
        assert await _text(ws) == "4hello"
        await ws.close()
    alice = await make_user(deps)
    c = await connect(base_url, alice.access_token, transports=("polling",))
    try:
        assert sio.eio.send_now(c.eio.sid, EioPacket(MESSAGE, data="x")) is False
    finally:
        await c.disconnect()


@pytest.mark.parametrize("transports", [("polling",), ("polling", "websocket")])
async def test_polling_and_upgrade_survive_several_ping_cycles(deps, base_url, sio, transports):
    alice = await make_user(deps)
    c = await connect(base_url, alice.access_token, transports=transports)
    try:
        assert c.transport() == transports[-1]
        await asyncio.sleep(3.5)  # three ping intervals: pings must be answered
        assert c.connected
        sid = c.get_sid("/chat")
        await sio.emit("probe", {"n": 1}, to=sid, namespace="/chat")
        [got] = await c.log.wait_for("probe")
        assert got == {"n": 1}
    finally:
        await c.disconnect()


async def test_server_emits_bytes_as_binary_attachments(deps, base_url, sio):
    alice = await make_user(deps)
    c = await connect(base_url, alice.access_token)
    try:
        sid = c.get_sid("/chat")
        payload = {"name": "blob", "data": b"\x00\x01binary\xff", "nested": [{"b": bytearray(b"x")}]}
        await sio.emit("blob", payload, to=sid, namespace="/chat")
        [got] = await c.log.wait_for("blob")
        assert got == {"name": "blob", "data": b"\x00\x01binary\xff", "nested": [{"b": b"x"}]}
        # and a JSON-only emit right after is a plain EVENT again
        await sio.emit("plain", {"n": 2}, to=sid, namespace="/chat")
        assert (await c.log.wait_for("plain")) == [{"n": 2}]
    finally:
        await c.disconnect()


async def test_client_binary_event_and_binary_ack(deps, base_url, monkeypatch):
    seen = []

    async def echo(deps, conn, payload):
        seen.append(payload)
        return {"ok": True, "echo": payload}

    monkeypatch.setitem(EVENTS, "engine-test:echo", echo)
    alice = await make_user(deps)
    c = await connect(base_url, alice.access_token)
    try:
        # BINARY_EVENT in (placeholder + attachment frame), BINARY_ACK out.
        ack = await call(c, "engine-test:echo", {"raw": b"\x00\xfe", "n": 1})
        assert seen == [{"raw": b"\x00\xfe", "n": 1}]
        assert ack == {"ok": True, "echo": {"raw": b"\x00\xfe", "n": 1}}
        # and a JSON-only call right after takes the text path
        assert (await call(c, "engine-test:echo", {"n": 2}))["echo"] == {"n": 2}
    finally:
        await c.disconnect()


async def test_slow_consumer_is_dropped_and_does_not_stall_others(deps, base_url, sio,
                                                                 monkeypatch):
    monkeypatch.setattr(engine, "MAX_WRITE_BUFFER", 256 * 1024)
    alice, bob = await make_user(deps), await make_user(deps)
    fast = await connect(base_url, bob.access_token)
    slow_session = aiohttp.ClientSession()
    try:
        # A raw client that completes the Socket.IO handshake and then never reads:
        # aiohttp stops reading its socket once 64 KiB are buffered.
        ws = await slow_session.ws_connect(base_url + EIO_WS, max_msg_size=0)
        assert (await _text(ws))[0] == "0"
        await ws.send_str("40/chat," + json.dumps({"token": alice.access_token}))
        connected = await _text(ws)
        assert connected.startswith("40/chat,"), connected
        slow_sid = json.loads(connected[len("40/chat,"):])["sid"]
        fast_sid = fast.get_sid("/chat")
        big = "x" * 200_000
        for i in range(200):  # 40 MB: more than any socket buffer
            await asyncio.wait_for(
                sio.emit("big", {"i": i, "pad": big}, to=[slow_sid, fast_sid], namespace="/chat"),
                10)  # an emit never waits for a reader
            if not sio.manager.is_connected(slow_sid, "/chat"):
                break
        for _ in range(200):
            if not sio.manager.is_connected(slow_sid, "/chat"):
                break
            await asyncio.sleep(0.05)
        assert not sio.manager.is_connected(slow_sid, "/chat")
        await sio.emit("after", {"ok": 1}, to=fast_sid, namespace="/chat")
        assert (await fast.log.wait_for("after", timeout=30)) == [{"ok": 1}]
        assert fast.connected
    finally:
        await fast.disconnect()
        await slow_session.close()


async def test_websocket_lets_go_of_the_upgrade_request(sio, server, base_url):
    async with aiohttp.ClientSession() as session:
        ws, hello = await _open_raw(session, base_url)
        sid = hello["sid"]
        # aiohttp's request handler has let go of the connection (well before
        # the unanswered PING would end it) ...
        await until(lambda: not server.runner.server.connections,
                    "aiohttp let go of the connection", timeout=1.0)
        environ = sio.environ[sid]
        assert "aiohttp.request" not in environ and "wsgi.input" not in environ
        assert environ["REMOTE_ADDR"] == "127.0.0.1"  # the peer, kept without the request
        gc.collect()
        kept = [o for o in gc.get_objects()
                if isinstance(o, aiohttp.web.BaseRequest) and o.path.startswith("/socket.io")]
        assert kept == []  # ... and the upgrade request is freed
        # ... while the connection reads and writes: a PONG brings the next PING.
        assert await _text(ws) == "2"
        await ws.send_str("3")
        assert await _text(ws) == "2"
        await ws.close()
        assert ws.close_code == aiohttp.WSCloseCode.OK  # our CLOSE answered theirs
        await until(lambda: sid not in sio.eio.sockets, "the socket was forgotten")


@pytest.mark.parametrize("settings_overrides", [
    {"ping_interval": 1, "ping_timeout": 5, "socket_connect_timeout": 2}])
async def test_a_connection_that_joins_no_namespace_is_closed(sio, deps, base_url):
    """An Engine.IO connection that never signs in to /chat is closed at the join
    deadline, although it answers every ping; one that joined stays."""
    alice = await make_user(deps, "alice")
    member = await connect(base_url, alice.access_token)
    try:
        async with aiohttp.ClientSession() as session:
            idle, hello = await _open_raw(session, base_url)
            pongs, texts = 0, []
            while pongs < 10:  # pings come every second; the deadline is 2 s
                msg = await idle.receive(timeout=15)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                texts.append(msg.data)
                if msg.data == "2":
                    await idle.send_str("3")
                    pongs += 1
            assert pongs >= 1 and texts[-1] == "1", texts  # Engine.IO CLOSE, then the end
            await until(lambda: hello["sid"] not in sio.eio.sockets, "the socket was forgotten")
        assert member.connected
        assert (await call(member, "sync", {"cursors": {}}))["ok"] is True
    finally:
        await member.disconnect()


@pytest.mark.parametrize("settings_overrides", [{"ping_interval": 20, "ping_timeout": 20}])
async def test_a_polling_client_that_collects_nothing_is_dropped(sio, base_url, monkeypatch):
    """Long-polling's slow consumer: packets wait for the client's next GET, and a
    client that never comes for them (it could keep the session alive by posting
    PONGs alone) is dropped at MAX_POLLING_QUEUE, not queued for without end."""
    monkeypatch.setattr(engine, "MAX_POLLING_QUEUE", 50)
    url = base_url + "/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as session:
        opened = await (await session.get(url)).text()
        sid = json.loads(opened[1:])["sid"]
        sock = sio.eio.sockets[sid]
        for i in range(40):
            await sio.eio.send(sid, f"first {i}")
        collected = await (await session.get(f"{url}&sid={sid}")).text()
        assert collected.count("first") == 40
        for i in range(49):
            await sio.eio.send(sid, f"second {i}")
        assert not sock.closed  # 49 waiting: under the cap
        await sio.eio.send(sid, "the 50th")
        await sio.eio.send(sid, "one too many")
        assert sock.closed


async def test_client_gone_before_its_101_leaves_no_socket_and_no_error(sio, caplog):
    """A client that gave up waiting (a connect storm on a busy server) is gone
    when its upgrade is answered: the Engine.IO socket opened for it is closed
    at once, and nothing is logged as an error or answered 500."""
    async def hung_up(request):
        request.transport.close()  # the peer left before the answer
        return await sio.eio.handle_request(request)

    front = aiohttp.web.Application()
    front.router.add_get("/socket.io/", hung_up)
    opened = set(sio.eio.sockets)
    caplog.set_level(logging.INFO)
    async with TestServer(front) as srv, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.ws_connect(srv.make_url(EIO_WS))
    assert set(sio.eio.sockets) == opened
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_environ_carries_the_peer_not_the_drivers_placeholder():
    from aiohttp.test_utils import make_mocked_request

    class Transport:
        def get_extra_info(self, name, default=None):
            return ("198.51.100.7", 40000) if name == "peername" else default

    request = make_mocked_request("GET", "/socket.io/?EIO=4&transport=websocket",
                                  transport=Transport())
    assert engine._translate_request(request)["REMOTE_ADDR"] == "198.51.100.7"


async def test_websocket_ping_is_answered_and_an_oversized_message_closes_1009(sio, base_url):
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(base_url + EIO_WS, autoping=False)
        sid = json.loads((await _text(ws))[1:])["sid"]
        await ws.ping(b"are you there")
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type is aiohttp.WSMsgType.PONG:
                break
            assert msg.type is aiohttp.WSMsgType.TEXT  # an Engine.IO PING meanwhile
        assert msg.data == b"are you there"
        await ws.send_str("4" + "x" * (sio.eio.max_http_buffer_size + 1))
        while msg.type is not aiohttp.WSMsgType.CLOSE:
            msg = await ws.receive(timeout=10)
        assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await until(lambda: sid not in sio.eio.sockets, "the socket was forgotten")


async def test_closing_server_side_sends_close_and_ends_the_connection(sio, base_url):
    async with aiohttp.ClientSession() as session:
        ws, hello = await _open_raw(session, base_url)
        await sio.eio.sockets[hello["sid"]].close(wait=False)
        assert await _text(ws) == "1"  # Engine.IO CLOSE, then the WebSocket CLOSE
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.OK
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSED
        await until(lambda: hello["sid"] not in sio.eio.sockets, "the socket was forgotten")


async def test_gc_is_tuned_once_after_startup(server):
    assert gc.get_threshold() == engine.GC_THRESHOLDS
    assert gc.get_freeze_count() > 0


@pytest.mark.parametrize("data", [
    None, 1, 1.5, True, "s", b"b", bytearray(b"b"), memoryview(b"m"), (b"in a tuple",),
    [], {}, ["ev", {"a": 1, "b": [1, 2, {"c": None}]}], ["ev", {"a": [{"b": b"x"}]}],
    {"k": bytearray(b"y")}, [[[[b"deep"]]]], [{"t": (1, b"tuple")}],
])
def test_has_binary_matches_the_library(data):
    assert has_binary(data) is Packet.data_is_binary(data)


def test_fast_packet_encodes_like_the_library():
    for data in (["ev", {"a": 1}], ["ev", {"b": b"\x01"}, [b"\x02"]]):
        for kind in (2, 3):
            ours = FastPacket(kind, data=data, namespace="/chat", id=7)
            theirs = Packet(kind, data=data, namespace="/chat", id=7)
            assert ours.packet_type == theirs.packet_type
            assert ours.encode() == theirs.encode()


def test_ws_frame_lengths():
    assert engine.ws_frame("2") == b"\x81\x012"
    assert engine.ws_frame(b"\x01") == b"\x82\x01\x01"
    assert engine.ws_frame("x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert engine.ws_frame("x" * 70000)[:10] == b"\x81\x7f" + (70000).to_bytes(8, "big")
