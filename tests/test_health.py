"""Liveness and readiness probes."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import TEST_REDIS_URL


def closed_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_healthz_is_200_without_touching_anything(client):
    r = await client.get("/healthz")
    assert r.status == 200
    assert await r.json() == {"status": "ok"}


async def test_readyz_checks_the_database(client):
    r = await client.get("/readyz")
    assert r.status == 200
    assert await r.json() == {"status": "ok", "checks": {"database": "ok"}}


@pytest.mark.parametrize("settings_overrides", [{"redis_url": f"redis://127.0.0.1:{closed_port()}/0"}])
async def test_readyz_is_503_when_redis_is_down(client):
    # The server starts although Redis is unreachable (it connects lazily)...
    r = await client.get("/healthz")
    assert r.status == 200
    # ...but it is not ready.
    r = await client.get("/readyz")
    assert r.status == 503
    body = await r.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error")


@pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL not set")
@pytest.mark.parametrize("settings_overrides", [{"redis_url": TEST_REDIS_URL}])
async def test_readyz_with_redis(client):
    r = await client.get("/readyz")
    assert r.status == 200, await r.text()
    assert await r.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_metrics_count_sockets_sends_and_deliveries(client, deps, base_url):
    from app.services import conversations as convs
    from tests.factories import call, connect, make_contacts, make_user

    alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
    await make_contacts(deps, alice, bob)
    conv, _ = await convs.get_or_create_direct(deps, alice.user_id, bob.user_id)
    a1, a2 = await connect(base_url, alice.access_token), await connect(base_url, alice.access_token)
    b1 = await connect(base_url, bob.access_token)
    try:
        ack = await call(a1, "message:send", {"conversation_id": str(conv.id),
                                              "client_msg_id": "m1", "text": "hi"})
        assert ack["ok"], ack
        await b1.log.wait_for("message:new")
        await a2.log.wait_for("message:new")
        body = await (await client.get("/metrics")).text()
        assert metric(body, "parley_connected_sockets") == 3
        assert metric(body, "parley_messages_sent_total") == 1
        # Bob's socket and Alice's other device; never the sending socket.
        assert metric(body, "parley_messages_delivered_total") == 2
        assert 'parley_ack_seconds_count{event="message:send"} 1.0' in body
    finally:
        for s in (a1, a2, b1):
            await s.disconnect()


async def test_in_flight_events_are_read_when_scraped():
    from prometheus_client import generate_latest

    from app.metrics import Metrics
    from app.realtime.chat import ChatNamespace

    metrics = Metrics()
    ns = ChatNamespace(None, metrics)
    ns.inflight = 3
    assert b"parley_inflight_events 3.0" in generate_latest(metrics.registry)


async def test_metrics_count_database_statements(client, deps):
    from tortoise import Tortoise

    from app.models.accounts import User
    from tests.factories import make_user

    alice = await make_user(deps, "alice")
    # The background workers (search merger, push outbox) also query now and
    # then; one of their statements may land between the two reads, so the
    # count must move by exactly 2 in one of three tries.
    moved = []
    for _ in range(3):
        body = await (await client.get("/metrics")).text()
        before = metric(body, "parley_db_statements_total")
        # A model query, not accounts.user_by_id: that one is served from the
        # read cache from the second try on and would send nothing.
        await User.get(id=alice.user_id)  # one SELECT through the ORM
        await Tortoise.get_connection("default").execute_query("SELECT 1")  # one more, raw
        body = await (await client.get("/metrics")).text()
        moved.append(metric(body, "parley_db_statements_total") - before)
        if moved[-1] == 2:
            break
    assert moved[-1] == 2, moved


async def test_metrics_show_the_read_cache(client, deps):
    from tests.factories import make_user

    alice = await make_user(deps, "alice")
    for _ in range(2):
        r = await client.get("/api/v1/me", headers=alice.headers)
        assert r.status == 200
    body = await (await client.get("/metrics")).text()
    assert metric(body, 'parley_cache_hits_total{cache="session"}') >= 1
    assert metric(body, 'parley_cache_misses_total{cache="session"}') >= 1
    assert metric(body, 'parley_cache_entries{cache="user"}') >= 1


async def test_metrics_count_requests_by_route_template_never_by_path(client, deps):
    from tests.factories import make_user

    alice = await make_user(deps, "alice")
    assert (await client.get("/api/v1/me", headers=alice.headers)).status == 200
    assert (await client.get("/api/v1/me")).status == 401
    # A client chooses the path and the method: neither becomes a label value.
    assert (await client.get("/api/v1/no-such-route-x7q")).status == 404
    assert (await client.request("TRACE", "/api/v1/me", headers=alice.headers)).status == 405
    gone = "/api/v1/conversations/00000000-0000-4000-8000-000000000000"
    assert (await client.get(gone, headers=alice.headers)).status == 404

    body = await (await client.get("/metrics")).text()
    me = 'parley_http_requests_total{method="%s",route="/api/v1/me",status="%s"}'
    assert metric(body, me % ("GET", "200")) == 1
    assert metric(body, me % ("GET", "401")) == 1
    unmatched = 'parley_http_requests_total{method="%s",route="unmatched",status="%s"}'
    assert metric(body, unmatched % ("GET", "404")) == 1
    assert metric(body, unmatched % ("other", "405")) == 1
    assert metric(body, 'parley_http_requests_total{method="GET",'
                        'route="/api/v1/conversations/{conversation_id}",status="404"}') == 1
    assert metric(body, 'parley_http_request_seconds_count{route="/api/v1/me"}') == 2
    assert "no-such-route-x7q" not in body and "TRACE" not in body
    assert "00000000-0000-4000" not in body
