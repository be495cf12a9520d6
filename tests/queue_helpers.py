"""Nodes for the message-queue tests: a real aiohttp + Socket.IO server per node
with our QueueManager on a real broker, and real Socket.IO clients.

The brokers: TEST_REDIS_URL and TEST_AMQP_URL. Each test gets its own channel /
exchange prefix, so parallel runs on the same broker do not meet. A broker that
is named but unreachable fails the test (never skips).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid

import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import TestServer

from app import jsonfast
from app.fanout import NAMESPACE, user_room
from app.metrics import Metrics
from app.realtime.engine import AsyncServer
from app.realtime.managers import LocalManager
from app.realtime.queue import QueueManager

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
TEST_AMQP_URL = os.environ.get("TEST_AMQP_URL", "")

QUEUES = [pytest.param("redis", marks=pytest.mark.skipif(
              not TEST_REDIS_URL, reason="needs TEST_REDIS_URL")),
          pytest.param("amqp", marks=pytest.mark.skipif(
              not TEST_AMQP_URL, reason="needs TEST_AMQP_URL"))]


def queue_url(kind: str) -> str:
    return TEST_REDIS_URL if kind == "redis" else TEST_AMQP_URL


async def check_reachable(url: str) -> None:
    """Fail (not skip) when a named broker does not answer."""
    host_port = url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    host, _, port = host_port.partition(":")
    port = int(port or (6379 if url.startswith("redis") else 5672))
    try:
        _r, w = await asyncio.wait_for(asyncio.open_connection(host or "127.0.0.1", port), 5)
        w.close()
    except (OSError, TimeoutError) as exc:
        pytest.fail(f"broker {url} is named but unreachable: {exc!r}")


async def delete_exchange(amqp_url: str, name: str) -> None:
    import aio_pika

    conn = await aio_pika.connect(amqp_url)
    try:
        ch = await conn.channel()
        await ch.exchange_delete(name)
    finally:
        await conn.close()


class Node:
    """One server process's worth: aiohttp app, Socket.IO server, QueueManager
    (a LocalManager when `url` is None: a server on its own)."""

    def __init__(self, url: str | None, channel: str = "", **options) -> None:
        self.metrics = Metrics()
        if url is None:
            self.manager = LocalManager(**options)
            self.manager.metrics = self.metrics
        else:
            self.manager = QueueManager(url, channel=channel, metrics=self.metrics, **options)
        self.sio = AsyncServer(async_mode="aiohttp", client_manager=self.manager,
                               json=jsonfast, logger=False, engineio_logger=False)
        node = self

        class Chat(socketio.AsyncNamespace):
            async def on_connect(self, sid, environ, auth):
                await self.enter_room(sid, user_room(auth["user"]))

        self.sio.register_namespace(Chat(NAMESPACE))
        self.app = web.Application()
        self.sio.attach(self.app)

        async def manager_ctx(app):
            node.sio.manager_initialized = True
            node.manager.initialize()
            if isinstance(node.manager, QueueManager):
                await node.manager.start()
            yield
            if not node.crashed:
                await node.manager.close()

        self.crashed = False
        self.app.cleanup_ctx.append(manager_ctx)
        self.server = TestServer(self.app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("/"))

    async def start(self) -> Node:
        await self.server.start_server()
        return self

    async def crash(self) -> None:
        """Stop without a word to the others (as kill -9 would): no `bye`."""
        self.crashed = True
        m = self.manager
        for t in (m._listener, m._publisher, m._beat):
            if t is not None:
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
        await m.transport.aclose()
        await self.server.close()

    async def close(self) -> None:
        await self.server.close()


class Client:
    """A Socket.IO client of one user that keeps every event."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.events: list[tuple[str, object]] = []
        self.sio = socketio.AsyncClient(reconnection=False)

        async def catch_all(event, *args):
            self.events.append((event, args[0] if args else None))

        self.sio.on("*", catch_all, namespace=NAMESPACE)

    async def connect(self, node: Node) -> Client:
        await self.sio.connect(node.url, namespaces=[NAMESPACE], auth={"user": self.user},
                               transports=["websocket"], wait_timeout=10)
        return self

    def of(self, name: str) -> list:
        return [d for n, d in self.events if n == name]

    async def wait_for(self, pred, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not pred():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(self.events)} events seen: {self.events[-3:]}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), 5)


class Started:
    """A test's started nodes and connected clients, closed together."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.clients: list[Client] = []

    async def node(self, node: Node) -> Node:
        await node.start()
        self.nodes.append(node)
        return node

    async def client(self, user: str, node: Node) -> Client:
        c = await Client(user).connect(node)
        self.clients.append(c)
        return c

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        for n in self.nodes:
            await n.close()


async def chat_message(node: Node, room, seq: int, conversation: str = "c1") -> None:
    """A `message:new` of `conversation` at `seq`, emitted through `node`."""
    await node.sio.emit("message:new", {"conversation_id": conversation, "seq": seq},
                        room=room, namespace=NAMESPACE)


def seqs(client: Client) -> list[int]:
    return [d["seq"] for d in client.of("message:new")]


def channel_name() -> str:
    return f"parley-test-{uuid.uuid4().hex[:10]}"
