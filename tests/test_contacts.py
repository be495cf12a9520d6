"""Contacts: requests (send, accept, reject, expire, duplicate, mutual), remarks,
one-sided delete, the real-time events, and every bad input."""

import uuid

import pytest

from app.services import contacts
from tests.factories import call, connect, make_contacts, make_user

API = "/api/v1"


async def request(client, who, user_id, message=None):
    body = {"user_id": user_id}
    if message is not None:
        body["message"] = message
    return await client.post(f"{API}/contacts/requests", json=body, headers=who.headers)


async def requests_of(client, who) -> dict:
    r = await client.get(f"{API}/contacts/requests", headers=who.headers)
    assert r.status == 200
    return await r.json()


async def contacts_of(client, who) -> list:
    r = await client.get(f"{API}/contacts", headers=who.headers)
    assert r.status == 200
    return (await r.json())["contacts"]


async def send_text(client, who, conversation_id, text="hi"):
    return await client.post(
        f"{API}/conversations/{conversation_id}/messages",
        json={"client_msg_id": uuid.uuid4().hex, "text": text}, headers=who.headers,
    )


async def test_request_accept_gives_contacts_and_a_ready_conversation(client, deps, base_url):
    alice, bob = await make_user(deps, "Alice"), await make_user(deps, "Bob")
    alice_sock = await connect(base_url, alice.access_token)
    bob_sock = await connect(base_url, bob.access_token)
    try:
        r = await request(client, alice, bob.user_id, "  Hi Bob, it's Alice from work  ")
        assert r.status == 201
        req = (await r.json())["request"]
        assert req["status"] == "pending"
        assert req["message"] == "Hi Bob, it's Alice from work"
        assert req["from_user"]["id"] == alice.user_id
        assert req["to_user"]["id"] == bob.user_id
        assert req["created_at"] and req["expires_at"]

        # Bob's devices hear about it; both sides list it.
        (pushed,) = await bob_sock.log.wait_for("contact:request")
        assert pushed["request"]["id"] == req["id"]
        assert (await requests_of(client, bob))["incoming"][0]["id"] == req["id"]
        assert (await requests_of(client, alice))["outgoing"][0]["id"] == req["id"]
        assert (await requests_of(client, alice))["incoming"] == []

        # Not contacts yet: Alice cannot write to Bob.
        r = await client.post(f"{API}/conversations/direct", json={"user_id": bob.user_id},
                              headers=alice.headers)
        assert r.status == 200
        conv_id = (await r.json())["conversation"]["id"]
        r = await send_text(client, alice, conv_id)
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "not_contact"

        r = await client.post(f"{API}/contacts/requests/{req['id']}/accept", headers=bob.headers)
        assert r.status == 200
        body = await r.json()
        assert body["contact"]["user"]["id"] == alice.user_id
        assert body["contact"]["remark"] == ""
        assert body["conversation"]["id"] == conv_id  # the one direct chat of the pair
        assert body["conversation"]["peer"]["id"] == alice.user_id
        assert body["request"]["status"] == "accepted"

        # The requester's devices are told, with their own view of the chat.
        (accepted,) = await alice_sock.log.wait_for("contact:accepted")
        assert accepted["contact"]["user"]["id"] == bob.user_id
        assert accepted["conversation"]["id"] == conv_id
        assert accepted["conversation"]["peer"]["id"] == bob.user_id

        assert [c["user"]["id"] for c in await contacts_of(client, alice)] == [bob.user_id]
        assert [c["user"]["id"] for c in await contacts_of(client, bob)] == [alice.user_id]
        assert await requests_of(client, bob) == {"incoming": [], "outgoing": []}

        # Now both can write, over REST and over Socket.IO.
        r = await send_text(client, alice, conv_id, "hello Bob")
        assert r.status == 201
        ack = await call(bob_sock, "message:send", {"conversation_id": conv_id,
                                                    "client_msg_id": "b1", "text": "hi Alice"})
        assert ack["ok"] is True, ack

        # Accepting twice is harmless and answers the same.
        r = await client.post(f"{API}/contacts/requests/{req['id']}/accept", headers=bob.headers)
        assert r.status == 200
        assert (await r.json())["conversation"]["id"] == conv_id
    finally:
        await alice_sock.disconnect()
        await bob_sock.disconnect()


async def test_re_request_while_pending_updates_the_greeting(client, deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    bob_sock = await connect(base_url, bob.access_token)
    try:
        first = (await (await request(client, alice, bob.user_id, "hello")).json())["request"]
        r = await request(client, alice, bob.user_id, "hello again, it's me")
        assert r.status == 201
        second = (await r.json())["request"]
        assert second["id"] == first["id"]
        assert second["message"] == "hello again, it's me"
        incoming = (await requests_of(client, bob))["incoming"]
        assert [(i["id"], i["message"]) for i in incoming] == [(first["id"],
                                                               "hello again, it's me")]
        pushed = await bob_sock.log.wait_for("contact:request", count=2)
        assert [p["request"]["message"] for p in pushed] == ["hello", "hello again, it's me"]
    finally:
        await bob_sock.disconnect()


async def test_requesting_someone_who_requested_you_accepts_both(client, deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    alice_sock = await connect(base_url, alice.access_token)
    bob_sock = await connect(base_url, bob.access_token)
    try:
        r = await request(client, alice, bob.user_id, "hi")
        alice_req = (await r.json())["request"]
        r = await request(client, bob, alice.user_id, "oh hi")
        assert r.status == 201
        body = await r.json()
        assert body["request"]["status"] == "accepted"
        assert body["request"]["from_user"]["id"] == bob.user_id
        assert body["contact"]["user"]["id"] == alice.user_id
        conv_id = body["conversation"]["id"]

        # Both requesters are told their request was accepted.
        (to_alice,) = await alice_sock.log.wait_for("contact:accepted")
        assert to_alice["request"]["id"] == alice_req["id"]
        assert to_alice["conversation"]["id"] == conv_id
        (to_bob,) = await bob_sock.log.wait_for("contact:accepted")
        assert to_bob["request"]["id"] == body["request"]["id"]

        assert await requests_of(client, alice) == {"incoming": [], "outgoing": []}
        assert await requests_of(client, bob) == {"incoming": [], "outgoing": []}
        assert [c["user"]["id"] for c in await contacts_of(client, alice)] == [bob.user_id]
        assert [c["user"]["id"] for c in await contacts_of(client, bob)] == [alice.user_id]
        # Already contacts: a further request is a conflict, and Alice's old one is settled.
        r = await request(client, alice, bob.user_id)
        assert r.status == 409
        assert (await r.json())["error"]["code"] == "already_contact"
        r = await client.post(f"{API}/contacts/requests/{alice_req['id']}/accept",
                              headers=bob.headers)
        assert r.status == 200
    finally:
        await alice_sock.disconnect()
        await bob_sock.disconnect()


async def test_reject(client, deps):
    alice, bob = await make_user(deps), await make_user(deps)
    req = (await (await request(client, alice, bob.user_id, "hi")).json())["request"]
    r = await client.post(f"{API}/contacts/requests/{req['id']}/reject", headers=bob.headers)
    assert r.status == 200
    assert (await r.json())["request"]["status"] == "rejected"
    assert await requests_of(client, bob) == {"incoming": [], "outgoing": []}
    assert await requests_of(client, alice) == {"incoming": [], "outgoing": []}
    assert await contacts_of(client, alice) == []
    # A rejected request cannot be accepted afterwards.
    r = await client.post(f"{API}/contacts/requests/{req['id']}/accept", headers=bob.headers)
    assert r.status == 409
    # The requester may ask again: that is a new request.
    r = await request(client, alice, bob.user_id, "please?")
    assert r.status == 201
    again = (await r.json())["request"]
    assert again["id"] != req["id"] and again["status"] == "pending"


async def test_requests_expire(client, deps):
    alice, bob = await make_user(deps), await make_user(deps)
    ttl = deps.settings.contact_request_ttl_days
    assert ttl == 7
    # A deployment that lets requests lapse at once: the request is born expired.
    deps.settings = deps.settings.with_(contact_request_ttl_days=0)
    req = (await (await request(client, alice, bob.user_id, "hi")).json())["request"]
    deps.settings = deps.settings.with_(contact_request_ttl_days=ttl)

    assert await requests_of(client, bob) == {"incoming": [], "outgoing": []}
    assert await requests_of(client, alice) == {"incoming": [], "outgoing": []}
    r = await client.post(f"{API}/contacts/requests/{req['id']}/accept", headers=bob.headers)
    assert r.status == 410
    assert (await r.json())["error"]["code"] == "request_expired"
    r = await client.post(f"{API}/contacts/requests/{req['id']}/reject", headers=bob.headers)
    assert r.status == 410
    assert await contacts_of(client, bob) == []
    # Asking back does not accept a lapsed request: it is a fresh one.
    r = await request(client, bob, alice.user_id, "saw you asked")
    body = await r.json()
    assert r.status == 201 and body["request"]["status"] == "pending"
    assert "contact" not in body
    # Alice asking now meets Bob's live request: both are accepted.
    r = await request(client, alice, bob.user_id, "again")
    assert r.status == 201
    body = await r.json()
    assert body["request"]["status"] == "accepted"  # Bob's fresh request was pending


async def test_remarks_and_sorting(client, deps):
    me = await make_user(deps, "Me")
    zed, amy, bob = (await make_user(deps, "Zed"), await make_user(deps, "amy"),
                     await make_user(deps, "Bob"))
    for other in (zed, amy, bob):
        await make_contacts(deps, me, other)
    names = [c["user"]["display_name"] for c in await contacts_of(client, me)]
    assert names == ["amy", "Bob", "Zed"]

    r = await client.patch(f"{API}/contacts/{zed.user_id}", json={"remark": " Aardvark "},
                           headers=me.headers)
    assert r.status == 200
    assert (await r.json())["contact"]["remark"] == "Aardvark"
    listed = await contacts_of(client, me)
    assert [(c["user"]["display_name"], c["remark"]) for c in listed] == [
        ("Zed", "Aardvark"), ("amy", ""), ("Bob", "")]
    assert all(set(c) == {"user", "remark", "created_at", "presence"} for c in listed)
    # Remarks are mine only.
    assert [c["remark"] for c in await contacts_of(client, zed)] == [""]
    # Clearing the remark falls back to the display name.
    r = await client.patch(f"{API}/contacts/{zed.user_id}", json={"remark": ""},
                           headers=me.headers)
    assert r.status == 200
    assert [c["user"]["display_name"] for c in await contacts_of(client, me)] == [
        "amy", "Bob", "Zed"]


async def test_delete_is_one_sided_and_refuses_their_messages(client, deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    await make_contacts(deps, alice, bob)
    conv_id = (await (await client.post(f"{API}/conversations/direct",
                                        json={"user_id": bob.user_id},
                                        headers=alice.headers)).json())["conversation"]["id"]
    bob_sock = await connect(base_url, bob.access_token)
    alice_sock = await connect(base_url, alice.access_token)
    try:
        r = await client.delete(f"{API}/contacts/{alice.user_id}", headers=bob.headers)
        assert r.status == 204
        (removed,) = await bob_sock.log.wait_for("contact:removed")
        assert removed == {"user_id": alice.user_id}
        assert alice_sock.log.of("contact:removed") == []

        assert await contacts_of(client, bob) == []
        assert [c["user"]["id"] for c in await contacts_of(client, alice)] == [bob.user_id]
        # Alice's messages to Bob are refused, on both transports.
        r = await send_text(client, alice, conv_id)
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "not_contact"
        ack = await call(alice_sock, "message:send", {"conversation_id": conv_id,
                                                      "client_msg_id": "a1", "text": "hey?"})
        assert ack["ok"] is False and ack["error"]["code"] == "not_contact"
        # Bob can still write to Alice: she kept him.
        r = await send_text(client, bob, conv_id, "sorry")
        assert r.status == 201
        r = await client.delete(f"{API}/contacts/{alice.user_id}", headers=bob.headers)
        assert r.status == 404

        # Bob adds Alice back: she still has him, so it is accepted at once.
        r = await request(client, bob, alice.user_id, "friends again?")
        assert r.status == 201
        body = await r.json()
        assert body["request"]["status"] == "accepted"
        assert body["conversation"]["id"] == conv_id
        r = await send_text(client, alice, conv_id, "yes")
        assert r.status == 201
    finally:
        await bob_sock.disconnect()
        await alice_sock.disconnect()


async def test_deleted_contact_must_ask_again(client, deps):
    """Alice removed Bob; Bob (who still has her) needs her to accept a new request."""
    alice, bob = await make_user(deps), await make_user(deps)
    await make_contacts(deps, alice, bob)
    assert (await client.delete(f"{API}/contacts/{bob.user_id}", headers=alice.headers)).status == 204
    r = await request(client, bob, alice.user_id, "did you remove me?")
    assert r.status == 201
    req = (await r.json())["request"]
    assert req["status"] == "pending"
    r = await client.post(f"{API}/contacts/requests/{req['id']}/accept", headers=alice.headers)
    assert r.status == 200
    assert [c["user"]["id"] for c in await contacts_of(client, alice)] == [bob.user_id]


async def test_bad_inputs(client, deps):
    alice, bob, carol = await make_user(deps), await make_user(deps), await make_user(deps)

    async def error_of(r, status, code):
        assert r.status == status, await r.text()
        body = await r.json()
        assert body["error"]["code"] == code, body
        return body["error"]

    # Self-request, unknown user, malformed id.
    err = await error_of(await request(client, alice, alice.user_id), 400, "invalid")
    assert err["details"]["field"] == "user_id"
    await error_of(await request(client, alice, str(uuid.uuid4())), 404, "not_found")
    await error_of(await request(client, alice, "not-a-uuid"), 404, "not_found")
    await error_of(await client.post(f"{API}/contacts/requests", json={}, headers=alice.headers),
                   400, "invalid")
    await error_of(await client.post(f"{API}/contacts/requests",
                                     json={"user_id": bob.user_id, "extra": 1},
                                     headers=alice.headers), 400, "invalid")
    # Oversize greeting: 200 characters is the limit.
    err = await error_of(await request(client, alice, bob.user_id, "x" * 201), 400, "invalid")
    assert err["details"]["field"] == "message"
    r = await request(client, alice, bob.user_id, "é" * 200)
    assert r.status == 201
    req = (await r.json())["request"]
    assert len(req["message"]) == contacts.GREETING_MAX

    # A request that is not mine to answer looks like no request at all.
    for who in (alice, carol):
        for action in ("accept", "reject"):
            await error_of(await client.post(f"{API}/contacts/requests/{req['id']}/{action}",
                                             headers=who.headers), 404, "not_found")
    for bad in ("999999999", "abc"):
        await error_of(await client.post(f"{API}/contacts/requests/{bad}/accept",
                                         headers=bob.headers), 404, "not_found")

    # Contacts that are not mine.
    await error_of(await client.patch(f"{API}/contacts/{bob.user_id}", json={"remark": "x"},
                                      headers=alice.headers), 404, "not_found")
    await error_of(await client.delete(f"{API}/contacts/nope", headers=alice.headers),
                   404, "not_found")
    await make_contacts(deps, alice, carol)
    await error_of(await client.patch(f"{API}/contacts/{carol.user_id}",
                                      json={"remark": "r" * 65}, headers=alice.headers),
                   400, "invalid")
    await error_of(await client.patch(f"{API}/contacts/{carol.user_id}", json={},
                                      headers=alice.headers), 400, "invalid")
    # Everything needs a signed-in caller.
    for method, path in (("get", "/contacts"), ("get", "/contacts/requests"),
                         ("post", "/contacts/requests"), ("get", "/blocks")):
        await error_of(await getattr(client, method)(f"{API}{path}"), 401, "unauthorized")


@pytest.mark.parametrize("settings_overrides", [{"contact_request_ttl_days": 3}])
async def test_ttl_is_configurable(client, deps):
    alice, bob = await make_user(deps), await make_user(deps)
    req = (await (await request(client, alice, bob.user_id)).json())["request"]
    from datetime import datetime
    created = datetime.fromisoformat(req["created_at"])
    expires = datetime.fromisoformat(req["expires_at"])
    assert round((expires - created).total_seconds() / 86400) == 3


async def test_concurrent_requests_settle_cleanly(client, deps):
    import asyncio

    from app.models.contacts import ContactRequest

    alice, bob, carol = await make_user(deps), await make_user(deps), await make_user(deps)
    # The same request twice at once (two devices): one pending request.
    r1, r2 = await asyncio.gather(request(client, alice, bob.user_id, "one"),
                                  request(client, alice, bob.user_id, "two"))
    assert (r1.status, r2.status) == (201, 201)
    incoming = (await requests_of(client, bob))["incoming"]
    assert len(incoming) == 1 and incoming[0]["message"] in {"one", "two"}
    # Two people asking each other at the same moment end up contacts, nothing pending.
    r1, r2 = await asyncio.gather(request(client, alice, carol.user_id),
                                  request(client, carol, alice.user_id))
    assert (r1.status, r2.status) == (201, 201)
    assert [c["user"]["id"] for c in await contacts_of(client, carol)] == [alice.user_id]
    assert carol.user_id in [c["user"]["id"] for c in await contacts_of(client, alice)]
    assert (await requests_of(client, carol)) == {"incoming": [], "outgoing": []}
    between = await ContactRequest.filter(from_user_id__in=[alice.user_id, carol.user_id],
                                          to_user_id__in=[alice.user_id, carol.user_id])
    assert sorted(r.status for r in between) == ["accepted", "accepted"]


async def test_accept_is_atomic_when_a_write_fails(client, deps, monkeypatch):
    """A failure after the request was marked accepted and both contact rows were
    written (the last write raises) leaves nothing behind: still pending, no
    contact on either side; accepting again then works."""
    from app.models.contacts import Contact, ContactRequest

    alice, bob = await make_user(deps), await make_user(deps)
    r = await request(client, alice, bob.user_id, "hi")
    rid = (await r.json())["request"]["id"]
    real = contacts._settle_requests
    calls = []

    async def failing(conn, ids, **fields):
        calls.append(ids)
        if "pending_key" in ids:  # the last of the writes
            raise RuntimeError("injected failure")
        return await real(conn, ids, **fields)

    monkeypatch.setattr(contacts, "_settle_requests", failing)
    with pytest.raises(RuntimeError, match="injected"):
        await contacts.accept(deps, bob.user_id, rid)
    assert len(calls) == 2  # the failure came after the earlier writes
    assert (await ContactRequest.get(id=int(rid))).status == "pending"
    assert await Contact.filter(owner_id__in=[alice.user_id, bob.user_id]).count() == 0

    monkeypatch.setattr(contacts, "_settle_requests", real)
    out = await contacts.accept(deps, bob.user_id, rid)
    assert out["request"]["status"] == "accepted"
    assert await Contact.filter(owner_id=alice.user_id, contact_id=bob.user_id).exists()
    assert await Contact.filter(owner_id=bob.user_id, contact_id=alice.user_id).exists()


@pytest.mark.parametrize("settings_overrides", [{"contact_request_rate_limit": "2/86400"}])
async def test_contact_requests_per_user_per_day(client, deps):
    alice = await make_user(deps)
    others = [await make_user(deps) for _ in range(3)]
    for p in others[:2]:
        assert (await request(client, alice, p.user_id)).status == 201
    r = await request(client, alice, others[2].user_id)
    body = await r.json()
    assert r.status == 429 and body["error"]["code"] == "rate_limited"
    assert 0 < int(r.headers["Retry-After"]) <= 86400
    # Someone else's budget is their own.
    assert (await request(client, others[2], alice.user_id)).status == 201
