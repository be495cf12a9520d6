"""Rate limiters: fixed windows in memory, and in Redis shared between processes
(counted in batches), failing open to memory when Redis is gone."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
import redis.asyncio as aioredis

from app.errors import RateLimited
from app.metrics import Metrics
from app.ratelimit import Limit, MemoryRateLimiter, RedisRateLimiter
from tests.cluster_helpers import RedisServer

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
needs_redis = pytest.mark.skipif(not TEST_REDIS_URL, reason="needs TEST_REDIS_URL")


async def outcomes(limiter, key: str, limit: Limit, n: int) -> list[bool]:
    async def one():
        try:
            await limiter.hit(key, limit)
            return True
        except RateLimited:
            return False

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_memory_limiter_window():
    limiter = MemoryRateLimiter()
    assert await outcomes(limiter, "k", Limit(3, 60), 5) == [True] * 3 + [False] * 2
    await limiter.reset("k")
    assert await outcomes(limiter, "k", Limit(3, 60), 1) == [True]


@needs_redis
async def test_redis_limit_is_exact_across_processes_and_batches():
    """Two limiters (two processes) on one Redis: concurrent hits arrive in
    batches, yet exactly `count` pass, the first ones of each limiter first."""
    a_client = aioredis.from_url(TEST_REDIS_URL)
    b_client = aioredis.from_url(TEST_REDIS_URL)
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    a = RedisRateLimiter(a_client, prefix)
    b = RedisRateLimiter(b_client, prefix)
    limit = Limit(25, 60)
    try:
        got_a, got_b = await asyncio.gather(outcomes(a, "send:x", limit, 20),
                                            outcomes(b, "send:x", limit, 20))
        assert sum(got_a) + sum(got_b) == 25
        # Within one limiter the earlier hits get the lower counts.
        for got in (got_a, got_b):
            assert got == sorted(got, reverse=True)
        # Other keys are counted on their own, in the same batches.
        assert await outcomes(a, "send:y", limit, 3) == [True] * 3
        ttl = await a_client.pttl(a._key("send:x"))
        assert 0 < ttl <= 60_000
        with pytest.raises(RateLimited) as err:
            await a.hit("send:x", limit)
        assert 0 < err.value.details["retry_after"] <= 60
        await a.reset("send:x")
        assert await outcomes(b, "send:x", limit, 1) == [True]
    finally:
        await a_client.delete(a._key("send:x"), a._key("send:y"))
        await a_client.aclose()
        await b_client.aclose()


@needs_redis
async def test_redis_window_restarts_after_expiry():
    client = aioredis.from_url(TEST_REDIS_URL)
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    limiter = RedisRateLimiter(client, prefix)
    try:
        assert await outcomes(limiter, "k", Limit(2, 1), 3) == [True, True, False]
        await asyncio.sleep(1.1)
        assert await outcomes(limiter, "k", Limit(2, 1), 2) == [True, True]
    finally:
        await client.delete(limiter._key("k"))
        await client.aclose()


async def test_redis_down_fails_open_to_memory_quickly(tmp_path):
    """Nothing listens: every hit is answered (in memory, the limit still holds
    per process) within the timeout, and counted as a fallback."""
    server = RedisServer(tmp_path)  # only for its free port: never started
    client = aioredis.from_url(server.url, socket_connect_timeout=0.2)
    metrics = Metrics()
    limiter = RedisRateLimiter(client, timeout=0.5, metrics=metrics)
    try:
        t = time.monotonic()
        got = await outcomes(limiter, "k", Limit(3, 60), 5)
        assert got == [True] * 3 + [False] * 2
        got = await outcomes(limiter, "k", Limit(3, 60), 1)  # Redis left alone now
        assert got == [False]
        assert time.monotonic() - t < 1.5
        assert metrics.ratelimit_fallbacks._value.get() == 6
    finally:
        await client.aclose()


async def _costs(limiter, key: str, limit: Limit, costs: list[int]) -> list[bool]:
    async def one(c):
        try:
            await limiter.hit(key, limit, cost=c)
            return True
        except RateLimited:
            return False

    return list(await asyncio.gather(*(one(c) for c in costs)))


async def test_memory_limiter_counts_costs_and_keeps_day_windows(monkeypatch):
    limiter = MemoryRateLimiter()
    day = Limit(1000, 86400)
    assert await _costs(limiter, "bytes", day, [400, 500, 200, 50]) == [True, True, False, False]
    # The sweep keeps a window until it ends, however long it is.
    import types

    from app import ratelimit

    real = time.monotonic()
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(monotonic=lambda: real + 7200))
    assert await _costs(limiter, "bytes", day, [1]) == [False]
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(monotonic=lambda: real + 86401))
    assert await _costs(limiter, "bytes", day, [999]) == [True]


@needs_redis
async def test_redis_limiter_counts_costs_in_one_batch():
    client = aioredis.from_url(TEST_REDIS_URL)
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    limiter = RedisRateLimiter(client, prefix)
    try:
        got = await _costs(limiter, "bytes", Limit(1000, 86400), [400, 500, 200, 50])
        assert got == [True, True, False, False]
        assert int(await client.get(limiter._key("bytes"))) == 1150
    finally:
        await client.delete(limiter._key("bytes"))
        await client.aclose()
