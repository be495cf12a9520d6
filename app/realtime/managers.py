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
`_listen`): emits are queued to one publisher task that pipelines them over a
single connection (bounded queue and timeout; failures are counted and logged,
never raised); listening reconnects with a backoff capped at 2 s; and after any
gap the affected clients get a `resync` event so they run `sync` and fetch what
they missed from the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import socketio
from engineio import packet as eio_packet
from socketio import packet

from app.fanout import NAMESPACE
from app.realtime.rooms import SidRoomIndex

KICK_EVENT = "__parley_disconnect_room__"
# Server → client: "you may have missed live events; run sync".
RESYNC_EVENT = "resync"
# Longest an emit waits for packets queued to long-polling sockets (seconds).
FALLBACK_PATIENCE = 3.0

log = logging.getLogger("parley.realtime")


async def _disconnect_local(manager, namespace: str, room: str) -> None:
    sids = [sid for sid, _eio in manager.get_participants(namespace, room)]
    for sid in sids:
        await manager.server.disconnect(sid, namespace=namespace, ignore_queue=True)


def _log_death(task: asyncio.Task) -> None:
    """Done callback of a background task that should only end by cancellation:
    anything else is logged once (the next emit starts a new one)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("realtime task %s died", task.get_name(), exc_info=task.exception())


def _log_failed_sends(tasks) -> None:
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    if failed:
        log.warning("emit: %d of %d long-polling deliveries failed (%s)", len(failed),
                    len(tasks), type(failed[0].exception()).__name__)


class DirectEmit(socketio.AsyncManager):
    """Local delivery of one emit without a task per recipient.

    python-socketio's `AsyncManager.emit` encodes the packet once but then
    starts a task per recipient and waits for all of them (~9 µs each). On the
    WebSocket transport a write is synchronous (`FastEngineServer.send_now`,
    app/realtime/engine.py), so this loop writes directly and only falls back to
    the library's send (in tasks) for long-polling or upgrading sockets. It also
    counts `message:new` deliveries in the same walk.

    It sits below the pub/sub layer in the MRO (see RedisManager's bases), so
    both the local manager and the Redis manager's per-process delivery use it.
    """

    metrics = None

    async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None,
                   to=None, **kwargs):
        room = to or room
        send_now = getattr(self.server.eio, "send_now", None)
        if callback is not None or send_now is None or namespace not in self.rooms:
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                      callback=callback, **kwargs)
        if isinstance(data, tuple):
            data = list(data)
        elif data is not None:
            data = [data]
        else:
            data = []
        skip = skip_sid if isinstance(skip_sid, list) else (skip_sid,)
        pkt = self.server.packet_class(packet.EVENT, namespace=namespace, data=[event] + data)
        encoded = pkt.encode()
        eio_pkts = [eio_packet.Packet(eio_packet.MESSAGE, p)
                    for p in (encoded if isinstance(encoded, list) else (encoded,))]
        fallback = []
        delivered = 0
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            delivered += 1
            for p in eio_pkts:
                if not send_now(eio_sid, p):
                    fallback.append(asyncio.ensure_future(self.server._send_eio_packet(eio_sid, p)))
        if delivered and event == "message:new" and self.metrics is not None:
            self.metrics.messages_delivered.inc(delivered)
        if fallback:
            # Long-polling sockets: queued for their next poll. Bounded, so an emit
            # never holds a sender's ack (app/fanout.py relies on that).
            done, _ = await asyncio.wait(fallback, timeout=FALLBACK_PATIENCE)
            _log_failed_sends(done)


class LocalManager(SidRoomIndex, DirectEmit):
    async def disconnect_room(self, room: str, namespace: str) -> None:
        await _disconnect_local(self, namespace, room)

    async def close(self) -> None:
        pass


# MRO: … AsyncPubSubManager → DirectEmit → AsyncManager: the pub/sub layer's local
# delivery (`super().emit` in `_handle_emit`) goes through DirectEmit.
class RedisManager(SidRoomIndex, socketio.AsyncRedisManager, DirectEmit):
    def __init__(self, url: str, channel: str = "parley", *, metrics=None,
                 publish_timeout: float = 1.0, max_backoff: float = 2.0,
                 outbox_size: int = 20_000, batch_size: int = 256,
                 resync_interval: float = 1.0) -> None:
        super().__init__(url, channel=channel)
        self.metrics = metrics
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self.outbox_size = outbox_size
        self.batch_size = batch_size
        self.resync_interval = resync_interval
        self._pub = None  # redis.asyncio.Redis on one connection, PUBLISH only
        self._outbox: deque[str] = deque()  # encoded messages, in emit order
        self._wakeup = asyncio.Event()
        self._publisher: asyncio.Task | None = None
        self._down = False  # the last publish failed; drop until Redis answers again
        self._gap = False  # something was not published: other processes need a resync
        self._last_resync = 0.0
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
        try:
            if message.get("event") == KICK_EVENT:
                await _disconnect_local(self, message.get("namespace") or "/",
                                        message.get("room"))
                return
            await super()._handle_emit(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Logged here, with what it was, rather than by the library's listener
            # loop (its own logger and handler, outside our log format).
            log.exception("redis: delivering a published event failed",
                          extra={"fields": {"event": str(message.get("event"))[:64],
                                            "room": str(message.get("room"))[:80]}})

    # --- publishing --------------------------------------------------------
    #
    # One publisher task per process owns one Redis connection and sends what
    # emits queued in pipelined batches. An emit never waits for Redis (the ack
    # of a committed message is not held by it), messages leave in emit order
    # (a conversation's events stay in seq order), and load cannot exhaust a
    # connection pool: redis-py's pool raised MaxConnectionsError at ~100
    # concurrent publishes, which dropped live events under load (issue 7).
    # Whatever cannot be published (Redis down, outbox full) is counted, and the
    # other processes' clients get a `resync` as soon as Redis answers again —
    # from this task, so it goes out even if nobody sends anything afterwards.

    def _note_failure(self, what: str, exc: BaseException | None, n: int = 1) -> None:
        self._gap = True
        if self.metrics is not None:
            self.metrics.redis_publish_failures.inc(n)
        now = time.monotonic()
        if now - self._last_error_log >= 5:  # one line per 5 s, not one per message
            self._last_error_log = now
            log.warning("redis publish failed (%s): %s; other processes miss live events "
                        "until Redis is back, their clients catch up with sync", what,
                        type(exc).__name__ if exc else "unavailable")

    async def _publish(self, data):
        """Queue for the publisher task. Never raises, never waits for Redis."""
        if self._down:
            self._note_failure("skipped", None)
            return
        if len(self._outbox) >= self.outbox_size:
            self._note_failure("outbox full", None)
            return
        self._outbox.append(self.json.dumps(data))
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.ensure_future(self._run_publisher())
            self._publisher.add_done_callback(_log_death)
        self._wakeup.set()

    def _resync_message(self) -> str:
        # Published only: this process's own clients got every event directly.
        return self.json.dumps({"method": "emit", "event": RESYNC_EVENT,
                                "data": [{"reason": "redis"}], "binary": False,
                                "namespace": NAMESPACE, "room": None, "skip_sid": None,
                                "callback": None, "host_id": self.host_id})

    async def _send(self, batch: list[str]) -> None:
        if self._pub is None:
            self._pub = self._client(socket_timeout=self.publish_timeout,
                                     single_connection_client=True)
        if len(batch) == 1:
            coro = self._pub.publish(self.channel, batch[0])
        else:
            pipe = self._pub.pipeline(transaction=False)
            for item in batch:
                pipe.publish(self.channel, item)
            coro = pipe.execute()
        await asyncio.wait_for(coro, self.publish_timeout)

    async def _drop_connection(self) -> None:
        pub, self._pub = self._pub, None
        if pub is not None:
            try:
                await asyncio.wait_for(pub.aclose(), 1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Already broken (that is why it is dropped): note it, carry on.
                log.info("redis: closing the publish connection failed (%s)",
                         type(exc).__name__)

    async def _run_publisher(self) -> None:
        backoff = 0.1
        while True:
            if self._down:
                # Probe until Redis answers; then the resync below goes out.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                try:
                    await self._send([self._resync_message()])
                except asyncio.CancelledError:
                    raise
                except Exception:
                    await self._drop_connection()
                    continue
                self._down, self._gap, backoff = False, False, 0.1
                self._last_resync = time.monotonic()
                log.warning("redis publish recovered; other processes' clients resync")
                continue
            if self._gap and not self._outbox:
                # Outbox overflowed while Redis was up: resync, at most once per interval.
                wait = self._last_resync + self.resync_interval - time.monotonic()
                if wait > 0:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), wait)
                    except TimeoutError:
                        pass
                    continue
                self._outbox.append(self._resync_message())
                self._gap = False
                self._last_resync = time.monotonic()
            if not self._outbox:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            n = min(len(self._outbox), self.batch_size)
            batch = [self._outbox.popleft() for _ in range(n)]
            try:
                await self._send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Drop what is queued too: it is all in the database, and the
                # clients that missed it get a resync once Redis is back.
                lost = n + len(self._outbox)
                self._outbox.clear()
                self._down = True
                self._note_failure("error", exc, lost)
                await self._drop_connection()

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
                        data = self._decode(msg["data"])
                        if data is not None:
                            yield data
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
                    except Exception as exc:
                        log.info("redis: closing the listener connection failed (%s)",
                                 type(exc).__name__)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _decode(self, raw) -> dict | None:
        """One published message as the library's listener takes it (a dict); the
        library would drop an undecodable one without a word."""
        try:
            data = self.json.loads(raw)
        except Exception as exc:  # noqa: BLE001 - not ours or corrupted: logged, skipped
            log.warning("redis: skipped an undecodable message on %r (%s, %d bytes)",
                        self.channel, type(exc).__name__, len(raw or b""))
            return None
        if not isinstance(data, dict):
            log.warning("redis: skipped a message on %r that is not an object", self.channel)
            return None
        return data

    async def close(self) -> None:
        """Stop the listener and drop the publishing connection (app cleanup)."""
        if self._publisher is not None and not self._down and self._outbox:
            # Let what is queued go out (bounded) before closing.
            self._wakeup.set()
            for _ in range(20):
                if not self._outbox:
                    break
                await asyncio.sleep(0.05)
        for task in (getattr(self, "thread", None), self._publisher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._drop_connection()
