"""What one client may cost: events in flight and events per second.

A budget belongs to a connection until it authenticates, then to its user:
all the connections of one signed-in user on a process share it, and it
outlives them (a flooder that reconnects finds its budget as it left it).

Checked in `AsyncServer._handle_event` (app/realtime/engine.py) for every
client→server event, before python-socketio creates the event's task, looks
up a handler or touches the database (a namespace CONNECT, which authenticates,
spends a token of the same bucket):

- **In flight** (`SOCKET_MAX_INFLIGHT`): events being handled at once. An
  event that finds its budget at the limit waits for room before anything
  is done for it; on the WebSocket transport that wait is in the socket's
  read loop, so nothing more is read meanwhile: a burst is served in turn
  (nothing is refused) and a flooder's frames wait in its own TCP buffers,
  not in our memory or our task list. (Long-polling hands each packet to a
  task of its own: beyond MAX_WAITING waiting events, more are refused like
  events over the rate.)
- **Rate** (`SOCKET_EVENT_RATE`, "count/seconds"): a token bucket holding
  `count` events, refilled at count/seconds per second. An event without a
  token is refused at once with a `rate_limited` ack carrying
  `details.retry_after` (whole seconds) — it costs an ack and nothing else —
  and the socket is not read again until a token is back. A client sending
  far too fast is thus held to the rate by TCP backpressure: each refusal
  is followed by one accepted event, and the rest of its traffic is never
  read while it waits.
- **Persistent flooding** (`SOCKET_FLOOD_DISCONNECT`): when a budget has had
  that many events refused within `FLOOD_WINDOW` seconds, the connection is
  held unread for `FLOOD_HOLD` seconds, then disconnected; a reconnecting
  flooder spends the same (user's) budget and is held and dropped again at
  its next refusal, so it reconnects at most once per hold. A client that
  waits `retry_after` never gets near it.

Budgets of different users are independent: one user being throttled never
delays another's events.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from app.errors import RateLimited

FLOOD_WINDOW = 10.0  # seconds over which refused events are counted
FLOOD_HOLD = 5.0  # seconds a connection being dropped for flooding is held, unread
MAX_WAITING = 64  # events of one budget waiting for room; beyond, refused


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_inflight: int = 8
    burst: float = 200.0  # tokens the bucket holds
    per_second: float = 40.0  # refill rate
    flood_disconnect: int = 100  # refused events within FLOOD_WINDOW; 0: never

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
    """One budget's counters (referenced by the Engine.IO sockets that spend it)."""

    __slots__ = ("limits", "inflight", "tokens", "stamp", "refused", "window_start",
                 "resume", "throttled", "waiting")

    def __init__(self, limits: ConnectionLimits, now: float) -> None:
        self.limits = limits
        self.inflight = 0
        self.tokens = limits.burst
        self.stamp = now
        self.refused = 0  # refusals in the current FLOOD_WINDOW
        self.window_start = now
        self.resume: asyncio.Event | None = None  # set while events wait for room
        self.waiting = 0  # events waiting for room
        # The last event was refused for want of a token: the read loops of its
        # sockets pause until one is back (refill_delay).
        self.throttled = False

    def take(self, now: float) -> float:
        """0.0 when the event may run (one token spent, one more in flight);
        otherwise the seconds after which it would be accepted. Call it when
        not `full` (after wait_for_room)."""
        wait = self.spend(now)
        if not wait:
            self.inflight += 1
        return wait

    def spend(self, now: float) -> float:
        """One token, not counted in flight (for packets handled inline, such as a
        namespace CONNECT): 0.0 when spent, else the seconds until one is there."""
        limits = self.limits
        tokens = self.tokens + (now - self.stamp) * limits.per_second
        if tokens > limits.burst:
            tokens = limits.burst
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return (1.0 - tokens) / limits.per_second
        self.tokens = tokens - 1.0
        self.throttled = False
        return 0.0

    def refill_delay(self, now: float) -> float:
        """Seconds until the bucket holds a token again."""
        tokens = self.tokens + (now - self.stamp) * self.limits.per_second
        return max(0.0, (1.0 - tokens) / self.limits.per_second)

    def refuse(self, now: float) -> bool:
        """Count one refused event; True when the connection should be dropped."""
        self.throttled = True
        if now - self.window_start > FLOOD_WINDOW:
            self.window_start = now
            self.refused = 0
        self.refused += 1
        limit = self.limits.flood_disconnect
        return bool(limit) and self.refused >= limit

    def done(self, _task=None) -> None:
        """An event spending this budget finished (a task's done callback)."""
        self.inflight -= 1
        resume = self.resume
        if resume is not None and self.inflight < self.limits.max_inflight:
            self.resume = None
            resume.set()

    def as_good_as_new(self, now: float) -> bool:
        """Nothing running, the bucket refilled and no refusal in the current
        window: forgetting this budget changes nothing."""
        limits = self.limits
        return (self.inflight == 0
                and self.tokens + (now - self.stamp) * limits.per_second >= limits.burst
                and now - self.window_start > FLOOD_WINDOW)

    @property
    def full(self) -> bool:
        return self.inflight >= self.limits.max_inflight

    async def wait_for_room(self) -> None:
        """Until fewer than max_inflight events spending this budget are running."""
        while self.inflight >= self.limits.max_inflight:
            if self.resume is None:
                self.resume = asyncio.Event()
            await self.resume.wait()


def rate_limited_ack(retry_after: float) -> dict:
    return {"ok": False, "error": RateLimited(
        retry_after, "Too many events on this connection; slow down.").to_dict()}
