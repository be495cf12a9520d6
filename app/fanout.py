"""The one interface services emit through.

Services never import socketio: they call `fanout.to_users(...)`. The server
hands them a SocketIOFanout; tests can hand them a RecordingFanout and assert
on what was sent. Rooms: `u:<user id>` holds every socket of a user,
`s:<session id>` every socket of one signed-in session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

NAMESPACE = "/chat"
log = logging.getLogger("parley.fanout")


def user_room(user_id) -> str:
    return f"u:{user_id}"


def session_room(session_id) -> str:
    return f"s:{session_id}"


class Fanout(Protocol):
    async def to_users(self, user_ids: Iterable, event: str, data, skip: str | None = None) -> None:
        """Deliver one event to every connected device of these users, in one emit.
        `skip` is an opaque origin (the sending socket) that should not get an echo."""

    async def disconnect_session(self, session_id) -> None:
        """Drop every socket signed in with this session (logout, revoke)."""

    async def invalidate(self, kind: str, keys: list[str]) -> None:
        """Tell the other processes to drop these cached rows
        (app/services/read_cache.py; this process has dropped them already)."""


class RecordingFanout:
    """Keeps what was emitted; for tests and for tools that run services offline."""

    def __init__(self) -> None:
        self.sent: list[tuple[tuple[str, ...], str, object]] = []
        self.disconnected: list[str] = []
        self.invalidated: list[tuple[str, tuple[str, ...]]] = []

    async def to_users(self, user_ids, event, data, skip=None) -> None:
        self.sent.append((tuple(str(u) for u in user_ids), event, data))

    async def disconnect_session(self, session_id) -> None:
        self.disconnected.append(str(session_id))

    async def invalidate(self, kind, keys) -> None:
        self.invalidated.append((kind, tuple(keys)))

    def events(self, name: str) -> list:
        return [data for _, ev, data in self.sent if ev == name]


class SocketIOFanout:
    """Emits through python-socketio; with REDIS_URL, through Redis to every process.

    Fan-out runs after a commit, so it must never fail the request or hold its
    ack for long: an emit that raises is logged, counted (parley_fanout_errors)
    and dropped; clients then catch up with `sync`. An event emit does not wait
    by construction (app/realtime/managers.py: local sockets are written to
    synchronously, Redis publishes are queued), so it carries no timer (a timer
    per message is a measurable share of a send: docs/benchmarks.md). A
    disconnect does wait for sockets
    to close and is bounded by `timeout`.
    """

    def __init__(self, sio, metrics=None, timeout: float = 3.0) -> None:
        self.sio = sio
        self.metrics = metrics
        self.timeout = timeout

    async def _guarded(self, what: str, coro, timeout: float | None = None) -> None:
        try:
            if timeout is None:
                await coro
            else:
                async with asyncio.timeout(timeout):
                    await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.metrics is not None:
                self.metrics.fanout_errors.inc()
            log.warning("fanout %s failed: %s", what, type(exc).__name__,
                        exc_info=not isinstance(exc, (TimeoutError, ConnectionError, OSError)))

    async def to_users(self, user_ids, event, data, skip=None) -> None:
        rooms = [user_room(u) for u in user_ids]
        if not rooms:
            return
        # One emit for the whole list: with the Redis manager that is one publish.
        await self._guarded(event, self.sio.emit(
            event, data, room=rooms if len(rooms) > 1 else rooms[0], skip_sid=skip,
            namespace=NAMESPACE))

    async def disconnect_session(self, session_id) -> None:
        # The manager turns this into a disconnect on every process (see
        # app/realtime/managers.py), so logout works whichever process holds the socket.
        await self._guarded("disconnect_session", self.sio.manager.disconnect_room(
            session_room(session_id), NAMESPACE), self.timeout)

    async def invalidate(self, kind, keys) -> None:
        # Queued in order with the events (never waits for the broker); one
        # process alone has nobody to tell.
        publish = getattr(self.sio.manager, "invalidate", None)
        if publish is not None:
            publish(kind, list(keys))
