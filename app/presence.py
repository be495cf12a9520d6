"""Who is online, across server processes.

Two layers:

- a *store* answers "is some process holding a socket of this user right now?".
  MemoryPresence serves a single process; RedisPresence shares the answer
  between processes: one sorted set per user whose members are process ids
  scored with an expiry time. Every process refreshes its own entries with a
  heartbeat, so the entries of a crashed process lapse after `ttl` seconds
  instead of keeping its users online forever.
- a PresenceTracker per process counts this process's sockets per user and
  delays "offline" by a grace period, so a page reload does not flap.

Nothing here knows about contacts or privacy: app/services/presence.py decides
who is told.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

log = logging.getLogger("parley.presence")


class PresenceStore(Protocol):
    heartbeat_interval: float | None  # seconds between refreshes; None: no heartbeat

    async def mark(self, user_ids: Iterable[str]) -> None:
        """This process holds at least one socket of each user (refreshes the TTL)."""

    async def unmark(self, user_ids: Iterable[str]) -> None:
        """This process holds no socket of these users any more."""

    async def online(self, user_ids: Iterable[str]) -> set[str]:
        """The users some live process holds a socket of."""


class MemoryPresence:
    """Single process: nothing to share, nothing to expire."""

    heartbeat_interval = None

    def __init__(self) -> None:
        self._users: set[str] = set()

    async def mark(self, user_ids) -> None:
        self._users.update(str(u) for u in user_ids)

    async def unmark(self, user_ids) -> None:
        self._users.difference_update(str(u) for u in user_ids)

    async def online(self, user_ids) -> set[str]:
        return {str(u) for u in user_ids} & self._users


class RedisPresence:
    """`<prefix><user id>` is a sorted set: member = process id, score = expiry
    (unix seconds). A user is online while any member's score is in the future.
    The key itself also expires, so users nobody refreshes leave nothing behind."""

    def __init__(self, redis, *, proc_id: str | None = None, ttl: float = 30.0,
                 prefix: str = "parley:presence:", clock: Callable[[], float] = time.time):
        self.redis = redis
        self.proc_id = proc_id or uuid.uuid4().hex
        self.ttl = ttl
        self.prefix = prefix
        self.clock = clock
        self.heartbeat_interval = ttl / 3

    def _key(self, user_id) -> str:
        return f"{self.prefix}{user_id}"

    async def mark(self, user_ids) -> None:
        user_ids = [str(u) for u in user_ids]
        if not user_ids:
            return
        expiry = self.clock() + self.ttl
        async with self.redis.pipeline(transaction=False) as pipe:
            for u in user_ids:
                pipe.zadd(self._key(u), {self.proc_id: expiry})
                pipe.expire(self._key(u), math.ceil(self.ttl))
            await pipe.execute()

    async def unmark(self, user_ids) -> None:
        user_ids = [str(u) for u in user_ids]
        if not user_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for u in user_ids:
                pipe.zrem(self._key(u), self.proc_id)
            await pipe.execute()

    async def online(self, user_ids) -> set[str]:
        user_ids = [str(u) for u in user_ids]
        if not user_ids:
            return set()
        now = self.clock()
        async with self.redis.pipeline(transaction=False) as pipe:
            for u in user_ids:
                pipe.zcount(self._key(u), f"({now}", "+inf")
            counts = await pipe.execute()
        return {u for u, n in zip(user_ids, counts, strict=True) if n}


OnOffline = Callable[[str], Awaitable[None]]


class PresenceTracker:
    """This process's sockets per user, on top of a shared store.

    `connect` says whether the user has just come online (nobody anywhere held a
    socket of theirs). `disconnect` of the last local socket starts a grace
    timer; only if no socket came back anywhere by then is `on_offline` called.
    """

    def __init__(self, store: PresenceStore, grace: float) -> None:
        self.store = store
        self.grace = grace
        self.local: dict[str, int] = {}
        self._timers: dict[str, asyncio.Task] = {}
        self._expiring: set[str] = set()  # timers past the grace, telling the store
        self._beat: asyncio.Task | None = None
        self._closed = False

    async def start(self) -> None:
        if self.store.heartbeat_interval and self._beat is None:
            self._beat = asyncio.create_task(self._heartbeat())

    async def close(self) -> None:
        """Stop timers and heartbeat; forget this process's users in the store."""
        self._closed = True
        tasks = [t for t in (self._beat, *self._timers.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        users = list(self.local) + list(self._timers)
        self._beat = None
        self._timers.clear()
        self.local.clear()
        try:
            await self.store.unmark(users)
        except Exception:
            log.warning("could not clear presence entries at shutdown", exc_info=True)

    async def online(self, user_ids: Iterable[str]) -> set[str]:
        return await self.store.online(user_ids)

    async def connect(self, user_id: str) -> bool:
        user_id = str(user_id)
        count = self.local.get(user_id, 0)
        self.local[user_id] = count + 1
        if count:
            return False
        timer = self._timers.get(user_id)
        if timer is not None:
            if user_id not in self._expiring:
                # Back within the grace period: still marked, nobody was told.
                self._timers.pop(user_id, None)
                timer.cancel()
                return False
            # The timer is already telling the store / the contacts: let it finish.
            await asyncio.gather(timer, return_exceptions=True)
        was_online = user_id in await self.store.online([user_id])
        await self.store.mark([user_id])
        return not was_online

    def disconnect(self, user_id: str, on_offline: OnOffline) -> None:
        user_id = str(user_id)
        count = self.local.get(user_id, 0) - 1
        if count > 0:
            self.local[user_id] = count
            return
        self.local.pop(user_id, None)
        if user_id not in self._timers and not self._closed:
            self._timers[user_id] = asyncio.create_task(self._expire(user_id, on_offline))

    async def _expire(self, user_id: str, on_offline: OnOffline) -> None:
        try:
            await asyncio.sleep(self.grace)
            if self.local.get(user_id):
                return
            self._expiring.add(user_id)
            await self.store.unmark([user_id])
            if user_id not in await self.store.online([user_id]):
                await on_offline(user_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("presence offline handling failed")
        finally:
            self._expiring.discard(user_id)
            if self._timers.get(user_id) is asyncio.current_task():
                del self._timers[user_id]

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.store.heartbeat_interval)
            # Users inside their grace period are still marked: keep them alive too.
            users = set(self.local) | (set(self._timers) - self._expiring)
            try:
                await self.store.mark(users)
            except Exception:
                log.warning("presence heartbeat failed", exc_info=True)


def build_presence(settings, redis=None) -> PresenceTracker:
    store = RedisPresence(redis) if redis is not None else MemoryPresence()
    return PresenceTracker(store, grace=settings.presence_grace_seconds)
