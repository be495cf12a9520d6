"""Rate limiting behind one small interface.

`RateLimiter.hit(key, limit)` counts one event and raises RateLimited when the
key is over its limit. The in-memory limiter suits one process; the Redis
limiter shares counts between processes and lets a dead process's counts expire.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from app.errors import RateLimited


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
    """Same fixed windows, counted in Redis with INCR + EXPIRE (atomic in a pipeline)."""

    def __init__(self, redis, prefix: str = "parley:rl:") -> None:
        self.redis = redis
        self.prefix = prefix

    async def hit(self, key: str, limit: Limit) -> None:
        k = self.prefix + key
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(k)
            pipe.expire(k, max(1, int(limit.per_seconds + 0.999)), nx=True)
            pipe.pttl(k)
            count, _, pttl = await pipe.execute()
        if count > limit.count:
            raise RateLimited(retry_after=max(pttl, 0) / 1000)

    async def reset(self, key: str) -> None:
        await self.redis.delete(self.prefix + key)
