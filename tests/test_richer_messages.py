"""Richer messages over real sockets: the change log and offline convergence,
reactions, edits, pins, delivered receipts, forwarding, contact cards and
locations — with their authorisation, idempotency and limits."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.models.message_extras import MessageReaction, Pin
from app.models.messaging import Message
from app.services import contacts, groups, messaging
from app.services import conversations as convs
from tests.factories import call, connect, make_contacts, make_user

API = "/api/v1"


async def chat_between(deps, a, b) -> str:
    if not await contacts.has_contact(a.user_id, b.user_id):
        await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return str(conv.id)


async def group_of(deps, owner, members, name="Team") -> str:
    for m in members:
        if not await contacts.has_contact(owner.user_id, m.user_id):
            await make_contacts(deps, owner, m)
    conv = await groups.create_group(deps, owner.user_id, groups.CreateIn(
        name=name, member_ids=[m.user_id for m in members]))
    return conv["id"]


async def say(deps, who, cid, text, **extra) -> dict:
    return await messaging.send_from_payload(deps, who.user_id, {
        "conversation_id": cid, "client_msg_id": uuid.uuid4().hex, "text": text, **extra})


def ok(ack):
    assert ack["ok"] is True, ack
    return ack


def err(ack, code):
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] == code, ack
    return ack["error"]


async def full_history(sio, cid) -> list[dict]:
    page = ok(await call(sio, "history", {"conversation_id": cid, "limit": 200}))
    assert not page["has_more"]
    return page["messages"]


# --- the change log: a device that was offline converges ---------------------------


async def test_offline_device_learns_every_change_and_converges_exactly(deps, base_url):
    alice, bob, carol = [await make_user(deps, n) for n in ("alice", "bob", "carol")]
    gid = await group_of(deps, alice, [bob, carol])
    cid = await chat_between(deps, alice, bob)
    a = await connect(base_url, alice.access_token)
    c = await connect(base_url, carol.access_token)
    laptop = await connect(base_url, bob.access_token)
    try:
        held = {}
        for conv in (cid, gid):
            for i in range(6):
                ok(await call(a, "message:send", {"conversation_id": conv,
                                                  "client_msg_id": f"{conv}-{i}",
                                                  "text": f"hello {i}"}))
        # Bob's laptop syncs, keeps what it got, then goes offline.
        first = ok(await call(laptop, "sync", {"cursors": {}}))
        cursors, change_cursors = {}, {}
        for entry in first["conversations"]:
            held[entry["id"]] = {m["id"]: m for m in entry["messages"]}
            cursors[entry["id"]] = entry["last_seq"]
            change_cursors[entry["id"]] = entry["change_seq"]
        await laptop.disconnect()

        direct = sorted(held[cid].values(), key=lambda m: m["seq"])
        group = [m for m in sorted(held[gid].values(), key=lambda m: m["seq"])
                 if m["type"] == "text"]
        phone = await connect(base_url, bob.access_token)
        try:
            # Every kind of change, on messages the laptop holds.
            ok(await call(a, "message:recall", {"message_id": direct[0]["id"]}))
            ok(await call(a, "message:edit", {"message_id": direct[1]["id"],
                                              "text": "hello, edited"}))
            ok(await call(a, "message:edit", {"message_id": direct[1]["id"],
                                              "text": "hello, edited twice"}))
            ok(await call(phone, "message:react", {"message_id": direct[2]["id"],
                                                   "emoji": "👍", "on": True}))
            ok(await call(a, "message:react", {"message_id": direct[2]["id"],
                                               "emoji": "🎉", "on": True}))
            ok(await call(a, "message:react", {"message_id": direct[3]["id"],
                                               "emoji": "😀", "on": True}))
            ok(await call(a, "message:react", {"message_id": direct[3]["id"],
                                               "emoji": "😀", "on": False}))
            ok(await call(phone, "message:pin", {"message_id": direct[4]["id"]}))
            ok(await call(a, "message:pin", {"message_id": group[0]["id"]}))
            ok(await call(a, "message:pin", {"message_id": group[1]["id"]}))
            ok(await call(a, "message:unpin", {"message_id": group[1]["id"]}))
            ok(await call(c, "message:react", {"message_id": group[2]["id"],
                                               "emoji": "❤️", "on": True}))
            ok(await call(a, "message:recall", {"message_id": group[3]["id"]}))
            # …and new messages on top.
            ok(await call(a, "message:send", {"conversation_id": cid,
                                              "client_msg_id": "after", "text": "new"}))
        finally:
            await phone.disconnect()

        laptop = await connect(base_url, bob.access_token)
        got_changes = 0
        # Sync until nothing is left, applying what comes back.
        for _round in range(5):
            answer = ok(await call(laptop, "sync", {"cursors": cursors,
                                                    "changes": change_cursors, "limit": 3}))
            if not answer["conversations"]:
                break
            for entry in answer["conversations"]:
                mine = held[entry["id"]]
                for m in entry.get("changes", []):
                    assert m["id"] in mine  # only messages it holds
                    mine[m["id"]] = m
                    got_changes += 1
                for m in entry["messages"]:
                    mine[m["id"]] = m
                if entry["messages"]:
                    cursors[entry["id"]] = entry["messages"][-1]["seq"]
                change_cursors[entry["id"]] = entry["change_seq"]
        else:
            pytest.fail("sync never settled")
        assert got_changes >= 8  # paged by `limit`, every changed message once
        for conv in (cid, gid):
            truth = await full_history(laptop, conv)
            assert sorted(held[conv].values(), key=lambda m: m["seq"]) == truth
        # Spot checks of what converged.
        by_id = held[cid]
        assert by_id[direct[0]["id"]]["recalled"] is True
        assert by_id[direct[1]["id"]]["text"] == "hello, edited twice"
        assert by_id[direct[1]["id"]]["edited_at"]
        assert by_id[direct[2]["id"]]["reactions"] == {"👍": 1, "🎉": 1}
        assert by_id[direct[2]["id"]]["my_reactions"] == ["👍"]
        assert "reactions" not in by_id[direct[3]["id"]]
        assert by_id[direct[4]["id"]]["pinned"]["by"] == bob.user_id
        assert "pinned" not in held[gid][group[1]["id"]]
        # Nothing more to learn.
        again = ok(await call(laptop, "sync", {"cursors": cursors, "changes": change_cursors}))
        assert again["conversations"] == []
    finally:
        for s in (a, c, laptop):
            await s.disconnect()


async def test_sync_without_change_cursors_is_unchanged_and_skips_quiet_chats(deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    m = await say(deps, alice, cid, "hi")
    b = await connect(base_url, bob.access_token)
    try:
        first = ok(await call(b, "sync", {"cursors": {cid: 0}}))
        [entry] = first["conversations"]
        assert entry["change_seq"] == 0 and "changes" not in entry
        await messaging.recall(deps, alice.user_id, messaging.MessageRef(message_id=m["id"]))
        # An old client (no change cursors) sees only new messages, as before.
        assert ok(await call(b, "sync", {"cursors": {cid: m["seq"]}}))["conversations"] == []
        # With its change cursor it learns of the recall.
        [entry] = ok(await call(b, "sync", {"cursors": {cid: m["seq"]},
                                            "changes": {cid: 0}}))["conversations"]
        assert [x["id"] for x in entry["changes"]] == [m["id"]]
        assert entry["changes"][0]["recalled"] is True and entry["change_seq"] == 1
        assert entry["messages"] == []
    finally:
        await b.disconnect()


# --- reactions -------------------------------------------------------------------------


async def test_reactions_counts_mine_fanout_retry_and_limits(deps, base_url):
    alice, bob, carol = [await make_user(deps, n) for n in ("alice", "bob", "carol")]
    gid = await group_of(deps, alice, [bob, carol])
    msg = await say(deps, alice, gid, "react to me")
    a, b, c = [await connect(base_url, p.access_token) for p in (alice, bob, carol)]
    try:
        ack = ok(await call(b, "message:react", {"message_id": msg["id"], "emoji": "👍",
                                                 "on": True}))
        assert ack["counts"] == {"👍": 1} and ack["mine"] == ["👍"]
        [ev] = await a.log.wait_for("message:reactions")
        assert ev == {"conversation_id": gid, "message_id": msg["id"], "counts": {"👍": 1},
                      "mine": []}
        [ev] = await b.log.wait_for("message:reactions")
        assert ev["mine"] == ["👍"]
        # A retry changes nothing and tells nobody.
        again = ok(await call(b, "message:react", {"message_id": msg["id"], "emoji": "👍",
                                                   "on": True}))
        assert again["counts"] == {"👍": 1}
        ok(await call(c, "message:react", {"message_id": msg["id"], "emoji": "👍", "on": True}))
        ok(await call(c, "message:react", {"message_id": msg["id"], "emoji": "👨‍👩‍👧",
                                           "on": True}))
        await a.log.wait_for("message:reactions", 3)
        await asyncio.sleep(0.1)
        assert len(a.log.of("message:reactions")) == 3
        assert a.log.of("message:reactions")[-1]["counts"] == {"👍": 2, "👨‍👩‍👧": 1}
        # Taking off twice is fine too.
        ok(await call(c, "message:react", {"message_id": msg["id"], "emoji": "👨‍👩‍👧",
                                           "on": False}))
        off = ok(await call(c, "message:react", {"message_id": msg["id"], "emoji": "👨‍👩‍👧",
                                                 "on": False}))
        assert off["counts"] == {"👍": 2} and off["mine"] == ["👍"]
        # History carries the counts and my own.
        [seen] = [m for m in await full_history(b, gid) if m["id"] == msg["id"]]
        assert seen["reactions"] == {"👍": 2} and seen["my_reactions"] == ["👍"]
        [seen] = [m for m in await full_history(a, gid) if m["id"] == msg["id"]]
        assert seen["my_reactions"] == []
        # One emoji, one grapheme cluster.
        for bad in ("a", "👍👍", "", " ", "😀a", "x" * 65):
            err(await call(b, "message:react", {"message_id": msg["id"], "emoji": bad,
                                                "on": True}), "invalid")
        for good in ("🇫🇷", "1️⃣", "👍🏽"):
            ok(await call(b, "message:react", {"message_id": msg["id"], "emoji": good,
                                               "on": True}))
        # At most 20 distinct emoji on one message.
        pool = [chr(0x1F600 + i) for i in range(30)]
        have = 4  # 👍 🇫🇷 1️⃣ 👍🏽
        for e in pool[:20 - have]:
            ok(await call(a, "message:react", {"message_id": msg["id"], "emoji": e, "on": True}))
        e = err(await call(a, "message:react", {"message_id": msg["id"], "emoji": pool[25],
                                                "on": True}), "invalid")
        assert e["details"]["limit"] == 20
        # An emoji already there still counts one more person.
        ok(await call(c, "message:react", {"message_id": msg["id"], "emoji": pool[0],
                                           "on": True}))
        assert await MessageReaction.filter(message_id=int(msg["id"])).count() == 2 + 3 + 16 + 1
    finally:
        for s in (a, b, c):
            await s.disconnect()


# --- edit ------------------------------------------------------------------------------


async def test_edit_window_versions_captions_and_mentions(deps, base_url, client):
    alice, bob, carol = [await make_user(deps, n) for n in ("alice", "bob", "carol")]
    gid = await group_of(deps, alice, [bob, carol])
    msg = await say(deps, alice, gid, "hi @bob and @carol", mentions=[bob.user_id,
                                                                     carol.user_id])
    a, b = await connect(base_url, alice.access_token), await connect(base_url, bob.access_token)
    try:
        out = ok(await call(a, "message:edit", {"message_id": msg["id"],
                                                "text": "  hi @carol only  "}))
        assert out["text"] == "hi @carol only" and out["edited_at"]
        [ev] = await b.log.wait_for("message:edited")
        assert {k: ev[k] for k in ("conversation_id", "message_id", "text", "edited_at")} == {
            "conversation_id": gid, "message_id": msg["id"], "text": "hi @carol only",
            "edited_at": out["edited_at"]}
        assert ev["mentions"] == [carol.user_id]  # @bob is gone from the text
        [seen] = [m for m in await full_history(b, gid) if m["id"] == msg["id"]]
        assert seen["text"] == "hi @carol only" and seen["edited_at"] == out["edited_at"]
        assert seen["mentions"] == [carol.user_id]
        # The same edit again (a retry) stores nothing new.
        ok(await call(a, "message:edit", {"message_id": msg["id"], "text": "hi @carol only"}))
        v = ok(await call(a, "message:versions", {"message_id": msg["id"]}))
        assert [x["text"] for x in v["versions"]] == ["hi @bob and @carol"]
        assert v["versions"][0]["mentions"] == [bob.user_id, carol.user_id]
        # Only the sender edits or sees earlier versions.
        err(await call(b, "message:edit", {"message_id": msg["id"], "text": "mine now"}),
            "forbidden")
        err(await call(b, "message:versions", {"message_id": msg["id"]}), "forbidden")
        err(await call(a, "message:edit", {"message_id": msg["id"], "text": "   "}), "invalid")
        err(await call(a, "message:edit", {"message_id": msg["id"], "text": "x" * 16_001}),
            "invalid")
        # A caption can be edited, and emptied; a file has none to edit.
        from tests.test_media_api import sent, uploaded

        img = await uploaded(client, alice, _png())
        photo = await sent(client, alice, gid, img["id"], "image", "the beach")
        ok(await call(a, "message:edit", {"message_id": photo["id"], "text": "the sea"}))
        ok(await call(a, "message:edit", {"message_id": photo["id"], "text": ""}))
        doc = await uploaded(client, alice, b"plain\n", name="a.txt")
        filed = await sent(client, alice, gid, doc["id"], "file")
        err(await call(a, "message:edit", {"message_id": filed["id"], "text": "x"}), "invalid")
        # Outside the window.
        old = await say(deps, alice, gid, "old")
        await Message.filter(id=int(old["id"])).update(
            created_at=(await Message.get(id=int(old["id"]))).created_at.replace(year=2000))
        err(await call(a, "message:edit", {"message_id": old["id"], "text": "new"}),
            "edit_expired")
    finally:
        for s in (a, b):
            await s.disconnect()


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


async def test_edit_hook_runs_in_the_transaction(deps):
    from app.services import message_changes

    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    msg = await say(deps, alice, cid, "typo")
    seen = []

    async def hook(conn, message_id, conversation_id, text, mtype):
        stored = await Message.filter(id=message_id).using_db(conn).values_list("text",
                                                                                 flat=True)
        seen.append((message_id, str(conversation_id), text, mtype, stored))

    message_changes.TEXT_CHANGED.append(hook)
    try:
        await message_changes.edit(deps, alice.user_id, message_changes.EditIn(
            message_id=msg["id"], text="fixed"))
    finally:
        message_changes.TEXT_CHANGED.remove(hook)
    # Called after the change, inside its transaction (it reads the new text)…
    assert seen == [(int(msg["id"]), cid, "fixed", "text", ["fixed"])]

    async def failing(*_args):
        raise RuntimeError("index down")

    # …so a failing index update undoes the edit: the two never disagree.
    message_changes.TEXT_CHANGED.append(failing)
    try:
        with pytest.raises(RuntimeError):
            await message_changes.edit(deps, alice.user_id, message_changes.EditIn(
                message_id=msg["id"], text="fixed again"))
    finally:
        message_changes.TEXT_CHANGED.remove(failing)
    assert (await Message.get(id=int(msg["id"]))).text == "fixed"


# --- pins ------------------------------------------------------------------------------


async def test_pins_permissions_system_lines_list_and_limit(deps, base_url, client):
    alice, bob, carol = [await make_user(deps, n) for n in ("alice", "bob", "carol")]
    gid = await group_of(deps, alice, [bob, carol])
    first = await say(deps, bob, gid, "pin me")
    a, b = await connect(base_url, alice.access_token), await connect(base_url, bob.access_token)
    try:
        err(await call(b, "message:pin", {"message_id": first["id"]}), "forbidden")
        ok(await call(a, "message:pin", {"message_id": first["id"]}))
        [line] = await b.log.wait_for("message:new", where=lambda m: m["type"] == "system")
        assert line["system"]["event"] == "pinned"
        assert line["system"]["actor_id"] == alice.user_id
        assert line["system"]["message_id"] == first["id"]
        [ev] = await b.log.wait_for("message:pinned")
        assert ev["message_id"] == first["id"] and ev["pinned"]["by"] == alice.user_id
        # Pinning twice: no second line.
        ok(await call(a, "message:pin", {"message_id": first["id"]}))
        resp = await client.get(f"{API}/conversations/{gid}/pins", headers=bob.headers)
        body = await resp.json()
        assert resp.status == 200 and [m["id"] for m in body["pins"]] == [first["id"]]
        assert body["pins"][0]["pinned"]["by"] == alice.user_id
        stranger = await make_user(deps)
        resp = await client.get(f"{API}/conversations/{gid}/pins", headers=stranger.headers)
        assert resp.status == 404
        # The group may let everyone pin.
        await groups.update_group(deps, alice.user_id, gid,
                                  groups.PatchIn(members_can_pin=True))
        second = await say(deps, carol, gid, "me too")
        ok(await call(b, "message:pin", {"message_id": second["id"]}))
        ok(await call(b, "message:unpin", {"message_id": first["id"]}))
        await b.log.wait_for("message:unpinned")
        lines = [m for m in await full_history(b, gid) if m["type"] == "system"]
        assert [x["system"]["event"] for x in lines][-3:] == ["settings_changed", "pinned",
                                                               "unpinned"]
        # At most 50 pins per chat.
        for i in range(49):
            m = await say(deps, alice, gid, f"n{i}")
            ok(await call(a, "message:pin", {"message_id": m["id"]}))
        extra = await say(deps, alice, gid, "one too many")
        e = err(await call(a, "message:pin", {"message_id": extra["id"]}), "invalid")
        assert e["details"]["limit"] == 50
        assert await Pin.filter(conversation_id=gid).count() == 50
        # A recalled message leaves the pins.
        ok(await call(a, "message:recall", {"message_id": m["id"]}))
        assert await Pin.filter(conversation_id=gid).count() == 49
    finally:
        for s in (a, b):
            await s.disconnect()


# --- delivered -------------------------------------------------------------------------


async def test_delivered_receipts_move_forward_only_and_ride_in_summaries(deps, base_url,
                                                                           client):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    for i in range(3):
        await say(deps, alice, cid, f"m{i}")
    a, b = await connect(base_url, alice.access_token), await connect(base_url, bob.access_token)
    try:
        assert ok(await call(b, "message:delivered", {"conversation_id": cid,
                                                      "up_to_seq": 2}))["delivered_seq"] == 2
        [ev] = await a.log.wait_for("conversation:delivered")
        assert ev == {"conversation_id": cid, "user_id": bob.user_id, "delivered_seq": 2}
        # Never back; beyond the end is clamped.
        assert ok(await call(b, "message:delivered", {"conversation_id": cid,
                                                      "up_to_seq": 1}))["delivered_seq"] == 2
        assert ok(await call(b, "message:delivered", {"conversation_id": cid,
                                                      "up_to_seq": 99}))["delivered_seq"] == 3
        await a.log.wait_for("conversation:delivered", 2)
        await asyncio.sleep(0.1)
        assert [e["delivered_seq"] for e in a.log.of("conversation:delivered")] == [2, 3]
        resp = await client.get(f"{API}/conversations/{cid}", headers=alice.headers)
        assert (await resp.json())["conversation"]["delivered_seq"] == 3
        err(await call(b, "message:delivered", {"conversation_id": cid, "up_to_seq": -1}),
            "invalid")
    finally:
        for s in (a, b):
            await s.disconnect()


# --- forwarding --------------------------------------------------------------------------


async def test_forward_each_and_merged_share_media_and_are_idempotent(deps, base_url, client):
    alice, bob, carol, dave = [await make_user(deps, n)
                               for n in ("alice", "bob", "carol", "dave")]
    ab = await chat_between(deps, alice, bob)
    bc = await chat_between(deps, bob, carol)
    bd = await chat_between(deps, bob, dave)
    from tests.test_media_api import sent, uploaded

    img = await uploaded(client, alice, _png())
    hello = await say(deps, alice, ab, "hello bob")
    photo = await sent(client, alice, ab, img["id"], "image", "look")
    b, c, d = [await connect(base_url, p.access_token) for p in (bob, carol, dave)]
    try:
        content = f"{API}/media/{img['id']}/content"
        assert (await client.get(content, headers=carol.headers)).status == 404
        payload = {"message_ids": [photo["id"], hello["id"]], "to": [bc, bd], "mode": "each",
                   "client_msg_id": "fw-1"}
        out = ok(await call(b, "message:forward", payload))["messages"]
        assert [(m["conversation_id"], m["type"]) for m in out] == [
            (bc, "text"), (bc, "image"), (bd, "text"), (bd, "image")]  # in time order
        assert all(m["forwarded"] and m["sender_id"] == bob.user_id for m in out)
        assert out[0]["text"] == "hello bob" and out[1]["text"] == "look"
        got = await c.log.wait_for("message:new", 2)
        assert [m["id"] for m in got] == [out[0]["id"], out[1]["id"]]
        # Carol may now download the photo through the copy (no bytes copied).
        assert (await client.get(content, headers=carol.headers)).status == 200
        assert got[1]["media"]["url"] and got[1]["media"]["id"] == img["id"]
        # A retry returns the same messages and sends nothing again.
        again = ok(await call(b, "message:forward", payload))["messages"]
        assert [m["id"] for m in again] == [m["id"] for m in out]
        await asyncio.sleep(0.2)
        assert len(c.log.of("message:new")) == 2
        assert await Message.filter(conversation_id=bc).count() == 2

        # Merged: one chat record; Dave opens it without being in the source chat.
        rec = ok(await call(b, "message:forward", {
            "message_ids": [hello["id"], photo["id"]], "to": [bd], "mode": "merged",
            "client_msg_id": "fw-2"}))["messages"]
        [record] = rec
        assert record["type"] == "chat_record"
        items = record["chat_record"]["items"]
        assert [(i["sender_name"], i["type"]) for i in items] == [("alice", "text"),
                                                                  ("alice", "image")]
        assert items[0]["text"] == "hello bob" and items[0]["sent_at"] == hello["created_at"]
        assert record["chat_record"]["title"] == "alice & bob"
        [seen] = await d.log.wait_for("message:new",
                                      where=lambda m: m["type"] == "chat_record")
        link = seen["chat_record"]["items"][1]["media"]["url"]
        assert link and f"u={dave.user_id}" in link
        # Recalling the forwarded copy works as for any message.
        ok(await call(b, "message:recall", {"message_id": out[1]["id"]}))
        assert (await client.get(content, headers=carol.headers)).status == 404
        # The record still grants Dave access (through the record only).
        assert (await client.get(content, headers=dave.headers)).status == 200
    finally:
        for s in (b, c, d):
            await s.disconnect()


async def test_forward_limits_and_what_cannot_be_forwarded(deps, base_url):
    alice, bob, carol = [await make_user(deps) for _ in range(3)]
    ab = await chat_between(deps, alice, bob)
    bc = await chat_between(deps, bob, carol)
    ac = await chat_between(deps, alice, carol)
    m = await say(deps, alice, ab, "x")
    secret = await say(deps, alice, ac, "not for bob")
    b = await connect(base_url, bob.access_token)
    try:
        def fw(**kw):
            return {"message_ids": [m["id"]], "to": [bc], "mode": "each",
                    "client_msg_id": uuid.uuid4().hex, **kw}

        err(await call(b, "message:forward", fw(to=[bc] * 10)), "invalid")
        err(await call(b, "message:forward", fw(message_ids=[m["id"]] * 101)), "invalid")
        err(await call(b, "message:forward", fw(mode="pile")), "invalid")
        err(await call(b, "message:forward", fw(message_ids=[secret["id"]])), "not_found")
        err(await call(b, "message:forward", fw(to=[ac])), "not_found")
        await messaging.recall(deps, alice.user_id, messaging.MessageRef(message_id=m["id"]))
        err(await call(b, "message:forward", fw()), "invalid")
        assert await Message.filter(conversation_id=bc).count() == 0
    finally:
        await b.disconnect()


# --- contact cards and locations ---------------------------------------------------------


async def test_contact_cards_and_locations(deps, base_url):
    alice, bob, carol, stranger = [await make_user(deps, n)
                                   for n in ("alice", "bob", "carol", "stranger")]
    ab = await chat_between(deps, alice, bob)
    await make_contacts(deps, alice, carol)
    a, b = await connect(base_url, alice.access_token), await connect(base_url, bob.access_token)
    try:
        def card(uid, **kw):
            return {"conversation_id": ab, "client_msg_id": uuid.uuid4().hex,
                    "type": "contact_card", "contact_card": {"user_id": uid}, **kw}

        sent = ok(await call(a, "message:send", card(carol.user_id)))["message"]
        assert sent["contact_card"] == {"user_id": carol.user_id, "username": carol.username,
                                        "display_name": "carol"}
        [got] = await b.log.wait_for("message:new")
        assert got["contact_card"]["user_id"] == carol.user_id
        # Bob asks Carol from the card: her own rules decide.
        out = await contacts.send_request(deps, bob.user_id,
                                          contacts.RequestIn(user_id=carol.user_id))
        assert out["request"]["status"] == "pending"
        ok(await call(a, "message:send", card(alice.user_id)))  # my own card
        err(await call(a, "message:send", card(stranger.user_id)), "not_found")
        err(await call(a, "message:send", card(str(uuid.uuid4()))), "not_found")
        err(await call(a, "message:send", card(carol.user_id, text="hi")), "invalid")
        err(await call(a, "message:send", {"conversation_id": ab, "client_msg_id": "c1",
                                           "type": "contact_card"}), "invalid")

        def loc(**kw):
            return {"conversation_id": ab, "client_msg_id": uuid.uuid4().hex,
                    "type": "location", "location": {"lat": 48.8584, "lng": 2.2945,
                                                     "name": " Tour Eiffel ", **kw}}

        placed = ok(await call(a, "message:send", loc(address="Champ de Mars")))["message"]
        assert placed["location"] == {"lat": 48.8584, "lng": 2.2945, "name": "Tour Eiffel",
                                      "address": "Champ de Mars"}
        for bad in ({"lat": 91}, {"lat": -90.5}, {"lng": 180.01}, {"lat": "north"},
                    {"name": "x" * 201}):
            err(await call(a, "message:send", loc(**bad)), "invalid")
        err(await call(a, "message:send", {"conversation_id": ab, "client_msg_id": "t1",
                                           "text": "hi", "location": {"lat": 1, "lng": 2}}),
            "invalid")
        # Both survive history and a forward.
        hist = await full_history(b, ab)
        assert [m["type"] for m in hist] == ["contact_card", "contact_card", "location"]
    finally:
        for s in (a, b):
            await s.disconnect()


# --- authorisation of every event ------------------------------------------------------


@pytest.mark.parametrize("who", ["stranger", "removed", "left"])
async def test_every_new_event_refuses_outsiders_like_strangers(deps, base_url, who):
    owner, bob, carol, stranger = [await make_user(deps, n)
                                   for n in ("owner", "bob", "carol", "stranger")]
    gid = await group_of(deps, owner, [bob, carol])
    await groups.update_group(deps, owner.user_id, gid, groups.PatchIn(members_can_pin=True))
    mine = await say(deps, bob, gid, "bob's own")
    target = await say(deps, owner, gid, "target")
    outsider = stranger
    if who == "removed":
        await groups.remove_member(deps, owner.user_id, gid, bob.user_id)
        outsider = bob
    elif who == "left":
        await groups.leave(deps, bob.user_id, gid)
        outsider = bob
    own_chat = await chat_between(deps, outsider, await make_user(deps))
    o = await connect(base_url, outsider.access_token)
    watchers = [await connect(base_url, p.access_token) for p in (owner, carol)]
    try:
        await asyncio.sleep(0.2)
        for w in watchers:
            w.log.items.clear()
        acting = [
            ("message:react", {"message_id": target["id"], "emoji": "👍", "on": True}),
            ("message:edit", {"message_id": mine["id"], "text": "changed"}),
            ("message:versions", {"message_id": mine["id"]}),
            ("message:pin", {"message_id": target["id"]}),
            ("message:unpin", {"message_id": target["id"]}),
            ("message:delivered", {"conversation_id": gid, "up_to_seq": 5}),
            ("message:forward", {"message_ids": [target["id"]], "to": [own_chat],
                                 "mode": "each", "client_msg_id": "f1"}),
            ("message:forward", {"message_ids": [mine["id"]], "to": [own_chat],
                                 "mode": "merged", "client_msg_id": "f2"}),
        ]
        for name, payload in acting:
            err(await call(o, name, payload), "not_found")
        await asyncio.sleep(0.2)
        for w in watchers:
            assert w.log.items == [], w.log.items
        assert not await MessageReaction.exists()
        assert (await Message.get(id=int(mine["id"]))).text == "bob's own"
        assert not await Pin.exists()
        assert await Message.filter(conversation_id=own_chat).count() == 0
    finally:
        for s in [o, *watchers]:
            await s.disconnect()


async def test_blocked_contacts_cannot_react_edit_pin_or_forward_in(deps, base_url):
    alice, bob, carol = [await make_user(deps, n) for n in ("alice", "bob", "carol")]
    ab = await chat_between(deps, alice, bob)
    bc = await chat_between(deps, bob, carol)
    theirs = await say(deps, alice, ab, "from alice")
    mine = await say(deps, bob, ab, "from bob")
    other = await say(deps, carol, bc, "from carol")
    await contacts.block(deps, alice.user_id, contacts.BlockIn(user_id=bob.user_id))
    b = await connect(base_url, bob.access_token)
    try:
        for name, payload in [
            ("message:react", {"message_id": theirs["id"], "emoji": "👍", "on": True}),
            ("message:edit", {"message_id": mine["id"], "text": "changed"}),
            ("message:pin", {"message_id": theirs["id"]}),
            ("message:forward", {"message_ids": [other["id"]], "to": [ab], "mode": "each",
                                 "client_msg_id": "fw-x"}),
        ]:
            err(await call(b, name, payload), "not_contact")
        assert not await MessageReaction.exists() and not await Pin.exists()
        # The one who blocked is told to unblock first.
        a = await connect(base_url, alice.access_token)
        try:
            err(await call(a, "message:react", {"message_id": mine["id"], "emoji": "👍",
                                                "on": True}), "blocked")
        finally:
            await a.disconnect()
    finally:
        await b.disconnect()


# --- retries racing each other -----------------------------------------------------------


async def test_concurrent_retries_of_forward_react_and_edit_store_once(deps, base_url):
    alice, bob, carol = [await make_user(deps, n) for n in ("alice", "bob", "carol")]
    ab = await chat_between(deps, alice, bob)
    bc = await chat_between(deps, bob, carol)
    msgs = [await say(deps, alice, ab, f"m{i}") for i in range(3)]
    mine = await say(deps, bob, bc, "typo")
    b1, b2 = [await connect(base_url, bob.access_token) for _ in range(2)]
    c = await connect(base_url, carol.access_token)
    try:
        fw = {"message_ids": [m["id"] for m in msgs], "to": [bc], "mode": "each",
              "client_msg_id": "same-forward"}
        react = {"message_id": msgs[0]["id"], "emoji": "🎉", "on": True}
        edit = {"message_id": mine["id"], "text": "fixed"}
        acks = await asyncio.gather(*(call(s, ev, p) for s in (b1, b2, b1, b2)
                                      for ev, p in (("message:forward", fw),
                                                    ("message:react", react),
                                                    ("message:edit", edit))))
        for a in acks:
            ok(a)
        forwards = [a["messages"] for a in acks[0::3]]
        assert all([m["id"] for m in f] == [m["id"] for m in forwards[0]] for f in forwards)
        assert await Message.filter(conversation_id=bc, type="text").count() == 1 + 3
        await c.log.wait_for("message:new", 3)
        await asyncio.sleep(0.3)
        assert len(c.log.of("message:new")) == 3  # each copy delivered once
        assert await MessageReaction.filter(message_id=int(msgs[0]["id"])).count() == 1
        assert len(c.log.of("message:edited")) == 1
        v = ok(await call(b1, "message:versions", {"message_id": mine["id"]}))
        assert [x["text"] for x in v["versions"]] == ["typo"]
    finally:
        for s in (b1, b2, c):
            await s.disconnect()
