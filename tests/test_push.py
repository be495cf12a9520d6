"""Push notifications end to end: registration over REST, the rules applied to
real sends, and delivery to local push-service stand-ins that verify the
crypto (tests/push_services.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.api.http import DEPS_KEY
from app.models.push import PushOutbox, PushSubscription
from app.pushers.webpush import generate_private_key, load_vapid
from app.server import create_app
from app.services import conversations as convs
from app.services import groups, messaging, push_outbox
from app.services.push_outbox import run_sql
from tests.conftest import _truncate_all, make_settings
from tests.factories import call, connect, make_contacts, make_user, until
from tests.push_services import ApnsService, FcmService, WebPushService, b64url
from tests.statements import statements_of_this_task

VAPID_KEY = generate_private_key()


def vapid_public(key: str = VAPID_KEY) -> str:
    from cryptography.hazmat.primitives import serialization

    return b64url(load_vapid(key).public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))


@pytest.fixture
def settings_overrides():
    return {"push_insecure_hosts": "127.0.0.1", "vapid_private_key": VAPID_KEY,
            "push_coalesce_seconds": 0.0}


@pytest.fixture
async def webpush():
    service = WebPushService(vapid_public())
    await service.start()
    yield service
    await service.close()


async def drained(deps) -> None:
    await deps.extras["push_planner"].drained()


async def pair(deps):
    alice, bob = await make_user(deps, "Alice"), await make_user(deps, "Bob")
    await make_contacts(deps, alice, bob)
    conv, _ = await convs.get_or_create_direct(deps, alice.user_id, bob.user_id)
    return alice, bob, str(conv.id)


async def subscribe(client, person, body) -> dict:
    resp = await client.post("/api/v1/push/subscriptions", json=body, headers=person.headers)
    assert resp.status in (200, 201), await resp.text()
    return (await resp.json())["subscription"]


_n = iter(range(10**9))


async def send(deps, who, cid, text, **extra) -> dict:
    return await messaging.send_from_payload(deps, who.user_id, {
        "conversation_id": cid, "client_msg_id": f"m{next(_n)}", "text": text, **extra})


# --- registration ------------------------------------------------------------


async def test_registering_the_same_endpoint_again_returns_the_existing_one(client, deps,
                                                                           webpush):
    alice = await make_user(deps)
    body = webpush.subscription("a1")
    first = await client.post("/api/v1/push/subscriptions", json=body, headers=alice.headers)
    assert first.status == 201
    sub = (await first.json())["subscription"]
    assert sub["kind"] == "webpush" and sub["id"] and sub["created_at"]
    again = await client.post("/api/v1/push/subscriptions", json=body, headers=alice.headers)
    assert again.status == 200
    assert (await again.json())["subscription"]["id"] == sub["id"]
    listed = await (await client.get("/api/v1/push/subscriptions", headers=alice.headers)).json()
    assert [s["id"] for s in listed["subscriptions"]] == [sub["id"]]


async def test_fcm_and_apns_tokens_register(client, deps):
    alice = await make_user(deps)
    fcm = await client.post("/api/v1/push/subscriptions", headers=alice.headers,
                            json={"kind": "fcm", "token": "fcm:" + "x" * 150})
    assert fcm.status == 201
    apns = await client.post("/api/v1/push/subscriptions", headers=alice.headers,
                             json={"kind": "apns", "token": "ab" * 32,
                                   "environment": "sandbox"})
    assert apns.status == 201
    assert (await apns.json())["subscription"]["environment"] == "sandbox"


@pytest.mark.parametrize("body, field", [
    ({"kind": "sms", "token": "x"}, "kind"),
    ({"kind": "webpush", "endpoint": "ftp://127.0.0.1/x",
      "keys": {"p256dh": "B" * 87, "auth": "A" * 22}}, "endpoint"),
    ({"kind": "webpush", "endpoint": "http://push.example.com/x",
      "keys": {"p256dh": "B" * 87, "auth": "A" * 22}}, "endpoint"),
    ({"kind": "webpush", "endpoint": "https://push.example.com/x",
      "keys": {"p256dh": "BBBB", "auth": "A" * 22}}, "keys.p256dh"),
    ({"kind": "webpush", "endpoint": "https://push.example.com/x",
      "keys": {"p256dh": b64url(b"\x04" + b"1" * 64), "auth": "AAAA"}}, "keys.auth"),
    ({"kind": "webpush", "endpoint": "https://push.example.com/x"}, "keys.p256dh"),
    ({"kind": "webpush", "endpoint": "https://push.example.com/a\u0001b",
      "keys": {"p256dh": b64url(b"\x04" + b"1" * 64), "auth": "A" * 22}}, "endpoint"),
    ({"kind": "webpush", "endpoint": "https://[::1/x",
      "keys": {"p256dh": b64url(b"\x04" + b"1" * 64), "auth": "A" * 22}}, "endpoint"),
    ({"kind": "fcm", "token": "x" * 5000}, "token"),
    ({"kind": "fcm"}, "token"),
    ({"kind": "apns", "token": "zz" * 32}, "token"),
    ({"kind": "apns", "token": "ab" * 101}, "token"),
    ({"kind": "apns", "token": "ab" * 32, "environment": "staging"}, "environment"),
])
async def test_bad_registrations_are_400_invalid_with_the_field(client, deps, body, field):
    alice = await make_user(deps)
    resp = await client.post("/api/v1/push/subscriptions", json=body, headers=alice.headers)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid" and error["message"]
    assert error["details"]["field"] == field
    assert await PushSubscription.all().count() == 0


async def test_http_endpoints_only_on_push_insecure_hosts(client, deps, webpush):
    alice = await make_user(deps)
    ok = webpush.subscription("ok")  # http://127.0.0.1:… is listed
    assert (await client.post("/api/v1/push/subscriptions", json=ok,
                              headers=alice.headers)).status == 201
    other = {**ok, "endpoint": ok["endpoint"].replace("127.0.0.1", "localhost")}
    resp = await client.post("/api/v1/push/subscriptions", json=other, headers=alice.headers)
    assert resp.status == 400


async def test_anothers_subscription_is_404_and_mine_is_deleted(client, deps, webpush):
    alice, bob = await make_user(deps), await make_user(deps)
    sub = await subscribe(client, alice, webpush.subscription("a"))
    url = f"/api/v1/push/subscriptions/{sub['id']}"
    assert (await client.delete(url, headers=bob.headers)).status == 404
    listed = await (await client.get("/api/v1/push/subscriptions", headers=bob.headers)).json()
    assert listed["subscriptions"] == []
    assert (await client.delete("/api/v1/push/subscriptions/nope",
                                headers=alice.headers)).status == 404
    assert (await client.delete(url, headers=alice.headers)).status == 204
    assert (await client.delete(url, headers=alice.headers)).status == 404


async def test_routes_need_a_session(client):
    for method, path in (("GET", "/api/v1/push/vapid-public-key"),
                         ("GET", "/api/v1/push/subscriptions"),
                         ("POST", "/api/v1/push/subscriptions")):
        assert (await client.request(method, path)).status == 401


async def test_vapid_public_key_is_the_servers(client, deps):
    alice = await make_user(deps)
    resp = await client.get("/api/v1/push/vapid-public-key", headers=alice.headers)
    assert (await resp.json()) == {"key": vapid_public()}


async def test_signing_out_or_ending_the_session_deletes_its_subscriptions(client, deps,
                                                                          webpush):
    alice = await make_user(deps)
    other = await client.post("/api/v1/auth/login", json={"login": alice.email,
                                                          "password": alice.password})
    other_headers = {"Authorization": f"Bearer {(await other.json())['access_token']}"}
    await subscribe(client, alice, webpush.subscription("phone"))
    resp = await client.post("/api/v1/push/subscriptions", json=webpush.subscription("laptop"),
                             headers=other_headers)
    assert resp.status == 201
    assert await PushSubscription.filter(user_id=alice.user_id).count() == 2
    # Sign the laptop out from the phone: only the laptop's device goes.
    sessions = (await (await client.get("/api/v1/auth/sessions",
                                        headers=alice.headers)).json())["sessions"]
    laptop = next(s for s in sessions if not s["current"])
    assert (await client.delete(f"/api/v1/auth/sessions/{laptop['id']}",
                                headers=alice.headers)).status == 204
    assert await PushSubscription.filter(user_id=alice.user_id).count() == 1
    assert (await client.post("/api/v1/auth/logout", headers=alice.headers)).status == 204
    assert await PushSubscription.filter(user_id=alice.user_id).count() == 0


async def test_push_settings_are_validated_and_stored(client, deps):
    alice = await make_user(deps)
    resp = await client.patch("/api/v1/me/settings", headers=alice.headers, json={
        "push_enabled": False, "push_preview": "sender", "dnd_start": "22:00",
        "dnd_end": "07:30", "timezone": "Asia/Shanghai"})
    assert resp.status == 200, await resp.text()
    got = (await resp.json())["settings"]
    assert got["push_preview"] == "sender" and got["dnd_end"] == "07:30"
    assert got["timezone"] == "Asia/Shanghai" and got["push_enabled"] is False
    for bad in ({"push_preview": "all"}, {"dnd_start": "25:00"}, {"dnd_end": "7"},
                {"timezone": "Mars/Olympus"}):
        r = await client.patch("/api/v1/me/settings", headers=alice.headers, json=bad)
        assert r.status == 400, bad
        assert (await r.json())["error"]["details"]["field"] == next(iter(bad))
    cleared = await client.patch("/api/v1/me/settings", headers=alice.headers,
                                 json={"dnd_start": "", "dnd_end": ""})
    assert (await cleared.json())["settings"]["dnd_start"] is None


# --- Web Push delivery ---------------------------------------------------------


@pytest.mark.parametrize("preview", ["full", "sender", "none"])
async def test_webpush_delivers_what_the_preview_mode_allows(client, deps, webpush, preview):
    alice, bob, cid = await pair(deps)
    await client.patch("/api/v1/me/settings", headers=bob.headers,
                       json={"push_preview": preview})
    await subscribe(client, bob, webpush.subscription("bob"))
    sent = await send(deps, alice, cid, "the launch code is 0000")
    await drained(deps)
    got = (await webpush.wait_for(1))[0]
    assert webpush.errors == []
    p = got["payload"]
    assert p["type"] == "message" and p["tag"] == cid
    assert p["conversation_id"] == cid and p["message_id"] == sent["id"]
    assert got["topic"] == cid.replace("-", "") and got["ttl"] > 0
    assert got["claims"]["sub"] == "mailto:admin@localhost"
    assert p["badge"] == 1
    if preview == "full":
        assert p["title"] == "Alice" and p["body"] == "the launch code is 0000"
    elif preview == "sender":
        assert p["title"] == "Alice" and "launch" not in json.dumps(p)
    else:
        assert p["title"] == "Parley" and p["body"] == "You have a new message"
        assert "Alice" not in json.dumps(p) and "launch" not in json.dumps(p)
    if preview != "full":  # the text is not even stored for later
        rows = await PushOutbox.all().values_list("payload", flat=True)
        assert "launch" not in json.dumps(rows)


async def test_a_distant_push_service_does_not_slow_delivery_beside_sockets(
        client, deps, webpush, base_url):
    """While the process serves sockets the worker takes a share of the process's
    CPU time, not of the clock: waiting on a push service costs the sockets
    nothing. 24 devices 0.5 s away are reached in about three round trips;
    paced by the clock at a tenth of the loop, it would take about 15 s."""
    alice, bob, cid = await pair(deps)
    for i in range(24):
        await subscribe(client, bob, webpush.subscription(f"bob{i}"))
    webpush.latency = 0.5
    sio = await connect(base_url, alice.access_token)
    try:
        assert deps.extras["sockets_connected"]() == 1  # the worker paces itself
        await send(deps, alice, cid, "to every device")
        got = await webpush.wait_for(24, timeout=8)
        assert sorted(g["name"] for g in got) == sorted(f"bob{i}" for i in range(24))
        assert webpush.errors == []
    finally:
        await sio.disconnect()


async def test_a_foreground_session_holds_pushes_until_it_goes_background(client, deps,
                                                                         webpush, base_url):
    alice, bob, cid = await pair(deps)
    await subscribe(client, bob, webpush.subscription("bob"))
    sio = await connect(base_url, bob.access_token)  # never said: foreground
    try:
        await send(deps, alice, cid, "while you look")
        await drained(deps)
        await asyncio.sleep(0.3)
        assert webpush.received == []
        assert (await call(sio, "client:state", {"state": "background"}))["ok"]
        await send(deps, alice, cid, "while you are away")
        await drained(deps)
        got = await webpush.wait_for(1)
        assert got[0]["payload"]["body"] == "while you are away"
        bad = await call(sio, "client:state", {"state": "asleep"})
        assert bad["ok"] is False and bad["error"]["code"] == "invalid"
        assert (await call(sio, "client:state", {"state": "foreground"}))["ok"]
        await send(deps, alice, cid, "back again")
        await drained(deps)
        await asyncio.sleep(0.3)
        assert len(webpush.received) == 1
    finally:
        await sio.disconnect()
    await send(deps, alice, cid, "gone offline")  # no socket at all: pushed
    await drained(deps)
    assert (await webpush.wait_for(2))[1]["payload"]["body"] == "[2 messages] gone offline"


async def test_muted_chat_is_silent_except_for_mentions_and_at_all(client, deps, webpush):
    owner, bob = await make_user(deps, "Owner"), await make_user(deps, "Bob")
    await make_contacts(deps, owner, bob)
    g = await groups.create_group(deps, owner.user_id, groups.CreateIn(
        name="Team", member_ids=[bob.user_id]))
    cid = g["id"]
    resp = await client.patch(f"/api/v1/conversations/{cid}", headers=bob.headers,
                              json={"muted": True})
    assert resp.status == 200, await resp.text()
    await subscribe(client, bob, webpush.subscription("bob"))
    await send(deps, owner, cid, "plain")
    await drained(deps)
    await asyncio.sleep(0.3)
    assert webpush.received == []
    await send(deps, owner, cid, "@Bob look", mentions=[bob.user_id])
    await drained(deps)
    got = await webpush.wait_for(1)
    assert got[0]["payload"]["title"] == "Team"
    assert got[0]["payload"]["body"] == "[Mentioned you] Owner: @Bob look"
    # The muted chat counts nowhere in the badge.
    assert got[0]["payload"]["badge"] == 0
    await send(deps, owner, cid, "@all meeting", mention_all=True)
    await drained(deps)
    got = await webpush.wait_for(2)
    assert got[1]["payload"]["body"].endswith("Owner: @all meeting")


async def test_dnd_in_the_users_time_zone_silences_even_mentions(client, deps, webpush):
    owner, bob = await make_user(deps, "Owner"), await make_user(deps, "Bob")
    await make_contacts(deps, owner, bob)
    g = await groups.create_group(deps, owner.user_id, groups.CreateIn(
        name="Team", member_ids=[bob.user_id]))
    from zoneinfo import ZoneInfo

    local = datetime.now(UTC).astimezone(ZoneInfo("Pacific/Kiritimati"))  # UTC+14
    start = (local - timedelta(minutes=30)).strftime("%H:%M")
    end = (local + timedelta(minutes=30)).strftime("%H:%M")
    await client.patch("/api/v1/me/settings", headers=bob.headers, json={
        "dnd_start": start, "dnd_end": end, "timezone": "Pacific/Kiritimati"})
    await subscribe(client, bob, webpush.subscription("bob"))
    await send(deps, owner, g["id"], "@Bob now", mentions=[bob.user_id])
    await drained(deps)
    await asyncio.sleep(0.3)
    assert webpush.received == []
    # The same hours read in UTC are not now: the time zone is what silenced it.
    await client.patch("/api/v1/me/settings", headers=bob.headers, json={"timezone": ""})
    await send(deps, owner, g["id"], "@Bob now", mentions=[bob.user_id])
    await drained(deps)
    assert len(await webpush.wait_for(1)) == 1


async def test_push_disabled_sends_nothing(client, deps, webpush):
    alice, bob, cid = await pair(deps)
    await client.patch("/api/v1/me/settings", headers=bob.headers, json={"push_enabled": False})
    await subscribe(client, bob, webpush.subscription("bob"))
    await send(deps, alice, cid, "hello")
    await drained(deps)
    await asyncio.sleep(0.3)
    assert webpush.received == [] and await PushOutbox.all().count() == 0


@pytest.mark.parametrize("settings_overrides", [
    {"push_insecure_hosts": "127.0.0.1", "vapid_private_key": VAPID_KEY,
     "push_coalesce_seconds": 2.0, "push_planner_interval": 0.25}])
async def test_a_burst_coalesces_into_one_notification_updated_in_place(client, deps,
                                                                       webpush):
    alice, bob, cid = await pair(deps)
    await subscribe(client, bob, webpush.subscription("bob"))
    await send(deps, alice, cid, "one")
    await drained(deps)
    first = (await webpush.wait_for(1))[0]["payload"]
    assert first["body"] == "one"
    for text in ("two", "three", "four"):
        await send(deps, alice, cid, text)
    await drained(deps)
    await asyncio.sleep(0.4)
    assert len(webpush.received) == 1  # inside the window: held back
    second = (await webpush.wait_for(2, timeout=8))[1]["payload"]
    assert second["tag"] == first["tag"]
    assert second["body"] == "[4 messages] four"
    assert second["badge"] == 4
    await asyncio.sleep(2.3)
    assert len(webpush.received) == 2  # one per window, nothing doubled


async def test_recall_replaces_the_notification_and_drops_the_text(client, deps, webpush):
    alice, bob, cid = await pair(deps)
    await subscribe(client, bob, webpush.subscription("bob"))
    sent = await send(deps, alice, cid, "oops, wrong chat")
    await drained(deps)
    await webpush.wait_for(1)
    await messaging.recall(deps, alice.user_id, messaging.MessageRef(message_id=sent["id"]))
    await drained(deps)
    follow = (await webpush.wait_for(2))[1]["payload"]
    assert follow["type"] == "recall" and follow["tag"] == cid
    assert follow["message_id"] == sent["id"] and "oops" not in json.dumps(follow)
    rows = await PushOutbox.all().values_list("payload", flat=True)
    assert "oops" not in json.dumps(rows)


async def test_reading_elsewhere_sends_a_silent_badge_drop(client, deps, webpush):
    alice, bob, cid = await pair(deps)
    await subscribe(client, bob, webpush.subscription("bob"))
    first = await send(deps, alice, cid, "a")
    await drained(deps)
    await webpush.wait_for(1)
    second = await send(deps, alice, cid, "b")
    await drained(deps)
    assert (await webpush.wait_for(2))[1]["payload"]["badge"] == 2
    await messaging.mark_read(deps, bob.user_id, messaging.ReadIn(
        conversation_id=cid, seq=int(second["seq"])))
    await drained(deps)
    badge = (await webpush.wait_for(3))[2]
    assert badge["payload"]["type"] == "badge" and badge["payload"]["badge"] == 0
    assert badge["payload"]["title"] == "" and badge["urgency"] == "normal"
    # Reading again changes nothing: no second silent push.
    await messaging.mark_read(deps, bob.user_id, messaging.ReadIn(
        conversation_id=cid, seq=int(first["seq"])))
    await drained(deps)
    await asyncio.sleep(0.4)
    assert len(webpush.received) == 3


async def test_a_gone_endpoint_deletes_the_subscription(client, deps, webpush):
    alice, bob, cid = await pair(deps)
    await subscribe(client, bob, webpush.subscription("bob"))
    webpush.fail_next(410)
    await send(deps, alice, cid, "hello?")
    await drained(deps)
    for _ in range(100):
        if not await PushSubscription.filter(user_id=bob.user_id).exists():
            break
        await asyncio.sleep(0.05)
    assert not await PushSubscription.filter(user_id=bob.user_id).exists()
    assert webpush.statuses == [410]
    metrics = deps.extras["metrics"].render().decode()
    assert 'parley_push_subscriptions_removed_total{reason="gone"} 1.0' in metrics


async def test_503_with_retry_after_is_retried_no_sooner(client, deps, webpush):
    alice, bob, cid = await pair(deps)
    await subscribe(client, bob, webpush.subscription("bob"))
    webpush.fail_next(503, {"Retry-After": "3"})
    await send(deps, alice, cid, "again")
    await drained(deps)
    for _ in range(100):
        if webpush.statuses:
            break
        await asyncio.sleep(0.05)
    failed_at = asyncio.get_running_loop().time()
    got = await webpush.wait_for(1, timeout=10)
    waited = asyncio.get_running_loop().time() - failed_at
    assert waited >= 2.5, waited  # Retry-After beats the 2 s first backoff
    assert webpush.statuses == [503, 201] and got[0]["payload"]["body"] == "again"
    metrics = await metrics_with(deps, 'parley_push_sent_total{kind="message"} 1.0')
    assert "parley_push_retried_total 1.0" in metrics
    assert 'parley_push_failed_total{reason="outage"} 1.0' in metrics
    assert 'parley_push_sent_total{kind="message"} 1.0' in metrics


async def test_expired_pushes_are_dropped(client, deps, webpush):
    alice, bob, cid = await pair(deps)
    await subscribe(client, bob, webpush.subscription("bob"))
    worker = deps.extras["push_worker"]
    await worker.close()  # hold delivery back: the test runs the worker by hand
    await send(deps, alice, cid, "stale")
    await drained(deps)
    past = datetime.now(UTC) - timedelta(seconds=1)
    await run_sql("UPDATE push_outbox SET expires_at = $1, due_at = $2, claimed_until = NULL",
                  [past, past])
    assert await worker.run_once() == 1
    assert not await PushOutbox.filter(pending=True).exists()
    assert webpush.received == []
    assert 'parley_push_failed_total{reason="expired"}' in \
        deps.extras["metrics"].render().decode()


async def test_keys_that_are_no_curve_point_drop_the_push_unsent(client, deps, webpush):
    alice, bob, cid = await pair(deps)
    body = webpush.subscription("bob")
    body["keys"]["p256dh"] = b64url(b"\x04" + b"\x01" * 64)  # the right length, off the curve
    await subscribe(client, bob, body)
    worker = deps.extras["push_worker"]
    await worker.close()  # the test runs the worker by hand
    await send(deps, alice, cid, "unreadable")
    await drained(deps)
    assert await worker.run_once() == 1
    assert not await PushOutbox.filter(pending=True).exists()  # dropped, not retried
    assert webpush.statuses == [] and webpush.errors == []  # nothing was posted
    metrics = deps.extras["metrics"].render().decode()
    assert 'parley_push_failed_total{reason="rejected"} 1.0' in metrics
    assert "parley_push_retried_total 0.0" in metrics


async def test_queued_pushes_survive_a_restart(settings, tmp_path, aiohttp_server, webpush):
    """A process that queued pushes (its worker never ran, or died holding a
    lease) stops; the next process on the database delivers them once."""
    first = create_app(settings.with_(push_workers=False), generate_schemas=True)
    srv = await aiohttp_server(first)
    await _truncate_all()
    deps = first[DEPS_KEY]
    alice, bob, cid = await pair(deps)
    carol = await make_user(deps, "Carol")
    await make_contacts(deps, alice, carol)
    conv2, _ = await convs.get_or_create_direct(deps, alice.user_id, carol.user_id)
    await PushSubscription.create(
        id=uuid.uuid4(), user_id=bob.user_id,
        session_id=(await bob_session(bob.user_id)), kind="webpush",
        address=webpush.subscription("bob")["endpoint"], address_hash="b" * 64,
        p256dh=webpush.keys["bob"].p256dh, auth=webpush.keys["bob"].auth)
    await PushSubscription.create(
        id=uuid.uuid4(), user_id=carol.user_id,
        session_id=(await bob_session(carol.user_id)), kind="webpush",
        address=webpush.subscription("carol")["endpoint"], address_hash="c" * 64,
        p256dh=webpush.keys["carol"].p256dh, auth=webpush.keys["carol"].auth)
    await send(deps, alice, cid, "for bob")
    await send(deps, alice, str(conv2.id), "for carol")
    await drained(deps)
    # Carol's row was claimed by a worker that then died: its lease is stale.
    stale = datetime.now(UTC) - timedelta(seconds=1)
    await run_sql("UPDATE push_outbox SET claimed_until = $1 WHERE user_id = $2::uuid",
                  [stale, uuid.UUID(carol.user_id)])
    await srv.close()
    assert webpush.received == []
    second = create_app(settings, generate_schemas=False)
    await aiohttp_server(second)
    got = await webpush.wait_for(2)
    assert sorted(g["payload"]["body"] for g in got) == ["for bob", "for carol"]
    await asyncio.sleep(1.2)
    assert len(webpush.received) == 2


async def metrics_with(deps, line: str) -> str:
    """The metrics text once `line` is in it (the worker records after the
    push service answered, so a moment after the stand-in saw the push)."""
    for _ in range(100):
        text = deps.extras["metrics"].render().decode()
        if line in text:
            return text
        await asyncio.sleep(0.05)
    return text


async def bob_session(user_id) -> str:
    from app.models.accounts import AuthSession

    return (await AuthSession.filter(user_id=user_id).first()).id


# --- FCM and APNs --------------------------------------------------------------


@pytest.fixture
async def fcm(tmp_path):
    service = FcmService(tmp_path)
    await service.start()
    yield service
    await service.close()


@pytest.fixture
async def apns(tmp_path):
    service = ApnsService(tmp_path)
    await service.start()
    yield service
    await service.close()


@pytest.fixture
async def mobile_app(database_url, tmp_path, aiohttp_server, fcm, apns):
    settings = make_settings(
        database_url, tmp_path, vapid_private_key=VAPID_KEY, push_coalesce_seconds=0.0,
        fcm_credentials_file=str(fcm.credentials_file), fcm_endpoint=fcm.origin,
        apns_key_file=str(apns.key_file), apns_key_id=apns.key_id,
        apns_team_id=apns.team_id, apns_topic=apns.topic,
        apns_endpoint=f"http://127.0.0.1:{apns.port}",
        apns_sandbox_endpoint=f"http://127.0.0.1:{apns.port}")
    srv = await aiohttp_server(create_app(settings, generate_schemas=True))
    await _truncate_all()
    return srv


async def test_fcm_v1_delivery_token_caching_and_unregistered(mobile_app, aiohttp_client, fcm):
    client = await aiohttp_client(mobile_app)
    deps = mobile_app.app[DEPS_KEY]
    alice, bob, cid = await pair(deps)
    await subscribe(client, bob, {"kind": "fcm", "token": "bob-device-token"})
    await send(deps, alice, cid, "hi over FCM")
    await drained(deps)
    await fcm.wait_for(1)
    await send(deps, alice, cid, "and again")
    await drained(deps)
    got = await fcm.wait_for(2)
    assert fcm.errors == []
    msg = got[0]
    assert msg["token"] == "bob-device-token"
    assert msg["notification"] == {"title": "Alice", "body": "hi over FCM"}
    assert msg["android"]["collapse_key"] == cid and msg["data"]["conversation_id"] == cid
    assert msg["android"]["priority"] == "high" and msg["data"]["badge"] == "1"
    assert fcm.exchanges == 1  # the access token is cached
    # A silent badge update is a data-only message.
    await messaging.mark_read(deps, bob.user_id, messaging.ReadIn(conversation_id=cid, seq=99))
    await drained(deps)
    badge = (await fcm.wait_for(3))[2]
    assert "notification" not in badge and badge["data"]["type"] == "badge"
    assert badge["data"]["badge"] == "0"
    fcm.unregistered.add("bob-device-token")
    await send(deps, alice, cid, "anyone?")
    await drained(deps)
    for _ in range(100):
        if not await PushSubscription.filter(user_id=bob.user_id).exists():
            break
        await asyncio.sleep(0.05)
    assert not await PushSubscription.filter(user_id=bob.user_id).exists()


async def test_apns_http2_delivery_headers_and_gone_device(mobile_app, aiohttp_client, apns):
    client = await aiohttp_client(mobile_app)
    deps = mobile_app.app[DEPS_KEY]
    alice, bob, cid = await pair(deps)
    token = "0f" * 32
    await subscribe(client, bob, {"kind": "apns", "token": token, "environment": "sandbox"})
    sent = await send(deps, alice, cid, "hi over APNs")
    await drained(deps)
    got = (await apns.wait_for(1))[0]
    assert apns.errors == [] and apns.http_versions == ["2"]
    assert got["device"] == token
    h = got["headers"]
    assert h["apns-push-type"] == "alert" and h["apns-collapse-id"] == cid
    assert h["apns-topic"] == apns.topic
    aps = got["payload"]["aps"]
    assert aps["alert"] == {"title": "Alice", "body": "hi over APNs"} and aps["badge"] == 1
    assert got["payload"]["message_id"] == sent["id"]
    await messaging.mark_read(deps, bob.user_id, messaging.ReadIn(conversation_id=cid, seq=99))
    await drained(deps)
    silent = (await apns.wait_for(2))[1]
    assert silent["headers"]["apns-push-type"] == "background"
    assert silent["payload"]["aps"] == {"content-available": 1, "badge": 0}
    # An APNs answer of BadDeviceToken (400) deletes the device too.
    apns.fail_next(400, body=b'{"reason": "BadDeviceToken"}')
    await send(deps, alice, cid, "still there?")
    await drained(deps)
    for _ in range(100):
        if not await PushSubscription.filter(user_id=bob.user_id).exists():
            break
        await asyncio.sleep(0.05)
    assert not await PushSubscription.filter(user_id=bob.user_id).exists()


async def test_messages_queued_together_make_one_push_each_counting_theirs(client, deps,
                                                                          webpush):
    owner, bob, carol = [await make_user(deps, n) for n in ("Owner", "Bob", "Carol")]
    for p in (bob, carol):
        await make_contacts(deps, owner, p)
    g = await groups.create_group(deps, owner.user_id, groups.CreateIn(
        name="Team", member_ids=[bob.user_id, carol.user_id]))
    cid = g["id"]
    await subscribe(client, bob, webpush.subscription("bob"))
    await subscribe(client, carol, webpush.subscription("carol"))
    planner = deps.extras.pop("push_planner")  # the sends hand nothing over…
    try:
        sent = [(await send(deps, who, cid, text), who) for who, text in
                ((owner, "first"), (bob, "second"), (owner, "third"))]
    finally:
        deps.extras["push_planner"] = planner
    members = (owner.user_id, bob.user_id, carol.user_id)
    # …so that the planner gets the three as one batch, as it does under load.
    await planner.plan([("message", {
        "message_id": int(m["id"]), "conversation_id": cid, "sender_id": who.user_id,
        "recipients": members, "type": "text", "text": m["text"], "data": {},
        "seq": m["seq"]}) for m, who in sent])
    got = {g["name"]: g["payload"] for g in await webpush.wait_for(2)}
    assert got["carol"]["body"] == "[3 messages] Owner: third"
    assert got["bob"]["body"] == "[2 messages] Owner: third"  # not his own
    assert got["bob"]["message_id"] == sent[2][0]["id"]
    await asyncio.sleep(0.5)
    assert len(webpush.received) == 2


def message_event(m: dict, sender, recipients) -> tuple[str, dict]:
    return ("message", {
        "message_id": int(m["id"]), "conversation_id": m["conversation_id"],
        "sender_id": sender.user_id, "recipients": tuple(p.user_id for p in recipients),
        "type": "text", "text": m["text"], "data": {}, "seq": m["seq"]})


def read_event(reader, cid: str) -> tuple[str, dict]:
    return ("read", {"user_id": reader.user_id, "conversation_id": cid})


async def sent_unplanned(deps, *sends) -> list[dict]:
    """Messages stored without their events reaching the planner: the test
    hands them over in one batch, as it goes under load."""
    planner = deps.extras.pop("push_planner")
    try:
        return [await send(deps, who, cid, text) for who, cid, text in sends]
    finally:
        deps.extras["push_planner"] = planner


async def statements_to_plan(planner, events) -> int:
    """Statements one plan() of `events` sends (the push worker's own polls,
    in tasks of their own, are not counted)."""
    with statements_of_this_task() as tally:
        await planner.plan(events)
    return tally.sent


async def test_a_batch_over_many_chats_reads_their_audiences_a_slice_at_a_time(
        client, deps, webpush, monkeypatch):
    """Five chats in one batch, audiences read two chats per statement: three
    statements, not five; each device is told of its own chat only."""

    monkeypatch.setattr(push_outbox, "AUDIENCE_CHATS", 2)
    pairs = [await pair(deps) for _ in range(5)]
    for i in (1, 3):  # the second and fourth chats' Bobs have a device
        await subscribe(client, pairs[i][1], webpush.subscription(f"bob{i}"))
    sent = await sent_unplanned(deps, *((alice, cid, f"hello {i}")
                                        for i, (alice, _bob, cid) in enumerate(pairs)))
    events = [message_event(m, alice, [alice, bob])
              for m, (alice, bob, _cid) in zip(sent, pairs, strict=True)]
    planner = deps.extras["push_planner"]
    await planner.plan(events)
    got = {g["name"]: g["payload"] for g in await webpush.wait_for(2)}
    assert got["bob1"]["body"].endswith("hello 1")
    assert got["bob3"]["body"].endswith("hello 3")
    await PushSubscription.filter(user_id__in=[pairs[1][1].user_id,
                                               pairs[3][1].user_id]).delete()
    # With no device left: the audiences, two chats a statement, and the checkpoint.
    assert await statements_to_plan(planner, events) == 3 + 1


async def test_reads_by_people_without_a_device_cost_one_statement_and_split_no_run(
        deps, webpush):
    (a1, b1, c1), (a2, b2, c2) = await pair(deps), await pair(deps)
    m1, m2, m3 = await sent_unplanned(deps, (a1, c1, "one"), (a2, c2, "two"),
                                      (a1, c1, "three"))
    events = [message_event(m1, a1, [b1]), read_event(b1, c1),
              message_event(m2, a2, [b2]), read_event(b2, c2),
              message_event(m3, a1, [b1])]
    # Who has a device, both chats' audiences, the checkpoint (8 when each read
    # cost two statements and split the batch into three runs).
    assert await statements_to_plan(deps.extras["push_planner"], events) == 3


async def test_a_read_still_comes_after_the_messages_of_its_chat_before_it(
        client, deps, webpush):
    alice, bob, cid = await pair(deps)
    await subscribe(client, bob, webpush.subscription("bob"))
    planner = deps.extras["push_planner"]
    [first] = await sent_unplanned(deps, (alice, cid, "read at once"))
    await planner.plan([message_event(first, alice, [bob]), read_event(bob, cid)])
    await drained(deps)
    await asyncio.sleep(0.5)
    assert webpush.received == []  # read before it was pushed: nothing to tell
    [second] = await sent_unplanned(deps, (alice, cid, "after the read"))
    await planner.plan([read_event(bob, cid), message_event(second, alice, [bob])])
    [got] = await webpush.wait_for(1)
    assert got["payload"]["body"].endswith("after the read")


async def test_a_planner_a_full_batch_behind_goes_on_without_waiting_for_its_tick(deps):
    """Events that come faster than a batch per tick are planned batch after
    batch; only a remainder smaller than a batch waits for the tick to gather."""
    from app.services.push_outbox import PLANNER_BATCH, Planner

    planner = Planner(deps)
    planner.recovered = True
    planner.tick = 60.0
    chats = [str(uuid.uuid4()) for _ in range(10)]
    sender, other = str(uuid.uuid4()), str(uuid.uuid4())
    total = 2 * PLANNER_BATCH + PLANNER_BATCH // 2
    for i in range(total):
        planner.submit(("message", {
            "message_id": i + 1, "conversation_id": chats[i % len(chats)],
            "sender_id": sender, "recipients": (sender, other), "type": "text",
            "text": f"m{i}", "data": {}, "seq": i // len(chats) + 1}))
    try:
        await until(lambda: len(planner.queue) <= PLANNER_BATCH // 2,
                    "two batches planned without the tick between them")
        await asyncio.sleep(0.5)
        assert len(planner.queue) == PLANNER_BATCH // 2
    finally:
        await planner.close(timeout=0.1)


async def test_start_up_replans_what_the_planner_lost_once_and_only_if_still_news(
        client, deps, webpush):
    """Events a planner held when its process died (here: never handed over)
    are planned by the next planner's recovery: not when the message was read
    or recalled meanwhile, and never twice."""
    from app.services.push_outbox import Planner

    alice = await make_user(deps, "Alice")
    people = {n: await make_user(deps, n) for n in ("Bob", "Carol", "Dave")}
    chats = {}
    for n, p in people.items():
        await make_contacts(deps, alice, p)
        chats[n] = str((await convs.get_or_create_direct(deps, alice.user_id, p.user_id))[0].id)
        await subscribe(client, p, webpush.subscription(n.lower()))
    await send(deps, alice, chats["Dave"], "planned live")
    await drained(deps)
    assert [g["payload"]["body"] for g in await webpush.wait_for(1)] == ["planned live"]
    planner = deps.extras.pop("push_planner")  # the sends' events are lost…
    try:
        read = await send(deps, alice, chats["Bob"], "read meanwhile")
        recalled = await send(deps, alice, chats["Carol"], "recalled meanwhile")
        await send(deps, alice, chats["Dave"], "lost in the crash")
        await messaging.mark_read(deps, people["Bob"].user_id, messaging.ReadIn(
            conversation_id=chats["Bob"], seq=int(read["seq"])))
        await messaging.recall(deps, alice.user_id,
                               messaging.MessageRef(message_id=recalled["id"]))
    finally:
        deps.extras["push_planner"] = planner
    assert not await PushOutbox.filter(thread__in=[chats["Bob"], chats["Carol"]]).exists()
    worker = deps.extras["push_worker"]
    assert await Planner(deps, worker).recover() >= 3  # …and the next start-up finds them
    got = await webpush.wait_for(2)
    assert got[1]["name"] == "dave" and got[1]["payload"]["body"].endswith("lost in the crash")
    assert await Planner(deps, worker).recover() >= 3  # once more: nothing new is owed
    await asyncio.sleep(0.6)
    assert [g["name"] for g in webpush.received] == ["dave", "dave"]


def test_vapid_key_is_generated_into_var_once(tmp_path):
    from app.config import load_settings
    from app.pushers import build_providers

    settings = load_settings(environ={}, secret_key="x" * 40, vapid_private_key="")
    first = build_providers(settings, var_dir=tmp_path)["webpush"]
    again = build_providers(settings, var_dir=tmp_path)["webpush"]
    assert (tmp_path / "vapid_private_key").stat().st_mode & 0o777 == 0o600
    assert first.public_key == again.public_key and len(first.public_key) == 87
    other = build_providers(settings.with_(vapid_private_key=VAPID_KEY))["webpush"]
    assert other.public_key == vapid_public()
    assert set(build_providers(settings, var_dir=tmp_path)) == {"webpush"}  # FCM/APNs unset
