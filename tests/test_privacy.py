"""Blocks, stranger rules on both transports, privacy settings, discoverability
and who may see presence."""

import uuid

from tests.factories import call, connect, make_contacts, make_user

API = "/api/v1"


async def direct(client, who, peer) -> str:
    r = await client.post(f"{API}/conversations/direct", json={"user_id": peer.user_id},
                          headers=who.headers)
    assert r.status == 200, await r.text()
    return (await r.json())["conversation"]["id"]


async def rest_send(client, who, conv_id, text="hello"):
    r = await client.post(f"{API}/conversations/{conv_id}/messages",
                          json={"client_msg_id": uuid.uuid4().hex, "text": text},
                          headers=who.headers)
    return r.status, await r.json()


async def socket_send(sock, conv_id, text="hello"):
    return await call(sock, "message:send", {"conversation_id": conv_id,
                                             "client_msg_id": uuid.uuid4().hex, "text": text})


async def patch_settings(client, who, **changes):
    r = await client.patch(f"{API}/me/settings", json=changes, headers=who.headers)
    assert r.status == 200, await r.text()
    return (await r.json())["settings"]


async def test_settings_defaults_and_patch(client, deps):
    alice = await make_user(deps)
    r = await client.get(f"{API}/me/settings", headers=alice.headers)
    assert r.status == 200
    assert (await r.json())["settings"] == {
        "allow_strangers": False, "send_read_receipts": True,
        "last_seen_visibility": "contacts",
        "discoverable_by_email": True, "discoverable_by_phone": True,
        # push notifications (tests/test_push.py covers their rules)
        "push_enabled": True, "push_preview": "full", "dnd_start": None, "dnd_end": None,
        "timezone": "",
    }
    out = await patch_settings(client, alice, allow_strangers=True,
                               last_seen_visibility="nobody")
    assert out["allow_strangers"] is True and out["last_seen_visibility"] == "nobody"
    assert out["send_read_receipts"] is True  # untouched
    r = await client.get(f"{API}/me/settings", headers=alice.headers)
    assert (await r.json())["settings"] == out
    for bad in ({"last_seen_visibility": "friends"}, {"allow_strangers": "yes"},
                {"unknown": True}):
        r = await client.patch(f"{API}/me/settings", json=bad, headers=alice.headers)
        assert r.status == 400, bad
        assert (await r.json())["error"]["code"] == "invalid"
    r = await client.get(f"{API}/me/settings")
    assert r.status == 401


async def test_strangers_are_refused_unless_allowed_on_both_transports(client, deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    # Creating the direct conversation is allowed; sending is what is checked.
    conv_id = await direct(client, alice, bob)
    sock = await connect(base_url, alice.access_token)
    bob_sock = await connect(base_url, bob.access_token)
    try:
        status, body = await rest_send(client, alice, conv_id)
        assert (status, body["error"]["code"]) == (403, "not_contact")
        ack = await socket_send(sock, conv_id)
        assert ack["ok"] is False and ack["error"]["code"] == "not_contact"
        # Nothing was stored or delivered.
        r = await client.get(f"{API}/conversations/{conv_id}/messages", headers=bob.headers)
        assert (await r.json())["messages"] == []
        assert bob_sock.log.of("message:new") == []

        # Bob opens his door to strangers: both transports now deliver.
        await patch_settings(client, bob, allow_strangers=True)
        status, body = await rest_send(client, alice, conv_id, "via REST")
        assert status == 201, body
        ack = await socket_send(sock, conv_id, "via socket")
        assert ack["ok"] is True, ack
        got = await bob_sock.log.wait_for("message:new", count=2)
        assert [m["text"] for m in got] == ["via REST", "via socket"]
        # Alice does not allow strangers: Bob may not write back yet.
        status, body = await rest_send(client, bob, conv_id)
        assert (status, body["error"]["code"]) == (403, "not_contact")
        # Contacts may always write.
        await patch_settings(client, bob, allow_strangers=False)
        await make_contacts(deps, alice, bob)
        assert (await rest_send(client, alice, conv_id))[0] == 201
        assert (await socket_send(bob_sock, conv_id))["ok"] is True
    finally:
        await sock.disconnect()
        await bob_sock.disconnect()


async def test_block_refuses_requests_and_messages_without_revealing_it(client, deps, base_url):
    alice, bob, stranger = await make_user(deps), await make_user(deps), await make_user(deps)
    await make_contacts(deps, alice, bob)
    conv_id = await direct(client, alice, bob)
    await patch_settings(client, bob, allow_strangers=True)

    r = await client.post(f"{API}/blocks", json={"user_id": alice.user_id}, headers=bob.headers)
    assert r.status == 201
    assert (await r.json())["block"]["user"]["id"] == alice.user_id
    # Blocking twice is fine.
    r = await client.post(f"{API}/blocks", json={"user_id": alice.user_id}, headers=bob.headers)
    assert r.status == 200
    r = await client.get(f"{API}/blocks", headers=bob.headers)
    assert [b["user"]["id"] for b in (await r.json())["blocks"]] == [alice.user_id]
    # WeChat keeps the contact in the list.
    r = await client.get(f"{API}/contacts", headers=bob.headers)
    assert [c["user"]["id"] for c in (await r.json())["contacts"]] == [alice.user_id]

    # Alice's messages are refused exactly like a non-contact's (allow_strangers is
    # on, so the block is the only reason — and it is not named).
    sock = await connect(base_url, alice.access_token)
    try:
        status, body = await rest_send(client, alice, conv_id)
        assert (status, body["error"]["code"]) == (403, "not_contact")
        ack = await socket_send(sock, conv_id)
        assert ack["error"]["code"] == "not_contact"
        assert "block" not in str(body).lower() and "block" not in str(ack).lower()
    finally:
        await sock.disconnect()

    # Her requests get the generic refusal.
    await client.delete(f"{API}/contacts/{alice.user_id}", headers=bob.headers)
    r = await client.post(f"{API}/contacts/requests", json={"user_id": bob.user_id},
                          headers=alice.headers)
    assert r.status == 403
    err = (await r.json())["error"]
    assert err["code"] == "request_refused" and "block" not in err["message"].lower()
    r = await client.get(f"{API}/contacts/requests", headers=bob.headers)
    assert (await r.json())["incoming"] == []

    # Bob may not write to someone he blocked or request them; he is told why (his own choice).
    status, body = await rest_send(client, bob, conv_id)
    assert (status, body["error"]["code"]) == (403, "blocked")
    r = await client.post(f"{API}/contacts/requests", json={"user_id": alice.user_id},
                          headers=bob.headers)
    assert (r.status, (await r.json())["error"]["code"]) == (403, "blocked")

    # Other people are unaffected.
    r = await client.post(f"{API}/contacts/requests", json={"user_id": bob.user_id},
                          headers=stranger.headers)
    assert r.status == 201

    # Unblock: Alice is a stranger to Bob now, but Bob allows strangers.
    r = await client.delete(f"{API}/blocks/{alice.user_id}", headers=bob.headers)
    assert r.status == 204
    r = await client.delete(f"{API}/blocks/{alice.user_id}", headers=bob.headers)
    assert r.status == 404
    assert (await client.get(f"{API}/blocks", headers=bob.headers)).status == 200
    status, body = await rest_send(client, alice, conv_id, "can you hear me")
    assert status == 201, body
    r = await client.post(f"{API}/contacts/requests", json={"user_id": bob.user_id},
                          headers=alice.headers)
    assert r.status == 201


async def test_blocking_drops_their_pending_request(client, deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    r = await client.post(f"{API}/contacts/requests", json={"user_id": bob.user_id,
                                                            "message": "hi"},
                          headers=alice.headers)
    req_id = (await r.json())["request"]["id"]
    r = await client.post(f"{API}/blocks", json={"user_id": alice.user_id}, headers=bob.headers)
    assert r.status == 201
    r = await client.get(f"{API}/contacts/requests", headers=bob.headers)
    assert (await r.json())["incoming"] == []
    r = await client.post(f"{API}/contacts/requests/{req_id}/accept", headers=bob.headers)
    assert r.status == 409


async def test_block_bad_inputs(client, deps):
    alice = await make_user(deps)
    cases = [({"user_id": alice.user_id}, 400, "invalid"),
             ({"user_id": str(uuid.uuid4())}, 404, "not_found"),
             ({}, 400, "invalid")]
    for body, status, code in cases:
        r = await client.post(f"{API}/blocks", json=body, headers=alice.headers)
        assert (r.status, (await r.json())["error"]["code"]) == (status, code), body
    r = await client.delete(f"{API}/blocks/garbage", headers=alice.headers)
    assert r.status == 404


async def test_search_honours_discoverability(client, deps):
    alice = await make_user(deps, "Alice", email="alice.disc@example.org",
                            phone="+44 20 7946 0001")
    bob = await make_user(deps)

    async def found(q, who=bob):
        r = await client.get(f"{API}/users/search", params={"q": q}, headers=who.headers)
        assert r.status == 200
        return [u["id"] for u in (await r.json())["users"]]

    assert await found("alice.disc@example.org") == [alice.user_id]
    assert await found("+442079460001") == [alice.user_id]
    assert await found(alice.username) == [alice.user_id]
    await patch_settings(client, alice, discoverable_by_email=False)
    assert await found("alice.disc@example.org") == []
    assert await found("+442079460001") == [alice.user_id]
    await patch_settings(client, alice, discoverable_by_phone=False)
    assert await found("+442079460001") == []
    assert await found(alice.username) == [alice.user_id]  # the handle always works
    assert await found("alice.disc@example.org", who=alice) == [alice.user_id]


async def presence_seen_by(client, viewer, subject):
    r = await client.get(f"{API}/contacts", headers=viewer.headers)
    rows = {c["user"]["id"]: c for c in (await r.json())["contacts"]}
    return rows[subject.user_id]["presence"]


async def test_presence_visibility_in_contact_list(client, deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    await make_contacts(deps, alice, bob)
    sock = await connect(base_url, alice.access_token)
    try:
        # Default `contacts`: Bob has Alice in his list and she has him.
        assert await presence_seen_by(client, bob, alice) == {"online": True, "last_seen": None}
        # Alice removes Bob: he still has her, but she shows presence to contacts only.
        assert (await client.delete(f"{API}/contacts/{bob.user_id}",
                                    headers=alice.headers)).status == 204
        assert await presence_seen_by(client, bob, alice) is None
        await patch_settings(client, alice, last_seen_visibility="everyone")
        assert await presence_seen_by(client, bob, alice) == {"online": True, "last_seen": None}
        await patch_settings(client, alice, last_seen_visibility="nobody")
        assert await presence_seen_by(client, bob, alice) is None
        # Blocked people never see it, even with `everyone`.
        await patch_settings(client, alice, last_seen_visibility="everyone")
        r = await client.post(f"{API}/blocks", json={"user_id": bob.user_id},
                              headers=alice.headers)
        assert r.status == 201
        assert await presence_seen_by(client, bob, alice) is None
        await client.delete(f"{API}/blocks/{bob.user_id}", headers=alice.headers)
        assert (await presence_seen_by(client, bob, alice))["online"] is True
    finally:
        await sock.disconnect()


async def test_presence_events_follow_privacy(client, deps, base_url):
    """Who gets `presence` when Carol comes online: only those allowed to see it."""
    carol, friend, fan, blocked = (await make_user(deps), await make_user(deps),
                                   await make_user(deps), await make_user(deps))
    await make_contacts(deps, carol, friend)
    await make_contacts(deps, carol, fan)
    await make_contacts(deps, carol, blocked)
    # Carol drops `fan` from her list (fan keeps her) and blocks `blocked`.
    await client.delete(f"{API}/contacts/{fan.user_id}", headers=carol.headers)
    await client.post(f"{API}/blocks", json={"user_id": blocked.user_id}, headers=carol.headers)
    socks = {p.user_id: await connect(base_url, p.access_token) for p in (friend, fan, blocked)}
    try:
        carol_sock = await connect(base_url, carol.access_token)
        (ev,) = await socks[friend.user_id].log.wait_for("presence")
        assert ev == {"user_id": carol.user_id, "online": True, "last_seen": None}
        await carol_sock.disconnect()
        offline = await socks[friend.user_id].log.wait_for("presence", count=2)
        assert offline[1]["online"] is False and offline[1]["last_seen"]
        # `fan` and `blocked` were told nothing (they would have been told first).
        assert socks[fan.user_id].log.of("presence") == []
        assert socks[blocked.user_id].log.of("presence") == []

        # With `everyone`, fan sees it too; blocked still does not. `nobody`: no one.
        await patch_settings(client, carol, last_seen_visibility="everyone")
        carol_sock = await connect(base_url, carol.access_token)
        await socks[fan.user_id].log.wait_for("presence")
        await socks[friend.user_id].log.wait_for("presence", count=3)
        await carol_sock.disconnect()
        await socks[fan.user_id].log.wait_for("presence", count=2)
        await patch_settings(client, carol, last_seen_visibility="nobody")
        carol_sock = await connect(base_url, carol.access_token)
        await carol_sock.disconnect()
        # Once Carol's offline timer is done, a marker event arrives after anything
        # her last connection could have caused.
        await _settled(deps, carol.user_id)
        r = await client.post(f"{API}/contacts/requests", json={"user_id": friend.user_id},
                              headers=blocked.headers)
        assert r.status == 201
        await socks[friend.user_id].log.wait_for("contact:request")
        assert len(socks[friend.user_id].log.of("presence")) == 4
        assert len(socks[fan.user_id].log.of("presence")) == 2
        assert socks[blocked.user_id].log.of("presence") == []
    finally:
        for s in socks.values():
            await s.disconnect()


async def _settled(deps, user_id):
    """Wait until the server has finished Carol's offline timer."""
    import asyncio

    for _ in range(500):
        if user_id not in deps.presence.local and user_id not in deps.presence._timers:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("presence timer never finished")
