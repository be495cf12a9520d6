"""The messaging events (app/realtime/messaging.py) for someone who is no longer
in the group: removed or left, every event that acts on the conversation is
refused exactly like a stranger's, and nothing of it reaches the members;
reading stays inside the window they had (up to the line about their exit)."""

from __future__ import annotations

import asyncio

import pytest

from app.models.messaging import HiddenMessage, Message
from app.services import groups, messaging
from tests.factories import call, connect, make_contacts, make_user


async def _group(deps, owner, members) -> str:
    for m in members:
        await make_contacts(deps, owner, m)
    conv = await groups.create_group(deps, owner.user_id, groups.CreateIn(
        name="Team", member_ids=[m.user_id for m in members]))
    return conv["id"]


async def _send(deps, who, cid, text) -> dict:
    return await messaging.send_from_payload(deps, who.user_id, {
        "conversation_id": cid, "client_msg_id": f"{text}-{who.user_id[:8]}", "text": text})


@pytest.mark.parametrize("how", ["removed", "left"])
async def test_every_event_of_a_former_member_is_refused_like_a_strangers(deps, base_url, how):
    owner, bob, carol, stranger = [await make_user(deps, n)
                                   for n in ("owner", "bob", "carol", "stranger")]
    cid = await _group(deps, owner, [bob, carol])
    mine = await _send(deps, bob, cid, "before")  # bob's own, recallable for 2 minutes
    bob_sio = await connect(base_url, bob.access_token)
    stranger_sio = await connect(base_url, stranger.access_token)
    watchers = [await connect(base_url, p.access_token) for p in (owner, carol)]
    try:
        if how == "removed":
            await groups.remove_member(deps, owner.user_id, cid, bob.user_id)
        else:
            await groups.leave(deps, bob.user_id, cid)
        after = await _send(deps, owner, cid, "after")
        for w in watchers:
            await w.log.wait_for("message:new", where=lambda m: m["id"] == after["id"])
            w.log.items.clear()

        acting = [
            ("message:read", {"conversation_id": cid, "seq": after["seq"]}),
            ("typing", {"conversation_id": cid, "state": "typing"}),
            ("message:recall", {"message_id": mine["id"]}),
            ("message:delete", {"message_id": mine["id"]}),
            ("message:send", {"conversation_id": cid, "client_msg_id": "late", "text": "x"}),
        ]
        for name, payload in acting:
            former = await call(bob_sio, name, payload)
            strange = await call(stranger_sio, name, payload)
            assert former["ok"] is False, (name, former)
            assert former == strange, (name, former, strange)
            assert former["error"]["code"] == "not_found"

        # Nothing of it happened, nothing reached the members.
        stored = await Message.get(id=int(mine["id"]))
        assert stored.recalled_at is None
        assert not await HiddenMessage.filter(message_id=int(mine["id"])).exists()
        assert not await Message.filter(client_msg_id="late").exists()
        await asyncio.sleep(0.2)
        for w in watchers:
            assert w.log.items == [], w.log.items

        # Reading: the window they had, up to the line about their exit, never after.
        page = await call(bob_sio, "history", {"conversation_id": cid})
        assert page["ok"]
        seqs = [m["seq"] for m in page["messages"]]
        assert after["seq"] not in seqs and mine["seq"] in seqs
        exit_line = page["messages"][-1]
        assert exit_line["system"]["event"] == ("member_removed" if how == "removed"
                                                else "member_left")
        beyond = await call(bob_sio, "history", {"conversation_id": cid,
                                                 "before_seq": after["seq"] + 1})
        assert after["seq"] not in [m["seq"] for m in beyond["messages"]]
        synced = await call(bob_sio, "sync", {"cursors": {cid: exit_line["seq"]}})
        assert synced["ok"] and [c for c in synced["conversations"] if c["id"] == cid] == []
        synced = await call(bob_sio, "sync", {"cursors": {cid: 0}})
        [entry] = [c for c in synced["conversations"] if c["id"] == cid]
        assert entry["left"] is True and entry["last_seq"] == exit_line["seq"]
        assert max(m["seq"] for m in entry["messages"]) == exit_line["seq"]
        # A stranger reads nothing at all.
        assert (await call(stranger_sio, "history", {"conversation_id": cid}))["error"][
            "code"] == "not_found"
        synced = await call(stranger_sio, "sync", {"cursors": {cid: 0}})
        assert [c for c in synced["conversations"] if c["id"] == cid] == []
    finally:
        for s in [bob_sio, stranger_sio, *watchers]:
            await s.disconnect()
