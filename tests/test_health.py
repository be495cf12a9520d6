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
