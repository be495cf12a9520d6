"""Scale-out fault tests: real `python -m app serve` processes sharing a
real PostgreSQL database and a real Redis, with clients on every process.

1. every kind of event crosses processes;
2. kill -9 of one of two processes while 1,000 messages are in flight;
3. Redis stopped for 10 s under load;
4. the database unreachable for a few seconds;
5. the same client_msg_id sent concurrently to both processes.

They need TEST_DATABASE_URL and TEST_REDIS_URL (CI sets both): without them they
skip; with them set but unreachable they fail.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
import uuid

import aiohttp
import pytest
import trustme

from app.models.messaging import Message
from tests.cluster_fixtures import cluster, db, queue  # noqa: F401 (fixtures)
from tests.cluster_helpers import (
    API,
    CLUSTER_MARKS,
    TEST_REDIS_URL,
    ClusterScript,
    Device,
    Holder,
    RedisServer,
    TcpProxy,
    check_exactly_once,
    direct_chat,
    free_port,
    has_nginx,
    rest,
    text,
    via,
    worker_env,
)
from tests.factories import make_contacts, make_user
from tests.queue_helpers import QUEUES, TEST_AMQP_URL

pytestmark = [*CLUSTER_MARKS, pytest.mark.heavy]


def is_from(cid):
    return lambda m: m.get("conversation_id") == cid


# --- 1. every emit path crosses processes ------------------------------------------------


@pytest.mark.parametrize("queue", QUEUES, indirect=True)
async def test_events_cross_processes(db, cluster):
    url, deps = db
    w1, w2 = await cluster(2, url)
    alice, bob, carol, dave = [await make_user(deps, n) for n in ("alice", "bob", "carol", "dave")]
    cid = await direct_chat(deps, alice, bob)
    await make_contacts(deps, alice, carol)

    a1 = await cluster.device(alice, w1)
    # presence: Bob comes online on w2; Alice on w1 is told.
    b2 = await cluster.device(bob, w2)
    await a1.wait_for("presence", lambda p: p["user_id"] == bob.user_id and p["online"])
    b1 = await cluster.device(bob, w1)
    c2 = await cluster.device(carol, w2)
    d2 = await cluster.device(dave, w2)

    # direct message w1 → w2 (and Bob's other device back on w1)
    ack = await a1.call("message:send", text(cid, "hello across"))
    assert ack["ok"], ack
    msg = ack["message"]
    assert await b2.wait_for("message:new", is_from(cid)) == [msg]
    assert await b1.wait_for("message:new", is_from(cid)) == [msg]
    # read receipt w2 → w1
    assert (await b2.call("message:read", {"conversation_id": cid, "seq": msg["seq"]}))["ok"]
    got = await a1.wait_for("conversation:read", lambda e: e["user_id"] == bob.user_id)
    assert got[0]["read_seq"] == msg["seq"]
    # typing w2 → w1
    assert (await b2.call("typing", {"conversation_id": cid, "state": "typing"}))["ok"]
    await a1.wait_for("typing", lambda e: e["user_id"] == bob.user_id and e["state"] == "typing")
    # recall w1 → w2
    assert (await a1.call("message:recall", {"message_id": msg["id"]}))["ok"]
    await b2.wait_for("message:recalled", lambda e: e["message_id"] == msg["id"])
    # contact request made over REST on w1 reaches Dave's socket on w2
    status, _ = await rest(w1, "POST", "/contacts/requests", alice, {"user_id": dave.user_id})
    assert status == 201
    await d2.wait_for("contact:request")

    # groups (when present): created on w1, used from both, a member removed through w2
    status, body = await rest(w1, "POST", "/groups", alice,
                              {"name": "crew", "member_ids": [bob.user_id, carol.user_id]})
    print("groups:", "present" if status != 404 else "absent (skipped)")
    if status != 404:
        assert status == 201, body
        gid = body["conversation"]["id"]
        await c2.wait_for("message:new", is_from(gid))
        await c2.wait_for("conversation:updated", lambda e: e.get("id") == gid)
        ack = await a1.call("message:send", text(gid, "hi crew"))
        assert ack["ok"], ack
        for d in (b2, c2, b1):
            await d.wait_for("message:new", lambda m: m["id"] == ack["message"]["id"])
        status, _ = await rest(w2, "DELETE", f"/groups/{gid}/members/{carol.user_id}", alice)
        assert status == 204
        removed = lambda m: m.get("system", {}).get("event") == "member_removed"  # noqa: E731
        await c2.wait_for("message:new", removed)
        await b1.wait_for("message:new", removed)
        ack = await a1.call("message:send", text(gid, "after carol left"))
        await b2.wait_for("message:new", lambda m: m["id"] == ack["message"]["id"])
        assert not c2.of("message:new", lambda m: m["id"] == ack["message"]["id"])

    # forced disconnect: Carol logs out over REST on w1; her socket on w2 drops
    status, _ = await rest(w1, "POST", "/auth/logout", carol)
    assert status == 204
    await asyncio.wait_for(c2.gone.wait(), 5)

    # presence offline: Bob's last sockets (one per process) go; Alice is told once
    await b1.close()
    await b2.close()
    await a1.wait_for("presence", lambda p: p["user_id"] == bob.user_id and not p["online"])

    # per-process metrics saw the traffic
    assert await w1.metric("parley_messages_sent_total") >= 2
    assert await w2.metric("parley_messages_delivered_total") >= 2


# --- 2. kill -9 under load -------------------------------------------------------------------


async def _send_all(device: Device, items: list[tuple[str, dict]], acked: dict,
                    survivors, done: list, quarter: asyncio.Event, window: int = 8) -> None:
    """Send in windows of `window` concurrent messages; on a dead socket, reconnect to a
    live worker and retry the unacked ones with the same client_msg_id (bounded)."""
    pending = list(items)
    for _attempt in range(6):
        failed, i = [], 0
        while i < len(pending):
            batch = pending[i:i + window]
            i += window
            results = await asyncio.gather(
                *(device.call("message:send", payload, timeout=10) for _, payload in batch),
                return_exceptions=True)
            for (cmid, payload), r in zip(batch, results, strict=True):
                if isinstance(r, dict) and r.get("ok"):
                    acked[cmid] = r["message"]
                    done.append(cmid)
                    if len(done) == 250:
                        quarter.set()
                else:
                    failed.append((cmid, payload))
            if not device.sio.connected:
                break
        pending = failed + pending[i:]
        if not pending:
            return
        if not device.sio.connected:
            await device.connect(survivors()[0].url)
        else:
            await asyncio.sleep(0.2)
    raise AssertionError(f"{len(pending)} messages never acked")


@pytest.mark.parametrize("queue", QUEUES, indirect=True)
async def test_kill9_one_of_two_processes_loses_no_acked_message(db, cluster):
    url, deps = db
    w1, w2 = await cluster(2, url)
    alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
    cid = await direct_chat(deps, alice, bob)
    devices = {"a1": await cluster.device(alice, w1), "a2": await cluster.device(alice, w2),
               "b1": await cluster.device(bob, w1), "b2": await cluster.device(bob, w2)}
    acked: dict[str, dict] = {}
    done: list[str] = []
    quarter = asyncio.Event()  # a quarter of the messages acked
    per_device = 250  # 1,000 in all, from clients on both processes
    jobs = []
    for name, dev in devices.items():
        items = []
        for i in range(per_device):
            cmid = f"{name}-{i}-{uuid.uuid4().hex[:6]}"
            items.append((cmid, text(cid, f"{name} #{i}", cmid)))
        jobs.append(asyncio.ensure_future(_send_all(dev, items, acked, lambda: [w1], done, quarter)))

    await asyncio.wait_for(quarter.wait(), 30)
    w2.kill9()  # mid-flight: ~750 messages still to go, some in w2's hands
    killed_at = len(done)
    await asyncio.wait_for(asyncio.gather(*jobs), 60)
    reconnected = [n for n, d in devices.items() if d.url == w1.url and n.endswith("2")]
    print(f"killed w2 after {killed_at} acks; reconnected {reconnected}")
    assert killed_at < 1000 and len(acked) == 1000
    assert reconnected == ["a2", "b2"]

    # Every member's client: what it got live, then sync from its own cursor.
    for user, names in ((alice, ("a1", "a2")), (bob, ("b1", "b2"))):
        holder = Holder(cid)
        holder.add_live([devices[n] for n in names])
        for cmid, m in acked.items():
            if cmid.startswith(names):  # its own sends, from the acks
                holder.add(m)
        await holder.catch_up(devices[names[0]])  # reconnected or never left: on w1 now
        check_exactly_once(acked, holder, user.display_name)
        assert len(holder.by_seq) == 1000
    assert await Message.filter(conversation_id=cid).count() == 1000


# --- 3. Redis stopped for 10 s under load --------------------------------------------------


@pytest.mark.parametrize("queue", QUEUES, indirect=True)
async def test_queue_outage_keeps_acking_and_recovers_by_itself(db, cluster, tmp_path, queue):
    """Redis stopped (a private redis-server), or RabbitMQ cut off (a TCP proxy in
    front of it, so the shared broker keeps serving other runs), for 10 s."""
    url, deps = db
    redis = RedisServer(tmp_path)
    proxy = None
    if queue == "amqp":
        proxy = TcpProxy(5672)
        await proxy.start()
        creds = TEST_AMQP_URL.split("://", 1)[1].rpartition("@")[0]
        broker = f"amqp://{creds}@127.0.0.1:{proxy.port}/"
    await redis.start()
    try:
        if proxy:  # presence and rate limits stay on the (private) Redis
            w1, w2 = await cluster(2, url, redis.url, queue_url=broker)
        else:
            w1, w2 = await cluster(2, url, redis.url)
        alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
        cid = await direct_chat(deps, alice, bob)
        a1, b2 = await cluster.device(alice, w1), await cluster.device(bob, w2)
        acked: dict[str, dict] = {}
        failures: list = []
        stop = asyncio.Event()

        async def load(dev: Device, name: str):
            for i in itertools.count():
                if stop.is_set():
                    return
                cmid = f"{name}-{i}"
                t = time.monotonic()
                ack = await dev.call("message:send", text(cid, f"{name} {i}", cmid))
                if ack.get("ok"):
                    acked[cmid] = ack["message"]
                    # bounded even with Redis gone: publish has a 1 s cap, the
                    # limiter falls back to memory
                    assert time.monotonic() - t < 5, "ack held up by the outage"
                else:
                    failures.append(ack)
                await asyncio.sleep(0.02)

        jobs = [asyncio.ensure_future(load(a1, "a")), asyncio.ensure_future(load(b2, "b"))]
        await asyncio.sleep(1)
        if proxy:
            await proxy.cut()
        else:
            redis.stop()
        before = len(acked)
        await asyncio.sleep(10)
        during = len(acked) - before
        if proxy:
            await proxy.restore()
        else:
            await redis.start()  # same port
        back = time.monotonic()

        # Afterwards a message reaches a client on every process within 5 s.
        probes = {"a": set(), "b": set()}

        async def probe(dev, name):
            for i in range(40):  # bounded: 40 × 0.125 s
                ack = await dev.call("message:send", text(cid, "probe", f"probe-{name}-{i}"))
                if ack.get("ok"):
                    probes[name].add(ack["message"]["id"])
                    acked[f"probe-{name}-{i}"] = ack["message"]
                await asyncio.sleep(0.125)
                if a1.of("message:new", lambda m: m["id"] in probes["b"]) and \
                        b2.of("message:new", lambda m: m["id"] in probes["a"]):
                    return

        await asyncio.gather(probe(a1, "a"), probe(b2, "b"))
        crossed = time.monotonic() - back
        print(f"acked during the outage: {during}; live delivery back after {crossed:.2f} s")
        stop.set()
        await asyncio.gather(*jobs)
        assert a1.of("message:new", lambda m: m["id"] in probes["b"]), "w2 → w1 never resumed"
        assert b2.of("message:new", lambda m: m["id"] in probes["a"]), "w1 → w2 never resumed"
        assert crossed < 5, f"live delivery resumed {crossed:.1f} s after Redis came back"
        assert not failures, failures[:3]
        assert during > 20, f"only {during} sends acked during the outage"
        # Both processes told their clients to catch up.
        await a1.wait_for("resync")
        await b2.wait_for("resync")
        for user, dev, mine in ((alice, a1, ("a", "probe-a")), (bob, b2, ("b", "probe-b"))):
            holder = Holder(cid)
            holder.add_live([dev])
            for cmid, m in acked.items():
                if cmid.startswith(mine):
                    holder.add(m)
            await holder.catch_up(dev)
            check_exactly_once(acked, holder, user.display_name)
        assert await w1.metric("parley_redis_publish_failures_total") > 0
        assert await w1.metric("parley_redis_resubscribes_total") >= 1
    finally:
        redis.stop()
        if proxy:
            await proxy.close()


# --- 4. database unreachable -----------------------------------------------------------------


async def test_database_outage_gives_errors_never_false_acks(db, cluster):
    url, deps = db
    pg_port = int(url.split("://", 1)[1].split("@")[-1].split("/")[0].split(":")[1])
    proxy = TcpProxy(pg_port)
    await proxy.start()
    try:
        w1, w2 = await cluster(2, via(url, proxy.port))
        alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
        cid = await direct_chat(deps, alice, bob)
        a1, b2 = await cluster.device(alice, w1), await cluster.device(bob, w2)
        results: list[tuple[str, dict, float]] = []  # (cmid, ack, when)
        stop = asyncio.Event()

        async def load(dev: Device, name: str):
            for i in itertools.count():
                if stop.is_set():
                    return
                cmid = f"{name}-{i}"
                ack = await dev.call("message:send", text(cid, f"{name} {i}", cmid), timeout=20)
                results.append((cmid, ack, time.monotonic()))
                await asyncio.sleep(0.02)

        jobs = [asyncio.ensure_future(load(a1, "a")), asyncio.ensure_future(load(b2, "b"))]
        await asyncio.sleep(1)
        await proxy.cut()
        await asyncio.sleep(3)
        await proxy.restore()
        restored = time.monotonic()
        # Service resumes by itself: both senders get ok acks again (bounded wait).
        deadline = restored + 15
        while time.monotonic() < deadline:
            late_ok = {c[0] for c, a, t in results if t > restored and a.get("ok")}
            if {"a", "b"} <= late_ok:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*jobs)

        errors = [a for _, a, _ in results if not a.get("ok")]
        print(f"{len(results)} sends, {len(errors)} error acks during the cut")
        assert errors, "the outage produced no error acks"
        assert {e["error"]["code"] for e in errors} <= {"unavailable"}, errors[:3]
        late_ok = {c[0] for c, a, t in results if t > restored and a.get("ok")}
        assert {"a", "b"} <= late_ok, "sending did not resume after the database came back"
        # Never a false ack: every ok ack is stored, at the acked seq.
        stored = {m.client_msg_id: m for m in await Message.filter(conversation_id=cid)}
        for cmid, ack, _ in results:
            if ack.get("ok"):
                m = stored.get(cmid)
                assert m is not None and m.seq == ack["message"]["seq"], (cmid, ack)
        # A failed send retried with its client_msg_id is stored exactly once.
        failed = [(c, a) for c, a, _ in results if not a.get("ok")]
        for cmid, _ in failed[:20]:
            dev = a1 if cmid.startswith("a") else b2
            again = await dev.call("message:send", text(cid, "retry", cmid))
            assert again["ok"], again
        counts = await Message.filter(conversation_id=cid).values_list("client_msg_id",
                                                                      flat=True)
        assert len(counts) == len(set(counts))
        assert await w1.metric("parley_database_errors_total") + \
            await w2.metric("parley_database_errors_total") >= len(errors)
    finally:
        await proxy.close()


# --- 5. the same client_msg_id on both processes at once -----------------------------------


async def test_duplicate_client_msg_id_on_both_processes_is_one_message(db, cluster):
    url, deps = db
    w1, w2 = await cluster(2, url)
    alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
    cid = await direct_chat(deps, alice, bob)
    senders = [await cluster.device(alice, w) for w in (w1, w2, w1, w2)]
    b1 = await cluster.device(bob, w1)
    rounds = 20
    for r in range(rounds):
        payload = text(cid, f"race {r}", f"same-{r}")
        acks = await asyncio.gather(*(s.call("message:send", payload) for s in senders
                                      for _ in range(2)))
        assert all(a["ok"] for a in acks), acks
        assert all(a == acks[0] for a in acks), "acks differ"
    assert await Message.filter(conversation_id=cid).count() == rounds
    got = await b1.wait_for("message:new", is_from(cid), count=rounds)
    # The last emit has arrived; a duplicate emit would have been published before it.
    probe = await senders[0].call("message:send", text(cid, "probe"))
    await b1.wait_for("message:new", lambda m: m["id"] == probe["message"]["id"])
    got = b1.of("message:new", lambda m: m["client_msg_id"].startswith("same-"))
    assert sorted(m["seq"] for m in got) == list(range(1, rounds + 1))


# --- graceful shutdown ----------------------------------------------------------------------


@pytest.mark.parametrize("queue", QUEUES, indirect=True)
async def test_sigterm_drains_and_clients_move_to_the_survivor(db, cluster):
    url, deps = db
    w1, w2 = await cluster(2, url)
    alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
    cid = await direct_chat(deps, alice, bob)
    devices = {"a2": await cluster.device(alice, w2), "b1": await cluster.device(bob, w1)}
    acked: dict[str, dict] = {}
    done: list[str] = []
    quarter = asyncio.Event()
    jobs = []
    for name, dev in devices.items():
        items = [(f"{name}-{i}", text(cid, f"{name} #{i}", f"{name}-{i}")) for i in range(400)]
        jobs.append(asyncio.ensure_future(_send_all(dev, items, acked, lambda: [w1], done,
                                                    quarter)))
    await asyncio.wait_for(quarter.wait(), 30)
    t = time.monotonic()
    w2.terminate()
    code = await asyncio.to_thread(w2.proc.wait, 20)
    print(f"w2 drained and exited in {time.monotonic() - t:.2f} s")
    assert code == 0, w2.tail()
    await asyncio.wait_for(asyncio.gather(*jobs), 60)
    assert devices["a2"].url == w1.url  # Alice's client moved to the survivor
    holder = Holder(cid)
    holder.add_live([devices["b1"]])
    holder.add(next(iter(acked.values())))
    for cmid, m in acked.items():
        if cmid.startswith("b1"):
            holder.add(m)
    await holder.catch_up(devices["b1"])
    check_exactly_once(acked, holder, "bob")
    assert len(holder.by_seq) == 800


# --- scripts/cluster behind nginx -----------------------------------------------------------


@pytest.fixture
def nginx_cluster(db, tmp_path):
    if not has_nginx():
        pytest.fail("nginx is not installed (.ci/run installs it: apt-get install -y nginx)")
    c = ClusterScript(2, worker_env(db[0], TEST_REDIS_URL, tmp_path), tmp_path)
    yield c
    c.code = c.stop()


async def test_scripts_cluster_behind_nginx(db, nginx_cluster):
    url, deps = db
    c = nginx_cluster
    devices: list[Device] = []
    try:
        for w in (*c.workers, c.nginx):
            await w.wait_ready()
        for w in c.workers:
            await w.wait_subscribed()
        alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
        cid = await direct_chat(deps, alice, bob)
        # WebSocket clients through the front spread over both workers (least_conn).
        for i in range(4):
            devices.append(await Device(alice if i % 2 else bob, c.nginx.url).connect())
        counts = [await w.metric("parley_connected_sockets") for w in c.workers]
        assert sum(counts) == 4 and all(counts), counts
        # A long-polling client works through the front (sticky) and gets events
        # sent from either worker.
        poll = Device(bob, c.nginx.url)
        poll.sio = socketio_polling_client(poll)
        await poll.sio.connect(c.nginx.url, namespaces=["/chat"],
                               auth={"token": bob.access_token}, transports=["polling"],
                               wait_timeout=10)
        devices.append(poll)
        for dev in devices[:4]:
            if dev.user is alice:
                ack = await dev.call("message:send", text(cid, "via nginx"))
                assert ack["ok"], ack
                for other in [d for d in devices if d.user is bob]:
                    await other.wait_for("message:new", lambda m, i=ack["message"]["id"]:
                                         m["id"] == i)
        async with aiohttp.ClientSession() as http, http.get(c.nginx.url + "/metrics") as r:
            assert r.status == 404  # per-process metrics stay off the front
    finally:
        for d in devices:
            await d.close()
    code = await asyncio.to_thread(c.stop)
    assert code == 0, c.tail()


def socketio_polling_client(device: Device, **options):
    import socketio

    sio = socketio.AsyncClient(reconnection=False, **options)

    async def catch_all(event, *args):
        async with device.cond:
            device.events.append((event, args[0] if args else None))
            device.cond.notify_all()

    sio.on("*", catch_all, namespace="/chat")
    return sio


# --- client addresses and TLS through nginx ---------------------------------------------------


async def login_from(source_ip: str, url: str, login: str, password: str,
                     headers: dict | None = None, ssl=True) -> int:
    """POST /auth/login from a chosen loopback source address (127.0.0.0/8 is
    all local on Linux): distinct clients, as nginx sees them."""
    conn = aiohttp.TCPConnector(local_addr=(source_ip, 0), ssl=ssl)
    async with aiohttp.ClientSession(connector=conn) as http, http.post(
            url + API + "/auth/login", json={"login": login, "password": password},
            headers=headers or {}) as r:
        return r.status


async def test_login_buckets_are_per_client_behind_nginx(db, tmp_path):
    """Behind the bundled nginx every request reaches a worker from 127.0.0.1.
    With TRUSTED_PROXIES (set by scripts/cluster) each client has its own login
    bucket; an X-Forwarded-For a client writes itself, through nginx or sent
    straight to a worker, changes nothing."""
    if not has_nginx():
        pytest.fail("nginx is not installed (.ci/run installs it: apt-get install -y nginx)")
    url, deps = db
    # A private Redis: the counters of other runs on the shared one stay out.
    redis = RedisServer(tmp_path)
    await redis.start()
    env = worker_env(url, redis.url, tmp_path, LOGIN_RATE_LIMIT="3/60")
    env.pop("TRUSTED_PROXIES", None)
    c = ClusterScript(1, env, tmp_path)
    try:
        await c.workers[0].wait_ready()
        await c.nginx.wait_ready()
        victim, other = await make_user(deps, "victim"), await make_user(deps, "other")
        front, worker = c.nginx.url, c.workers[0].url
        # Client A (127.0.0.2) guesses passwords of several accounts until its
        # address is limited; spoofed headers do not give it a fresh bucket.
        codes = [await login_from("127.0.0.2", front, f"nobody{i}@example.org", "wrong")
                 for i in range(3)]
        assert codes == [401, 401, 401]
        assert await login_from("127.0.0.2", front, "nobody9@example.org", "wrong") == 429
        assert await login_from("127.0.0.2", front, "nobody8@example.org", "wrong",
                                {"X-Forwarded-For": "203.0.113.50"}) == 429
        assert await login_from("127.0.0.2", front, "nobody7@example.org", "wrong",
                                {"Forwarded": "for=203.0.113.51"}) == 429
        # Client B (127.0.0.3) through the same nginx is not locked out.
        assert await login_from("127.0.0.3", front, victim.email, victim.password) == 200
        # Directly to the worker (not through a trusted proxy): the header is
        # ignored, every attempt counts against the TCP peer 127.0.0.4.
        codes = [await login_from("127.0.0.4", worker, f"nobody{i}@example.org", "wrong",
                                  {"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(4)]
        assert codes == [401, 401, 401, 429]
        # …and it cannot pose as client B or unlock client A either.
        assert await login_from("127.0.0.4", worker, other.email, other.password,
                                {"X-Forwarded-For": "127.0.0.3"}) == 429
        assert await login_from("127.0.0.5", worker, other.email, other.password) == 200
    finally:
        code = await asyncio.to_thread(c.stop)
        redis.stop()
    assert code == 0, c.tail()


async def test_nginx_terminates_tls_and_redirects_http(db, tmp_path):
    if not has_nginx():
        pytest.fail("nginx is not installed (.ci/run installs it: apt-get install -y nginx)")
    url, deps = db
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(tmp_path / "cert.pem"), append=True)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    http_port = free_port()
    env = worker_env(url, TEST_REDIS_URL, tmp_path, TLS_CERT_FILE=tmp_path / "cert.pem",
                     TLS_KEY_FILE=tmp_path / "key.pem")
    c = ClusterScript(1, env, tmp_path, args=("--http-port", str(http_port)))
    front = f"https://127.0.0.1:{c.front}"
    devices: list[Device] = []
    sessions: list[aiohttp.ClientSession] = []
    try:
        await c.workers[0].wait_ready()  # the worker itself speaks plain HTTP to nginx
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(front + "/healthz", ssl=ctx) as r:
                        assert r.status == 200
                        assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
                        break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline, c.tail()
                    await asyncio.sleep(0.1)
            async with http.get(f"http://127.0.0.1:{http_port}/join/abc?x=1",
                                allow_redirects=False) as r:
                assert r.status == 301
                assert r.headers["Location"] == f"https://127.0.0.1:{c.front}/join/abc?x=1"
        # Socket.IO over wss through nginx, the certificate verified.
        alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
        cid = await direct_chat(deps, alice, bob)
        for user in (alice, bob):
            d = Device(user, front)
            sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)))
            d.sio = socketio_polling_client(d, http_session=sessions[-1])
            await d.sio.connect(front, namespaces=["/chat"], auth={"token": user.access_token},
                                transports=["websocket"], wait_timeout=10)
            devices.append(d)
        ack = await devices[0].call("message:send", text(cid, "over wss"))
        assert ack["ok"], ack
        await devices[1].wait_for("message:new", lambda m: m["id"] == ack["message"]["id"])
    finally:
        for d in devices:
            await d.close()
        for session in sessions:
            await session.close()
        code = await asyncio.to_thread(c.stop)
    assert code == 0, c.tail()
