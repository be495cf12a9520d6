"""Messaging core over real sockets: delivery, idempotency, seq, sync, receipts, recall."""

import asyncio
import os
import uuid

import pytest

from app.models.messaging import Message
from app.services import conversations as convs
from app.services import history
from tests.factories import call, connect, make_contacts, make_user

API = "/api/v1"


async def chat_between(deps, a, b) -> str:
    """A direct chat between two contacts (direct messages need contacts)."""
    await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return str(conv.id)


def text(cid, body, cmid=None):
    return {"conversation_id": cid, "client_msg_id": cmid or uuid.uuid4().hex,
            "type": "text", "text": body}


async def test_two_users_two_devices_each(deps, base_url):
    alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
    cid = await chat_between(deps, alice, bob)
    a1, a2 = await connect(base_url, alice.access_token), await connect(base_url, alice.access_token)
    b1, b2 = await connect(base_url, bob.access_token), await connect(base_url, bob.access_token)
    try:
        ack = await call(a1, "message:send", text(cid, "  hello bob  "))
        assert ack["ok"] is True, ack
        msg = ack["message"]
        assert msg["seq"] == 1 and msg["text"] == "hello bob" and msg["sender_id"] == alice.user_id
        assert set(msg) >= {"id", "conversation_id", "seq", "sender_id", "type", "text",
                            "client_msg_id", "reply_to", "created_at", "recalled"}
        # Every device of both users gets it, except the socket that sent it.
        for sock in (a2, b1, b2):
            got = await sock.log.wait_for("message:new")
            assert got == [msg]
        await asyncio.sleep(0.2)
        assert a1.log.of("message:new") == []
        # Bob answers from his phone; his laptop sees it too.
        ack = await call(b2, "message:send", text(cid, "hi alice"))
        assert ack["message"]["seq"] == 2
        await b1.log.wait_for("message:new", 1, where=lambda m: m["seq"] == 2)
        await a1.log.wait_for("message:new", 1, where=lambda m: m["seq"] == 2)
    finally:
        for s in (a1, a2, b1, b2):
            await s.disconnect()


async def test_lost_ack_retry_returns_same_message_and_emits_nothing_new(deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    a, b = await connect(base_url, alice.access_token), await connect(base_url, bob.access_token)
    try:
        payload = text(cid, "once only", "cm-1")
        first = await call(a, "message:send", payload)
        again = await call(a, "message:send", payload)
        assert first == again and first["ok"]
        # Another device of Alice retrying the same id gets the same message too.
        a2 = await connect(base_url, alice.access_token)
        third = await call(a2, "message:send", payload)
        await a2.disconnect()
        assert third == first
        await b.log.wait_for("message:new")
        await asyncio.sleep(0.3)
        assert len(b.log.of("message:new")) == 1
        assert await Message.filter(conversation_id=cid).count() == 1
    finally:
        await a.disconnect()
        await b.disconnect()


async def test_concurrent_duplicate_client_msg_id_gives_one_message(deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    socks = [await connect(base_url, alice.access_token) for _ in range(3)]
    try:
        payload = text(cid, "race", "same-id")
        acks = await asyncio.gather(*(call(s, "message:send", payload) for s in socks for _ in range(3)))
        assert all(a["ok"] for a in acks)
        assert len({a["message"]["id"] for a in acks}) == 1
        assert await Message.filter(conversation_id=cid).count() == 1
    finally:
        for s in socks:
            await s.disconnect()


async def test_fifty_concurrent_senders_get_gapless_seq(deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    socks = [await connect(base_url, (alice if i % 2 else bob).access_token) for i in range(10)]
    try:
        acks = await asyncio.gather(*(
            call(socks[i % 10], "message:send", text(cid, f"m{i}")) for i in range(50)
        ))
        assert all(a["ok"] for a in acks), [a for a in acks if not a["ok"]][:1]
        seqs = sorted(a["message"]["seq"] for a in acks)
        assert seqs == list(range(1, 51))
        stored = await Message.filter(conversation_id=cid).order_by("seq").values_list("seq", flat=True)
        assert list(stored) == list(range(1, 51))
    finally:
        for s in socks:
            await s.disconnect()


async def test_offline_client_resyncs_exactly_the_missed_200(deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    a = await connect(base_url, alice.access_token)
    b = await connect(base_url, bob.access_token)
    try:
        for i in range(5):
            await call(a, "message:send", text(cid, f"before {i}"))
        await b.log.wait_for("message:new", 5)
        cursor = max(m["seq"] for m in b.log.of("message:new"))
        await b.disconnect()  # Bob goes offline
        sent = []
        for i in range(200):
            sent.append((await call(a, "message:send", text(cid, f"missed {i}")))["message"])
        b = await connect(base_url, bob.access_token)
        got = []
        after = cursor
        while True:  # page through with has_more, as a client would
            ack = await call(b, "sync", {"cursors": {cid: after}, "limit": 120})
            assert ack["ok"]
            [conv] = [c for c in ack["conversations"] if c["id"] == cid]
            got += conv["messages"]
            if not conv["has_more"]:
                break
            after = conv["messages"][-1]["seq"]
        assert [m["id"] for m in got] == [m["id"] for m in sent]
        assert [m["seq"] for m in got] == list(range(6, 206))
        assert conv["last_seq"] == 205 and conv["unread_count"] == 205
        # Nothing changed since: an up-to-date cursor returns nothing for it.
        ack = await call(b, "sync", {"cursors": {cid: 205}})
        assert [c for c in ack["conversations"] if c["id"] == cid] == []
    finally:
        await a.disconnect()
        await b.disconnect()


async def test_sync_without_cursor_returns_summary_and_newest_page(deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    a = await connect(base_url, alice.access_token)
    try:
        for i in range(7):
            await call(a, "message:send", text(cid, f"m{i}"))
        ack = await call(a, "sync", {"limit": 5})
        [conv] = ack["conversations"]
        assert conv["id"] == cid and conv["type"] == "direct"
        assert conv["peer"]["id"] == bob.user_id
        assert [m["seq"] for m in conv["messages"]] == [3, 4, 5, 6, 7]
        assert conv["has_more"] is True
        assert conv["unread_count"] == 0  # my own messages are read
    finally:
        await a.disconnect()


async def test_history_pages_backwards(deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    a = await connect(base_url, alice.access_token)
    try:
        for i in range(12):
            await call(a, "message:send", text(cid, f"m{i}"))
        ack = await call(a, "history", {"conversation_id": cid, "limit": 5})
        assert [m["seq"] for m in ack["messages"]] == [8, 9, 10, 11, 12] and ack["has_more"]
        ack = await call(a, "history", {"conversation_id": cid, "before_seq": 3, "limit": 5})
        assert [m["seq"] for m in ack["messages"]] == [1, 2] and not ack["has_more"]
    finally:
        await a.disconnect()


async def test_read_receipts_and_unread_across_devices(deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    a = await connect(base_url, alice.access_token)
    b1, b2 = await connect(base_url, bob.access_token), await connect(base_url, bob.access_token)
    try:
        for i in range(3):
            await call(a, "message:send", text(cid, f"m{i}"))
        await b1.log.wait_for("message:new", 3)
        ack = await call(b1, "sync", {"cursors": {cid: 0}})
        assert ack["conversations"][0]["unread_count"] == 3
        ack = await call(b1, "message:read", {"conversation_id": cid, "seq": 2})
        assert ack == {"ok": True, "read_seq": 2, "unread_count": 1}
        # Bob's other device clears its badge, Alice sees the receipt.
        for sock in (b2, a):
            [ev] = await sock.log.wait_for("conversation:read")
            assert ev == {"conversation_id": cid, "user_id": bob.user_id, "read_seq": 2}
        # Read state never moves back; a too-large seq is clamped.
        ack = await call(b2, "message:read", {"conversation_id": cid, "seq": 1})
        assert ack["read_seq"] == 2
        ack = await call(b2, "message:read", {"conversation_id": cid, "seq": 999})
        assert ack == {"ok": True, "read_seq": 3, "unread_count": 0}
    finally:
        for s in (a, b1, b2):
            await s.disconnect()


async def test_a_read_overtaken_by_another_device_answers_with_the_further_mark(
        deps, monkeypatch):
    """Bob's phone reads up to 1; between its facts and its update his laptop
    reads up to 3. The phone's update moves nothing, and its answer is where
    the mark is (3), not where it asked (1) nor where it was (0)."""
    from app.services import messaging, sql

    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    for i in range(3):
        await messaging.send_message(deps, alice.user_id, messaging.SendIn(**text(cid, f"m{i}")))
    real = sql.member_facts_row
    overtaken = []

    async def facts_then_the_laptop_reads(conn, conversation_id, user_id):
        row = await real(conn, conversation_id, user_id)
        if not overtaken:
            overtaken.append(True)
            await messaging.mark_read(deps, bob.user_id,
                                      messaging.ReadIn(conversation_id=cid, seq=3))
        return row

    monkeypatch.setattr(sql, "member_facts_row", facts_then_the_laptop_reads)
    got = await messaging.mark_read(deps, bob.user_id,
                                    messaging.ReadIn(conversation_id=cid, seq=1))
    assert overtaken and got == {"read_seq": 3, "unread_count": 0}


async def test_receipts_off_only_notifies_own_devices(deps, base_url):
    from app.models.accounts import User

    alice, bob = await make_user(deps), await make_user(deps)
    await User.filter(id=bob.user_id).update(send_read_receipts=False)
    cid = await chat_between(deps, alice, bob)
    a = await connect(base_url, alice.access_token)
    b1, b2 = await connect(base_url, bob.access_token), await connect(base_url, bob.access_token)
    try:
        await call(a, "message:send", text(cid, "seen?"))
        await b1.log.wait_for("message:new")
        await call(b1, "message:read", {"conversation_id": cid, "seq": 1})
        await b2.log.wait_for("conversation:read")
        await asyncio.sleep(0.3)
        assert a.log.of("conversation:read") == []
    finally:
        for s in (a, b1, b2):
            await s.disconnect()


async def test_recall_inside_and_outside_window(deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    a, b = await connect(base_url, alice.access_token), await connect(base_url, bob.access_token)
    try:
        msg = (await call(a, "message:send", text(cid, "oops")))["message"]
        # Bob cannot recall Alice's message.
        ack = await call(b, "message:recall", {"message_id": msg["id"]})
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
        assert (await call(a, "message:recall", {"message_id": msg["id"]})) == {"ok": True}
        [ev] = await b.log.wait_for("message:recalled")
        assert ev == {"conversation_id": cid, "message_id": msg["id"], "seq": msg["seq"]}
        hist = await call(b, "history", {"conversation_id": cid})
        [tomb] = hist["messages"]
        assert tomb["recalled"] is True and tomb["text"] == ""
        # An old message is past the window.
        old = (await call(a, "message:send", text(cid, "old")))["message"]
        from datetime import UTC, datetime, timedelta

        await Message.filter(id=int(old["id"])).update(
            created_at=datetime.now(UTC) - timedelta(seconds=deps.settings.recall_window_seconds + 5)
        )
        ack = await call(a, "message:recall", {"message_id": old["id"]})
        assert ack["ok"] is False and ack["error"]["code"] == "recall_expired"
    finally:
        await a.disconnect()
        await b.disconnect()


async def test_delete_for_me_hides_on_my_devices_only(deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    a1, a2 = await connect(base_url, alice.access_token), await connect(base_url, alice.access_token)
    b = await connect(base_url, bob.access_token)
    try:
        msg = (await call(b, "message:send", text(cid, "secret")))["message"]
        assert (await call(a1, "message:delete", {"message_id": msg["id"]})) == {"ok": True}
        for sock in (a1, a2):
            [ev] = await sock.log.wait_for("message:deleted")
            assert ev == {"conversation_id": cid, "message_id": msg["id"]}
        assert (await call(a2, "history", {"conversation_id": cid}))["messages"] == []
        assert len((await call(b, "history", {"conversation_id": cid}))["messages"]) == 1
        await asyncio.sleep(0.2)
        assert b.log.of("message:deleted") == []
    finally:
        for s in (a1, a2, b):
            await s.disconnect()


async def test_typing_reaches_others_throttled(deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    a, b = await connect(base_url, alice.access_token), await connect(base_url, bob.access_token)
    try:
        for _ in range(5):
            assert (await call(a, "typing", {"conversation_id": cid, "state": "typing"}))["ok"]
        await call(a, "typing", {"conversation_id": cid, "state": "recording"})
        evs = await b.log.wait_for("typing", 2)
        assert [e["state"] for e in evs] == ["typing", "recording"]
        assert evs[0] == {"conversation_id": cid, "user_id": alice.user_id, "state": "typing"}
        await asyncio.sleep(0.2)
        assert len(b.log.of("typing")) == 2 and a.log.of("typing") == []
    finally:
        await a.disconnect()
        await b.disconnect()


async def _refused_reason(base_url, token) -> str | None:
    """Try to connect; return the connect_error message, or None if it connected."""
    import socketio

    sio = socketio.AsyncClient(reconnection=False)
    reasons = []
    sio.on("connect_error", lambda data: reasons.append(data), namespace="/chat")
    try:
        await sio.connect(base_url, namespaces=["/chat"], auth={"token": token} if token else None,
                          transports=["websocket"], wait_timeout=3)
        return None
    except socketio.exceptions.ConnectionError:
        data = reasons[0] if reasons else None
        return data.get("message") if isinstance(data, dict) else data
    finally:
        await sio.disconnect()


async def test_connect_refused_without_valid_token(base_url, deps, client):
    p = await make_user(deps)
    for token in (None, "garbage", p.refresh_token):
        assert await _refused_reason(base_url, token) == "unauthorized"
    # A revoked session is refused too, and its live sockets are dropped.
    live = await connect(base_url, p.access_token)
    r = await client.post(f"{API}/auth/logout", headers=p.headers)
    assert r.status == 204
    for _ in range(50):
        if not live.connected:
            break
        await asyncio.sleep(0.05)
    assert not live.connected
    assert await _refused_reason(base_url, p.access_token) == "unauthorized"


@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="TEST_DATABASE_URL not set")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_connect_while_the_database_is_down_is_refused_at_once(base_url, deps,
                                                                     database_url):
    """Not left waiting for its CONNECT's answer: refused with `unavailable`,
    and admitted once the database is back."""
    from tests.cluster_helpers import database_refusing

    p = await make_user(deps)
    async with database_refusing(database_url):
        assert await _refused_reason(base_url, p.access_token) == "unavailable"
    for _ in range(50):  # the pool replaces the connections it lost, one per failure
        if await _refused_reason(base_url, p.access_token) is None:
            break
        await asyncio.sleep(0.05)
    sio = await connect(base_url, p.access_token)
    assert (await call(sio, "sync", {"cursors": {}}))["ok"] is True
    await sio.disconnect()


async def test_bad_input_and_non_members(deps, base_url):
    alice, bob, eve = await make_user(deps), await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    a, e = await connect(base_url, alice.access_token), await connect(base_url, eve.access_token)
    try:
        bad = [
            ("message:send", None),
            ("message:send", "text"),
            ("message:send", [1, 2]),
            ("message:send", {"conversation_id": cid}),
            ("message:send", {**text(cid, "x"), "client_msg_id": "x" * 65}),
            ("message:send", {**text(cid, "x"), "client_msg_id": 5}),
            ("message:send", text(cid, "   ")),
            ("message:send", text(cid, "x" * 16_001)),
            ("message:send", {**text(cid, "x"), "type": "sticker"}),
            ("message:send", {**text(cid, "x"), "unknown": 1}),
            ("message:send", {**text(cid, "x"), "reply_to": "not-a-number"}),
            ("sync", {"cursors": {cid: -1}}),
            ("sync", {"cursors": [cid]}),
            ("history", {"conversation_id": cid, "limit": 0}),
            ("history", {"conversation_id": cid, "limit": 10_000}),
            ("message:read", {"conversation_id": cid, "seq": "1"}),
            ("typing", {"conversation_id": cid, "state": "dancing"}),
            ("no:such:event", {}),
        ]
        for name, payload in bad:
            ack = await call(a, name, payload)
            assert ack["ok"] is False and ack["error"]["code"] == "invalid", (name, payload, ack)
            assert ack["error"]["message"]
        # Non-members: the same not_found for a real conversation and a made-up one.
        for target in (cid, str(uuid.uuid4()), "garbage"):
            for name, payload in (
                ("message:send", text(target, "hi")),
                ("history", {"conversation_id": target}),
                ("message:read", {"conversation_id": target, "seq": 1}),
                ("typing", {"conversation_id": target, "state": "typing"}),
            ):
                ack = await call(e, name, payload)
                assert ack["ok"] is False and ack["error"]["code"] == "not_found", (name, ack)
        msg = (await call(a, "message:send", text(cid, "mine")))["message"]
        for name in ("message:recall", "message:delete"):
            ack = await call(e, name, {"message_id": msg["id"]})
            assert ack["error"]["code"] == "not_found"
        # The exact limit passes.
        assert (await call(a, "message:send", text(cid, "y" * 16_000)))["ok"]
    finally:
        await a.disconnect()
        await e.disconnect()


async def test_send_rate_limit(deps, base_url, settings):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    from app.ratelimit import MemoryRateLimiter

    deps.settings = settings.with_(send_rate_limit="3/60")
    deps.limiter = MemoryRateLimiter()
    a = await connect(base_url, alice.access_token)
    try:
        acks = [await call(a, "message:send", text(cid, f"m{i}")) for i in range(4)]
        assert [x["ok"] for x in acks] == [True, True, True, False]
        assert acks[3]["error"]["code"] == "rate_limited"
    finally:
        await a.disconnect()


@pytest.mark.skipif(not os.environ.get("TEST_REDIS_URL"), reason="needs TEST_REDIS_URL")
async def test_send_rate_limit_on_redis_waits_for_no_round_trip(deps, base_url, settings):
    """Through Redis (several processes), sends are judged on this process's
    count at once; Redis hears of them at the next exchange, and another
    process judges on what it learnt at its own."""
    import redis.asyncio as aioredis

    from app.ratelimit import RedisRateLimiter

    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    client = aioredis.from_url(os.environ["TEST_REDIS_URL"])
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    here, there = (RedisRateLimiter(client, prefix, share_every=3600) for _ in range(2))
    key = here._key(f"send:{alice.user_id}")
    deps.settings = settings.with_(send_rate_limit="3/60")
    deps.limiter = here
    a = await connect(base_url, alice.access_token)
    try:
        acks = [await call(a, "message:send", text(cid, f"m{i}")) for i in range(4)]
        assert [x["ok"] for x in acks] == [True, True, True, False]
        assert acks[3]["error"]["code"] == "rate_limited"
        assert await client.exists(key) == 0  # judged without asking Redis
        await here.share()
        assert int(await client.get(key)) == 4
        deps.limiter = there  # the user's next send lands on another process
        assert (await call(a, "message:send", text(cid, "m4")))["ok"]
        await there.share()
        ack = await call(a, "message:send", text(cid, "m5"))
        assert not ack["ok"] and ack["error"]["code"] == "rate_limited"
    finally:
        await a.disconnect()
        await here.aclose()
        await there.aclose()
        await client.delete(key)
        await client.aclose()


# --- REST -------------------------------------------------------------------


async def test_rest_direct_list_history_and_send(client, deps, base_url):
    alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
    await make_contacts(deps, alice, bob)
    r = await client.post(f"{API}/conversations/direct", json={"user_id": bob.user_id},
                          headers=alice.headers)
    assert r.status == 200
    conv = (await r.json())["conversation"]
    again = await client.post(f"{API}/conversations/direct", json={"user_id": alice.user_id},
                              headers=bob.headers)
    assert (await again.json())["conversation"]["id"] == conv["id"]
    cid = conv["id"]
    b = await connect(base_url, bob.access_token)
    try:
        body = {"client_msg_id": "rest-1", "type": "text", "text": "from a bot"}
        r = await client.post(f"{API}/conversations/{cid}/messages", json=body, headers=alice.headers)
        assert r.status == 201
        msg = (await r.json())["message"]
        assert msg["seq"] == 1
        [live] = await b.log.wait_for("message:new")
        assert live == msg
        r = await client.post(f"{API}/conversations/{cid}/messages", json=body, headers=alice.headers)
        assert (await r.json())["message"] == msg  # idempotent over HTTP too
        r = await client.get(f"{API}/conversations", headers=bob.headers)
        listing = await r.json()
        [item] = listing["conversations"]
        assert item["id"] == cid and item["unread_count"] == 1 and item["last_message"]["id"] == msg["id"]
        assert item["peer"]["id"] == alice.user_id and item["title"] == "alice"
        assert listing["next_cursor"] is None
        r = await client.get(f"{API}/conversations/{cid}/messages?limit=10", headers=bob.headers)
        assert (await r.json()) == {"messages": [msg], "has_more": False}
    finally:
        await b.disconnect()


async def test_new_direct_chat_appears_live_in_both_lists(client, deps, base_url):
    alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
    await make_contacts(deps, alice, bob)  # accepting creates the chat…
    a = await connect(base_url, alice.access_token)
    b = await connect(base_url, bob.access_token)
    try:
        carol = await make_user(deps, "carol")
        await make_contacts(deps, alice, carol)
        [ev] = await a.log.wait_for("conversation:updated",
                                    where=lambda c: (c.get("peer") or {}).get("id") == carol.user_id)
        assert ev["type"] == "direct" and ev["title"] == "carol" and ev["last_seq"] == 0
        # …and asking again for the same chat changes nothing and tells no one.
        r = await client.post(f"{API}/conversations/direct", json={"user_id": carol.user_id},
                              headers=alice.headers)
        assert (await r.json())["conversation"]["id"] == ev["id"]
        await asyncio.sleep(0.2)
        assert len([c for c in a.log.of("conversation:updated") if c["id"] == ev["id"]]) == 1
        assert b.log.of("conversation:updated") == []
    finally:
        await a.disconnect()
        await b.disconnect()


async def test_rest_conversation_list_is_newest_first_and_paginated(client, deps):
    me = await make_user(deps)
    peers = [await make_user(deps) for _ in range(5)]
    cids = []
    for p in peers:
        cids.append(await chat_between(deps, me, p))
    from app.services import messaging

    # Activity order: peers[2] newest, then 0, 4, 1, 3
    for i in (3, 1, 4, 0, 2):
        await messaging.send_message(deps, me.user_id, messaging.SendIn(
            conversation_id=cids[i], client_msg_id=uuid.uuid4().hex, text=f"to {i}"))
    seen, cursor = [], None
    while True:
        url = f"{API}/conversations?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=me.headers)).json()
        seen += [c["id"] for c in page["conversations"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [cids[i] for i in (2, 0, 4, 1, 3)]


async def test_chat_list_pages_through_equal_times_without_gaps_or_repeats(deps):
    from datetime import UTC, datetime, timedelta

    from app.models.messaging import Conversation
    from app.services import groups

    me, owner = await make_user(deps), await make_user(deps)
    await make_contacts(deps, me, owner)
    ids = [(await groups.create_group(deps, owner.user_id, groups.CreateIn(
        name=f"g{i}", member_ids=[me.user_id])))["id"] for i in range(24)]
    # Many chats share a time, on whole seconds and fractions of one: the page
    # boundary falls inside a tie, where only the id orders them.
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i, cid in enumerate(ids[:18]):
        await Conversation.filter(id=cid).update(
            last_message_at=base + timedelta(microseconds=(i % 3) * 500_000))
    await groups.leave(deps, me.user_id, ids[20])
    await groups.dissolve(deps, owner.user_id, ids[21])
    direct, _new = await convs.get_or_create_direct(deps, me.user_id, owner.user_id)  # make_contacts's
    shown = [c for c in ids if c not in (ids[20], ids[21])] + [str(direct.id)]
    by_time = {c.id: (c.last_message_at or c.created_at, str(c.id))
               for c in await Conversation.filter(id__in=shown)}
    want = sorted(shown,
                  key=lambda c: by_time[uuid.UUID(c)], reverse=True)
    for limit in (1, 4, 5, 100):
        seen, cursor = [], None
        while True:
            page = await convs.list_conversations(deps, me.user_id, cursor, limit)
            assert len(page["conversations"]) <= limit
            seen += [c["id"] for c in page["conversations"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == want, limit


async def test_rest_bad_input(client, deps):
    alice, bob, eve = await make_user(deps), await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    cases = [
        ("post", f"{API}/conversations/direct", {"user_id": alice.user_id}, alice, 400),
        ("post", f"{API}/conversations/direct", {"user_id": str(uuid.uuid4())}, alice, 404),
        ("post", f"{API}/conversations/direct", {}, alice, 400),
        ("get", f"{API}/conversations?limit=0", None, alice, 400),
        ("get", f"{API}/conversations?cursor=@@@", None, alice, 400),
        ("get", f"{API}/conversations/{cid}/messages?limit=abc", None, alice, 400),
        ("get", f"{API}/conversations/{cid}/messages", None, eve, 404),
        ("post", f"{API}/conversations/{cid}/messages", {"client_msg_id": "x", "text": "hi"}, eve, 404),
        ("post", f"{API}/conversations/{cid}/messages", {"text": "hi"}, alice, 400),
        ("post", f"{API}/conversations/{cid}/messages", [1], alice, 400),
    ]
    for method, url, body, who, status in cases:
        r = await getattr(client, method)(url, json=body, headers=who.headers)
        assert r.status == status, (url, body, await r.text())
        assert (await r.json())["error"]["code"]
    r = await client.get(f"{API}/conversations")
    assert r.status == 401


async def test_mute_a_chat_for_myself(client, deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    a2 = await connect(base_url, alice.access_token)
    try:
        r = await client.patch(f"{API}/conversations/{cid}", json={"muted": True},
                               headers=alice.headers)
        assert r.status == 200 and (await r.json())["conversation"]["muted"] is True
        [ev] = await a2.log.wait_for("conversation:updated", where=lambda c: c["id"] == cid)
        assert ev["muted"] is True
        r = await client.get(f"{API}/conversations/{cid}", headers=bob.headers)
        assert (await r.json())["conversation"]["muted"] is False  # only mine
        for body, status in (({"muted": "yes"}, 400), ({"pinned": True}, 400)):
            r = await client.patch(f"{API}/conversations/{cid}", json=body, headers=alice.headers)
            assert r.status == status
        eve = await make_user(deps)
        r = await client.patch(f"{API}/conversations/{cid}", json={"muted": True},
                               headers=eve.headers)
        assert r.status == 404
    finally:
        await a2.disconnect()


# --- the send path: judged in the writer, emitted in seq order ---------------


class SlowFirstFanout:
    """Records message:new seqs in the order they are handed over; the emit of
    lower seqs takes longer, so without ordering later messages overtake them."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.order: list[int] = []
        self.recipients: dict[int, tuple] = {}

    async def to_users(self, user_ids, event, data, skip=None) -> None:
        if event != "message:new":
            return
        await asyncio.sleep(0.005 * (self.n - data["seq"]))
        self.order.append(data["seq"])
        self.recipients[data["seq"]] = tuple(sorted(str(u) for u in user_ids))

    async def disconnect_session(self, session_id) -> None:
        pass


async def test_message_new_of_a_conversation_is_emitted_in_seq_order(deps):
    from app.services import messaging

    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    n = 20
    fanout, saved = SlowFirstFanout(n + 1), deps.fanout
    deps.fanout = fanout
    try:
        # All queued before the writer runs: one batch, seqs 1..n in this order.
        acks = await asyncio.gather(*(
            messaging.send_from_payload(deps, (alice, bob)[i % 2].user_id, text(cid, f"m{i}"))
            for i in range(n)))
    finally:
        deps.fanout = saved
    assert sorted(a["seq"] for a in acks) == list(range(1, n + 1))
    assert fanout.order == list(range(1, n + 1))
    assert set(fanout.recipients.values()) == {tuple(sorted([alice.user_id, bob.user_id]))}


async def test_refused_sends_spend_no_seq_and_repeats_still_get_the_original(deps):
    from app.errors import DomainError
    from app.services import contacts, messaging

    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    first = await messaging.send_from_payload(deps, alice.user_id, text(cid, "one", "cm-a"))
    await contacts.block(deps, bob.user_id, contacts.BlockIn(user_id=alice.user_id))
    # Refused in the same batch as a repeat of the stored message.
    results = await asyncio.gather(
        messaging.send_from_payload(deps, alice.user_id, text(cid, "two")),
        messaging.send_from_payload(deps, alice.user_id, text(cid, "one", "cm-a")),
        return_exceptions=True)
    assert isinstance(results[0], DomainError) and results[0].code == "not_contact", results
    assert results[1] == first
    await contacts.unblock(deps, bob.user_id, alice.user_id)
    again = await messaging.send_from_payload(deps, alice.user_id, text(cid, "three"))
    assert again["seq"] == 2  # nothing was spent on the refused one
    assert await Message.filter(conversation_id=cid).count() == 2


async def test_new_message_equals_its_stored_rendering(deps):
    """The ack is built without reading the message back; it must equal what
    history renders from the stored row (text, reply preview, mentions)."""
    from app.services import groups, messaging

    owner = await make_user(deps)
    bob = await make_user(deps)
    await make_contacts(deps, owner, bob)
    group = await groups.create_group(deps, owner.user_id,
                                      groups.CreateIn(name="g", member_ids=[bob.user_id]))
    cid = group["id"]
    plain = await messaging.send_from_payload(deps, owner.user_id, text(cid, "  hello  "))
    reply = await messaging.send_from_payload(
        deps, bob.user_id, {**text(cid, "re @owner"), "reply_to": plain["id"],
                            "mentions": [owner.user_id]})
    everyone = await messaging.send_from_payload(
        deps, owner.user_id, {**text(cid, "@all"), "mention_all": True})
    page = await history.history(deps, owner.user_id,
                                   history.HistoryIn(conversation_id=cid, limit=10))
    stored = {m["id"]: m for m in page["messages"]}
    for sent in (plain, reply, everyone):
        assert sent == stored[sent["id"]]
    assert reply["reply_preview"]["id"] == plain["id"] and reply["mentions"] == [owner.user_id]


async def test_group_recipients_are_the_members_when_the_seq_was_taken(deps):
    """The writer reads the member list under the conversation's lock, or takes
    the cached one only at exactly the version it read: a stale cache entry
    (another process changed the group) is never used."""
    from app.services import groups, member_cache, messaging

    owner, bob, carol = await make_user(deps), await make_user(deps), await make_user(deps)
    await make_contacts(deps, owner, bob)
    await make_contacts(deps, owner, carol)
    group = await groups.create_group(deps, owner.user_id, groups.CreateIn(
        name="g", member_ids=[bob.user_id, carol.user_id]))
    cid = group["id"]
    fanout, saved = SlowFirstFanout(0), deps.fanout
    deps.fanout = fanout
    try:
        m1 = await messaging.send_from_payload(deps, owner.user_id, text(cid, "all three"))
        stale = member_cache._member_cache[cid]
        await groups.remove_member(deps, owner.user_id, cid, bob.user_id)
        member_cache._member_cache[cid] = stale  # as if this process heard nothing
        m2 = await messaging.send_from_payload(deps, owner.user_id, text(cid, "without bob"))
        m3 = await messaging.send_from_payload(deps, carol.user_id, text(cid, "cached now"))
    finally:
        deps.fanout = saved
    three = tuple(sorted([owner.user_id, bob.user_id, carol.user_id]))
    two = tuple(sorted([owner.user_id, carol.user_id]))
    assert fanout.recipients[m1["seq"]] == three
    assert fanout.recipients[m2["seq"]] == two
    assert fanout.recipients[m3["seq"]] == two


async def test_ack_names_the_conversation_canonically(deps):
    from app.services import messaging

    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    sent = await messaging.send_from_payload(deps, alice.user_id, text(cid.upper(), "hi"))
    assert sent["conversation_id"] == cid and sent["sender_id"] == alice.user_id
