"""Group chats: every route, role rule and system line; the member
limit; invite links; visibility before/after join and after leave; mentions;
read lists; removal taking effect on the next message."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.models.accounts import User
from app.models.contacts import Contact
from app.models.groups import GroupInvite
from app.models.messaging import Membership, Message
from app.services import conversations as convs
from app.services import groups, history, messaging
from tests.factories import call, connect, make_contacts, make_user

API = "/api/v1"


# --- helpers ---------------------------------------------------------------------------


async def friends_of(deps, owner, n: int, prefix: str = "m"):
    people = [await make_user(deps, f"{prefix}{i}") for i in range(n)]
    for p in people:
        await make_contacts(deps, owner, p)
    return people


async def new_group(deps, owner, members, name="Team") -> str:
    conv = await groups.create_group(
        deps, owner.user_id, groups.CreateIn(name=name, member_ids=[m.user_id for m in members]))
    return conv["id"]


async def bulk_users(n: int, prefix: str) -> list[str]:
    """Many users at once, straight into the table (no argon2 cost: nobody logs in)."""
    tag = uuid.uuid4().hex[:6]
    users = [User(id=uuid.uuid4(), username=f"{prefix}_{tag}_{i}", display_name=f"{prefix}{i}")
             for i in range(n)]
    await User.bulk_create(users)
    return [str(u.id) for u in users]


async def bulk_contacts(owner_id: str, ids: list[str]) -> None:
    """`owner` has all of `ids` in their list: what creating a group requires."""
    await Contact.bulk_create([Contact(owner_id=owner_id, contact_id=i) for i in ids])


async def api(client, method, path, who, json=None):
    r = await client.request(method, f"{API}{path}", json=json, headers=who.headers)
    body = await r.json() if r.status != 204 else None
    return r.status, body


def text(cid, body="hi", **extra):
    return {"conversation_id": cid, "client_msg_id": uuid.uuid4().hex, "text": body, **extra}


async def send(deps, who, cid, body="hi", **extra):
    return await messaging.send_from_payload(deps, who.user_id, text(cid, body, **extra))


async def timeline(deps, who, cid) -> list[dict]:
    return (await history.history(deps, who.user_id,
                                    history.HistoryIn(conversation_id=cid, limit=200)))["messages"]


def events(msgs) -> list[str]:
    return [m["system"]["event"] for m in msgs if m["type"] == "system"]


async def role_of(deps, who, cid, user_id) -> str | None:
    g = await groups.get_group(deps, who.user_id, cid)
    return next((m["role"] for m in g["members"] if m["user"]["id"] == user_id), None)


# --- create and read ---------------------------------------------------------------------


async def test_create_group_rest_and_get(client, deps, base_url):
    owner = await make_user(deps, "owner")
    bob, carol = await friends_of(deps, owner, 2)
    stranger = await make_user(deps, "stranger")
    b = await connect(base_url, bob.access_token)
    try:
        status, body = await api(client, "POST", "/groups", owner,
                                 {"name": "  Lunch  ", "member_ids": [bob.user_id, carol.user_id,
                                                                      bob.user_id, owner.user_id]})
        assert status == 201, body
        conv = body["conversation"]
        assert conv["type"] == "group" and conv["title"] == "Lunch" and conv["role"] == "owner"
        assert conv["mention_count"] == 0
        cid = conv["id"]
        # Bob learns of it: the creation line and a chat-list entry.
        line = (await b.log.wait_for("message:new"))[0]
        assert line["type"] == "system" and line["seq"] == 1 and line["sender_id"] is None
        assert line["system"] == {"event": "created", "actor_id": owner.user_id,
                                  "target_ids": [bob.user_id, carol.user_id], "name": "Lunch"}
        upd = (await b.log.wait_for("conversation:updated"))[0]
        assert upd["id"] == cid and upd["role"] == "member" and upd["title"] == "Lunch"
        assert upd["unread_count"] == 0

        status, body = await api(client, "GET", f"/groups/{cid}", bob)
        assert status == 200
        g = body["group"]
        assert g["name"] == "Lunch" and g["member_count"] == 3 and g["owner_id"] == owner.user_id
        assert g["my_role"] == "member" and g["max_members"] == 500
        roles = {m["user"]["id"]: m["role"] for m in g["members"]}
        assert roles == {owner.user_id: "owner", bob.user_id: "member", carol.user_id: "member"}
        assert all(set(m) == {"user", "role", "joined_at", "muted_until"} for m in g["members"])
        assert g["members"][0]["user"]["id"] == owner.user_id  # longest-standing first

        # Outsiders cannot tell the group exists; a direct chat is not a group.
        assert (await api(client, "GET", f"/groups/{cid}", stranger))[0] == 404
        assert (await api(client, "GET", f"/groups/{uuid.uuid4()}", owner))[0] == 404
        assert (await api(client, "GET", "/groups/not-a-uuid", owner))[0] == 404
        direct, _ = await convs.get_or_create_direct(deps, owner.user_id, bob.user_id)
        assert (await api(client, "GET", f"/groups/{direct.id}", owner))[0] == 404
        # The group is in everyone's chat list.
        status, body = await api(client, "GET", "/conversations", carol)
        assert body["conversations"][0]["id"] == cid  # newest activity first
    finally:
        await b.disconnect()


async def test_create_group_bad_input(client, deps):
    owner = await make_user(deps)
    (bob,) = await friends_of(deps, owner, 1)
    stranger = await make_user(deps)
    cases = [
        ({"name": "x", "member_ids": [stranger.user_id]}, 403, "not_contact"),
        ({"name": "x", "member_ids": [bob.user_id, "nope"]}, 403, "not_contact"),
        ({"name": "x", "member_ids": []}, 400, "invalid"),
        ({"name": "x", "member_ids": [owner.user_id]}, 400, "invalid"),
        ({"name": "   ", "member_ids": [bob.user_id]}, 400, "invalid"),
        ({"name": "x" * 65, "member_ids": [bob.user_id]}, 400, "invalid"),
        ({"member_ids": [bob.user_id]}, 400, "invalid"),
        ({"name": "x", "member_ids": [bob.user_id], "extra": 1}, 400, "invalid"),
    ]
    for payload, status, code in cases:
        got, body = await api(client, "POST", "/groups", owner, payload)
        assert (got, body["error"]["code"]) == (status, code), payload
    r = await client.post(f"{API}/groups", json={"name": "x", "member_ids": [bob.user_id]})
    assert r.status == 401
    # Someone who blocked the creator is refused like a non-contact.
    from app.services import contacts

    await contacts.block(deps, bob.user_id, contacts.BlockIn(user_id=owner.user_id))
    got, body = await api(client, "POST", "/groups", owner, {"name": "x", "member_ids": [bob.user_id]})
    assert (got, body["error"]["code"]) == (403, "not_contact")


# --- settings ---------------------------------------------------------------------------------


async def test_patch_group_settings_roles_and_lines(client, deps, base_url):
    owner = await make_user(deps)
    admin, member = await friends_of(deps, owner, 2)
    cid = await new_group(deps, owner, [admin, member])
    await groups.update_member(deps, owner.user_id, cid, admin.user_id,
                               groups.MemberPatch(role="admin"))
    sock = await connect(base_url, member.access_token)
    try:
        status, body = await api(client, "PATCH", f"/groups/{cid}", member, {"name": "Mine"})
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body = await api(client, "PATCH", f"/groups/{cid}", member, {"announcement": "x"})
        assert status == 403

        status, body = await api(client, "PATCH", f"/groups/{cid}", admin,
                                 {"name": "Renamed", "announcement": "  Be nice  "})
        assert status == 200, body
        assert body["group"]["name"] == "Renamed" and body["group"]["announcement"] == "Be nice"
        renamed = await sock.log.wait_for("message:new", where=lambda m: m["type"] == "system"
                                          and m["system"]["event"] == "renamed")
        assert renamed[0]["system"] == {"event": "renamed", "actor_id": admin.user_id,
                                        "target_ids": [], "name": "Renamed"}
        await sock.log.wait_for("message:new", where=lambda m: m["type"] == "system"
                                and m["system"]["event"] == "announcement"
                                and m["system"]["text"] == "Be nice")
        upd = await sock.log.wait_for("conversation:updated",
                                      where=lambda u: u.get("announcement") == "Be nice")
        assert upd[-1]["title"] == "Renamed" and upd[-1]["member_count"] == 3

        status, body = await api(client, "PATCH", f"/groups/{cid}", owner,
                                 {"only_admins_can_send": True, "members_can_invite": False})
        assert status == 200
        assert body["group"]["only_admins_can_send"] is True
        assert body["group"]["members_can_invite"] is False
        # Same values again: nothing changes, no new line.
        before = await Message.filter(conversation_id=cid).count()
        status, body = await api(client, "PATCH", f"/groups/{cid}", owner,
                                 {"name": "Renamed", "only_admins_can_send": True})
        assert status == 200
        assert await Message.filter(conversation_id=cid).count() == before
        lines = await timeline(deps, member, cid)
        assert events(lines) == ["created", "role_changed", "renamed", "announcement",
                                 "settings_changed"]
        assert lines[-1]["system"]["only_admins_can_send"] is True
        assert lines[-1]["system"]["members_can_invite"] is False
        # Bad input.
        for payload in ({"name": ""}, {"name": "   "}, {"announcement": "x" * 2001},
                        {"only_admins_can_send": "yes"}, {"color": "red"}):
            status, body = await api(client, "PATCH", f"/groups/{cid}", owner, payload)
            assert status == 400, payload
    finally:
        await sock.disconnect()


# --- members --------------------------------------------------------------------------------


async def test_add_members_rules_and_new_member_history(client, deps, base_url):
    owner = await make_user(deps)
    admin, member = await friends_of(deps, owner, 2)
    dave, erin = await friends_of(deps, member, 2, prefix="f")
    cid = await new_group(deps, owner, [admin, member])
    await groups.update_member(deps, owner.user_id, cid, admin.user_id,
                               groups.MemberPatch(role="admin"))
    await send(deps, owner, cid, "before dave")
    # Any member may add their own contacts while members_can_invite (the default).
    status, body = await api(client, "POST", f"/groups/{cid}/members", member,
                             {"user_ids": [dave.user_id, owner.user_id]})
    assert status == 200, body
    assert body["added"] == [dave.user_id] and body["group"]["member_count"] == 4
    # Only one's own contacts.
    stranger = await make_user(deps)
    status, body = await api(client, "POST", f"/groups/{cid}/members", member,
                             {"user_ids": [stranger.user_id]})
    assert (status, body["error"]["code"]) == (403, "not_contact")
    # Present members are skipped: nothing happens.
    count = await Message.filter(conversation_id=cid).count()
    status, body = await api(client, "POST", f"/groups/{cid}/members", member,
                             {"user_ids": [dave.user_id]})
    assert status == 200 and body["added"] == []
    assert await Message.filter(conversation_id=cid).count() == count
    # members_can_invite off: members may not add; admins may (their own contacts).
    await groups.update_group(deps, owner.user_id, cid, groups.PatchIn(members_can_invite=False))
    status, body = await api(client, "POST", f"/groups/{cid}/members", member,
                             {"user_ids": [erin.user_id]})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    await make_contacts(deps, admin, erin)
    e = await connect(base_url, erin.access_token)
    try:
        status, body = await api(client, "POST", f"/groups/{cid}/members", admin,
                                 {"user_ids": [erin.user_id]})
        assert status == 200 and body["added"] == [erin.user_id]
        line = (await e.log.wait_for("message:new"))[0]
        assert line["system"] == {"event": "member_added", "actor_id": admin.user_id,
                                  "target_ids": [erin.user_id]}
        upd = (await e.log.wait_for("conversation:updated"))[0]
        assert upd["id"] == cid and upd["role"] == "member" and upd["unread_count"] == 0
        assert upd["left"] is False
    finally:
        await e.disconnect()
    # Erin sees history from her own join line on; nothing before.
    lines = await timeline(deps, erin, cid)
    assert events(lines) == ["member_added"] and lines[0]["seq"] == line["seq"]
    dave_view = await timeline(deps, dave, cid)
    assert "before dave" not in [m["text"] for m in dave_view]
    assert dave_view[0]["system"]["event"] == "member_added"
    # Sync without cursor gives a joiner the same window.
    got = await history.sync(deps, erin.user_id, history.SyncIn())
    entry = next(c for c in got["conversations"] if c["id"] == cid)
    assert [m["seq"] for m in entry["messages"]] == [line["seq"]]
    # Bad input / outsiders.
    assert (await api(client, "POST", f"/groups/{cid}/members", owner, {"user_ids": []}))[0] == 400
    assert (await api(client, "POST", f"/groups/{cid}/members", stranger,
                      {"user_ids": [owner.user_id]}))[0] == 404


async def test_kick_rules_and_removal_takes_effect_on_next_message(client, deps, base_url):
    owner = await make_user(deps)
    admin, admin2, bob, carol = await friends_of(deps, owner, 4)
    cid = await new_group(deps, owner, [admin, admin2, bob, carol])
    for a in (admin, admin2):
        await groups.update_member(deps, owner.user_id, cid, a.user_id,
                                   groups.MemberPatch(role="admin"))
    # Members cannot kick; admins cannot kick admins or the owner.
    for actor, target in ((bob, carol), (admin, admin2), (admin, owner), (admin2, owner)):
        status, body = await api(client, "DELETE", f"/groups/{cid}/members/{target.user_id}", actor)
        assert (status, body["error"]["code"]) == (403, "forbidden"), (actor, target)
    status, body = await api(client, "DELETE", f"/groups/{cid}/members/{uuid.uuid4()}", admin)
    assert status == 404

    b, c = await connect(base_url, bob.access_token), await connect(base_url, carol.access_token)
    try:
        first = await send(deps, owner, cid, "still here")
        await b.log.wait_for("message:new", where=lambda m: m["id"] == first["id"])
        # An admin removes Bob; he gets the line about it, then nothing more.
        status, _ = await api(client, "DELETE", f"/groups/{cid}/members/{bob.user_id}", admin)
        assert status == 204
        removed = await b.log.wait_for("message:new", where=lambda m: m["type"] == "system")
        assert removed[0]["system"] == {"event": "member_removed", "actor_id": admin.user_id,
                                        "target_ids": [bob.user_id]}
        mine = await b.log.wait_for("conversation:updated", where=lambda u: u.get("left"))
        assert mine[0]["id"] == cid
        after = await send(deps, owner, cid, "after bob")
        await c.log.wait_for("message:new", where=lambda m: m["id"] == after["id"])
        assert after["id"] not in [m["id"] for m in b.log.of("message:new")]
        # He can no longer post, and his history ends at his removal line.
        ack = await call(b, "message:send", text(cid, "let me in"))
        assert ack["error"]["code"] == "not_found"
        seen = await timeline(deps, bob, cid)
        assert seen[-1]["seq"] == removed[0]["seq"]
        assert "after bob" not in [m["text"] for m in seen]
        got = await history.sync(deps, bob.user_id, history.SyncIn(cursors={cid: first["seq"]}))
        entry = next(x for x in got["conversations"] if x["id"] == cid)
        assert entry["left"] is True and entry["last_seq"] == removed[0]["seq"]
        assert [m["seq"] for m in entry["messages"]] == [removed[0]["seq"]]
        # The group left his chat list; GET /groups is refused.
        status, body = await api(client, "GET", "/conversations", bob)
        assert cid not in [x["id"] for x in body["conversations"]]
        assert (await api(client, "GET", f"/groups/{cid}", bob))[0] == 404
    finally:
        await b.disconnect()
        await c.disconnect()
    # The owner may remove an admin.
    status, _ = await api(client, "DELETE", f"/groups/{cid}/members/{admin2.user_id}", owner)
    assert status == 204
    assert await role_of(deps, owner, cid, admin2.user_id) is None


async def test_leave_and_owner_succession(client, deps):
    owner = await make_user(deps)
    m1, m2, a1, a2 = await friends_of(deps, owner, 4)
    cid = await new_group(deps, owner, [m1, m2])
    await groups.add_members(deps, owner.user_id, cid,
                             groups.AddMembersIn(user_ids=[a1.user_id, a2.user_id]))
    for a in (a2, a1):  # a1 promoted later, but joined at the same time: ties break by row
        await groups.update_member(deps, owner.user_id, cid, a.user_id,
                                   groups.MemberPatch(role="admin"))
    # Leaving is DELETE of myself, for any role.
    status, _ = await api(client, "DELETE", f"/groups/{cid}/members/{m2.user_id}", m2)
    assert status == 204
    lines = await timeline(deps, m1, cid)
    assert lines[-1]["system"] == {"event": "member_left", "actor_id": m2.user_id,
                                   "target_ids": [m2.user_id]}
    # The owner leaves: the longest-standing admin takes over (not the older plain member).
    status, _ = await api(client, "DELETE", f"/groups/{cid}/members/{owner.user_id}", owner)
    assert status == 204
    g = await groups.get_group(deps, m1.user_id, cid)
    heir = g["owner_id"]
    assert heir in (a1.user_id, a2.user_id)
    lines = await timeline(deps, m1, cid)
    assert events(lines)[-2:] == ["member_left", "owner_changed"]
    assert lines[-1]["system"]["target_ids"] == [heir]
    assert lines[-1]["system"]["reason"] == "owner_left"
    # No admin left: the longest-standing member (m1, a founding member) inherits.
    other_admin = a1 if heir == a2.user_id else a2
    heir_person = a2 if heir == a2.user_id else a1
    await groups.leave(deps, other_admin.user_id, cid)
    await groups.leave(deps, heir_person.user_id, cid)
    g = await groups.get_group(deps, m1.user_id, cid)
    assert g["owner_id"] == m1.user_id and g["member_count"] == 1
    # The last one out dissolves the group.
    await groups.leave(deps, m1.user_id, cid)
    assert (await api(client, "GET", f"/groups/{cid}", m1))[0] == 404
    status, body = await api(client, "GET", f"/groups/{cid}", owner)
    assert status == 404


async def test_owner_succession_prefers_longest_standing_admin(deps):
    owner = await make_user(deps)
    early, late_admin, early_admin = await friends_of(deps, owner, 3)
    cid = await new_group(deps, owner, [early])
    await groups.add_members(deps, owner.user_id, cid,
                             groups.AddMembersIn(user_ids=[early_admin.user_id]))
    await groups.add_members(deps, owner.user_id, cid,
                             groups.AddMembersIn(user_ids=[late_admin.user_id]))
    # Promoted in the other order: joining time decides, not promotion time.
    for a in (late_admin, early_admin):
        await groups.update_member(deps, owner.user_id, cid, a.user_id,
                                   groups.MemberPatch(role="admin"))
    await groups.leave(deps, owner.user_id, cid)
    assert (await groups.get_group(deps, early.user_id, cid))["owner_id"] == early_admin.user_id


async def test_roles_mute_and_only_admins(client, deps, base_url):
    owner = await make_user(deps)
    admin, bob, carol = await friends_of(deps, owner, 3)
    cid = await new_group(deps, owner, [admin, bob, carol])
    path = f"/groups/{cid}/members"
    # Only the owner changes roles.
    status, body = await api(client, "PATCH", f"{path}/{bob.user_id}", admin, {"role": "admin"})
    assert status == 403
    status, body = await api(client, "PATCH", f"{path}/{admin.user_id}", owner, {"role": "admin"})
    assert status == 200, body
    assert await role_of(deps, owner, cid, admin.user_id) == "admin"
    line = (await timeline(deps, bob, cid))[-1]
    assert line["system"] == {"event": "role_changed", "actor_id": owner.user_id,
                              "target_ids": [admin.user_id], "role": "admin"}
    status, body = await api(client, "PATCH", f"{path}/{admin.user_id}", admin, {"role": "member"})
    assert status == 403  # not on oneself either
    status, body = await api(client, "PATCH", f"{path}/{owner.user_id}", owner, {"role": "member"})
    assert status == 403
    status, body = await api(client, "PATCH", f"{path}/{bob.user_id}", owner, {"role": "owner"})
    assert status == 400
    status, body = await api(client, "PATCH", f"{path}/{bob.user_id}", owner, {})
    assert status == 400

    b = await connect(base_url, bob.access_token)
    try:
        until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        # Members cannot mute; admins cannot mute admins or the owner.
        assert (await api(client, "PATCH", f"{path}/{carol.user_id}", bob,
                          {"muted_until": until}))[0] == 403
        assert (await api(client, "PATCH", f"{path}/{owner.user_id}", admin,
                          {"muted_until": until}))[0] == 403
        status, body = await api(client, "PATCH", f"{path}/{bob.user_id}", admin,
                                 {"muted_until": until})
        assert status == 200, body
        entry = next(m for m in body["group"]["members"] if m["user"]["id"] == bob.user_id)
        assert entry["muted_until"] is not None
        ack = await call(b, "message:send", text(cid))
        assert ack["error"]["code"] == "forbidden"
        assert ack["error"]["details"]["muted_until"]
        status, body = await api(client, "POST", f"/conversations/{cid}/messages", bob,
                                 {"client_msg_id": "x1", "text": "hi"})
        assert (status, body["error"]["code"]) == (403, "forbidden")
        # Past times and naive times are refused; null unmutes.
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        assert (await api(client, "PATCH", f"{path}/{bob.user_id}", admin,
                          {"muted_until": past}))[0] == 400
        assert (await api(client, "PATCH", f"{path}/{bob.user_id}", admin,
                          {"muted_until": "2999-01-01T00:00:00"}))[0] == 400
        status, body = await api(client, "PATCH", f"{path}/{bob.user_id}", admin,
                                 {"muted_until": None})
        assert status == 200
        assert events(await timeline(deps, carol, cid))[-2:] == ["member_muted", "member_unmuted"]
        assert (await call(b, "message:send", text(cid)))["ok"] is True
        # The owner can mute an admin.
        status, _ = await api(client, "PATCH", f"{path}/{admin.user_id}", owner,
                              {"muted_until": until})
        assert status == 200
        assert (await send_ack(deps, admin, cid))["code"] == "forbidden"

        # Only admins can send.
        await groups.update_group(deps, owner.user_id, cid, groups.PatchIn(only_admins_can_send=True))
        ack = await call(b, "message:send", text(cid))
        assert ack["error"]["code"] == "forbidden"
        assert (await send(deps, owner, cid))["seq"] > 0
        await groups.update_member(deps, owner.user_id, cid, carol.user_id,
                                   groups.MemberPatch(role="admin"))
        assert (await send(deps, carol, cid))["seq"] > 0
    finally:
        await b.disconnect()


async def send_ack(deps, who, cid) -> dict:
    from app.errors import DomainError

    try:
        await send(deps, who, cid)
    except DomainError as exc:
        return exc.to_dict()
    return {"code": "ok"}


async def test_transfer_and_dissolve(client, deps, base_url):
    owner = await make_user(deps)
    bob, carol = await friends_of(deps, owner, 2)
    cid = await new_group(deps, owner, [bob, carol])
    assert (await api(client, "POST", f"/groups/{cid}/transfer", bob,
                      {"user_id": carol.user_id}))[0] == 403
    assert (await api(client, "POST", f"/groups/{cid}/transfer", owner,
                      {"user_id": str(uuid.uuid4())}))[0] == 404
    assert (await api(client, "POST", f"/groups/{cid}/transfer", owner,
                      {"user_id": owner.user_id}))[0] == 400
    status, body = await api(client, "POST", f"/groups/{cid}/transfer", owner,
                             {"user_id": bob.user_id})
    assert status == 200, body
    assert body["group"]["owner_id"] == bob.user_id and body["group"]["my_role"] == "member"
    line = (await timeline(deps, carol, cid))[-1]
    assert line["system"] == {"event": "owner_changed", "actor_id": owner.user_id,
                              "target_ids": [bob.user_id], "reason": "transfer"}
    # Dissolving: the owner only.
    assert (await api(client, "DELETE", f"/groups/{cid}", owner))[0] == 403
    invite = await groups.create_invite(deps, bob.user_id, cid, groups.InviteIn())
    c = await connect(base_url, carol.access_token)
    try:
        status, _ = await api(client, "DELETE", f"/groups/{cid}", bob)
        assert status == 204
        line = (await c.log.wait_for("message:new"))[0]
        assert line["system"]["event"] == "dissolved"
        upd = await c.log.wait_for("conversation:updated", where=lambda u: u.get("dissolved"))
        assert upd[0]["id"] == cid
        ack = await call(c, "message:send", text(cid))
        assert ack["error"]["code"] == "not_found"
    finally:
        await c.disconnect()
    # Gone from the list, but the history stays readable; invite links die.
    status, body = await api(client, "GET", "/conversations", carol)
    assert cid not in [x["id"] for x in body["conversations"]]
    assert events(await timeline(deps, carol, cid))[-1] == "dissolved"
    status, body = await api(client, "GET", f"/groups/invites/{invite['token']}", carol)
    assert (status, body["error"]["code"]) == (410, "invite_expired")
    assert (await api(client, "DELETE", f"/groups/{cid}", bob))[0] == 404


# --- invite links ---------------------------------------------------------------------------


async def test_invite_links_preview_join_max_uses_expiry(client, deps, base_url):
    owner = await make_user(deps)
    (bob,) = await friends_of(deps, owner, 1)
    cid = await new_group(deps, owner, [bob], name="Hikers")
    await send(deps, owner, cid, "secret plan")
    joiner, late, third = await make_user(deps), await make_user(deps), await make_user(deps)

    status, body = await api(client, "POST", f"/groups/{cid}/invites", bob, {"max_uses": 1})
    assert status == 201, body
    token = body["token"]
    assert body["url"].endswith(f"/join/{token}") and body["max_uses"] == 1
    # The fixed routes are not captured by /groups/{group_id}.
    status, body = await api(client, "GET", f"/groups/invites/{token}", joiner)
    assert status == 200, body
    assert body["group"] == {"id": cid, "name": "Hikers", "member_count": 2}
    assert body["already_member"] is False and body["inviter"]["id"] == bob.user_id

    j = await connect(base_url, joiner.access_token)
    try:
        status, body = await api(client, "POST", "/groups/join", joiner, {"token": token})
        assert status == 200, body
        assert body["conversation"]["id"] == cid and body["conversation"]["role"] == "member"
        line = (await j.log.wait_for("message:new"))[0]
        assert line["system"] == {"event": "member_joined", "actor_id": joiner.user_id,
                                  "target_ids": [joiner.user_id], "inviter_id": bob.user_id,
                                  "via": "invite"}
    finally:
        await j.disconnect()
    seen = await timeline(deps, joiner, cid)
    assert [m["seq"] for m in seen] == [line["seq"]]
    # Joining again spends nothing; a second person finds the link used up.
    status, body = await api(client, "POST", "/groups/join", joiner, {"token": token})
    assert status == 200
    assert (await GroupInvite.get(token=token)).uses == 1
    status, body = await api(client, "POST", "/groups/join", late, {"token": token})
    assert (status, body["error"]["code"]) == (410, "invite_expired")
    status, body = await api(client, "GET", f"/groups/invites/{token}", late)
    assert (status, body["error"]["code"]) == (410, "invite_expired")
    # Expiry: an unlimited link stops working once its time has passed.
    status, body = await api(client, "POST", f"/groups/{cid}/invites", owner, {"expires_in": 3600})
    assert status == 201
    token2 = body["token"]
    assert (await api(client, "GET", f"/groups/invites/{token2}", late))[0] == 200
    await GroupInvite.filter(token=token2).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1))
    status, body = await api(client, "POST", "/groups/join", late, {"token": token2})
    assert (status, body["error"]["code"]) == (410, "invite_expired")
    # Unknown tokens and bad input.
    assert (await api(client, "GET", "/groups/invites/nope", late))[0] == 404
    assert (await api(client, "POST", "/groups/join", late, {"token": "nope"}))[0] == 404
    assert (await api(client, "POST", "/groups/join", late, {}))[0] == 400
    assert (await api(client, "POST", f"/groups/{cid}/invites", owner, {"max_uses": 0}))[0] == 400
    assert (await api(client, "POST", f"/groups/{cid}/invites", owner,
                      {"expires_in": 10**9}))[0] == 400
    assert (await api(client, "POST", f"/groups/{cid}/invites", late, {}))[0] == 404
    # members_can_invite off: members cannot make links, and their old links die.
    status, body = await api(client, "POST", f"/groups/{cid}/invites", bob, {})
    bobs = body["token"]
    await groups.update_group(deps, owner.user_id, cid, groups.PatchIn(members_can_invite=False))
    assert (await api(client, "POST", f"/groups/{cid}/invites", bob, {}))[0] == 403
    status, body = await api(client, "POST", "/groups/join", third, {"token": bobs})
    assert (status, body["error"]["code"]) == (410, "invite_expired")
    status, body = await api(client, "POST", f"/groups/{cid}/invites", owner, {})
    assert (await api(client, "POST", "/groups/join", third, {"token": body["token"]}))[0] == 200


async def test_invite_links_list_shows_only_links_that_still_join(client, deps):
    owner = await make_user(deps)
    admin, bob = await friends_of(deps, owner, 2)
    cid = await new_group(deps, owner, [admin, bob])
    await groups.update_member(deps, owner.user_id, cid, admin.user_id,
                               groups.MemberPatch(role="admin"))
    stranger = await make_user(deps)
    assert await api(client, "GET", f"/groups/{cid}/invites", owner) == (200, {"invites": []})
    mine = (await api(client, "POST", f"/groups/{cid}/invites", owner, {"max_uses": 5}))[1]
    admins = (await api(client, "POST", f"/groups/{cid}/invites", admin, {}))[1]
    bobs = (await api(client, "POST", f"/groups/{cid}/invites", bob, {}))[1]
    spent = (await api(client, "POST", f"/groups/{cid}/invites", owner, {"max_uses": 1}))[1]
    late = (await api(client, "POST", f"/groups/{cid}/invites", owner, {}))[1]
    await GroupInvite.filter(token=spent["token"]).update(uses=1)
    await GroupInvite.filter(token=late["token"]).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1))

    for who in (owner, admin):
        status, body = await api(client, "GET", f"/groups/{cid}/invites", who)
        assert status == 200, body
        assert [i["token"] for i in body["invites"]] == [
            bobs["token"], admins["token"], mine["token"]]
    first = next(i for i in body["invites"] if i["token"] == mine["token"])
    assert first == {**mine, "uses": 0}
    assert first["created_by"] == owner.user_id and first["max_uses"] == 5
    # Members see no list; strangers and unknown groups learn nothing.
    status, body = await api(client, "GET", f"/groups/{cid}/invites", bob)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert (await api(client, "GET", f"/groups/{cid}/invites", stranger))[0] == 404
    assert (await api(client, "GET", f"/groups/{uuid.uuid4()}/invites", owner))[0] == 404
    assert (await api(client, "GET", "/groups/nope/invites", owner))[0] in (400, 404)
    # A member's link stops being listed once members may not invite (it no longer joins).
    await groups.update_group(deps, owner.user_id, cid, groups.PatchIn(members_can_invite=False))
    body = (await api(client, "GET", f"/groups/{cid}/invites", owner))[1]
    assert [i["token"] for i in body["invites"]] == [admins["token"], mine["token"]]


async def test_invite_link_revoke(client, deps):
    owner = await make_user(deps)
    admin, bob, carol = await friends_of(deps, owner, 3)
    cid = await new_group(deps, owner, [admin, bob, carol])
    await groups.update_member(deps, owner.user_id, cid, admin.user_id,
                               groups.MemberPatch(role="admin"))
    joiner, stranger = await make_user(deps), await make_user(deps)
    owners = (await api(client, "POST", f"/groups/{cid}/invites", owner, {}))[1]["token"]
    bobs = (await api(client, "POST", f"/groups/{cid}/invites", bob, {}))[1]["token"]
    carols = (await api(client, "POST", f"/groups/{cid}/invites", carol, {}))[1]["token"]
    assert (await api(client, "GET", f"/groups/invites/{owners}", joiner))[0] == 200

    # Members may not revoke other people's links; strangers and other groups get 404.
    status, body = await api(client, "DELETE", f"/groups/{cid}/invites/{owners}", bob)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await api(client, "DELETE", f"/groups/{cid}/invites/{owners}", stranger)
    assert (status, body["error"]["code"]) == (404, "not_found")
    other = await new_group(deps, owner, [bob], name="Other")
    status, body = await api(client, "DELETE", f"/groups/{other}/invites/{owners}", owner)
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = await api(client, "DELETE", f"/groups/{cid}/invites/nope", owner)
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert (await GroupInvite.get(token=owners)).revoked_at is None

    # The admin revokes the owner's link: it no longer joins nor previews, and is not listed.
    assert (await api(client, "DELETE", f"/groups/{cid}/invites/{owners}", admin))[0] == 204
    status, body = await api(client, "POST", "/groups/join", joiner, {"token": owners})
    assert (status, body["error"]["code"]) == (410, "invite_expired")
    status, body = await api(client, "GET", f"/groups/invites/{owners}", joiner)
    assert (status, body["error"]["code"]) == (410, "invite_expired")
    listed = (await api(client, "GET", f"/groups/{cid}/invites", owner))[1]["invites"]
    assert owners not in [i["token"] for i in listed]
    # Again: still 204, nothing changes.
    assert (await api(client, "DELETE", f"/groups/{cid}/invites/{owners}", owner))[0] == 204

    # A member may revoke their own link; the owner may revoke a member's.
    assert (await api(client, "DELETE", f"/groups/{cid}/invites/{bobs}", bob))[0] == 204
    assert (await api(client, "DELETE", f"/groups/{cid}/invites/{carols}", owner))[0] == 204
    for token in (bobs, carols):
        status, body = await api(client, "POST", "/groups/join", joiner, {"token": token})
        assert (status, body["error"]["code"]) == (410, "invite_expired")
    assert not await convs_member(cid, joiner.user_id)
    # A fresh link still works.
    fresh = (await api(client, "POST", f"/groups/{cid}/invites", owner, {}))[1]["token"]
    assert (await api(client, "POST", "/groups/join", joiner, {"token": fresh}))[0] == 200


async def convs_member(cid, user_id) -> bool:
    return await Membership.exists(conversation_id=cid, user_id=user_id, left_at=None)


# --- the member limit ---------------------------------------------------------------------------


async def test_group_member_limit_is_500(client, deps):
    assert deps.settings.max_group_members == 500
    owner = await make_user(deps)
    ids = await bulk_users(500, "lim")
    await bulk_contacts(owner.user_id, ids)
    # 1 + 500 is one too many.
    status, body = await api(client, "POST", "/groups", owner, {"name": "Big", "member_ids": ids})
    assert (status, body["error"]["code"]) == (409, "group_full")
    assert body["error"]["details"]["limit"] == 500
    status, body = await api(client, "POST", "/groups", owner,
                             {"name": "Big", "member_ids": ids[:499]})
    assert status == 201, body
    cid = body["conversation"]["id"]
    assert (await groups.get_group(deps, owner.user_id, cid))["member_count"] == 500
    status, body = await api(client, "POST", f"/groups/{cid}/members", owner,
                             {"user_ids": [ids[499]]})
    assert (status, body["error"]["code"]) == (409, "group_full")
    # Links respect it too; after someone leaves there is room again.
    newcomer = await make_user(deps)
    invite = await groups.create_invite(deps, owner.user_id, cid, groups.InviteIn())
    status, body = await api(client, "POST", "/groups/join", newcomer, {"token": invite["token"]})
    assert (status, body["error"]["code"]) == (409, "group_full")
    await groups.leave(deps, ids[0], cid)
    status, body = await api(client, "POST", "/groups/join", newcomer, {"token": invite["token"]})
    assert status == 200


# --- visibility ------------------------------------------------------------------------------------


async def test_history_before_and_after_join_and_after_leave_and_rejoin(deps):
    owner = await make_user(deps)
    bob, carol = await friends_of(deps, owner, 2)
    cid = await new_group(deps, owner, [bob])
    await send(deps, owner, cid, "m1")
    await groups.add_members(deps, owner.user_id, cid, groups.AddMembersIn(user_ids=[carol.user_id]))
    await send(deps, owner, cid, "m2")
    await groups.leave(deps, carol.user_id, cid)
    await send(deps, owner, cid, "m3")

    def texts(msgs):
        return [m["text"] or m["system"]["event"] for m in msgs]

    assert texts(await timeline(deps, owner, cid)) == [
        "created", "m1", "member_added", "m2", "member_left", "m3"]
    assert texts(await timeline(deps, carol, cid)) == ["member_added", "m2", "member_left"]
    # History paging by seq stays inside the window.
    page = await history.history(deps, carol.user_id, history.HistoryIn(
        conversation_id=cid, before_seq=3, limit=10))
    assert page["messages"] == []
    # Re-joining opens a new window: what happened while away stays hidden.
    await groups.add_members(deps, owner.user_id, cid, groups.AddMembersIn(user_ids=[carol.user_id]))
    await send(deps, bob, cid, "m4")
    assert texts(await timeline(deps, carol, cid)) == ["member_added", "m4"]
    conv = await convs.conversation_for(deps, carol.user_id, cid)
    assert conv["unread_count"] == 1 and conv["left"] is False
    # Replying to a message from before one's window is refused.
    old = next(m for m in await timeline(deps, owner, cid) if m["text"] == "m1")
    from app.errors import Invalid

    with pytest.raises(Invalid):
        await send(deps, carol, cid, "re", reply_to=old["id"])


async def test_member_cache_is_right_even_for_a_process_that_heard_nothing(deps):
    """The member list is cached per process; a change made elsewhere must still
    be seen on the next message. Simulate 'elsewhere' by putting back the stale
    entry this process had before the change."""
    owner = await make_user(deps)
    bob, carol = await friends_of(deps, owner, 2)
    cid = await new_group(deps, owner, [bob, carol])
    assert sorted(await convs.member_ids(cid)) == sorted([owner.user_id, bob.user_id,
                                                          carol.user_id])
    stale = convs._member_cache[cid]
    await groups.remove_member(deps, owner.user_id, cid, bob.user_id)
    convs._member_cache[cid] = stale
    assert bob.user_id not in await convs.member_ids(cid)
    stale = convs._member_cache[cid]
    await groups.add_members(deps, owner.user_id, cid, groups.AddMembersIn(user_ids=[bob.user_id]))
    convs._member_cache[cid] = stale
    assert bob.user_id in await convs.member_ids(cid)
    # Direct chats are answered too.
    direct, _ = await convs.get_or_create_direct(deps, owner.user_id, bob.user_id)
    assert sorted(await convs.member_ids(direct.id)) == sorted([owner.user_id, bob.user_id])
    assert sorted(await convs.member_ids(direct.id)) == sorted([owner.user_id, bob.user_id])


async def test_a_read_receipt_reaches_the_members_of_now_even_through_a_stale_cache(
        deps, base_url):
    """Bob reads in a group Carol was just removed from, on a process whose
    cached list still has her (put back, as one that heard nothing would):
    the receipt reaches the owner and Bob's devices, not Carol."""
    owner = await make_user(deps)
    bob, carol = await friends_of(deps, owner, 2)
    cid = await new_group(deps, owner, [bob, carol])
    await convs.member_ids(cid)
    stale = convs._member_cache[cid]
    first = await messaging.send_message(deps, owner.user_id, messaging.SendIn(
        conversation_id=cid, client_msg_id="before", type="text", text="hello all"))
    sockets = {p.user_id: await connect(base_url, p.access_token) for p in (owner, carol)}
    try:
        await groups.remove_member(deps, owner.user_id, cid, carol.user_id)
        convs._member_cache[cid] = stale
        ack = await messaging.mark_read(deps, bob.user_id, messaging.ReadIn(
            conversation_id=cid, seq=int(first["seq"])))
        assert ack["read_seq"] == int(first["seq"])
        [ev] = await sockets[owner.user_id].log.wait_for("conversation:read")
        assert ev["user_id"] == bob.user_id
        await asyncio.sleep(0.3)
        assert sockets[carol.user_id].log.of("conversation:read") == []
    finally:
        for sock in sockets.values():
            await sock.disconnect()


async def test_a_dissolved_group_is_read_to_the_end_but_typed_in_no_more(deps):
    from app.errors import NotFound

    owner = await make_user(deps)
    [bob] = await friends_of(deps, owner, 1)
    cid = await new_group(deps, owner, [bob])
    await messaging.send_message(deps, owner.user_id, messaging.SendIn(
        conversation_id=cid, client_msg_id="last words", type="text", text="goodbye"))
    await messaging.typing(deps, bob.user_id, messaging.TypingIn(
        conversation_id=cid, state="typing"))
    await groups.dissolve(deps, owner.user_id, cid)
    with pytest.raises(NotFound):
        await messaging.typing(deps, bob.user_id, messaging.TypingIn(
            conversation_id=cid, state="idle"))
    last = (await convs.readable_membership(cid, bob.user_id)).conversation.last_seq
    ack = await messaging.mark_read(deps, bob.user_id, messaging.ReadIn(
        conversation_id=cid, seq=last))
    assert ack == {"read_seq": last, "unread_count": 0}


def test_member_cache_lookup_survives_an_entry_dropped_under_it(monkeypatch):
    """SQLite's writer looks lists up on its connection's thread while the event
    loop may drop the same entry: a hit whose entry is gone by the time it is
    marked recent is still a hit, not a KeyError that fails the batch."""
    from collections import OrderedDict

    from app.services import member_cache

    class DroppedUnderUs(OrderedDict):
        def get(self, key, default=None):
            hit = super().get(key, default)
            self.pop(key, None)  # the other thread's put() between get and move_to_end
            return hit

    cache = DroppedUnderUs()
    monkeypatch.setattr(member_cache, "_member_cache", cache)
    version = member_cache.as_version("2026-12-06 12:00:00+00:00")
    member_cache.put("c1", version, ("u1", "u2"))
    assert member_cache.get("c1", version) == ("u1", "u2")
    assert "c1" not in cache


# --- mentions ------------------------------------------------------------------------------------


async def test_mentions_validation_storage_and_counts(client, deps, base_url):
    owner = await make_user(deps)
    bob, carol = await friends_of(deps, owner, 2)
    stranger = await make_user(deps)
    cid = await new_group(deps, owner, [bob, carol])
    c = await connect(base_url, carol.access_token)
    try:
        ack = await call(c, "message:send", text(cid, "@bob look", mentions=[bob.user_id]))
        assert ack["ok"], ack
        assert ack["message"]["mentions"] == [bob.user_id]
        assert ack["message"]["mention_all"] is False
        # Only members can be mentioned; only admins can mention everyone.
        ack = await call(c, "message:send", text(cid, "x", mentions=[stranger.user_id]))
        assert ack["error"]["code"] == "invalid" and ack["error"]["details"]["field"] == "mentions"
        ack = await call(c, "message:send", text(cid, "x", mention_all=True))
        assert ack["error"]["code"] == "forbidden"
    finally:
        await c.disconnect()
    await send(deps, owner, cid, "@all meeting", mention_all=True)
    await send(deps, carol, cid, "no mention")
    await send(deps, owner, cid, "@carol", mentions=[carol.user_id, carol.user_id])
    recalled = await send(deps, carol, cid, "@bob oops", mentions=[bob.user_id])
    await messaging.recall(deps, carol.user_id, messaging.MessageRef(message_id=recalled["id"]))

    status, body = await api(client, "GET", f"/conversations/{cid}", bob)
    # Bob: his mention + @all (the recalled one does not count).
    assert body["conversation"]["mention_count"] == 2
    assert body["conversation"]["unread_count"] == 4
    status, body = await api(client, "GET", "/conversations", carol)
    # Carol was mentioned twice, but her own later message marked both read.
    assert body["conversations"][0]["id"] == cid
    assert body["conversations"][0]["mention_count"] == 0
    assert body["conversations"][0]["unread_count"] == 0
    # Sync entries carry it too.
    got = await history.sync(deps, bob.user_id, history.SyncIn(cursors={cid: 1}))
    assert next(x for x in got["conversations"] if x["id"] == cid)["mention_count"] == 2
    # History shows the stored mention data.
    msgs = await timeline(deps, bob, cid)
    all_msg = next(m for m in msgs if m["text"] == "@all meeting")
    assert all_msg["mention_all"] is True and all_msg["mentions"] == []
    assert next(m for m in msgs if m["text"] == "@carol")["mentions"] == [carol.user_id]
    # Reading past the first mention leaves the later one.
    first = next(m for m in msgs if m["text"] == "@bob look")
    await messaging.mark_read(deps, bob.user_id, messaging.ReadIn(conversation_id=cid,
                                                                  seq=first["seq"]))
    assert (await convs.conversation_for(deps, bob.user_id, cid))["mention_count"] == 1
    await messaging.mark_read(deps, bob.user_id, messaging.ReadIn(conversation_id=cid, seq=10**6))
    assert (await convs.conversation_for(deps, bob.user_id, cid))["mention_count"] == 0
    # Mentions are for groups only.
    direct, _ = await convs.get_or_create_direct(deps, owner.user_id, bob.user_id)
    from app.errors import Invalid

    with pytest.raises(Invalid):
        await send(deps, owner, str(direct.id), "x", mentions=[bob.user_id])


# --- read lists -----------------------------------------------------------------------------------


async def test_readers_lists_and_counts(client, deps):
    owner = await make_user(deps)
    bob, carol, dave = await friends_of(deps, owner, 3)
    cid = await new_group(deps, owner, [bob, carol, dave])
    msg = await send(deps, owner, cid, "did you read this?")
    await messaging.mark_read(deps, bob.user_id, messaging.ReadIn(conversation_id=cid,
                                                                  seq=msg["seq"]))
    await messaging.mark_read(deps, dave.user_id, messaging.ReadIn(conversation_id=cid,
                                                                   seq=msg["seq"]))
    # Dave turned receipts off: he never shows as a reader.
    from app.services import contacts

    dave_user = await User.get(id=dave.user_id)
    await contacts.update_settings(deps, dave_user, contacts.SettingsPatch(send_read_receipts=False))
    path = f"/conversations/{cid}/messages/{msg['id']}/readers"
    status, body = await api(client, "GET", path, owner)
    assert status == 200, body
    assert body["read_count"] == 1 and body["unread_count"] == 2
    assert [u["id"] for u in body["readers"]] == [bob.user_id]
    assert sorted(u["id"] for u in body["unread"]) == sorted([carol.user_id, dave.user_id])
    # Works in direct chats too; outsiders and unknown messages get 404.
    stranger = await make_user(deps)
    assert (await api(client, "GET", path, stranger))[0] == 404
    assert (await api(client, "GET", f"/conversations/{cid}/messages/999999/readers", owner))[0] == 404
    assert (await api(client, "GET", f"/conversations/{cid}/messages/x/readers", owner))[0] == 404
    # Someone who joined after the message is not counted for it.
    (erin,) = await friends_of(deps, owner, 1, prefix="e")
    await groups.add_members(deps, owner.user_id, cid, groups.AddMembersIn(user_ids=[erin.user_id]))
    status, body = await api(client, "GET", path, bob)
    assert body["read_count"] + body["unread_count"] == 3
    assert (await api(client, "GET", path, erin))[0] == 404


async def test_readers_counts_only_above_100_members(client, deps):
    owner = await make_user(deps)
    ids = await bulk_users(101, "rd")
    await bulk_contacts(owner.user_id, ids)
    conv = await groups.create_group(deps, owner.user_id,
                                     groups.CreateIn(name="Big", member_ids=ids))
    cid = conv["id"]
    msg = await send(deps, owner, cid, "hello all")
    for uid in ids[:7]:
        await messaging.mark_read(deps, uid, messaging.ReadIn(conversation_id=cid, seq=msg["seq"]))
    status, body = await api(client, "GET", f"/conversations/{cid}/messages/{msg['id']}/readers",
                             owner)
    assert status == 200
    assert body["read_count"] == 7 and body["unread_count"] == 94
    assert body["readers"] is None and body["unread"] is None


async def test_concurrent_joins_never_overfill(deps):
    owner = await make_user(deps)
    ids = await bulk_users(8, "cc")
    await bulk_contacts(owner.user_id, ids)
    conv = await groups.create_group(deps, owner.user_id,
                                     groups.CreateIn(name="Tight", member_ids=ids[:2]))
    cid = conv["id"]
    invite = await groups.create_invite(deps, owner.user_id, cid, groups.InviteIn(max_uses=3))
    results = await asyncio.gather(
        *(groups.join(deps, uid, groups.JoinIn(token=invite["token"])) for uid in ids[2:]),
        return_exceptions=True)
    joined = [r for r in results if not isinstance(r, Exception)]
    assert len(joined) == 3
    assert all(getattr(r, "code", "") == "invite_expired" for r in results
               if isinstance(r, Exception))
    assert (await groups.get_group(deps, owner.user_id, cid))["member_count"] == 6
    seqs = [m["seq"] for m in await timeline(deps, owner, cid)]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.parametrize("settings_overrides", [{"group_create_rate_limit": "2/86400"}])
async def test_group_creation_is_limited_per_user(client, deps):
    owner = await make_user(deps, "owner")
    (friend,) = await friends_of(deps, owner, 1)
    for i in range(2):
        status, _ = await api(client, "POST", "/groups", owner,
                              {"name": f"g{i}", "member_ids": [friend.user_id]})
        assert status == 201
    r = await client.post(f"{API}/groups", json={"name": "g2", "member_ids": [friend.user_id]},
                          headers=owner.headers)
    assert r.status == 429 and (await r.json())["error"]["code"] == "rate_limited"
    assert 0 < int(r.headers["Retry-After"]) <= 86400
    # The refused attempt wrote nothing.
    listed = (await api(client, "GET", "/conversations", owner))[1]["conversations"]
    assert sorted(c["title"] for c in listed if c["type"] == "group") == ["g0", "g1"]
