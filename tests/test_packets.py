"""Malformed Socket.IO packets and hostile payloads on a real server: each gets
an `invalid` ack (when it asked for one) or is dropped, never a traceback, and
the connection keeps working."""

from __future__ import annotations

import json
import logging
import uuid

import aiohttp
import pytest

from app.realtime.packets import MAX_ATTACHMENTS, FastPacket, MalformedPacket, decode_incoming
from app.services import conversations as convs
from tests.factories import call, connect, make_contacts, make_user

EIO_WS = "/socket.io/?EIO=4&transport=websocket"
BIG = 10**30


def assert_no_traceback(caplog) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [(r.name, r.getMessage()) for r in bad]


class RawChat:
    """A hand-driven Engine.IO/Socket.IO client: sends any text or bytes frame."""

    def __init__(self, ws) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, session, base_url: str, token: str) -> RawChat:
        ws = await session.ws_connect(base_url + EIO_WS)
        msg = await ws.receive(timeout=5)
        assert msg.data[0] == "0"
        await ws.send_str("40/chat," + json.dumps({"token": token}))
        msg = await ws.receive(timeout=5)
        assert msg.data.startswith("40/chat,"), msg.data
        return cls(ws)

    async def ack(self, ack_id: int, timeout: float = 5.0):
        """The payload of the ack with this id (skipping pings and events)."""
        prefix = f"43/chat,{ack_id}["
        while True:
            msg = await self.ws.receive(timeout=timeout)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if msg.data == "2":
                await self.ws.send_str("3")
            elif msg.data.startswith(prefix):
                return json.loads(msg.data[len(prefix) - 1:])[0]

    async def call(self, ack_id: int, frame: str | bytes, *more: bytes):
        await (self.ws.send_str(frame) if isinstance(frame, str) else self.ws.send_bytes(frame))
        for extra in more:
            await self.ws.send_bytes(extra)
        return await self.ack(ack_id)

    async def still_works(self, ack_id: int = 999) -> None:
        ack = await self.call(ack_id, f'42/chat,{ack_id}["sync",{{}}]')
        assert ack["ok"] is True, ack


def assert_invalid(ack, *words) -> None:
    assert ack["ok"] is False and ack["error"]["code"] == "invalid", ack
    for word in words:
        assert word in ack["error"]["message"], ack


MALFORMED_WITH_ID = [
    ('42/chat,1[]', "event name"),
    ('42/chat,2{"a":1}', "event name"),
    ('42/chat,3"sync"', "event name"),
    ('42/chat,4[1,{}]', "event name"),
    ('42/chat,5[["sync"],{}]', "event name"),
    ('42/chat,6[{"a":1}]', "event name"),
    ('42/chat,7["sync",{"cursors":', "Malformed"),
    ('42/chat,8["sync"', "Malformed"),
    ('42/chat,9[' + "[" * 10_000 + "]" * 10_000 + "]", "nested too deeply"),
    ('42/chat,10["history",' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "]", "nested too deeply"),
    ('42/chat,11["disconnect"]', "reserved"),
    ('42/chat,12["connect",{"token":"x"}]', "reserved"),
    ('42/chat,13["' + "x" * 65 + '",{}]', "event name"),
    ('42/chat,14["message:send",{"text":"a\\u0000b"}]', "NUL"),
    ('45' + str(MAX_ATTACHMENTS + 1) + '-/chat,15["sync",{}]', "attachments"),
]


def test_decode_incoming_refuses_what_the_library_would_crash_on():
    for frame, word in MALFORMED_WITH_ID:
        with pytest.raises(MalformedPacket) as info:
            decode_incoming(FastPacket, frame[1:])
        assert word in info.value.reason, (frame[:40], info.value.reason)
        assert info.value.namespace == "/chat" and info.value.id is not None, frame[:40]
    for data in ("", b"2", "7/chat,", "4/chat,1[]", "3/chat,1{}", None):
        with pytest.raises(MalformedPacket):
            decode_incoming(FastPacket, data)
    pkt = decode_incoming(FastPacket, '2/chat,17["sync",{"cursors":{}}]')
    assert (pkt.namespace, pkt.id, pkt.data) == ("/chat", 17, ["sync", {"cursors": {}}])


async def test_malformed_packets_get_invalid_acks(deps, base_url, caplog):
    p = await make_user(deps)
    async with aiohttp.ClientSession() as session:
        raw = await RawChat.open(session, base_url, p.access_token)
        for frame, word in MALFORMED_WITH_ID:
            ack_id = int(frame.split(",", 1)[1].split("[")[0].split("{")[0].split('"')[0])
            assert_invalid(await raw.call(ack_id, frame), word)
        await raw.still_works()
        # Without an ack id there is nobody to answer: dropped, the socket lives on.
        for frame in ('42/chat,[]', '42/chat,["sync"', '42/chat,[' + "[" * 5000,
                      '43/chat,7{"x":1}', '47/chat,', '4x', '4[1,2]', '44/chat,"boom"'):
            await raw.ws.send_str(frame)
        await raw.ws.send_bytes(b"\x00\xff binary without a packet")
        await raw.still_works(1000)
        await raw.ws.close()
    assert_no_traceback(caplog)


async def test_binary_attachments_are_bounded_and_checked(deps, base_url, caplog):
    p = await make_user(deps)
    async with aiohttp.ClientSession() as session:
        raw = await RawChat.open(session, base_url, p.access_token)
        # A placeholder that points past the attachments sent.
        ack = await raw.call(21, '451-/chat,21["sync",{"_placeholder":true,"num":5}]', b"x")
        assert_invalid(ack, "binary")
        # The event name itself a placeholder (bytes, not a name).
        ack = await raw.call(22, '451-/chat,22[{"_placeholder":true,"num":0},{}]', b"sync")
        assert_invalid(ack, "event name")
        # Text where an attachment was due.
        await raw.ws.send_str('452-/chat,23["sync",{"_placeholder":true,"num":0}]')
        await raw.ws.send_bytes(b"x")
        await raw.ws.send_str('42/chat,24["sync",{}]')
        assert_invalid(await raw.ack(23), "binary")
        await raw.still_works()
        await raw.ws.close()
    assert_no_traceback(caplog)


async def test_reserved_event_names_do_not_reach_the_namespace(deps, base_url):
    p = await make_user(deps)
    async with aiohttp.ClientSession() as session:
        raw = await RawChat.open(session, base_url, p.access_token)
        assert_invalid(await raw.call(1, '42/chat,1["disconnect"]'), "reserved")
        # Still signed in: the namespace did not forget the connection.
        await raw.still_works()
        await raw.ws.close()


async def _chat(deps):
    a, b = await make_user(deps), await make_user(deps)
    await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return a, str(conv.id)


async def test_integers_beyond_64_bits_over_the_socket(deps, base_url, caplog):
    a, cid = await _chat(deps)
    c = await connect(base_url, a.access_token)
    try:
        sent = await call(c, "message:send", {"conversation_id": cid, "client_msg_id": "m1",
                                              "text": "hi"})
        assert sent["ok"], sent
        cases = [
            ("history", {"conversation_id": cid, "before_seq": BIG}),
            ("history", {"conversation_id": cid, "before_seq": 2**63}),
            ("message:read", {"conversation_id": cid, "seq": BIG}),
            ("sync", {"cursors": {cid: BIG}}),
            ("message:recall", {"message_id": str(BIG)}),
            ("message:delete", {"message_id": str(2**64)}),
            ("message:recall", {"message_id": BIG}),
            ("message:send", {"conversation_id": cid, "client_msg_id": uuid.uuid4().hex,
                              "text": "re", "reply_to": str(BIG)}),
            ("message:send", {"conversation_id": cid, "client_msg_id": uuid.uuid4().hex,
                              "text": "re", "reply_to": BIG}),
            ("message:send", {"conversation_id": cid, "client_msg_id": uuid.uuid4().hex,
                              "text": "a\x00b"}),
        ]
        for name, payload in cases:
            assert_invalid(await call(c, name, payload))
        # The largest 64-bit id is well-formed, and simply not there.
        ack = await call(c, "message:recall", {"message_id": str(2**63 - 1)})
        assert ack["error"]["code"] == "not_found", ack
        # Reading up to the largest seq is allowed (clamped to what exists).
        ack = await call(c, "message:read", {"conversation_id": cid, "seq": 2**63 - 1})
        assert ack["ok"] and ack["read_seq"] == sent["message"]["seq"], ack
    finally:
        await c.disconnect()
    assert_no_traceback(caplog)


async def test_long_polling_garbage_gets_no_traceback(deps, base_url, caplog):
    p = await make_user(deps)
    url = base_url + "/socket.io/?EIO=4&transport=polling"

    async def session_sid(session) -> str:
        async with session.get(url) as r:
            sid = json.loads((await r.text())[1:])["sid"]
        poll = f"{url}&sid={sid}"
        async with session.post(poll, data="40/chat," + json.dumps({"token": p.access_token})) as r:
            assert r.status == 200
        async with session.get(poll) as r:
            assert "40/chat," in await r.text()
        return poll

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=8)) as session:
        # Malformed Socket.IO packets in a well-formed payload: answered like on WebSocket.
        poll = await session_sid(session)
        for body in ('42/chat,5["sync"', '42/chat,6[]\x1e42/chat,7["disconnect"]',
                     "4" + "[" * 5000):
            async with session.post(poll, data=body) as r:
                assert r.status == 200, (body[:20], r.status)
        got = ""
        for _ in range(5):
            async with session.get(poll) as r:
                got += await r.text()
            if all(f"43/chat,{i}[" in got for i in (5, 6, 7)):
                break
        for i in (5, 6, 7):
            assert f'43/chat,{i}[{{"ok":false,"error":{{"code":"invalid"' in got, got[:500]
        # A body that is not an Engine.IO payload at all ends the session: 400.
        for body in ("\x1e\x1e", "x"):
            poll = await session_sid(session)
            async with session.post(poll, data=body) as r:
                assert r.status == 400, (body, r.status)
    assert_no_traceback(caplog)


async def test_invalid_utf8_text_frame_closes_quietly(deps, base_url, caplog):
    p = await make_user(deps)
    async with aiohttp.ClientSession() as session:
        raw = await RawChat.open(session, base_url, p.access_token)
        # aiohttp's client only sends valid text: write the frame below its API.
        await raw.ws._writer.send_frame(b'42/chat,1["sync",{"a":"\xff\xfe"}]',
                                        aiohttp.WSMsgType.TEXT)
        msg = await raw.ws.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await raw.ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
        # The server goes on serving everyone else.
        again = await RawChat.open(session, base_url, p.access_token)
        await again.still_works()
        await again.ws.close()
    assert_no_traceback(caplog)
