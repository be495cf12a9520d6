"""Client managers: one process (LocalManager) or many sharing Redis (RedisManager).

Disconnecting a whole room everywhere: python-socketio's managers can emit to a
room on every process but only disconnect a single sid. Logout needs "drop
every socket of this session, wherever it is", so a reserved event name travels
the normal emit path and each process turns it into local disconnects.

Redis outages. python-socketio's AsyncRedisManager (5.18.1) was read and tried:
- `_publish` makes two attempts and then logs and gives up: it never raises,
  but it builds a brand-new Redis client on every failure and, with redis-py's
  default 5 s socket timeout and its own retries, can hold an emit (and so the
  ack of a committed message) for many seconds when Redis hangs.
- `_redis_listen_with_retries` backs off 1, 2, 4, 8 … 60 s: after a 10 s outage
  the process re-subscribed ~5 s after Redis returned (measured), after a
  minute's outage up to a minute later; and nobody tells the clients that they
  missed events in between.
So RedisManager overrides the two pub/sub extension points (`_publish`,
`_listen`): publishing is bounded by a short timeout and a circuit breaker,
failures are counted and logged and never raised; listening reconnects with a
backoff capped at 2 s; and after any gap the affected clients get a `resync`
event so they run `sync` and fetch what they missed from the database.
"""

from __future__ import annotations

import asyncio
import logging
import time

import socketio

from app.fanout import NAMESPACE

KICK_EVENT = "__parley_disconnect_room__"
# Server → client: "you may have missed live events; run sync".
RESYNC_EVENT = "resync"

log = logging.getLogger("parley.realtime")


async def _disconnect_local(manager, namespace: str, room: str) -> None:
    sids = [sid for sid, _eio in manager.get_participants(namespace, room)]
    for sid in sids:
        await manager.server.disconnect(sid, namespace=namespace, ignore_queue=True)


def _count_delivery(manager, event, namespace, room, skip_sid) -> None:
    metrics = getattr(manager, "metrics", None)
    if metrics is None or event != "message:new" or room is None:
        return
    skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
    n = sum(1 for sid, _ in manager.get_participants(namespace, room) if sid not in skip)
    if n:
        metrics.messages_delivered.inc(n)


class LocalManager(socketio.AsyncManager):
    metrics = None

    async def disconnect_room(self, room: str, namespace: str) -> None:
        await _disconnect_local(self, namespace, room)

    async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None,
                   to=None, **kwargs):
        _count_delivery(self, event, namespace, to or room, skip_sid)
        return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                  callback=callback, to=to, **kwargs)

    async def close(self) -> None:
        pass


class RedisManager(socketio.AsyncRedisManager):
    def __init__(self, url: str, channel: str = "parley", *, metrics=None,
                 publish_timeout: float = 1.0, breaker_seconds: float = 0.5,
                 max_backoff: float = 2.0) -> None:
        super().__init__(url, channel=channel)
        self.metrics = metrics
        self.publish_timeout = publish_timeout
        self.breaker_seconds = breaker_seconds
        self.max_backoff = max_backoff
        self._pub = None  # redis.asyncio.Redis used for PUBLISH only
        self._down_until = 0.0  # circuit breaker: skip publishing until then
        self._publish_failed = False
        self._last_error_log = 0.0
        self.subscribed = asyncio.Event()

    def _client(self, **extra):
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No hidden retries or long socket timeouts: we bound and retry ourselves.
        return Redis.from_url(self.redis_url, socket_connect_timeout=1.0,
                              retry=Retry(NoBackoff(), 0), **extra)

    # --- cross-process disconnects ----------------------------------------

    async def disconnect_room(self, room: str, namespace: str) -> None:
        await self.emit(KICK_EVENT, None, namespace=namespace, room=room)

    async def _handle_emit(self, message):
        if message.get("event") == KICK_EVENT:
            await _disconnect_local(self, message.get("namespace") or "/", message.get("room"))
            return
        _count_delivery(self, message.get("event"), message.get("namespace"),
                        message.get("room"), message.get("skip_sid"))
        await super()._handle_emit(message)

    # --- publishing --------------------------------------------------------

    def _note_failure(self, what: str, exc: BaseException | None) -> None:
        if self.metrics is not None:
            self.metrics.redis_publish_failures.inc()
        now = time.monotonic()
        if now - self._last_error_log >= 5:  # one line per 5 s, not one per message
            self._last_error_log = now
            log.warning("redis publish failed (%s): %s; other processes miss live events "
                        "until Redis is back, their clients catch up with sync", what,
                        type(exc).__name__ if exc else "circuit open")

    async def _publish(self, data):
        """Never raises, never blocks longer than `publish_timeout`."""
        now = time.monotonic()
        if now < self._down_until:
            self._publish_failed = True
            self._note_failure("skipped", None)
            return None
        try:
            if self._pub is None:
                self._pub = self._client(socket_timeout=self.publish_timeout)
            result = await asyncio.wait_for(
                self._pub.publish(self.channel, self.json.dumps(data)), self.publish_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._down_until = time.monotonic() + self.breaker_seconds
            self._publish_failed = True
            self._note_failure("error", exc)
            return None
        if self._publish_failed:
            # Back after failures: everyone may have missed something we sent.
            self._publish_failed = False
            log.warning("redis publish recovered; asking every client to resync")
            asyncio.ensure_future(self._broadcast_resync())
        return result

    async def _broadcast_resync(self) -> None:
        try:
            await self.emit(RESYNC_EVENT, {"reason": "redis"}, namespace=NAMESPACE)
        except Exception:
            log.exception("could not broadcast resync")

    # --- listening ---------------------------------------------------------

    async def _listen(self):
        """Yield raw messages from the channel forever, re-subscribing by itself."""
        backoff = 0.25
        first = True
        while True:
            client = self._client(socket_timeout=None, health_check_interval=10)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(pubsub.subscribe(self.channel), 3)
                self.subscribed.set()
                if self.metrics is not None:
                    self.metrics.redis_subscribed.set(1)
                if not first:
                    log.warning("redis listener re-subscribed")
                    if self.metrics is not None:
                        self.metrics.redis_resubscribes.inc()
                    # Events published while we were away are gone: tell our clients.
                    await self.server.emit(RESYNC_EVENT, {"reason": "redis"},
                                           namespace=NAMESPACE, ignore_queue=True)
                first = False
                backoff = 0.25
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg and msg.get("type") == "message":
                        yield msg["data"]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribed.is_set() or first:
                    log.warning("redis listener lost (%s); retrying", type(exc).__name__)
                self.subscribed.clear()
                if self.metrics is not None:
                    self.metrics.redis_subscribed.set(0)
                first = False
            finally:
                for closer in (pubsub.aclose, client.aclose):
                    try:
                        await asyncio.wait_for(closer(), 1)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def close(self) -> None:
        """Stop the listener and drop the publishing connection (app cleanup)."""
        thread = getattr(self, "thread", None)
        if thread is not None:
            thread.cancel()
            await asyncio.gather(thread, return_exceptions=True)
        if self._pub is not None:
            try:
                await self._pub.aclose()
            except Exception:
                pass
            self._pub = None
