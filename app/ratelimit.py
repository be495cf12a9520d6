"""Rate limiting behind one small interface.

`RateLimiter.hit(key, limit)` counts one event and raises RateLimited when the
key is over its limit. The in-memory limiter suits one process; the Redis
limiter shares counts between processes and lets a dead process's counts expire.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from app.errors import RateLimited

log = logging.getLogger("parley.ratelimit")


@dataclass(frozen=True)
class Limit:
    count: int
    per_seconds: float

    @classmethod
    def parse(cls, spec: str) -> Limit:
        """'10/60' means 10 events per 60 seconds."""
        count, _, per = spec.partition("/")
        return cls(int(count), float(per or 1))


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: Limit) -> None: ...

    async def reset(self, key: str) -> None: ...


class MemoryRateLimiter:
    """Fixed-window counters; windows are per key, stale keys are swept lazily."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}
        self._next_sweep = 0.0

    async def hit(self, key: str, limit: Limit) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        start, count = self._windows.get(key, (now, 0))
        if now - start >= limit.per_seconds:
            start, count = now, 0
        count += 1
        self._windows[key] = (start, count)
        if count > limit.count:
            raise RateLimited(retry_after=limit.per_seconds - (now - start))

    async def reset(self, key: str) -> None:
        self._windows.pop(key, None)

    def _sweep(self, now: float) -> None:
        # Windows never exceed an hour here; drop anything older.
        self._windows = {k: v for k, v in self._windows.items() if now - v[0] < 3600}
        self._next_sweep = now + 60


class RedisRateLimiter:
    """Same fixed windows, counted in Redis with INCR + EXPIRE (atomic in a pipeline).

    Fails open: when Redis errs or answers slower than `timeout`, the check is
    made by an in-memory limiter of this process instead, and Redis is left
    alone for `retry_after` seconds. A Redis outage must not turn into failed
    sends; the limits are per process (looser) until Redis is back.
    """

    def __init__(self, redis, prefix: str = "parley:rl:", *, timeout: float = 0.5,
                 retry_after: float = 1.0, metrics=None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.timeout = timeout
        self.retry_after = retry_after
        self.metrics = metrics
        self.fallback = MemoryRateLimiter()
        self._down_until = 0.0
        self._last_log = 0.0

    def _failed(self, exc: BaseException | None) -> None:
        now = time.monotonic()
        if exc is not None:
            self._down_until = now + self.retry_after
            if now - self._last_log >= 5:
                self._last_log = now
                log.warning("rate limiter: Redis unavailable (%s); counting in memory",
                            type(exc).__name__)
        if self.metrics is not None:
            self.metrics.ratelimit_fallbacks.inc()

    async def _count(self, k: str, limit: Limit) -> tuple[int, int]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(k)
            pipe.expire(k, max(1, int(limit.per_seconds + 0.999)), nx=True)
            pipe.pttl(k)
            count, _, pttl = await pipe.execute()
        return count, pttl

    async def hit(self, key: str, limit: Limit) -> None:
        if time.monotonic() < self._down_until:
            self._failed(None)
            return await self.fallback.hit(key, limit)
        try:
            count, pttl = await asyncio.wait_for(self._count(self.prefix + key, limit),
                                                 self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)
            return await self.fallback.hit(key, limit)
        if count > limit.count:
            raise RateLimited(retry_after=max(pttl, 0) / 1000)

    async def reset(self, key: str) -> None:
        await self.fallback.reset(key)
        try:
            await asyncio.wait_for(self.redis.delete(self.prefix + key), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)
