"""Richer messages across processes: two workers on one PostgreSQL and Redis.
Events of reactions, edits, pins, delivered receipts and forwards reach devices
on the other process; concurrent reactions through both processes count exactly
and a device that was offline converges through `sync`."""

from __future__ import annotations

import asyncio

from app.services import groups
from tests.cluster_fixtures import cluster, db, queue  # noqa: F401 (fixtures)
from tests.cluster_helpers import CLUSTER_MARKS, text
from tests.factories import make_contacts, make_user

pytestmark = CLUSTER_MARKS


def ok(ack):
    assert ack["ok"] is True, ack
    return ack


async def test_changes_fan_out_across_processes_and_converge(db, cluster):  # noqa: F811
    url, deps = db
    w1, w2 = await cluster(2, url)
    people = [await make_user(deps, f"p{i}") for i in range(6)]
    alice, bob = people[0], people[1]
    for p in people[1:]:
        await make_contacts(deps, alice, p)
    gid = (await groups.create_group(deps, alice.user_id, groups.CreateIn(
        name="Team", member_ids=[p.user_id for p in people[1:]])))["id"]
    await groups.update_group(deps, alice.user_id, gid, groups.PatchIn(members_can_pin=True))
    ab = await direct_chat_ab(deps, alice, bob)  # already contacts
    a = await cluster.device(alice, w1)
    b = await cluster.device(bob, w2)
    laptop = await cluster.device(people[5], w2)
    msg = ok(await a.call("message:send", text(gid, "react here")))["message"]
    direct = ok(await a.call("message:send", text(ab, "to bob")))["message"]
    first = ok(await laptop.call("sync", {"cursors": {}}))
    [entry] = [e for e in first["conversations"] if e["id"] == gid]
    held = {m["id"]: m for m in entry["messages"]}
    cursor, change = entry["last_seq"], entry["change_seq"]
    await laptop.close()

    # Every member reacts at once, half through each process.
    devices = [a, b] + [await cluster.device(p, w1 if i % 2 else w2)
                        for i, p in enumerate(people[2:5])]
    emoji = ["👍", "🎉", "👍", "❤️", "👍"]
    await asyncio.gather(*(d.call("message:react", {"message_id": msg["id"], "emoji": e,
                                                    "on": True})
                           for d, e in zip(devices, emoji, strict=True)))
    final = {"👍": 3, "🎉": 1, "❤️": 1}
    await b.wait_for("message:reactions", where=lambda ev: ev["counts"] == final)
    # Edit, pin and delivered from w1 reach bob on w2.
    ok(await a.call("message:edit", {"message_id": msg["id"], "text": "react here!"}))
    [ev] = await b.wait_for("message:edited")
    assert ev["text"] == "react here!"
    ok(await b.call("message:pin", {"message_id": msg["id"]}))
    await a.wait_for("message:pinned")
    ok(await b.call("message:delivered", {"conversation_id": ab,
                                          "up_to_seq": direct["seq"]}))
    [ev] = await a.wait_for("conversation:delivered")
    assert ev["delivered_seq"] == direct["seq"] and ev["user_id"] == bob.user_id
    fw = ok(await b.call("message:forward", {"message_ids": [msg["id"]], "to": [ab],
                                             "mode": "merged", "client_msg_id": "x-1"}))
    [rec] = fw["messages"]
    await a.wait_for("message:new", where=lambda m: m["id"] == rec["id"])

    # The laptop comes back (on the other process) and converges.
    laptop = await cluster.device(people[5], w1)
    answer = ok(await laptop.call("sync", {"cursors": {gid: cursor}, "changes": {gid: change}}))
    [entry] = [e for e in answer["conversations"] if e["id"] == gid]
    for m in entry["changes"] + entry["messages"]:
        held[m["id"]] = m
    page = ok(await laptop.call("history", {"conversation_id": gid, "limit": 200}))
    assert sorted(held.values(), key=lambda m: m["seq"]) == page["messages"]
    assert held[msg["id"]]["reactions"] == final
    assert held[msg["id"]]["text"] == "react here!" and held[msg["id"]]["pinned"]


async def direct_chat_ab(deps, a, b) -> str:
    from app.services import conversations as convs

    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return str(conv.id)
