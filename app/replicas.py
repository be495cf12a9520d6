"""Read replicas: which PostgreSQL standby serves a read, and when the primary must.

DATABASE_REPLICA_URLS names streaming replicas of DATABASE_URL. History, sync
and search run through `read()`: on a replica when one is fit, else on the
primary. A replica is fit when the checker last found it reachable, still a
standby, and behind the primary by at most REPLICA_MAX_LAG_SECONDS.

Lag is measured by WAL position, not by the replay timestamp (which stands
still while the primary is idle, so an idle, fully caught-up replica would
look ever further behind): each round reads the primary's
`pg_current_wal_flush_lsn()` and every replica's `pg_last_wal_replay_lsn()`; a
replica's lag is the age of the oldest primary position it has not replayed
yet (0 when it has replayed everything the primary had this round).

Read-your-writes: a client that already knows a newer seq than the replica
holds (a history anchor, a search cursor; for sync, anything the primary has
of the user's conversations) must not be answered from the replica's past.
The service notices it on the replica's own rows and calls `stale()`, which
raises `Stale` on a replica only: the read is then run again on the primary. A read that fails on a replica because the replica is
unreachable marks it down (until the checker finds it back) and is run again
on the primary, as is a domain error (a conversation the replica does not
know yet answers NotFound there).

The replica's connection stands in for "default" in this task's Tortoise
context for the length of the read (what a transaction does), so the ORM
queries and raw statements of the read services need no connection argument;
without replicas (or on SQLite) `read()` is a plain call.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
from tortoise.exceptions import DBConnectionError

from app.errors import DomainError, NotFound

log = logging.getLogger("app.replicas")

T = TypeVar("T")

# Seconds to wait for a new replica connection, and for the checker's query: a
# replica that stops answering is skipped within one check interval plus this
# (the checker then drops its pool, which ends the reads still waiting on it).
CONNECT_TIMEOUT = 2.0

# Errors that say the replica itself is gone (not that the read was wrong).
_DOWN_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,  # connection closed under the query
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    DBConnectionError,
)


def replica_gone(exc: BaseException) -> bool:
    """Whether this error says the replica itself is unreachable (not that
    one statement was cancelled there)."""
    return (isinstance(exc, _DOWN_ERRORS)
            and not isinstance(exc, asyncpg.exceptions.QueryCanceledError))


class Stale(Exception):
    """The replica is older than what the client already knows."""


_on_replica: contextvars.ContextVar[bool] = contextvars.ContextVar("on_replica", default=False)


def on_replica() -> bool:
    return _on_replica.get()


def stale(condition: bool) -> None:
    """Say the data read so far is older than the client's; on a replica this
    sends the read to the primary, on the primary it changes nothing."""
    if condition and _on_replica.get():
        raise Stale


@dataclass
class ReplicaState:
    name: str
    reachable: bool = False  # unknown until the first check
    standby: bool = False
    lag_seconds: float = float("inf")
    checked_at: float = 0.0
    reason: str = "not checked yet"


def choose(states: Sequence[ReplicaState], max_lag: float, turn: int) -> int | None:
    """The replica (index) for the next read, round robin over the fit ones;
    None: read from the primary."""
    fit = [i for i, s in enumerate(states)
           if s.reachable and s.standby and s.lag_seconds <= max_lag]
    if not fit:
        return None
    return fit[turn % len(fit)]


def lag_behind(samples: Sequence[tuple[float, int]], replayed: int, now: float) -> float:
    """Seconds since the primary first stood past `replayed`: samples are
    (time, primary WAL position), oldest first. 0 when only the newest sample
    (taken just before the replica was asked) is ahead of it, or none is."""
    for i, (t, lsn) in enumerate(samples):
        if lsn > replayed:
            return 0.0 if i == len(samples) - 1 else max(0.0, now - t)
    return 0.0


def _lsn(text: str | None) -> int:
    """A pg_lsn ('16/B374D848') as a number."""
    if not text:
        return 0
    hi, _, lo = str(text).partition("/")
    return (int(hi, 16) << 32) + int(lo, 16)


@dataclass
class ReplicaSet:
    """The replicas of one process, their health, and the checker that keeps it."""

    urls: list[str]
    max_lag: float
    interval: float
    clients: list = field(default_factory=list)
    states: list[ReplicaState] = field(default_factory=list)
    metrics: object | None = None
    command_timeout: float | None = None  # DATABASE_COMMAND_TIMEOUT, as for the primary
    _turn: int = 0
    _samples: deque = field(default_factory=deque)  # trimmed to the lag horizon
    _task: asyncio.Task | None = None
    _closed: bool = False
    restarts: int = 0

    def __post_init__(self) -> None:
        from tortoise.backends.asyncpg import AsyncpgDBClient
        from tortoise.backends.base.config_generator import expand_db_url

        from app.db import normalise_db_url, pg_credentials

        for i, url in enumerate(self.urls):
            creds = dict(expand_db_url(normalise_db_url(url))["credentials"])
            creds.setdefault("maxsize", 10)
            creds.setdefault("minsize", 1)
            creds.setdefault("timeout", CONNECT_TIMEOUT)  # asyncpg's connect timeout
            name = f"replica{i}"
            self.clients.append(AsyncpgDBClient(
                connection_name=name, **pg_credentials(creds, self.command_timeout)))
            self.states.append(ReplicaState(name))

    # --- choosing -------------------------------------------------------------

    def pick(self) -> int | None:
        self._turn += 1
        return choose(self.states, self.max_lag, self._turn)

    def mark_down(self, i: int, why: str) -> None:
        s = self.states[i]
        if s.reachable:
            log.warning("replica %s skipped until it answers again: %s", s.name, why)
        s.reachable, s.reason = False, why

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.replica_reads.labels(outcome).inc()

    async def read(self, fn: Callable[[], Awaitable[T]]) -> T:
        i = self.pick()
        if i is None:
            self._count("primary")
            return await fn()
        from tortoise.connection import get_connections

        handler = get_connections()
        token = handler.set("default", self.clients[i])
        flag = _on_replica.set(True)
        try:
            result = await fn()
        except Stale:
            self._count("stale")
        except NotFound:
            self._count("stale")  # e.g. a conversation it has not replayed yet
        except DomainError:
            self._count("replica")
            raise  # invalid input, a rate limit: the same answer on the primary
        except Exception as exc:  # noqa: BLE001 - the primary decides; a real bug fails there
            self._count("failed")
            if replica_gone(exc):
                self.mark_down(i, f"{type(exc).__name__}: {exc}")
            else:  # e.g. a query cancelled by a conflict with the replay
                log.warning("read on replica %s failed (%s); reading from the primary",
                            self.states[i].name, type(exc).__name__)
        else:
            self._count("replica")
            return result
        finally:
            _on_replica.reset(flag)
            handler.reset(token)
        return await fn()

    # --- checking -------------------------------------------------------------

    async def check(self) -> None:
        """One round: the primary's WAL position, then every replica's."""
        from tortoise import Tortoise

        primary = Tortoise.get_connection("default")
        try:
            _n, rows = await asyncio.wait_for(
                primary.execute_query("SELECT pg_current_wal_flush_lsn()::text"), CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the primary's own errors show elsewhere
            log.debug("replica check: primary not answering (%s)", type(exc).__name__)
            return
        now = time.monotonic()
        self._samples.append((now, _lsn(rows[0][0])))
        await asyncio.gather(*(self._check_one(i, now) for i in range(len(self.clients))))
        # Keep the samples a lag this side of the limit needs (and one older).
        horizon = now - self.max_lag - 2 * self.interval - 1
        while len(self._samples) > 1 and self._samples[1][0] < horizon:
            self._samples.popleft()

    async def _check_one(self, i: int, now: float) -> None:
        s = self.states[i]
        try:
            _n, rows = await asyncio.wait_for(self.clients[i].execute_query(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"),
                CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure: not usable now
            if s.reachable or s.checked_at == 0.0:
                log.warning("replica %s not usable: %s", s.name, type(exc).__name__)
            s.reachable, s.reason, s.checked_at = False, type(exc).__name__, now
            await self._drop_pool(i)
            if self.metrics is not None:
                self.metrics.replica_lag.labels(s.name).set(-1)
            return
        in_recovery, replayed = rows[0][0], rows[0][1]
        was_fit = s.reachable and s.standby and s.lag_seconds <= self.max_lag
        s.reachable, s.standby, s.checked_at = True, bool(in_recovery), now
        s.lag_seconds = lag_behind(list(self._samples), _lsn(replayed), now)
        if not s.standby:
            s.reason = "not a standby (promoted?)"
        elif s.lag_seconds > self.max_lag:
            s.reason = f"{s.lag_seconds:.1f} s behind"
        else:
            s.reason = "ok"
        fit = s.reason == "ok"
        if fit != was_fit:
            (log.info if fit else log.warning)("replica %s %s", s.name,
                                               "in use" if fit else f"skipped: {s.reason}")
        if self.metrics is not None:
            self.metrics.replica_lag.labels(s.name).set(
                s.lag_seconds if s.lag_seconds != float("inf") else -1)

    async def _drop_pool(self, i: int) -> None:
        # A pool whose server went away holds dead connections; the next use
        # makes a fresh one.
        client = self.clients[i]
        if client._pool is not None:
            pool, client._pool = client._pool, None
            pool.terminate()

    async def _run(self) -> None:
        while not self._closed:
            await self.check()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="replica-check")
            self._task.add_done_callback(self._supervise)

    def _supervise(self, task: asyncio.Task) -> None:
        if task is not self._task or self._closed:
            return
        exc = None if task.cancelled() else task.exception()
        log.error("replica checker died (%s); starting a fresh one",
                  "cancelled" if exc is None else type(exc).__name__, exc_info=exc)
        self.restarts += 1
        self._task = None
        self.start()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for i, client in enumerate(self.clients):
            try:
                await asyncio.wait_for(client.close(), CONNECT_TIMEOUT)
            except Exception:  # noqa: BLE001 - a replica already gone
                await self._drop_pool(i)


def parse_urls(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


async def read(deps, fn: Callable[[], Awaitable[T]]) -> T:
    """Run the read `fn` on a fit replica (see the module), else on the primary."""
    replicas = deps.extras.get("replicas")
    if replicas is None:
        return await fn()
    return await replicas.read(fn)
