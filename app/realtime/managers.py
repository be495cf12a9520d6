"""Client managers: one process (LocalManager); many processes share a message
queue through QueueManager (app/realtime/queue.py), built on the pieces here.

Disconnecting a whole room everywhere: python-socketio's managers can emit to a
room on every process but only disconnect a single sid. Logout needs "drop
every socket of this session, wherever it is", so `disconnect_room` is a
manager method: local here, a broadcast record in QueueManager.

Library internals (python-socketio and python-engineio, pinned in
pyproject.toml, checked by tests/test_library_internals.py): `DirectEmit`
replaces `AsyncManager.emit` for emits without a callback, builds the packet
with `server.packet_class` as the library does, walks `get_participants` and
writes with the engine's `send_now` (app/realtime/engine.py), falling back to
the server's private `_send_eio_packet`. `LocalManager` also takes the room
index of app/realtime/rooms.py.
"""
from __future__ import annotations

import asyncio
import logging

import socketio
from engineio import packet as eio_packet
from socketio import packet

from app.realtime.rooms import SidRoomIndex
from app.realtime.seq_order import SeqOrder, conversation_seq

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
    starts a task per recipient and waits for all of them. On the
    WebSocket transport a write is synchronous (`FastEngineServer.send_now`,
    app/realtime/engine.py), so this loop writes directly and only falls back to
    the library's send (in tasks) for long-polling or upgrading sockets. It also
    counts `message:new` deliveries in the same walk.

    `encode` and `deliver` are split so that the cross-process manager
    (app/realtime/queue.py) encodes an event once and hands the same text to
    its local sockets and to the other processes, which deliver it as is.

    `order_hold` > 0: each conversation's `message:new` events leave in seq
    order (app/realtime/seq_order.py), a message after a gap waiting up to that
    many seconds for the ones before it. In one process most messages are
    ordered already by the writer's emit order; system lines (group changes)
    are emitted by the service that wrote them and can overtake or be overtaken.
    """

    metrics = None

    def __init__(self, *args, order_hold: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Deliveries to long-polling sockets of messages released from a hold.
        self._tasks: set[asyncio.Task] = set()
        self.order = SeqOrder(self._release_held, hold=order_hold) if order_hold > 0 else None

    def encode(self, event, data, namespace) -> str | list:
        if isinstance(data, tuple):
            data = list(data)
        elif data is not None:
            data = [data]
        else:
            data = []
        pkt = self.server.packet_class(packet.EVENT, namespace=namespace, data=[event] + data)
        return pkt.encode()

    def deliver(self, encoded, namespace, room, skip_sid=None, count: bool = False) -> list:
        """Write an encoded Socket.IO packet to the local sockets in `room`;
        returns the futures of long-polling sends (empty on pure WebSocket)."""
        if namespace not in self.rooms:
            return []
        send_now = getattr(self.server.eio, "send_now", None)
        skip = skip_sid if isinstance(skip_sid, list) else (skip_sid,)
        eio_pkts = [eio_packet.Packet(eio_packet.MESSAGE, p)
                    for p in (encoded if isinstance(encoded, list) else (encoded,))]
        fallback = []
        delivered = 0
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            delivered += 1
            for p in eio_pkts:
                if send_now is None or not send_now(eio_sid, p):
                    fallback.append(asyncio.ensure_future(self.server._send_eio_packet(eio_sid, p)))
        if delivered and count and self.metrics is not None:
            self.metrics.messages_delivered.inc(delivered)
        return fallback

    async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None,
                   to=None, **kwargs):
        room = to or room
        send_now = getattr(self.server.eio, "send_now", None)
        if callback is not None or send_now is None or namespace not in self.rooms:
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                      callback=callback, **kwargs)
        count = event == "message:new"
        fallback = self.deliver_local(conversation_seq(data) if count else None,
                                      self.encode(event, data, namespace), namespace, room,
                                      skip_sid, count)
        if fallback:
            await wait_fallback(fallback)

    def deliver_local(self, order: tuple[str, int] | None, encoded, namespace, room,
                      skip_sid, count: bool) -> list:
        """`deliver`, in its conversation's seq order when `order` (conversation,
        seq) is given and this manager keeps order."""
        if order is None or self.order is None:
            return self.deliver(encoded, namespace, room, skip_sid, count)
        items = self.order.offer(*order, (encoded, namespace, room, skip_sid))
        if not items and self.metrics is not None:
            self.metrics.queue_order_held.inc()
        return self._deliver_items(items)

    def _release_held(self, items: list, timed_out: bool) -> None:
        if timed_out and self.metrics is not None:
            self.metrics.queue_order_timeouts.inc()
        fallback = self._deliver_items(items)
        if fallback:
            self._spawn(wait_fallback(fallback))

    def _deliver_items(self, items: list) -> list:
        """Deliver held or released message:new items in order; their long-polling futures."""
        fallback: list = []
        for item in items:
            fallback += self.deliver(*item, True)
        return fallback

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_death)

    async def _close_order(self) -> None:
        """Held messages go out to the clients still connected; then the tasks end."""
        if self.order is not None:
            self.order.flush()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def wait_fallback(fallback) -> None:
    # Long-polling sockets: queued for their next poll. Bounded, so an emit
    # never holds a sender's ack (app/fanout.py relies on that).
    done, _ = await asyncio.wait(fallback, timeout=FALLBACK_PATIENCE)
    _log_failed_sends(done)


class LocalManager(SidRoomIndex, DirectEmit):
    async def disconnect_room(self, room: str, namespace: str) -> None:
        await _disconnect_local(self, namespace, room)

    async def close(self) -> None:
        await self._close_order()
