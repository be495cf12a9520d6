"""RedisManager publishing (issue #7): under load nothing is dropped, order is kept,
and after any gap the other processes' clients hear `resync` by themselves.

Real Redis (TEST_REDIS_URL, or a private redis-server the test can stop), a real
python-socketio AsyncServer with our manager; a plain Redis subscriber stands in
for "the other processes" and sees exactly what was published.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
import redis.asyncio as aioredis
import socketio

from app.fanout import NAMESPACE
from app.metrics import Metrics
from app.realtime.managers import RESYNC_EVENT, RedisManager
from tests.cluster_helpers import RedisServer

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")

pytestmark = [
    pytest.mark.skipif(not TEST_REDIS_URL, reason="needs TEST_REDIS_URL (and redis-server)"),
    pytest.mark.timeout(60),
]


class Listener:
    """Subscribes to the manager's channel and keeps every decoded message."""

    def __init__(self, url: str, channel: str) -> None:
        self.url, self.channel = url, channel
        self.messages: list[dict] = []
        self._task: asyncio.Task | None = None

    async def start(self) -> Listener:
        self.client = aioredis.from_url(self.url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await self.pubsub.subscribe(self.channel)
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        while True:
            msg = await self.pubsub.get_message(timeout=1.0)
            if msg and msg.get("type") == "message":
                self.messages.append(json.loads(msg["data"]))

    def events(self, name: str) -> list[dict]:
        return [m for m in self.messages if m.get("event") == name]

    async def wait_for(self, pred, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not pred():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(self.messages)} messages seen")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.pubsub.aclose()
        await self.client.aclose()


async def make_manager(url: str, **options) -> tuple[RedisManager, Metrics]:
    metrics = Metrics()
    channel = f"parley-test-{uuid.uuid4().hex[:8]}"
    manager = RedisManager(url, channel=channel, metrics=metrics, **options)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)
    sio.manager_initialized = True
    manager.initialize()
    await asyncio.wait_for(manager.subscribed.wait(), 5)
    return manager, metrics


def failures(metrics: Metrics) -> float:
    return metrics.redis_publish_failures._value.get()


async def test_a_burst_of_concurrent_emits_is_published_whole_and_in_order():
    # Thousands of emits at once used to exhaust redis-py's connection pool
    # (MaxConnectionsError at ~100 concurrent publishes) and drop live events.
    manager, metrics = await make_manager(TEST_REDIS_URL)
    listener = await Listener(TEST_REDIS_URL, manager.channel).start()
    try:
        n = 3000
        await asyncio.gather(*(
            manager.emit("message:new", {"seq": i}, namespace=NAMESPACE, room=f"u:{i % 50}")
            for i in range(n)))
        await listener.wait_for(lambda: len(listener.events("message:new")) >= n, 10)
        seqs = [m["data"][0]["seq"] for m in listener.events("message:new")]
        assert seqs == list(range(n))  # all of them, once, in emit order
        assert failures(metrics) == 0
        assert not listener.events(RESYNC_EVENT)
    finally:
        await listener.close()
        await manager.close()


async def test_after_an_outage_resync_goes_out_without_further_traffic(tmp_path):
    redis = RedisServer(tmp_path)
    await redis.start()
    manager, metrics = await make_manager(redis.url)
    listener = None
    try:
        await manager.emit("message:new", {"seq": 1}, namespace=NAMESPACE, room="u:a")
        redis.stop()
        # Emits during the outage return at once and are counted as failures.
        for seq in (2, 3, 4):
            await asyncio.wait_for(
                manager.emit("message:new", {"seq": seq}, namespace=NAMESPACE, room="u:a"), 1)
            await asyncio.sleep(0.2)
        assert failures(metrics) >= 1
        await redis.start()  # same port
        listener = await Listener(redis.url, manager.channel).start()
        # Nobody emits again: the publisher itself notices Redis is back.
        await listener.wait_for(lambda: listener.events(RESYNC_EVENT), 6)
        resync = listener.events(RESYNC_EVENT)[0]
        assert resync["namespace"] == NAMESPACE and resync["room"] is None
        # And publishing works again.
        await manager.emit("message:new", {"seq": 5}, namespace=NAMESPACE, room="u:a")
        await listener.wait_for(lambda: listener.events("message:new"), 3)
        assert [m["data"][0]["seq"] for m in listener.events("message:new")] == [5]
    finally:
        if listener is not None:
            await listener.close()
        await manager.close()
        redis.stop()


async def test_an_overflowing_outbox_is_followed_by_a_resync():
    manager, metrics = await make_manager(TEST_REDIS_URL, outbox_size=10)
    listener = await Listener(TEST_REDIS_URL, manager.channel).start()
    try:
        await asyncio.gather(*(
            manager.emit("message:new", {"seq": i}, namespace=NAMESPACE, room="u:a")
            for i in range(100)))
        await listener.wait_for(lambda: listener.events(RESYNC_EVENT), 5)
        delivered = [m["data"][0]["seq"] for m in listener.events("message:new")]
        assert 10 <= len(delivered) < 100
        assert delivered == sorted(delivered)
        assert failures(metrics) == 100 - len(delivered)
        # The resync comes after the last message that made it.
        assert listener.messages[-1]["event"] == RESYNC_EVENT
    finally:
        await listener.close()
        await manager.close()


async def test_bad_published_messages_are_logged_with_context_not_swallowed(caplog):
    """Undecodable messages on the channel and a failing delivery are each logged
    once, with what they were; the listener carries on."""
    manager, _metrics = await make_manager(TEST_REDIS_URL)
    raw = aioredis.from_url(TEST_REDIS_URL)
    delivered = []

    async def handle_emit(_self, message):  # the delivery of one message fails, later ones work
        if message.get("event") == "boom":
            raise RuntimeError("delivery bug")
        delivered.append(message["event"])

    socketio.AsyncRedisManager._handle_emit, original = (
        handle_emit, socketio.AsyncRedisManager._handle_emit)
    try:
        await raw.publish(manager.channel, b"\xff not json")
        await raw.publish(manager.channel, json.dumps({"method": "emit", "event": "boom",
                                                       "room": "r1", "host_id": "other"}))
        await raw.publish(manager.channel, json.dumps({"method": "emit", "event": "fine",
                                                       "host_id": "other"}))
        for _ in range(100):
            if delivered:
                break
            await asyncio.sleep(0.05)
    finally:
        socketio.AsyncRedisManager._handle_emit = original
        await raw.aclose()
        await manager.close()
    assert delivered == ["fine"]
    undecodable = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(undecodable) == 1 and manager.channel in undecodable[0].getMessage()
    failed = [r for r in caplog.records if "delivering a published event failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info
    assert failed[0].fields == {"event": "boom", "room": "r1"}
