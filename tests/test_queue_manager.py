"""QueueManager on a real broker, Redis and RabbitMQ alike: emits cross processes
whole and in order, go only where the recipients are, registrations follow
clients and lapse with a crashed process, and any gap makes clients `resync`.

Each "process" is a real aiohttp + Socket.IO server in this test process with
its own manager and broker connections; clients are real Socket.IO clients.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.fanout import NAMESPACE
from app.realtime.managers import RESYNC_EVENT
from tests.cluster_helpers import RedisServer, TcpProxy
from tests.factories import until
from tests.queue_helpers import (
    QUEUES,
    TEST_AMQP_URL,
    Client,
    Node,
    Started,
    channel_name,
    chat_message,
    check_reachable,
    delete_exchange,
    queue_url,
    seqs,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=QUEUES)
async def kind(request):
    await check_reachable(queue_url(request.param))
    return request.param


@pytest.fixture
async def cluster(kind):
    """nodes(n, url=None, **options) → n started nodes on one private channel."""
    channel = channel_name()
    started = Started()

    async def make(n: int, url: str | None = None, **options) -> list[Node]:
        return [await started.node(Node(url or queue_url(kind), channel, **options))
                for _ in range(n)]

    make.client = started.client  # type: ignore[attr-defined]
    make.kind = kind  # type: ignore[attr-defined]
    make.channel = channel  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        await started.close()
        if kind == "amqp":
            await delete_exchange(TEST_AMQP_URL, channel)


def failures(node: Node) -> float:
    return node.metrics.redis_publish_failures._value.get()


async def emit(node: Node, room, seq: int, event: str = "message:new") -> None:
    await node.sio.emit(event, {"seq": seq}, room=room, namespace=NAMESPACE)


async def test_a_burst_crosses_processes_whole_and_in_order(cluster):
    a, b = await cluster(2)
    bob = await cluster.client("bob", b)
    n = 3000
    await asyncio.gather(*(emit(a, ["u:alice", "u:bob"], i) for i in range(n)))
    await bob.wait_for(lambda: len(seqs(bob)) >= n, 15)
    await asyncio.sleep(0.2)
    assert seqs(bob) == list(range(n))  # all of them, once, in emit order
    assert failures(a) == 0
    assert not bob.of(RESYNC_EVENT)
    # Batched: far fewer frames than emits.
    assert 0 < a.manager.frames_sent < n / 5, a.manager.frames_sent


async def test_a_conversation_reaches_clients_in_seq_order_whichever_process_sent_it(cluster):
    a, b = await cluster(2)
    b.manager.order.hold = 30.0  # however slow this machine, 2 arrives within the hold
    bob = await cluster.client("bob", b)
    await chat_message(b, "u:bob", 1)
    await bob.wait_for(lambda: seqs(bob) == [1])
    # Seq 3 was sent through B while seq 2, sent through A, is still on its way.
    await chat_message(b, "u:bob", 3)
    await chat_message(b, "u:bob", 4, conversation="c2")  # another chat: not held
    await bob.wait_for(lambda: 4 in seqs(bob))
    await chat_message(a, ["u:alice", "u:bob"], 2)
    await bob.wait_for(lambda: len(seqs(bob)) == 4)
    assert seqs(bob) == [1, 4, 2, 3]
    assert (b.manager.order.held, b.manager.order.timeouts) == (1, 0)
    assert b.metrics.queue_order_held._value.get() == 1
    assert b.metrics.queue_order_timeouts._value.get() == 0
    assert not bob.of(RESYNC_EVENT)


async def test_with_no_hold_messages_go_out_as_they_arrive(cluster):
    a, b = await cluster(2, order_hold=0)
    bob = await cluster.client("bob", b)
    for seq in (1, 3):
        await chat_message(b, "u:bob", seq)
    await bob.wait_for(lambda: seqs(bob) == [1, 3])
    await chat_message(a, "u:bob", 2)
    await bob.wait_for(lambda: seqs(bob) == [1, 3, 2])
    assert b.manager.order is None


async def test_a_message_whose_predecessor_never_comes_waits_no_longer_than_its_hold(cluster):
    a, b = await cluster(2)
    bob = await cluster.client("bob", b)
    for seq in (1, 3):
        await chat_message(a, "u:bob", seq)
    await bob.wait_for(lambda: seqs(bob) == [1, 3], 5)
    assert b.manager.order.timeouts == 1
    assert b.metrics.queue_order_timeouts._value.get() == 1
    await chat_message(a, "u:bob", 2)  # too late to be waited for: delivered all the same
    await bob.wait_for(lambda: seqs(bob) == [1, 3, 2])


async def test_emits_go_only_to_the_processes_of_their_recipients(cluster):
    a, b, c = await cluster(3)
    bob = await cluster.client("bob", b)
    alice = await cluster.client("alice", a)
    await c.manager.start()
    received_by_c = c.manager.emits_received
    sent_by_a = a.manager.emits_sent
    for i in range(50):
        await emit(a, "u:bob", i)
    await bob.wait_for(lambda: len(seqs(bob)) == 50)
    # A sent 50 emit records, all to B; C got none of them.
    assert a.manager.emits_sent - sent_by_a == 50
    assert c.manager.emits_received == received_by_c
    # Recipients all on the emitting process: nothing published at all.
    before = a.manager.emits_sent
    for i in range(20):
        await emit(a, "u:alice", i)
    await alice.wait_for(lambda: len(seqs(alice)) == 20)
    assert a.manager.emits_sent == before
    # The registry: bob on B, alice on A, as every process sees it.
    for node in (a, b, c):
        assert node.manager.user_procs.get("bob", {b.manager.proc_id}) == {b.manager.proc_id}
    assert a.manager.user_procs["bob"] == {b.manager.proc_id}
    assert c.manager.user_procs["alice"] == {a.manager.proc_id}


async def test_a_client_moving_process_misses_nothing_emitted_after_its_connect(cluster):
    a, b, c = await cluster(3)
    first = await cluster.client("bob", b)
    stop = asyncio.Event()
    counter = {"n": 0}

    async def keep_emitting():
        while not stop.is_set():
            counter["n"] += 1
            await emit(a, "u:bob", counter["n"])
            await asyncio.sleep(0.001)

    job = asyncio.ensure_future(keep_emitting())
    try:
        await asyncio.sleep(0.2)
        moved = Client("bob")
        await moved.connect(c)  # returns once every process routes bob to C
        after_connect = counter["n"]
        await first.close()  # and bob leaves B
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await job
    await moved.wait_for(lambda: counter["n"] in seqs(moved))
    got = set(seqs(moved))
    missing = [s for s in range(after_connect + 1, counter["n"] + 1) if s not in got]
    # B no longer holds bob: A routes to C only.
    routes = set(a.manager.user_procs.get("bob", ()))
    await moved.close()
    assert not missing, f"{len(missing)} emitted after the connect never arrived: {missing[:5]}"
    assert routes == {c.manager.proc_id}


async def test_a_crashed_process_registrations_expire(cluster):
    a, b = await cluster(2, heartbeat=0.2)
    await cluster.client("bob", b)
    await asyncio.sleep(0.3)
    assert a.manager.user_procs["bob"] == {b.manager.proc_id}
    await b.crash()
    deadline = asyncio.get_running_loop().time() + 3
    while "bob" in a.manager.user_procs:
        assert asyncio.get_running_loop().time() < deadline, "B's registrations never lapsed"
        await asyncio.sleep(0.05)
    assert b.manager.proc_id not in a.manager.peers


async def test_a_skipped_frame_makes_the_receivers_clients_resync(cluster):
    a, b = await cluster(2)
    bob = await cluster.client("bob", b)
    await emit(a, "u:bob", 1)
    await bob.wait_for(lambda: seqs(bob) == [1])
    # A frame lost on the way (a RabbitMQ queue overflowing drops the oldest):
    # the next one's sequence number skips.
    dest = b.manager.proc_id
    a.manager._out_seq[dest] += 1
    await emit(a, "u:bob", 2)
    await bob.wait_for(lambda: bob.of(RESYNC_EVENT) and 2 in seqs(bob))
    assert bob.of(RESYNC_EVENT)[0] == {"reason": cluster.kind}


async def test_an_overflowing_outbox_is_followed_by_a_resync(cluster, caplog):
    caplog.set_level(logging.INFO, "parley.queue")
    a, b = await cluster(2, outbox_size=10)
    bob = await cluster.client("bob", b)
    await asyncio.gather(*(emit(a, "u:bob", i) for i in range(100)))
    await bob.wait_for(lambda: bob.of(RESYNC_EVENT), 5)
    delivered = seqs(bob)
    assert 5 <= len(delivered) < 100
    assert delivered == sorted(delivered)
    assert failures(a) == 100 - len(delivered)
    assert bob.events[-1][0] == RESYNC_EVENT  # after the last message that made it
    full = [r for r in caplog.records if "outbox full" in r.getMessage()]
    assert len(full) == 1, [r.getMessage() for r in full]  # not one per dropped emit


class Broker:
    """The test's broker behind something that can take it away: a private
    redis-server (stopped and started again on its port), or a TCP proxy in
    front of RabbitMQ (cut and restored)."""

    def __init__(self, kind: str, tmp_path) -> None:
        self.redis = RedisServer(tmp_path) if kind == "redis" else None
        self.proxy = None if self.redis else TcpProxy(5672)

    async def start(self) -> str:
        if self.redis:
            await self.redis.start()
            return self.redis.url
        await self.proxy.start()
        host = TEST_AMQP_URL.split("://", 1)[1].rpartition("@")
        return f"amqp://{host[0]}@127.0.0.1:{self.proxy.port}/"

    async def away(self) -> None:
        if self.redis:
            self.redis.stop()
        else:
            await self.proxy.cut()

    async def back(self) -> None:
        if self.redis:
            await self.redis.start()  # same port
        else:
            await self.proxy.restore()

    async def close(self) -> None:
        if self.redis:
            self.redis.stop()
        else:
            await self.proxy.close()


@pytest.fixture
async def broker(kind, tmp_path):
    b = Broker(kind, tmp_path)
    try:
        yield b
    finally:
        await b.close()


async def test_after_an_outage_resync_goes_out_without_further_traffic(cluster, broker):
    """The broker goes away and comes back: emits meanwhile return at once and
    are counted; afterwards every client hears `resync`, and emits flow again."""
    a, b = await cluster(2, await broker.start(), heartbeat=0.5)
    bob = await cluster.client("bob", b)
    await emit(a, "u:bob", 1)
    await bob.wait_for(lambda: seqs(bob) == [1])
    await broker.away()
    for seq in (2, 3, 4):
        await asyncio.wait_for(emit(a, "u:bob", seq), 1)
        await asyncio.sleep(0.2)
    assert failures(a) >= 1
    await broker.back()
    # Nobody emits: the processes notice by themselves.
    await bob.wait_for(lambda: bob.of(RESYNC_EVENT), 8)

    async def crossed():
        await emit(a, "u:bob", 5)
        await asyncio.sleep(0.2)
        return 5 in seqs(bob)

    deadline = asyncio.get_running_loop().time() + 8
    while not await crossed():
        assert asyncio.get_running_loop().time() < deadline, "emits never crossed again"
    assert not {2, 3, 4} & set(seqs(bob))  # lost live, as expected: sync fetches them


async def test_a_broker_outage_is_told_once_and_so_is_its_end(cluster, broker, caplog):
    """While the broker is away, every emit is skipped and the publisher probes
    it again and again: the log names each kind of failure once, and says when
    publishing works again."""
    caplog.set_level(logging.INFO, "parley.queue")
    # One process: the log is its own (a second one would tell its outage too).
    a, = await cluster(1, await broker.start(), heartbeat=0.5, max_backoff=0.2)
    await emit(a, None, 1)
    await until(lambda: a.manager.frames_sent >= 1, "a broadcast published", 8)
    caplog.clear()
    await broker.away()
    for seq in range(2, 32):  # 3 s of broadcasts, and about 15 probes
        await asyncio.wait_for(emit(a, None, seq), 1)
        await asyncio.sleep(0.1)
    probes = a.manager._outage.failures
    assert probes >= 5
    await broker.back()
    await until(lambda: not a.manager._down, "publishing resumed", 8)
    name = a.manager.transport.name
    said = [(r.levelname, r.getMessage()) for r in caplog.records
            if r.getMessage().startswith(f"{name} publish")]
    failed = [m for m in said if m[1].startswith(f"{name} publish failed (")]
    back = [m for m in said if m[1].startswith(f"{name} publish works again after ")]
    # Each kind of failure once (refused, reset, or a timeout on a slow machine).
    assert failed and len(set(failed)) == len(failed) < probes, said
    assert all(level == "WARNING" for level, _ in failed), said
    assert len(back) == 1 and back[0][0] == "INFO", said
    assert len(said) == len(failed) + 1, said  # nothing per skipped emit


async def test_logout_drops_a_session_sockets_on_every_process(cluster):
    a, b = await cluster(2)
    bob = await cluster.client("bob", b)
    await b.manager.enter_room(next(iter(b.manager.rooms[NAMESPACE][None])), NAMESPACE,
                               "s:sess1")
    gone = asyncio.Event()
    bob.sio.on("disconnect", lambda *_: gone.set(), namespace=NAMESPACE)
    await a.manager.disconnect_room("s:sess1", NAMESPACE)
    await asyncio.wait_for(gone.wait(), 5)


async def test_a_named_but_unreachable_broker_fails(kind):
    from _pytest.outcomes import Failed

    with pytest.raises(Failed):
        await check_reachable("amqp://guest:guest@127.0.0.1:1/" if kind == "amqp"
                              else "redis://127.0.0.1:1/0")
