"""A real 3-node Redis Cluster, started by the test (redis-server
--cluster-enabled yes on free ports, redis-cli --cluster create): the rate
limiter's script (several keys per call) runs on it, the message queue's
pub/sub crosses nodes, presence works across slots.

Runs where redis-server and redis-cli are installed (.ci/run installs them);
missing, the test fails rather than skips when TEST_REDIS_URL is set.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import pytest

from app.errors import RateLimited
from app.fanout import NAMESPACE
from app.metrics import Metrics
from app.presence import RedisPresence
from app.ratelimit import Limit, RedisRateLimiter
from tests.cluster_helpers import free_port
from tests.queue_helpers import Client, Node, channel_name

pytestmark = [
    pytest.mark.skipif(not os.environ.get("TEST_REDIS_URL"),
                       reason="needs TEST_REDIS_URL (Redis installed)"),
    pytest.mark.timeout(90),
]


def _cluster_ports(n: int) -> list[int]:
    """n ports whose cluster-bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p + 10000 < 65536 and p not in ports:
            try:
                import socket

                with socket.socket() as s:
                    s.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
            ports.append(p)
    return ports


@pytest.fixture
def redis_cluster(tmp_path):
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        pytest.fail("redis-server and redis-cli are needed (apt-get install -y redis-server)")
    ports = _cluster_ports(3)
    procs = []
    try:
        for p in ports:
            d = tmp_path / str(p)
            d.mkdir()
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled",
                 "yes", "--cluster-config-file", str(d / "nodes.conf"), "--save", "",
                 "--appendonly", "no", "--dir", str(d)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in ports:
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(p), "ping"], capture_output=True,
                                 text=True).stdout.strip() != "PONG":
                assert time.monotonic() < deadline, f"redis-server on {p} did not start"
                time.sleep(0.05)
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True,
            timeout=60)
        assert create.returncode == 0, create.stdout + create.stderr
        deadline = time.monotonic() + 20
        while True:
            infos = [subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"],
                                    capture_output=True, text=True).stdout for p in ports]
            if all("cluster_state:ok" in i for i in infos):
                break
            assert time.monotonic() < deadline, infos
            time.sleep(0.1)
        yield [f"redis://127.0.0.1:{p}/0" for p in ports]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


async def test_rate_limits_run_on_a_redis_cluster(redis_cluster):
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster[0])
    await client.initialize()
    metrics = Metrics()
    limiter = RedisRateLimiter(client, prefix=f"{channel_name()}:rl:", metrics=metrics)
    assert limiter.cluster
    try:
        limit = Limit.parse("3/60")
        keys = [f"send:user{i}" for i in range(40)]  # spread over many slots
        results = await asyncio.gather(*(limiter.hit(k, limit) for k in keys for _ in range(5)),
                                       return_exceptions=True)
        refused = [r for r in results if isinstance(r, RateLimited)]
        others = [r for r in results if r is not None and not isinstance(r, RateLimited)]
        assert not others, others[:3]
        assert len(refused) == 40 * 2  # exactly 3 of 5 per key passed, counted in Redis
        assert metrics.ratelimit_fallbacks._value.get() == 0  # never fell back to memory
        # The counters live on several nodes of the cluster.
        owners = {client.get_node_from_key(limiter._key(k)).port for k in keys}
        assert len(owners) >= 2, owners
        await limiter.reset(keys[0])
        await limiter.hit(keys[0], limit)  # counted afresh
    finally:
        await client.aclose()


async def test_an_untagged_multi_key_script_is_refused_by_the_cluster(redis_cluster):
    """What the hash tags avoid: the same script on keys of several slots."""
    from redis.asyncio.cluster import RedisCluster
    from redis.exceptions import RedisClusterException, ResponseError

    client = RedisCluster.from_url(redis_cluster[0])
    try:
        script = client.register_script("return redis.call('INCR', KEYS[1]) + "
                                        "redis.call('INCR', KEYS[2])")
        with pytest.raises((RedisClusterException, ResponseError)):
            await script(keys=["a-key", "another-key-elsewhere"])
    finally:
        await client.aclose()


async def test_presence_works_across_slots(redis_cluster):
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster[1])
    try:
        prefix = f"{channel_name()}:presence:"
        one, two = RedisPresence(client, prefix=prefix), RedisPresence(client, prefix=prefix)
        users = [f"user{i}" for i in range(30)]
        await one.mark(users[:20])
        await two.mark(users[10:])
        assert await one.online(users) == set(users)
        await one.unmark(users[:20])
        assert await two.online(users) == set(users[10:])
    finally:
        await client.aclose()


async def test_the_message_queue_crosses_cluster_nodes(redis_cluster):
    """Processes connected to different nodes: pub/sub is cluster-wide."""
    channel = channel_name()
    a = await Node(redis_cluster[0], channel).start()
    b = await Node(redis_cluster[2], channel).start()
    bob = await Client("bob").connect(b)
    try:
        for i in range(100):
            await a.sio.emit("message:new", {"seq": i}, room="u:bob", namespace=NAMESPACE)
        await bob.wait_for(lambda: len(bob.of("message:new")) == 100)
        assert [d["seq"] for d in bob.of("message:new")] == list(range(100))
        assert a.manager.user_procs["bob"] == {b.manager.proc_id}
    finally:
        await bob.close()
        await a.close()
        await b.close()
