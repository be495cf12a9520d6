"""The read cache across processes: two `python -m app serve` workers on one
PostgreSQL database and one message queue. A change committed through one
process is never served stale by the other once its invalidation has arrived
(app/services/read_cache.py); membership is checked against its version
(app/services/member_cache.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
import socketio

from app.models.accounts import User
from app.services import accounts
from tests.cluster_fixtures import cluster, db, queue  # noqa: F401 (fixtures)
from tests.cluster_helpers import CLUSTER_MARKS, Device, rest, text
from tests.factories import make_contacts, make_user
from tests.queue_helpers import QUEUES

pytestmark = CLUSTER_MARKS

# Far below the cache's own expiry (30 s): only the invalidation can make it fresh.
ARRIVAL_S = 5.0


async def get(worker, path: str, user) -> tuple[int, dict]:
    """The status and the body's one member (`user`, `settings`)."""
    status, body = await rest(worker, "GET", path, user)
    return status, next(iter(body.values()), {}) if body else {}


async def eventually(check, what: str) -> None:
    deadline = time.monotonic() + ARRIVAL_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still stale {ARRIVAL_S} s after the change")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("queue", QUEUES, indirect=True)
async def test_a_profile_change_on_one_process_is_fresh_on_the_other(db, cluster):  # noqa: F811
    url, deps = db
    w1, w2 = await cluster(2, url)
    alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
    status, me = await get(w2, "/me", bob)  # Bob's session and row cached on w2
    assert status == 200 and me["display_name"] == "bob"
    status, card = await get(w2, f"/users/{bob.user_id}", alice)
    assert status == 200 and card["bio"] == ""
    # A write that tells nobody: w2 keeps serving its copy (the cache is in use).
    await User.filter(id=bob.user_id).update(bio="written behind the servers' backs")
    status, card = await get(w2, f"/users/{bob.user_id}", alice)
    assert card["bio"] == ""

    status, _ = await rest(w1, "PATCH", "/me", bob, {"display_name": "Robert"})
    assert status == 200

    async def fresh_card():
        _, card = await get(w2, f"/users/{bob.user_id}", alice)
        return card["display_name"] == "Robert"

    async def fresh_me():
        _, me = await get(w2, "/me", bob)
        return me["display_name"] == "Robert"

    await eventually(fresh_card, "profile lookup on w2")
    await eventually(fresh_me, "the caller's own row on w2")
    _, card = await get(w2, f"/users/{bob.user_id}", alice)
    assert card["bio"] == "written behind the servers' backs"  # the whole row was reloaded

    # Settings are in the same row: changed on w2 now, read on w1.
    await rest(w1, "GET", "/me/settings", bob)
    status, _ = await rest(w2, "PATCH", "/me/settings", bob, {"last_seen_visibility": "nobody"})
    assert status == 200

    async def fresh_settings():
        _, s = await get(w1, "/me/settings", bob)
        return s["last_seen_visibility"] == "nobody"

    await eventually(fresh_settings, "settings on w1")


@pytest.mark.parametrize("queue", QUEUES, indirect=True)
async def test_a_session_revoked_on_one_process_is_refused_on_the_other(db, cluster):  # noqa: F811
    url, deps = db
    w1, w2 = await cluster(2, url)
    bob = await make_user(deps, "bob")
    phone = await accounts.login(deps, accounts.LoginIn(login=bob.email, password=bob.password),
                                 accounts.Client(ip="127.0.0.1", device="phone"))
    bob_phone = type(bob)(**{**bob.__dict__, "access_token": phone["access_token"],
                             "refresh_token": phone["refresh_token"], "sockets": []})
    # The phone's session is cached on w2 (a REST call and a socket connect there).
    assert (await rest(w2, "GET", "/me", bob_phone))[0] == 200
    socket = await cluster.device(bob_phone, w2)

    # Signed out through w1: the socket on w2 is dropped…
    status, _ = await rest(w1, "POST", "/auth/logout", bob_phone)
    assert status == 204
    await asyncio.wait_for(socket.gone.wait(), ARRIVAL_S)
    # …and, the invalidation having come before the disconnect, w2 refuses the
    # session from then on: no reconnect, no REST call.
    assert (await rest(w2, "GET", "/me", bob_phone))[0] == 401
    with pytest.raises(socketio.exceptions.ConnectionError, match="failed to connect"):
        await Device(bob_phone, w2.url).connect()
    # Bob's other session is untouched.
    assert (await rest(w2, "GET", "/me", bob))[0] == 200


async def test_a_member_removed_on_one_process_cannot_send_on_the_other(db, cluster):  # noqa: F811
    url, deps = db
    w1, w2 = await cluster(2, url)
    alice, bob, carol = [await make_user(deps, n) for n in ("alice", "bob", "carol")]
    for p in (bob, carol):
        await make_contacts(deps, alice, p)
    status, body = await rest(w1, "POST", "/groups", alice,
                              {"name": "crew", "member_ids": [bob.user_id, carol.user_id]})
    assert status == 201, body
    gid = body["conversation"]["id"]
    c2 = await cluster.device(carol, w2)
    assert (await c2.call("message:send", text(gid, "carol here")))["ok"]  # list cached on w2
    status, _ = await rest(w1, "DELETE", f"/groups/{gid}/members/{carol.user_id}", alice)
    assert status == 204
    ack = await c2.call("message:send", text(gid, "still here?"))
    assert ack["ok"] is False, ack
    b2 = await cluster.device(bob, w2)
    ack = await b2.call("message:send", text(gid, "bob on w2"))
    assert ack["ok"], ack
