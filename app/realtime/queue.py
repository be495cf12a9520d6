"""Many server processes, one message queue: Redis pub/sub or RabbitMQ.

`QueueManager` is the Socket.IO client manager of a process that shares its
clients' events with other processes through `MESSAGE_QUEUE_URL` (`redis://…`
or `amqp://…`). It does not use python-socketio's pub/sub managers: those
publish every emit to every process as a JSON document that each process
decodes, re-encodes and mostly drops (it holds no socket of the recipients),
with a task and a round trip per emit. Here:

Targeted routing. Every process has its own inbox (a Redis channel or a
RabbitMQ queue) besides the broadcast one. A process tells the others which
users it holds sockets of (`reg`/`unreg` records, batched), heartbeats every
`heartbeat` seconds with its user count, and answers `hello` with a full
snapshot. An emit to user rooms (`u:<id>`) goes only to the processes that
registered one of those users; nothing is published when every recipient is
local. A process whose heartbeats stop is forgotten after `expiry` seconds
(a crashed process's registrations lapse). A heartbeat whose count disagrees
with what a peer believes makes that peer ask for a snapshot.

Correct under churn: when a socket brings a user to this process for the first
time, its `connect` waits (bounded by `fence_timeout`) until every live peer
has acknowledged the registration. The client's `sync` comes after the
connect, so a message committed before a peer routes to us is in that sync,
and one emitted after goes to us.

Encode once, decode never. An emit is encoded to its Socket.IO packet text
once; local sockets get it, and the same text travels to the other processes
inside a record (`<small JSON header>\\t<packet text>`) that they write to
their sockets without decoding the payload.

Order. A `message:new` record carries its conversation and seq in the header,
so the receiver can release each conversation's messages in seq order
together with its own (app/realtime/seq_order.py) without decoding the payload.

Batches. Emits are queued to one publisher task (an emit never waits for the
broker, so a committed message's ack is never held by it) that sends what
accumulated as one frame per destination. A frame carries the sender, a
sequence number per (sender, destination) and its records; a receiver that
sees a sequence number skip (a RabbitMQ queue overflowed, a frame was lost)
tells its clients to `resync`.

Outages. Whatever cannot be published is dropped and counted
(`parley_redis_publish_failures`); once the broker answers again the
publisher broadcasts a resync record and a snapshot. The listener reconnects
with a backoff capped at `max_backoff`; after it was away its own clients get
`resync` and it asks every peer for a snapshot. Clients then fetch what they
missed from the database with `sync`.

Library internals (python-socketio, pinned in pyproject.toml, checked by
tests/test_library_internals.py): `QueueManager` extends the manager's
`basic_enter_room`, `basic_leave_room` and `enter_room` to announce users,
replaces `emit` (through managers.DirectEmit) and reads the manager's `rooms`
table; the room index of app/realtime/rooms.py applies as in LocalManager.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque

import msgspec

from app.fanout import NAMESPACE
from app.logs import Retrying
from app.realtime.managers import (
    RESYNC_EVENT,
    DirectEmit,
    _disconnect_local,
    _log_death,
    wait_fallback,
)
from app.realtime.rooms import SidRoomIndex
from app.realtime.seq_order import HOLD as ORDER_HOLD
from app.realtime.seq_order import conversation_seq
from app.services import read_cache

log = logging.getLogger("parley.queue")

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()
ALL = "all"  # the broadcast destination


class Transport:
    """One broker: publish frames to a destination, receive this process's frames."""

    name = "queue"
    timeout = 1.0
    idle_timeout = math.inf

    async def connect_publisher(self) -> None: ...

    async def publish(self, frames: list[tuple[str, bytes]]) -> None:
        """Send (destination, frame) pairs in order; raises when the broker is gone."""

    async def close_publisher(self) -> None: ...

    def subscription(self):
        """An async context manager yielding an async iterator of frames (bytes)
        sent to ALL or to this process; it raises when the connection is lost."""


class RedisTransport(Transport):
    """Redis pub/sub on redis-py's connections, without its client layer: one
    connection publishes pipelined PUBLISH commands, another is subscribed and
    read with `read_response` (the PubSub object wraps every read in the
    client's retry machinery)."""

    name = "redis"

    def __init__(self, url: str, prefix: str, proc_id: str, timeout: float = 1.0) -> None:
        from redis.asyncio import ConnectionPool
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.prefix = prefix
        self.inbox = f"{prefix}:p:{proc_id}"
        self.timeout = timeout
        # No hidden retries or long socket timeouts: we bound and retry ourselves.
        # RESP2: messages of a subscription are plain replies (RESP3 makes them
        # pushes, which read_response hands to a push handler instead).
        self._pool = ConnectionPool.from_url(url, socket_connect_timeout=timeout, protocol=2,
                                             retry=Retry(NoBackoff(), 0))
        self._pub = None

    def channel(self, dest: str) -> str:
        return f"{self.prefix}:all" if dest == ALL else f"{self.prefix}:p:{dest}"

    async def connect_publisher(self) -> None:
        conn = self._pool.make_connection()
        await asyncio.wait_for(conn.connect(), self.timeout)
        self._pub = conn

    async def publish(self, frames) -> None:
        if self._pub is None:
            await self.connect_publisher()
        # asyncio.timeout, not wait_for: no task per batch.
        async with asyncio.timeout(self.timeout):
            await self._publish(self._pub, frames)

    async def _publish(self, conn, frames) -> None:
        await conn.send_packed_command(
            conn.pack_commands([("PUBLISH", self.channel(d), f) for d, f in frames]),
            check_health=False)
        for _ in frames:
            reply = await conn.read_response(timeout=math.inf)
            if isinstance(reply, Exception):
                raise reply

    async def close_publisher(self) -> None:
        conn, self._pub = self._pub, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.disconnect(nowait=True), 1)
            except (TimeoutError, Exception) as exc:  # noqa: BLE001 - already broken
                log.info("redis: closing the publish connection failed (%s)",
                         type(exc).__name__)

    def subscription(self):
        return _RedisSubscription(self)

    async def aclose(self) -> None:
        await self.close_publisher()
        await self._pool.aclose()


class _RedisSubscription:
    def __init__(self, transport: RedisTransport) -> None:
        self.t = transport
        self.conn = None

    async def __aenter__(self):
        t = self.t
        conn = t._pool.make_connection()
        self.conn = conn
        await asyncio.wait_for(conn.connect(), t.timeout)
        await conn.send_command("SUBSCRIBE", t.channel(ALL), t.inbox, check_health=False)
        for _ in range(2):
            reply = await asyncio.wait_for(conn.read_response(timeout=math.inf), t.timeout)
            if not (isinstance(reply, list) and reply[0] in (b"subscribe", "subscribe")):
                raise ConnectionError(f"unexpected reply to SUBSCRIBE: {reply!r}"[:200])
        return self._frames()

    async def _frames(self):
        conn = self.conn
        idle = self.t.idle_timeout
        while True:
            # Our own heartbeats come back on the broadcast channel: silence this
            # long means a connection that died without a reset.
            reply = await conn.read_response(timeout=idle)
            if reply is None:  # read_response's answer to its own timeout
                raise ConnectionError(f"nothing received for {idle:.0f} s")
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                yield reply[2]

    async def __aexit__(self, *exc) -> None:
        if self.conn is not None:
            try:
                await asyncio.wait_for(self.conn.disconnect(nowait=True), 1)
            except (TimeoutError, Exception) as e:  # noqa: BLE001 - already broken
                log.info("redis: closing the listener connection failed (%s)", type(e).__name__)


class AmqpTransport(Transport):
    """RabbitMQ through aio-pika: one non-durable direct exchange per deployment
    (`prefix`); each process has an exclusive, auto-deleted queue bound to the
    routing keys `all` and `p.<process id>`. Messages are transient, published
    without confirms (like Redis pub/sub: a lost frame is detected by its
    sequence number), and the queue is bounded (`max_queue`, oldest dropped).

    aio-pika opens the connection and declares the topology; frames are published
    on its underlying aiormq channel: aio-pika's `Exchange.publish` builds a
    `Message` and its properties per call, and aiormq would draw a random
    message id for each, where one fixed set of properties does. Only a batch's
    last frame waits for aiormq's writer (the order is the write queue's, which
    is bounded, so the others cannot pile up), instead of one loop turn each."""

    name = "amqp"

    def __init__(self, url: str, prefix: str, proc_id: str, timeout: float = 1.0,
                 max_queue: int = 100_000) -> None:
        self.url = url
        self.prefix = prefix
        self.proc_id = proc_id
        self.timeout = timeout
        self.max_queue = max_queue
        self._pub = None  # (aio-pika connection, aiormq channel)
        self._props = None

    def routing_key(self, dest: str) -> str:
        return dest if dest == ALL else f"p.{dest}"

    async def _open(self):
        import aio_pika

        conn = await asyncio.wait_for(aio_pika.connect(self.url, timeout=self.timeout),
                                      self.timeout * 3)
        try:
            ch = await conn.channel(publisher_confirms=False)
            ex = await ch.declare_exchange(self.prefix, aio_pika.ExchangeType.DIRECT,
                                           durable=False, auto_delete=False)
        except BaseException:
            await conn.close()
            raise
        return conn, ch, ex

    async def connect_publisher(self) -> None:
        from aiormq import spec

        conn, ch, _ex = await self._open()
        self._props = spec.Basic.Properties(delivery_mode=1, message_id=self.proc_id)
        self._pub = (conn, await ch.get_underlay_channel())

    async def publish(self, frames) -> None:
        if self._pub is None:
            await self.connect_publisher()
        conn, ch = self._pub
        if conn.is_closed or ch.is_closed:
            raise ConnectionError("RabbitMQ connection closed")
        last = len(frames) - 1
        async with asyncio.timeout(self.timeout):
            for i, (dest, frame) in enumerate(frames):
                await ch.basic_publish(frame, exchange=self.prefix,
                                       routing_key=self.routing_key(dest),
                                       properties=self._props, wait=i == last)

    async def close_publisher(self) -> None:
        pub, self._pub = self._pub, None
        if pub is not None:
            try:
                await asyncio.wait_for(pub[0].close(), 1)
            except (TimeoutError, Exception) as exc:  # noqa: BLE001 - already broken
                log.info("amqp: closing the publish connection failed (%s)",
                         type(exc).__name__)

    def subscription(self):
        return _AmqpSubscription(self)

    async def aclose(self) -> None:
        await self.close_publisher()


class _AmqpSubscription:
    """Frames arrive through aiormq's consumer callback (a task per delivery, the
    library's); they wait in a deque, and the iterator sleeps on one future only
    when it is empty."""

    def __init__(self, transport: AmqpTransport) -> None:
        self.t = transport
        self.conn = None
        self.inbox: deque[bytes] = deque()
        self.lost = False
        self._waiter: asyncio.Future | None = None

    async def __aenter__(self):
        t = self.t
        conn, ch, ex = await t._open()
        self.conn = conn
        conn.close_callbacks.add(self._on_close)
        ch.close_callbacks.add(self._on_close)
        q = await ch.declare_queue(f"{t.prefix}.{t.proc_id}", exclusive=True, auto_delete=True,
                                   arguments={"x-max-length": t.max_queue,
                                              "x-overflow": "drop-head"})
        await q.bind(ex, ALL)
        await q.bind(ex, t.routing_key(t.proc_id))
        await q.consume(self._on_message, no_ack=True)
        return self._frames()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _on_message(self, msg) -> None:
        self.inbox.append(msg.body)
        self._wake()

    async def _on_close(self, *_args) -> None:
        self.lost = True
        self._wake()

    async def _frames(self):
        inbox = self.inbox
        loop = asyncio.get_running_loop()
        while True:
            while inbox:
                yield inbox.popleft()
            if self.lost:
                raise ConnectionError("RabbitMQ connection lost")
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def __aexit__(self, *exc) -> None:
        if self.conn is not None:
            try:
                await asyncio.wait_for(self.conn.close(), 1)
            except (TimeoutError, Exception) as e:  # noqa: BLE001 - already broken
                log.info("amqp: closing the listener connection failed (%s)", type(e).__name__)


def make_transport(url: str, prefix: str, proc_id: str) -> Transport:
    if url.startswith(("amqp://", "amqps://")):
        return AmqpTransport(url, prefix, proc_id)
    return RedisTransport(url, prefix, proc_id)


class _Peer:
    __slots__ = ("users", "seen")

    def __init__(self, now: float) -> None:
        self.users: set[str] = set()
        self.seen = now


class QueueManager(SidRoomIndex, DirectEmit):
    def __init__(self, url: str, channel: str = "parley", *, metrics=None,
                 publish_timeout: float = 1.0, max_backoff: float = 2.0,
                 outbox_size: int = 20_000, batch_size: int = 512,
                 resync_interval: float = 1.0, heartbeat: float = 2.0,
                 expiry: float | None = None, fence_timeout: float = 1.0,
                 order_hold: float = ORDER_HOLD) -> None:
        # Each conversation's message:new events leave this process in seq
        # order, wherever they were sent (app/realtime/seq_order.py).
        super().__init__(order_hold=order_hold)
        self.url = url
        self.channel = channel
        self.proc_id = uuid.uuid4().hex
        self.host_id = self.proc_id
        self.expiry = expiry if expiry is not None else 3 * heartbeat + 1
        self.transport = make_transport(url, channel, self.proc_id)
        self.transport.timeout = publish_timeout
        self.transport.idle_timeout = self.expiry if heartbeat else math.inf
        self.metrics = metrics
        self.max_backoff = max_backoff
        self.outbox_size = outbox_size
        self.batch_size = batch_size
        self.resync_interval = resync_interval
        self.heartbeat = heartbeat
        self.fence_timeout = fence_timeout
        # (destination, record) in emit order; the publisher groups them per destination.
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._wakeup = asyncio.Event()
        self._out_seq: dict[str, int] = {}
        self._in_seq: dict[tuple[str, bool], int] = {}
        self._publisher: asyncio.Task | None = None
        self._listener: asyncio.Task | None = None
        self._beat: asyncio.Task | None = None
        self._down = False
        self._gap = False
        self._last_resync = 0.0
        self._local_resync_at = 0.0
        self._local_resync_later: asyncio.TimerHandle | None = None
        # A broker outage is a few lines: its first failure of each kind, a
        # reminder a minute, and its end; emits skipped meanwhile are counted.
        self._outage = Retrying(log, f"{self.transport.name} publish",
                                meanwhile="other processes miss live events until it is back, "
                                          "their clients catch up with sync")
        self._overflow_told = -math.inf
        self.subscribed = asyncio.Event()
        # Registry: who holds sockets of whom.
        self.peers: dict[str, _Peer] = {}
        self.user_procs: dict[str, set[str]] = {}
        self._announce: dict[str, bool] = {}  # user → registered (True) / not, unsent
        self._fences: dict[str, tuple[set[str], asyncio.Future]] = {}
        self._pending_fence: asyncio.Future | None = None
        self._closing = False
        # Counted for tests and benchmarks: frames published, emit records sent
        # to (a copy per destination) and received from other processes.
        self.frames_sent = 0
        self.emits_sent = 0
        self.emits_received = 0

    # --- life cycle -----------------------------------------------------------

    def initialize(self):
        super().initialize()
        self._listener = asyncio.ensure_future(self._listen_loop())
        self._listener.add_done_callback(_log_death)
        self._beat = asyncio.ensure_future(self._heartbeat())
        self._beat.add_done_callback(_log_death)

    async def start(self, timeout: float = 5.0) -> None:
        """After `initialize`: wait (bounded) until subscribed and the peers that
        answered our hello have sent their snapshots."""
        try:
            await asyncio.wait_for(self.subscribed.wait(), timeout)
        except TimeoutError:
            log.warning("%s: not subscribed after %.0f s; continuing (it keeps trying)",
                        self.transport.name, timeout)
            return
        await asyncio.sleep(min(0.3, self.heartbeat / 4))

    async def close(self) -> None:
        self._closing = True
        if self.order is not None:
            self.order.flush()  # held messages go out to clients still connected
        if self._publisher is not None and not self._down:
            # Tell the peers we are gone (their routes to us end now) and let what
            # is queued go out (bounded).
            self._queue(ALL, _record({"k": "bye"}))
            for _ in range(20):
                if not self._outbox:
                    break
                await asyncio.sleep(0.05)
        for task in (self._listener, self._publisher, self._beat, *self._tasks):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for _users, fut in self._fences.values():
            if not fut.done():
                fut.set_result(None)
        await self.transport.aclose()

    # --- emitting -------------------------------------------------------------

    async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None,
                   to=None, ignore_queue=False, **kwargs):
        room = to or room
        namespace = namespace or "/"
        if callback is not None:
            # Acks from other processes' clients are not routed back: local only.
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                      callback=callback, **kwargs)
        encoded = self.encode(event, data, namespace)
        count = event == "message:new"
        # Sent to the others with the header even when this process does not hold.
        order = conversation_seq(data) if count else None
        fallback = self.deliver_local(order, encoded, namespace, room, skip_sid, count)
        if not ignore_queue:
            if isinstance(encoded, list):
                log.warning("queue: binary event %r not sent to other processes", event)
            else:
                self._route(namespace, room, skip_sid, encoded, count, order)
        if fallback:
            await wait_fallback(fallback)

    def _targets(self, namespace: str, room) -> tuple[set[str], bool]:
        """(processes to send to, broadcast instead)."""
        procs: set[str] = set()
        for r in room if isinstance(room, list) else (room,):
            if not isinstance(r, str):
                return procs, True  # everyone in the namespace
            if r.startswith("u:"):
                found = self.user_procs.get(r[2:])
                if found:
                    procs |= found
            elif r.startswith("s:") or not self.is_connected(r, namespace):
                # A session's sockets, or a socket elsewhere: not in the registry.
                return procs, True
            # else: a socket of this process, delivered already
        procs.discard(self.proc_id)
        return procs, False

    def _route(self, namespace, room, skip_sid, encoded: str, count: bool,
               order: tuple[str, int] | None = None) -> None:
        procs, broadcast = self._targets(namespace, room)
        if not procs and not broadcast:
            return
        head = {"k": "e", "r": room}
        if namespace != NAMESPACE:
            head["ns"] = namespace
        if skip_sid is not None:
            head["s"] = skip_sid
        if count:
            head["m"] = 1
        if order is not None:
            head["c"], head["q"] = order
        rec = _enc.encode(head) + b"\t" + encoded.encode()
        if broadcast:
            self.emits_sent += 1
            self._queue(ALL, rec)
        else:
            self.emits_sent += len(procs)
            for p in procs:
                self._queue(p, rec)

    async def disconnect_room(self, room: str, namespace: str) -> None:
        await _disconnect_local(self, namespace, room)
        self._queue(ALL, _record({"k": "kick", "r": room, "ns": namespace}))

    def invalidate(self, kind: str, keys: list[str]) -> None:
        """Every other process drops these cached rows (app/services/read_cache.py)."""
        self._queue(ALL, _record({"k": "inv", "c": kind, "i": keys}))

    # --- publishing -----------------------------------------------------------

    def _note_lost(self, n: int = 1) -> None:
        self._gap = True
        if self.metrics is not None:
            self.metrics.redis_publish_failures.inc(n)

    def _queue(self, dest: str, rec: bytes) -> None:
        """For the publisher task. Never raises, never waits for the broker."""
        if self._down:
            self._note_lost()  # the outage is told by the publisher
            return
        if len(self._outbox) >= self.outbox_size:
            self._note_lost()
            now = time.monotonic()
            if now - self._overflow_told >= 60:  # one line a minute, not one per emit
                self._overflow_told = now
                log.warning("%s publish outbox full: live events are dropped (and counted) "
                            "until it drains; other processes' clients catch up with sync",
                            self.transport.name)
            return
        if self._announce:
            self._flush_announcements()  # registrations keep their place in the order
        self._outbox.append((dest, rec))
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.ensure_future(self._run_publisher())
            self._publisher.add_done_callback(_log_death)
        self._wakeup.set()

    def _frames(self, items) -> list[tuple[str, bytes]]:
        by_dest: dict[str, list[bytes]] = {}
        for dest, rec in items:
            recs = by_dest.get(dest)
            if recs is None:
                by_dest[dest] = [rec]
            else:
                recs.append(rec)
        frames = []
        for dest, recs in by_dest.items():
            n = self._out_seq.get(dest, 0) + 1
            self._out_seq[dest] = n
            head = b"%s %d %d\n" % (self.proc_id.encode(), n, 1 if dest == ALL else 0)
            frames.append((dest, head + b"\n".join(recs)))
        self.frames_sent += len(frames)
        return frames

    async def _run_publisher(self) -> None:
        backoff = 0.1
        while True:
            if self._down:
                # Probe until the broker answers; then the resync and a snapshot go out.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                self._announce.clear()  # the snapshot says it all
                fut, self._pending_fence = self._pending_fence, None
                if fut is not None and not fut.done():
                    fut.set_result(None)
                try:
                    await self.transport.publish(self._frames([
                        (ALL, _record({"k": "rs"})), (ALL, self._snapshot_record())]))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._outage.failed(exc)
                    await self.transport.close_publisher()
                    continue
                self._down, self._gap, backoff = False, False, 0.1
                self._last_resync = time.monotonic()
                self._outage.ok()
                continue
            if self._gap and not self._outbox:
                # Outbox overflowed while the broker was up: resync, at most once per interval.
                wait = self._last_resync + self.resync_interval - time.monotonic()
                if wait > 0:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), wait)
                    except TimeoutError:
                        pass
                    continue
                self._outbox.append((ALL, _record({"k": "rs"})))
                self._gap = False
                self._last_resync = time.monotonic()
            if self._announce:
                self._flush_announcements()
            if not self._outbox:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            n = min(len(self._outbox), self.batch_size)
            popleft = self._outbox.popleft
            items = [popleft() for _ in range(n)]
            try:
                await self.transport.publish(self._frames(items))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Drop what is queued too: it is all in the database, and the
                # clients that missed it get a resync once the broker is back.
                lost = n + len(self._outbox)
                self._outbox.clear()
                self._down = True
                self._note_lost(lost)
                self._outage.failed(exc)
                self._release_fences()
                await self.transport.close_publisher()

    # --- the registry: which process holds which users -----------------------

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        first = (isinstance(room, str) and room.startswith("u:")
                 and not self.rooms.get(namespace, {}).get(room))
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if first:
            self._announce[room[2:]] = True
            self._wakeup_announcer()

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        if (isinstance(room, str) and room.startswith("u:")
                and not self.rooms.get(namespace, {}).get(room)):
            self._announce[room[2:]] = False
            self._wakeup_announcer()

    def _wakeup_announcer(self) -> None:
        if self._pending_fence is None:
            self._pending_fence = asyncio.get_running_loop().create_future()
        # An empty outbox wakes the publisher too; it flushes announcements first.
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.ensure_future(self._run_publisher())
            self._publisher.add_done_callback(_log_death)
        self._wakeup.set()

    def _flush_announcements(self) -> None:
        ann, self._announce = self._announce, {}
        fut, self._pending_fence = self._pending_fence, None
        reg = [u for u, on in ann.items() if on]
        unreg = [u for u, on in ann.items() if not on]
        now = time.monotonic()
        waiting = {p for p, peer in self.peers.items() if now - peer.seen < self.expiry}
        fid = uuid.uuid4().hex[:12]
        if fut is not None:
            if reg and waiting and not self._down:
                self._fences[fid] = (waiting, fut)
                asyncio.get_running_loop().call_later(self.fence_timeout, self._fence_done, fid)
            elif not fut.done():
                fut.set_result(None)
        self._outbox.append((ALL, _record({"k": "reg", "u": reg, "x": unreg, "f": fid})))

    def _fence_done(self, fid: str) -> None:
        entry = self._fences.pop(fid, None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(None)

    def _release_fences(self) -> None:
        for fid in list(self._fences):
            self._fence_done(fid)

    async def enter_room(self, sid, namespace, room, eio_sid=None):
        await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        fut = self._pending_fence
        if fut is not None and not self._down and isinstance(room, str) and room.startswith("u:"):
            # This socket's connect (and so the client's first sync) waits until
            # the other processes route this user here.
            try:
                await asyncio.wait_for(asyncio.shield(fut), self.fence_timeout + 0.5)
            except TimeoutError:
                pass

    def local_users(self) -> list[str]:
        return [r[2:] for r, sids in self.rooms.get(NAMESPACE, {}).items()
                if isinstance(r, str) and r.startswith("u:") and sids]

    def _snapshot_record(self) -> bytes:
        return _record({"k": "snap", "u": self.local_users()})

    def _peer(self, proc: str, now: float) -> _Peer:
        peer = self.peers.get(proc)
        if peer is None:
            peer = self.peers[proc] = _Peer(now)
        peer.seen = now
        return peer

    def _set_user(self, proc: str, peer: _Peer, user: str, on: bool) -> None:
        if on:
            peer.users.add(user)
            self.user_procs.setdefault(user, set()).add(proc)
        else:
            peer.users.discard(user)
            procs = self.user_procs.get(user)
            if procs is not None:
                procs.discard(proc)
                if not procs:
                    del self.user_procs[user]

    def _forget(self, proc: str) -> None:
        self._in_seq.pop((proc, True), None)
        self._in_seq.pop((proc, False), None)
        peer = self.peers.pop(proc, None)
        if peer is not None:
            for u in list(peer.users):
                self._set_user(proc, peer, u, False)
        for fid, (waiting, _fut) in list(self._fences.items()):
            waiting.discard(proc)
            if not waiting:
                self._fence_done(fid)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                self._queue(ALL, _record({"k": "hb", "c": len(self.local_users())}))
                now = time.monotonic()
                for proc, peer in list(self.peers.items()):
                    if now - peer.seen > self.expiry:
                        log.warning("queue: process %s silent for %.0f s; its registrations "
                                    "expire", proc[:8], now - peer.seen)
                        self._forget(proc)
            except Exception:
                log.exception("queue heartbeat failed")

    # --- receiving ------------------------------------------------------------

    async def _listen_loop(self) -> None:
        backoff = 0.25
        first = True
        t = self.transport
        while True:
            try:
                async with t.subscription() as frames:
                    self.subscribed.set()
                    if self.metrics is not None:
                        self.metrics.redis_subscribed.set(1)
                    self._in_seq.clear()
                    if not first:
                        log.warning("%s listener re-subscribed", t.name)
                        if self.metrics is not None:
                            self.metrics.redis_resubscribes.inc()
                        # Events published while we were away are gone: tell our clients.
                        self._resync_local(now=True)
                    # Who is where: every peer answers with a snapshot.
                    self._queue(ALL, _record({"k": "hello"}))
                    first = False
                    backoff = 0.25
                    async for frame in frames:
                        try:
                            self._on_frame(frame)
                        except Exception:
                            log.exception("%s: handling a received frame failed", t.name)
                    raise ConnectionError("subscription ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribed.is_set() or first:
                    log.warning("%s listener lost (%s); retrying", t.name, type(exc).__name__)
                self.subscribed.clear()
                if self.metrics is not None:
                    self.metrics.redis_subscribed.set(0)
                first = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _on_frame(self, frame: bytes) -> None:
        head, _, body = frame.partition(b"\n")
        try:
            proc_b, n_b, bc_b = head.split(b" ")
            proc, n, bc = proc_b.decode(), int(n_b), bc_b == b"1"
        except ValueError:
            log.warning("%s: skipped a frame that is not ours (%d bytes)", self.transport.name,
                        len(frame))
            return
        if proc == self.proc_id:
            return  # our own broadcast
        key = (proc, bc)
        last = self._in_seq.get(key)
        self._in_seq[key] = n
        if last is not None and n != last + 1:
            log.warning("%s: frames from %s skipped (%d → %d); clients resync",
                        self.transport.name, proc[:8], last, n)
            self._resync_local()
        now = time.monotonic()
        peer = self._peer(proc, now)
        fallback = None
        for rec in body.split(b"\n"):
            h, _, rest = rec.partition(b"\t")
            try:
                m = _dec.decode(h)
            except msgspec.DecodeError:
                log.warning("%s: skipped an undecodable record from %s", self.transport.name,
                            proc[:8])
                continue
            k = m.get("k")
            if k == "e":
                self.emits_received += 1
                f = self.deliver_local(conversation_seq(m, "c", "q"), rest.decode(),
                                       m.get("ns", NAMESPACE), m.get("r"), m.get("s"), "m" in m)
                if f:
                    fallback = (fallback or []) + f
            else:
                self._on_control(proc, peer, k, m)
        if fallback:
            self._spawn(wait_fallback(fallback))

    def _on_control(self, proc: str, peer: _Peer, k, m: dict) -> None:
        if k == "reg":
            for u in m.get("u", ()):
                self._set_user(proc, peer, u, True)
            for u in m.get("x", ()):
                self._set_user(proc, peer, u, False)
            if m.get("u"):
                self._queue(proc, _record({"k": "ack", "f": m.get("f")}))
        elif k == "ack":
            entry = self._fences.get(m.get("f"))
            if entry is not None:
                entry[0].discard(proc)
                if not entry[0]:
                    self._fence_done(m.get("f"))
        elif k == "hb":
            if m.get("c") != len(peer.users):
                self._queue(proc, _record({"k": "hello"}))
        elif k == "hello":
            self._queue(proc, self._snapshot_record())
        elif k == "snap":
            users = set(m.get("u", ()))
            for u in peer.users - users:
                self._set_user(proc, peer, u, False)
            for u in users - peer.users:
                self._set_user(proc, peer, u, True)
        elif k == "bye":
            self._forget(proc)
        elif k == "rs":
            self._resync_local(now=True)
        elif k == "kick":
            self._spawn(_disconnect_local(self, m.get("ns") or NAMESPACE, m.get("r")))
        elif k == "inv":
            read_cache.drop_local(str(m.get("c")), m.get("i") or ())

    def _resync_local(self, now: bool = False) -> None:
        """`resync` to every local client: at once, or at most once per interval
        (a burst of gaps is one resync, and one more after it).
        Whatever missed records may have said, cached rows may be stale: all go;
        and a message held for one that was lost waits no longer."""
        read_cache.clear_all()
        if self.order is not None:
            self.order.flush()
        t = time.monotonic()
        if not now and t - self._local_resync_at < self.resync_interval:
            if self._local_resync_later is None:
                self._local_resync_later = asyncio.get_running_loop().call_later(
                    self.resync_interval, self._resync_local_later)
            return
        self._local_resync_at = t
        encoded = self.encode(RESYNC_EVENT, {"reason": self.transport.name}, NAMESPACE)
        f = self.deliver(encoded, NAMESPACE, None)
        if f:
            self._spawn(wait_fallback(f))

    def _resync_local_later(self) -> None:
        self._local_resync_later = None
        self._resync_local(now=True)


def _record(obj: dict) -> bytes:
    return _enc.encode(obj) + b"\t"
