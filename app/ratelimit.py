"""Rate limiting behind one small interface.

`RateLimiter.hit(key, limit, cost)` counts `cost` units (one event, or the
bytes of an upload) and raises RateLimited when the key is over its limit. The in-memory limiter suits one process; the Redis
limiter shares counts between processes and lets a dead process's counts expire.

`exact=False` is for the limits on the hot path (sends), where a round trip to
Redis per event would cost more than the rest of the event's work: the Redis
limiter then decides at once, from this process's own count (exact) and the
other processes' as of the last exchange (at most `share_every` old), and
exchanges counts in the background. Sign-in, code and registration limits
guard against guessing and stay exact.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import zlib
from dataclasses import dataclass
from typing import Protocol

from app.errors import RateLimited
from app.logs import Retrying

log = logging.getLogger("parley.ratelimit")


@dataclass(frozen=True)
class Limit:
    count: int
    per_seconds: float

    @classmethod
    @functools.lru_cache(maxsize=64)  # parsed on every send: settings hold the text
    def parse(cls, spec: str) -> Limit:
        """'10/60' means 10 events per 60 seconds."""
        count, _, per = spec.partition("/")
        return cls(int(count), float(per or 1))


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: Limit, cost: int = 1, *, exact: bool = True
                  ) -> None: ...

    async def reset(self, key: str) -> None: ...


class MemoryRateLimiter:
    """Fixed-window counters; windows are per key, stale keys are swept lazily."""

    def __init__(self) -> None:
        # key → (window start, count, window length)
        self._windows: dict[str, tuple[float, int, float]] = {}
        self._next_sweep = 0.0

    async def hit(self, key: str, limit: Limit, cost: int = 1, *, exact: bool = True) -> None:
        # One process's own counts are exact either way.
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        start, count, _per = self._windows.get(key, (now, 0, limit.per_seconds))
        if now - start >= limit.per_seconds:
            start, count = now, 0
        count += cost
        self._windows[key] = (start, count, limit.per_seconds)
        if count > limit.count:
            raise RateLimited(retry_after=limit.per_seconds - (now - start))

    async def reset(self, key: str) -> None:
        self._windows.pop(key, None)

    def _sweep(self, now: float) -> None:
        # Drop the windows that have ended (per-day limits keep theirs a day).
        self._windows = {k: v for k, v in self._windows.items() if now - v[0] < v[2]}
        self._next_sweep = now + 60


# Counts a batch of hits in one round trip: KEYS are the counters, ARGV holds
# (hits, window in ms) per key. Per key: INCRBY, and the window's expiry set if
# the key has none (it started now); returns (new total, remaining ms) per key.
_HITS_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local total = redis.call('INCRBY', key, tonumber(ARGV[2 * i - 1]))
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    ttl = tonumber(ARGV[2 * i])
    redis.call('PEXPIRE', key, ttl)
  end
  out[2 * i - 1] = total
  out[2 * i] = ttl
end
return out
"""


# Slots the counters are spread over on a Redis Cluster (see RedisRateLimiter._key).
HASH_TAGS = 16


class _RedisDown(Exception):
    """A batch could not be counted in Redis: its hits are counted in memory."""


class RedisRateLimiter:
    """Same fixed windows, counted in Redis, shared by every process.

    Hits are counted in batches, like the message writer commits: every hit
    that arrives while a batch is on its way to Redis joins the next one, and
    a batch is one script call (INCRBY + expiry per key, atomic in Redis). The
    n hits of one key in a batch get the totals T-n+1 … T in arrival order,
    exactly what n INCRs would have given them (with costs: the running sums), so the limit is as exact as
    with a round trip per hit, at one round trip per batch.

    Hits with `exact=False` wait for nothing: each key's hits are summed in
    `_unshared` and sent every `share_every` seconds as one batch (the same
    script), whose answer becomes the key's `_known` shared count until its
    window ends. A hit is judged on known + in flight + unshared, so this
    process never lets through more than the limit on its own; what it does
    not see yet is the other processes' hits of the last `share_every`.

    Fails open: when Redis errs or answers slower than `timeout`, the hits of
    that batch are checked by an in-memory limiter of this process instead,
    and Redis is left alone for `retry_after` seconds. A Redis outage must not
    turn into failed sends; the limits are per process (looser) until Redis is
    back.
    """

    def __init__(self, redis, prefix: str = "parley:rl:", *, timeout: float = 0.5,
                 retry_after: float = 1.0, share_every: float = 0.1,
                 metrics=None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.timeout = timeout
        self.retry_after = retry_after
        self.metrics = metrics
        self.fallback = MemoryRateLimiter()
        self._down_until = 0.0
        self._outage = Retrying(log, "rate limiter: Redis", meanwhile="counting in memory")
        # Redis key → (window in ms, (future, cost) of the hits waiting for their count)
        self._pending: dict[str, tuple[int, list[tuple[asyncio.Future, int]]]] = {}
        self._flusher: asyncio.Task | None = None
        self._script = redis.register_script(_HITS_SCRIPT)
        # redis.asyncio.RedisCluster (REDIS_CLUSTER): the batch is split by slot.
        self.cluster = hasattr(redis, "get_nodes")
        self._conn = None  # see _eval
        self.share_every = share_every
        # Redis key → [window in ms, hits not yet sent] (exact=False)
        self._unshared: dict[str, list[int]] = {}
        # Redis key → hits sent, answer not back yet
        self._inflight: dict[str, int] = {}
        # Redis key → (shared count at the last exchange, monotonic end of its window)
        self._known: dict[str, tuple[int, float]] = {}
        self._sharer: asyncio.Task | None = None
        self._share_lock = asyncio.Lock()

    async def _eval(self, keys: list[str], args: list[int]):
        """The script on this limiter's own connection, without redis-py's client
        layer (connection pool, retry wrapper): half the CPU per call. One batch
        is in flight at a time (one flusher), so one connection is enough; any
        error drops it (a reply may still be on its way) and the next batch
        connects afresh."""
        from redis.exceptions import NoScriptError

        conn = self._conn
        try:
            if conn is None:
                from redis.asyncio.retry import Retry
                from redis.backoff import NoBackoff

                pool = self.redis.connection_pool
                conn = pool.connection_class(**{**pool.connection_kwargs,
                                                "retry": Retry(NoBackoff(), 0)})
                await conn.connect()
                self._conn = conn
            cmd = ("EVALSHA", self._script.sha, len(keys), *keys, *args)
            await conn.send_packed_command(conn.pack_command(*cmd), check_health=False)
            try:
                return await conn.read_response(timeout=math.inf)
            except NoScriptError:  # a restarted or flushed Redis: load it, once
                await conn.send_command("SCRIPT", "LOAD", _HITS_SCRIPT, check_health=False)
                await conn.read_response(timeout=math.inf)
                await conn.send_packed_command(conn.pack_command(*cmd), check_health=False)
                return await conn.read_response(timeout=math.inf)
        except BaseException:
            self._conn = None
            if conn is not None:
                await conn.disconnect(nowait=True)
            raise

    async def aclose(self) -> None:
        sharer, self._sharer = self._sharer, None
        if sharer is not None:
            sharer.cancel()
            await asyncio.gather(sharer, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)

    def _key(self, key: str) -> str:
        """`<prefix>{<n>}:<key>`: the hash tag spreads the counters over
        `HASH_TAGS` slots of a Redis Cluster (a script may only touch keys of one
        slot), so a batch costs at most that many calls there and one elsewhere."""
        return f"{self.prefix}{{{zlib.crc32(key.encode()) % HASH_TAGS}}}:{key}"

    def _mark_down(self, exc: BaseException) -> None:
        """Leave Redis alone for a while (`retry_after`)."""
        self._down_until = time.monotonic() + self.retry_after
        self._outage.failed(exc)

    def _failed(self, exc: BaseException | None) -> None:
        if exc is not None:
            self._mark_down(exc)
        if self.metrics is not None:
            self.metrics.ratelimit_fallbacks.inc()

    async def hit(self, key: str, limit: Limit, cost: int = 1, *, exact: bool = True) -> None:
        if time.monotonic() < self._down_until:
            self._failed(None)
            return await self.fallback.hit(key, limit, cost)
        k = self._key(key)
        window = max(1, int(limit.per_seconds + 0.999)) * 1000
        if not exact:
            return self._hit_shared_later(k, window, limit, cost)
        fut = asyncio.get_running_loop().create_future()
        entry = self._pending.get(k)
        if entry is None:
            entry = self._pending[k] = (window, [])
        entry[1].append((fut, cost))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all(), name="parley-ratelimit")
        try:
            count, pttl = await fut
        except _RedisDown:
            self._failed(None)
            return await self.fallback.hit(key, limit, cost)
        if count > limit.count:
            raise RateLimited(retry_after=max(pttl, 0) / 1000)

    def _hit_shared_later(self, k: str, window: int, limit: Limit, cost: int) -> None:
        now = time.monotonic()
        known, until = self._known.get(k, (0, 0.0))
        if until <= now:
            known = 0  # its window has ended in Redis too
        entry = self._unshared.get(k)
        if entry is None:
            entry = self._unshared[k] = [window, 0]
        entry[1] += cost
        if self._sharer is None:
            self._sharer = asyncio.create_task(self._share_later(), name="parley-ratelimit-share")
        if known + self._inflight.get(k, 0) + entry[1] > limit.count:
            raise RateLimited(retry_after=until - now if known else limit.per_seconds)

    async def _share_later(self) -> None:
        try:
            while self._unshared:
                await asyncio.sleep(self.share_every)
                try:
                    await self.share()
                except Exception:  # a bug here must not stop the exchanges
                    log.exception("rate limiter: sharing counts failed")
        finally:
            if self._sharer is asyncio.current_task():
                self._sharer = None

    async def share(self) -> None:
        """Send the `exact=False` hits counted since the last exchange; learn
        each key's shared count. Redis unreachable: they are not counted there
        (the limiter falls back to memory for a while, as for exact hits)."""
        async with self._share_lock:
            batch, self._unshared = self._unshared, {}
            if not batch:
                return
            loop = asyncio.get_running_loop()
            futs = {k: loop.create_future() for k in batch}
            self._inflight = {k: n for k, (_w, n) in batch.items()}
            try:
                await self._flush({k: (w, [(futs[k], n)]) for k, (w, n) in batch.items()})
            finally:
                self._inflight = {}
            now = time.monotonic()
            self._known = {k: v for k, v in self._known.items() if v[1] > now}
            for k, fut in futs.items():
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    total, pttl = fut.result()
                    self._known[k] = (total, now + max(pttl, 0) / 1000)

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                await self._flush(batch)
        finally:
            self._flusher = None

    async def _flush(self, batch: dict[str, tuple[int, list[tuple[asyncio.Future, int]]]]
                     ) -> None:
        if not self.cluster:
            return await self._flush_group(batch)
        # Redis Cluster: one script call per hash slot (the keys of one call must
        # share it), the calls of a flush at once.
        groups: dict[str, dict] = {}
        for k, v in batch.items():
            groups.setdefault(k[: k.index("}") + 1], {})[k] = v
        await asyncio.gather(*(self._flush_group(g) for g in groups.values()))

    async def _flush_group(self, batch) -> None:
        keys = list(batch)
        try:
            if time.monotonic() < self._down_until:
                raise _RedisDown()  # the previous batch just failed: don't wait again
            args: list[int] = []
            for k in keys:
                window, futs = batch[k]
                args += (sum(c for _f, c in futs), window)
            async with asyncio.timeout(self.timeout):  # not wait_for: no task per batch
                if self.cluster:
                    out = await self._script(keys=keys, args=args)
                else:
                    out = await self._eval(keys, args)
        except Exception as exc:  # noqa: BLE001 - every hit of the batch falls back
            if not isinstance(exc, _RedisDown):
                self._mark_down(exc)
            for _, futs in batch.values():
                for f, _c in futs:
                    if not f.done():
                        f.set_exception(_RedisDown())
            return
        except BaseException:
            for _, futs in batch.values():
                for f, _c in futs:
                    f.cancel()
            raise
        self._outage.ok()
        for i, k in enumerate(keys):
            total, pttl = int(out[2 * i]), int(out[2 * i + 1])
            futs = batch[k][1]
            # Hand out the running totals in arrival order, as one INCRBY each would.
            running = total - sum(c for _f, c in futs)
            for f, c in futs:
                running += c
                if not f.done():
                    f.set_result((running, pttl))

    async def reset(self, key: str) -> None:
        await self.fallback.reset(key)
        try:
            await asyncio.wait_for(self.redis.delete(self._key(key)), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)
