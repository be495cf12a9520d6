"""Rate limiters: fixed windows in memory, and in Redis shared between processes
(counted in batches), failing open to memory when Redis is gone."""

from __future__ import annotations

import asyncio
import logging
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


async def test_a_redis_outage_is_told_once_and_so_is_its_end(tmp_path, caplog):
    """Redis is tried again every `retry_after` and fails each time: the log
    says so once, and says when the limiter counts in Redis again."""
    caplog.set_level(logging.INFO, "parley.ratelimit")
    server = RedisServer(tmp_path)  # not started yet: nothing listens
    client = aioredis.from_url(server.url, socket_connect_timeout=0.2)
    limiter = RedisRateLimiter(client, timeout=0.5, retry_after=0.1)
    try:
        for _ in range(3):
            assert await outcomes(limiter, "k", Limit(100, 60), 5) == [True] * 5
            await asyncio.sleep(0.15)  # past retry_after: the next hit tries Redis
        tries = limiter._outage.failures
        assert tries >= 3
        await server.start()
        assert await outcomes(limiter, "k", Limit(100, 60), 1) == [True]
        said = [(r.levelname, r.getMessage()) for r in caplog.records]
        *failed, back = said
        # Each kind of failure once (refused, or a timeout on a slow machine).
        assert failed and len(set(failed)) == len(failed) < tries, said
        assert all(level == "WARNING" and m.startswith("rate limiter: Redis failed (")
                   and m.endswith("); counting in memory") for level, m in failed), said
        assert back[0] == "INFO" and back[1].startswith(
            "rate limiter: Redis works again after "), said
    finally:
        server.stop()
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


async def shared_outcomes(limiter, key: str, limit: Limit, n: int) -> list[bool]:
    got = []
    for _ in range(n):
        try:
            await limiter.hit(key, limit, exact=False)
            got.append(True)
        except RateLimited:
            got.append(False)
    return got


@needs_redis
async def test_shared_later_hits_wait_for_no_round_trip_and_learn_the_other_processes():
    """exact=False: a process's own hits are judged exactly at once, Redis hears
    of them at the next exchange, and another process judges on what it learnt
    at its last one."""
    client = aioredis.from_url(TEST_REDIS_URL)
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    # Exchanges only when the test says (share()), not on their own.
    a = RedisRateLimiter(client, prefix, share_every=3600)
    b = RedisRateLimiter(client, prefix, share_every=3600)
    limit = Limit(25, 60)
    key = a._key("send:x")
    try:
        assert await shared_outcomes(a, "send:x", limit, 30) == [True] * 25 + [False] * 5
        assert await client.exists(key) == 0  # no round trip was waited for
        await a.share()
        assert int(await client.get(key)) == 30
        assert 0 < await client.pttl(key) <= 60_000
        # b has not exchanged yet: it knows only its own hit.
        assert await shared_outcomes(b, "send:x", limit, 1) == [True]
        await b.share()
        with pytest.raises(RateLimited) as err:
            await b.hit("send:x", limit, exact=False)
        assert 0 < err.value.details["retry_after"] <= 60
        # Exact hits see every counted hit at once.
        with pytest.raises(RateLimited):
            await a.hit("send:x", limit)
    finally:
        await a.aclose()
        await b.aclose()
        await client.delete(key)
        await client.aclose()


@needs_redis
async def test_shared_later_hits_reach_redis_within_the_exchange_interval():
    client = aioredis.from_url(TEST_REDIS_URL)
    limiter = RedisRateLimiter(client, f"test:rl:{uuid.uuid4().hex}:", share_every=0.05)
    key = limiter._key("send:y")
    try:
        assert await shared_outcomes(limiter, "send:y", Limit(10, 60), 3) == [True] * 3
        deadline = time.monotonic() + 5
        while await client.get(key) is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        assert int(await client.get(key)) == 3
        # Learnt back: 7 more fit in the window, no more.
        await asyncio.sleep(0.1)
        assert await shared_outcomes(limiter, "send:y", Limit(10, 60), 8) == [True] * 7 + [False]
    finally:
        await limiter.aclose()
        await client.delete(key)
        await client.aclose()


async def test_shared_later_hits_fail_open_when_redis_is_gone(tmp_path):
    """The exchange fails in the background: hits keep being answered at once,
    by this process's counts, and nothing is left unretrieved."""
    server = RedisServer(tmp_path)  # only for its free port: never started
    client = aioredis.from_url(server.url, socket_connect_timeout=0.2)
    limiter = RedisRateLimiter(client, timeout=0.5, share_every=0.02)
    try:
        t = time.monotonic()
        assert await shared_outcomes(limiter, "k", Limit(3, 60), 5) == [True] * 3 + [False] * 2
        deadline = time.monotonic() + 3
        while time.monotonic() >= limiter._down_until and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        assert limiter._down_until > time.monotonic(), "the failed exchange left Redis alone"
        # Counted in memory from here, as exact hits are while Redis is gone.
        assert await shared_outcomes(limiter, "k", Limit(3, 60), 4) == [True] * 3 + [False]
        assert time.monotonic() - t < 2.5
    finally:
        await limiter.aclose()
        await client.aclose()
