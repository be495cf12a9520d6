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

from app.logs import Retrying

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
        await self.apply({str(u): True for u in user_ids}, [])

    async def unmark(self, user_ids) -> None:
        await self.apply({str(u): False for u in user_ids}, [])

    async def online(self, user_ids) -> set[str]:
        [answer] = await self.apply({}, [[str(u) for u in user_ids]])
        return answer

    async def apply(self, marks: dict[str, bool], questions: list[list[str]]) -> list[set[str]]:
        """Mark (True) or unmark (False) users, then answer `online` for each list
        of users, all in one round trip."""
        if not marks and not any(questions):
            return [set() for _ in questions]
        now = self.clock()
        expiry = now + self.ttl
        writes = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for u, marked in marks.items():
                if marked:
                    pipe.zadd(self._key(u), {self.proc_id: expiry})
                    pipe.expire(self._key(u), math.ceil(self.ttl))
                    writes += 2
                else:
                    pipe.zrem(self._key(u), self.proc_id)
                    writes += 1
            for users in questions:
                for u in users:
                    pipe.zcount(self._key(u), f"({now}", "+inf")
            replies = iter((await pipe.execute())[writes:])
        return [{u for u in users if next(replies)} for users in questions]


class Coalesced:
    """A shared store whose calls travel together: every mark, unmark and
    `online` question that arrives while a round trip is out goes in the next
    one, so at most one is out at a time. A reconnect storm's thousands of
    sockets then cost a few round trips instead of a pooled connection each,
    which a bounded pool would make them queue for, and give up on.

    Writes to one user within a round trip collapse to the last (the callers
    keep their own per-user state, so the last call is the state to store).
    A failed round trip fails every call it carried."""

    def __init__(self, store: RedisPresence) -> None:
        self.store = store
        self.heartbeat_interval = store.heartbeat_interval
        self._marks: dict[str, bool] = {}
        self._written: asyncio.Future | None = None  # resolves when _marks are stored
        self._questions: list[tuple[list[str], asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def mark(self, user_ids) -> None:
        await self._write(user_ids, True)

    async def unmark(self, user_ids) -> None:
        await self._write(user_ids, False)

    async def online(self, user_ids) -> set[str]:
        users = [str(u) for u in user_ids]
        if not users:
            return set()
        answer = asyncio.get_running_loop().create_future()
        self._questions.append((users, answer))
        self._start()
        return await answer

    async def _write(self, user_ids, marked: bool) -> None:
        users = [str(u) for u in user_ids]
        if not users:
            return
        for u in users:
            self._marks[u] = marked
        if self._written is None:
            self._written = asyncio.get_running_loop().create_future()
        written = self._written
        self._start()
        # Shared by every caller of this round trip: one caller's cancellation
        # must not cancel it for the others.
        await asyncio.shield(written)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="parley-presence-writes")

    async def _run(self) -> None:
        try:
            while self._marks or self._questions:
                marks, self._marks = self._marks, {}
                written, self._written = self._written, None
                asked, self._questions = self._questions, []
                try:
                    answers = await self.store.apply(marks, [users for users, _ in asked])
                except asyncio.CancelledError:
                    # Stopped (the loop is closing): nothing more goes out.
                    _settle(written, asked, cancel=True)
                    _settle(self._written, self._questions, cancel=True)
                    self._marks, self._written, self._questions = {}, None, []
                    raise
                except Exception as exc:
                    _settle(written, asked, exc=exc)
                    continue
                _settle(written, asked, answers=answers)
        finally:
            self._task = None


def _settle(written, asked, *, answers=None, exc=None, cancel=False) -> None:
    pending = [(written, None)] + [
        (answer, None if answers is None else answers[i]) for i, (_users, answer) in enumerate(asked)]
    for future, result in pending:
        if future is None or future.done():  # done: its caller was cancelled
            continue
        if cancel:
            future.cancel()
        elif exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)
            future.exception()  # its callers may all be gone: not "never retrieved"


# Called with every user of one sweep who went offline (a batch, in disconnect order).
OnOffline = Callable[[list[str]], Awaitable[None]]


class PresenceTracker:
    """This process's sockets per user, on top of a shared store.

    `connect` says whether the user has just come online (nobody anywhere held a
    socket of theirs). `disconnect` of the last local socket starts a grace
    period; only if no socket came back anywhere by then is `on_offline` called.

    Grace periods are not one task each: `_timers` maps user → deadline (insertion
    order is deadline order, the grace being constant) and one sweeper task wakes
    at the earliest deadline and handles every user due by then together — one
    store round trip and one `on_offline` call per batch. A reconnect storm of
    thousands of sockets costs a few batched calls instead of thousands of tasks,
    each with its own store and database round trips. A user stays in `_timers`
    until their offline handling has finished.
    """

    SWEEP_BATCH = 1000  # users per store call / on_offline call
    # The sweeper wakes this long after the earliest deadline, so users who dropped
    # together (a storm whose disconnects a busy loop saw over some milliseconds) are
    # told in one batch rather than in slices; offline is then announced at most this
    # much after the grace period, never before it.
    SWEEP_WINDOW = 0.1

    def __init__(self, store: PresenceStore, grace: float) -> None:
        self.store = store
        self.grace = grace
        self.local: dict[str, int] = {}
        self._timers: dict[str, tuple[float, OnOffline]] = {}
        self._expiring: dict[str, asyncio.Future] = {}  # being told to store / contacts
        self._sweeper: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None
        self._expiry_outage = Retrying(log, "presence offline handling")
        self._beat: asyncio.Task | None = None
        self._closed = False

    async def start(self) -> None:
        if self.store.heartbeat_interval and self._beat is None:
            self._beat = asyncio.create_task(self._heartbeat())

    async def close(self) -> None:
        """Stop timers and heartbeat; forget this process's users in the store."""
        self._closed = True
        tasks = [t for t in (self._beat, self._sweeper) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        users = list(self.local) + list(self._timers)
        self._beat = self._sweeper = None
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
        if user_id in self._timers:
            done = self._expiring.get(user_id)
            if done is None:
                # Back within the grace period: still marked, nobody was told.
                del self._timers[user_id]
                return False
            # The sweep is already telling the store / the contacts: let it finish.
            await asyncio.shield(done)
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
        if user_id in self._timers or self._closed:
            return
        self._timers[user_id] = (time.monotonic() + self.grace, on_offline)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        while self._timers and not self._closed:
            now = time.monotonic()
            due: list[tuple[str, OnOffline]] = []
            for user_id, (deadline, on_offline) in self._timers.items():
                if user_id in self._expiring:
                    continue
                if deadline > now or len(due) >= self.SWEEP_BATCH:
                    break
                due.append((user_id, on_offline))
            if not due:
                waiting = [d for u, (d, _cb) in self._timers.items() if u not in self._expiring]
                if not waiting:
                    return
                await asyncio.sleep(max(0.0, min(waiting) + self.SWEEP_WINDOW - now))
                continue
            await self._expire(due)

    async def _expire(self, due: list[tuple[str, OnOffline]]) -> None:
        done = asyncio.get_running_loop().create_future()
        users = [u for u, _cb in due]
        for u in users:
            self._expiring[u] = done
        try:
            gone = [u for u in users if not self.local.get(u)]
            await self.store.unmark(gone)
            still = await self.store.online(gone)
            by_callback: dict[OnOffline, list[str]] = {}
            for u, cb in due:
                if u in gone and u not in still:
                    by_callback.setdefault(cb, []).append(u)
            handled = True
            for cb, offline in by_callback.items():
                try:
                    await cb(offline)  # records last seen: the database
                except Exception as exc:  # noqa: BLE001 - the others still run
                    self._expiry_outage.failed(exc)
                    handled = False
        except Exception as exc:  # noqa: BLE001 - the store (Redis) is away
            self._expiry_outage.failed(exc)
        else:
            if handled:
                self._expiry_outage.ok()
        finally:
            for u in users:
                self._expiring.pop(u, None)
                self._timers.pop(u, None)
            done.set_result(None)

    async def _heartbeat(self) -> None:
        outage = Retrying(log, "presence heartbeat")
        while True:
            await asyncio.sleep(self.store.heartbeat_interval)
            # Users inside their grace period are still marked: keep them alive too.
            users = set(self.local) | (set(self._timers) - set(self._expiring))
            try:
                await self.store.mark(users)
            except Exception as exc:  # noqa: BLE001 - Redis is away; next beat
                outage.failed(exc)
            else:
                outage.ok()


def build_presence(settings, redis=None) -> PresenceTracker:
    store = Coalesced(RedisPresence(redis)) if redis is not None else MemoryPresence()
    return PresenceTracker(store, grace=settings.presence_grace_seconds)
