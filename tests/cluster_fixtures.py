"""The fixtures of the suites that run real `python -m app serve` workers
(tests/test_cluster.py and the *_cluster.py files): a fresh PostgreSQL database,
the message queue and the workers. Each test module imports them by name."""

from __future__ import annotations

import asyncio

import pytest

from app.config import load_settings
from app.db import init_db
from app.deps import Deps
from tests.cluster_helpers import (
    SECRET,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    Device,
    Worker,
    create_database,
    drop_database,
    worker_env,
)
from tests.queue_helpers import TEST_AMQP_URL, channel_name, check_reachable

# Rate limits of the test process's own settings in `db`; a module that builds
# more users through its Deps names its own in DB_LIMITS.
DB_LIMITS = {"login_rate_limit": "1000/60", "code_rate_limit": "1000/60"}


@pytest.fixture
async def db(request):
    """A fresh PostgreSQL database with the models' schema; the test process keeps a
    connection to build users and to look at what was stored."""
    url = await create_database(TEST_DATABASE_URL)
    ctx = await init_db(url, generate_schemas=True)
    settings = load_settings(environ={}, database_url=url, secret_key=SECRET,
                             **getattr(request.module, "DB_LIMITS", DB_LIMITS))
    try:
        yield url, Deps(settings=settings)
    finally:
        await ctx.close_connections()
        await drop_database(TEST_DATABASE_URL, url)


@pytest.fixture
def queue():
    """The message queue between the workers: Redis (REDIS_URL alone) unless a
    test is parametrised with `queue` (tests/queue_helpers.py QUEUES)."""
    return "redis"


@pytest.fixture
async def cluster(tmp_path, queue):
    """start(n, database_url, redis_url, queue_url=None) → n healthy workers
    subscribed to their message queue (Redis, or RabbitMQ with queue="amqp"),
    on a channel / exchange of their own."""
    workers: list[Worker] = []
    devices: list[Device] = []
    channel = channel_name()
    if queue == "amqp":
        await check_reachable(TEST_AMQP_URL)

    async def start(n: int, database_url: str, redis_url: str = TEST_REDIS_URL,
                    queue_url: str | None = None, **extra):
        extra.setdefault("MESSAGE_QUEUE_CHANNEL", channel)
        if queue_url or queue == "amqp":
            extra.setdefault("MESSAGE_QUEUE_URL", queue_url or TEST_AMQP_URL)
        ws = [Worker(f"w{len(workers) + i + 1}",
                     worker_env(database_url, redis_url, tmp_path, **extra), tmp_path)
              for i in range(n)]
        for w in ws:
            w.start()
            workers.append(w)
        await asyncio.gather(*(w.wait_ready() for w in ws))
        await asyncio.gather(*(w.wait_subscribed() for w in ws))
        return ws

    async def device(user, worker: Worker) -> Device:
        d = await Device(user, worker.url).connect()
        devices.append(d)
        return d

    start.device = device  # type: ignore[attr-defined]
    start.workers = workers  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        await asyncio.gather(*(d.close() for d in devices))
        for w in workers:
            w.stop()
        if queue == "amqp":
            from tests.queue_helpers import delete_exchange

            await delete_exchange(TEST_AMQP_URL, channel)
