"""What one connection may cost: events in flight and events per second.

Checked in `AsyncServer._handle_event` (app/realtime/engine.py) for every
client→server event, before python-socketio creates the event's task, looks
up a handler or touches the database:

- **In flight** (`SOCKET_MAX_INFLIGHT`): events of one connection being
  handled at once. On the WebSocket transport the read loop stops reading that
  socket while it is at the limit, so a burst is served in turn (nothing is
  refused) and a flooder's frames wait in its own TCP buffers, not in our
  memory or our task list. Long-polling cannot be paused: an event over the
  limit there is refused like one over the rate.
- **Rate** (`SOCKET_EVENT_RATE`, "count/seconds"): a token bucket holding
  `count` events, refilled at count/seconds per second. An event without a
  token is refused at once with a `rate_limited` ack carrying
  `details.retry_after` (whole seconds), which costs an ack and nothing else.
- **Persistent flooding** (`SOCKET_FLOOD_DISCONNECT`): a connection that has
  that many events refused within `FLOOD_WINDOW` seconds is disconnected (a
  client that waits `retry_after` never gets near it).

Events of different connections are independent: one connection being
throttled never delays another's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from app.errors import RateLimited

FLOOD_WINDOW = 10.0  # seconds over which refused events are counted


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_inflight: int = 8
    burst: float = 100.0  # tokens the bucket holds
    per_second: float = 20.0  # refill rate
    flood_disconnect: int = 200  # refused events within FLOOD_WINDOW; 0: never

    @classmethod
    def from_settings(cls, settings) -> ConnectionLimits:
        count, _, per = settings.socket_event_rate.partition("/")
        burst = float(count)
        seconds = float(per or 1)
        if burst <= 0 or seconds <= 0 or settings.socket_max_inflight < 1:
            raise ValueError("SOCKET_EVENT_RATE needs count/seconds > 0 and "
                             "SOCKET_MAX_INFLIGHT at least 1")
        return cls(max_inflight=settings.socket_max_inflight, burst=burst,
                   per_second=burst / seconds,
                   flood_disconnect=max(0, settings.socket_flood_disconnect))


class EventBudget:
    """One connection's counters (kept on its Engine.IO socket)."""

    __slots__ = ("limits", "inflight", "tokens", "stamp", "refused", "window_start",
                 "resume", "dropped")

    def __init__(self, limits: ConnectionLimits, now: float) -> None:
        self.limits = limits
        self.inflight = 0
        self.tokens = limits.burst
        self.stamp = now
        self.refused = 0
        self.window_start = now
        self.resume: asyncio.Event | None = None  # set while the read loop waits
        self.dropped = False  # being disconnected for flooding: ignore what follows

    def take(self, now: float) -> float:
        """0.0 when the event may run (one token spent, one more in flight);
        otherwise the seconds after which it would be accepted."""
        limits = self.limits
        if self.inflight >= limits.max_inflight:
            return 1.0  # long-polling only: WebSocket reads pause before this
        tokens = self.tokens + (now - self.stamp) * limits.per_second
        if tokens > limits.burst:
            tokens = limits.burst
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return (1.0 - tokens) / limits.per_second
        self.tokens = tokens - 1.0
        self.inflight += 1
        return 0.0

    def refuse(self, now: float) -> bool:
        """Count one refused event; True when the connection should be dropped."""
        if now - self.window_start > FLOOD_WINDOW:
            self.window_start = now
            self.refused = 0
        self.refused += 1
        limit = self.limits.flood_disconnect
        return bool(limit) and self.refused >= limit

    def done(self, _task=None) -> None:
        """An event of this connection finished (a task's done callback)."""
        self.inflight -= 1
        resume = self.resume
        if resume is not None and self.inflight < self.limits.max_inflight:
            self.resume = None
            resume.set()

    @property
    def full(self) -> bool:
        return self.inflight >= self.limits.max_inflight

    async def wait_for_room(self) -> None:
        """Until fewer than max_inflight events of this connection are running."""
        while self.inflight >= self.limits.max_inflight:
            if self.resume is None:
                self.resume = asyncio.Event()
            await self.resume.wait()


def rate_limited_ack(retry_after: float) -> dict:
    return {"ok": False, "error": RateLimited(
        retry_after, "Too many events on this connection; slow down.").to_dict()}
