"""Push across real processes: `python -m app serve` workers sharing
PostgreSQL and Redis (tests/cluster_helpers.py), a Web Push stand-in that
verifies every push (tests/push_services.py).

Need TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL: without them they
skip; set but unreachable, they fail.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from app.models.push import PushOutbox
from tests.cluster_fixtures import db  # noqa: F401 (fixture)
from tests.cluster_helpers import (
    CLUSTER_MARKS,
    TEST_REDIS_URL,
    Worker,
    direct_chat,
    rest,
    worker_env,
)
from tests.factories import call, connect, make_user
from tests.push_services import WebPushService
from tests.test_push import VAPID_KEY, vapid_public

pytestmark = CLUSTER_MARKS

PUSH_ENV = {"PUSH_INSECURE_HOSTS": "127.0.0.1", "VAPID_PRIVATE_KEY": VAPID_KEY,
            "PUSH_COALESCE_SECONDS": "0"}
_ids = itertools.count(1)


DB_LIMITS = {"register_rate_limit": "100000/60", "register_global_rate_limit": "100000/60",
             "contact_request_rate_limit": "100000/60"}  # for the shared `db` fixture


@pytest.fixture
async def sink():
    service = WebPushService(vapid_public())
    await service.start()
    yield service
    await service.close()


@pytest.fixture
async def workers(tmp_path):
    started: list[Worker] = []

    async def start(url: str, name: str, **extra) -> Worker:
        w = Worker(name, worker_env(url, TEST_REDIS_URL, tmp_path, **PUSH_ENV, **extra),
                   tmp_path)
        w.start()
        started.append(w)
        await w.wait_ready()
        await w.wait_subscribed()
        return w

    try:
        yield start
    finally:
        for w in started:
            w.stop()


async def send(worker, who, cid, text) -> None:
    status, body = await rest(worker, "POST", f"/conversations/{cid}/messages", who,
                              {"client_msg_id": f"c{next(_ids)}", "text": text})
    assert status in (200, 201), body


async def test_foreground_on_another_process_holds_the_push(db, sink, workers):
    url, deps = db
    w1 = await workers(url, "w1")
    w2 = await workers(url, "w2")
    alice, bob = await make_user(deps, "Alice"), await make_user(deps, "Bob")
    cid = await direct_chat(deps, alice, bob)
    status, _ = await rest(w2, "POST", "/push/subscriptions", bob, sink.subscription("bob"))
    assert status == 201
    sio = await connect(w2.url, bob.access_token)  # Bob looks at Parley on w2
    try:
        await send(w1, alice, cid, "seen live")
        await asyncio.sleep(1.5)
        assert sink.received == []
        assert (await call(sio, "client:state", {"state": "background"}))["ok"]
        await send(w1, alice, cid, "pushed")
        got = await sink.wait_for(1)
        assert got[0]["payload"]["body"] == "pushed"
    finally:
        await sio.disconnect()
    assert sink.errors == []


async def test_two_workers_deliver_each_push_once(db, sink, workers):
    url, deps = db
    w1 = await workers(url, "w1")
    w2 = await workers(url, "w2")
    alice = await make_user(deps, "Alice")
    people = [await make_user(deps, f"P{i}") for i in range(12)]
    chats = []
    for i, p in enumerate(people):
        chats.append(await direct_chat(deps, alice, p))
        status, _ = await rest(w1 if i % 2 else w2, "POST", "/push/subscriptions", p,
                               sink.subscription(f"p{i}"))
        assert status == 201
    await asyncio.gather(*(send(w1 if i % 2 else w2, alice, cid, f"to {i}")
                           for i, cid in enumerate(chats)))
    got = await sink.wait_for(12, timeout=20)
    await asyncio.sleep(2)
    assert len(sink.received) == 12
    assert sorted(g["name"] for g in got) == sorted(f"p{i}" for i in range(12))
    assert sink.errors == []
    sent = await w1.metric("parley_push_sent_total") + await w2.metric("parley_push_sent_total")
    assert sent == 12


async def test_kill9_with_queued_pushes_delivers_them_after_restart(db, sink, workers):
    url, deps = db
    # The first process queues but, like a process killed before its worker ran,
    # sends nothing.
    w1 = await workers(url, "w1", PUSH_WORKERS="false")
    alice, bob = await make_user(deps, "Alice"), await make_user(deps, "Bob")
    cid = await direct_chat(deps, alice, bob)
    status, _ = await rest(w1, "POST", "/push/subscriptions", bob, sink.subscription("bob"))
    assert status == 201
    await send(w1, alice, cid, "queued before the crash")
    for _ in range(100):
        if await PushOutbox.filter(pending=True).exists():
            break
        await asyncio.sleep(0.05)
    assert await PushOutbox.filter(pending=True).count() == 1
    w1.kill9()
    assert sink.received == []
    await workers(url, "w2")
    got = await sink.wait_for(1, timeout=15)
    assert got[0]["payload"]["body"] == "queued before the crash"
    await asyncio.sleep(1.5)
    assert len(sink.received) == 1
    assert not await PushOutbox.filter(pending=True).exists()


async def test_kill9_before_the_planner_wrote_the_outbox_loses_no_push(db, sink, workers):
    """Acked messages whose pushes the planner still held in memory (a long
    PUSH_PLANNER_INTERVAL keeps them there) when the process is killed are
    pushed by the next process, once; what was pushed before is not again."""
    url, deps = db
    w1 = await workers(url, "w1", PUSH_PLANNER_INTERVAL="60")
    alice = await make_user(deps, "Alice")
    bob, carol = await make_user(deps, "Bob"), await make_user(deps, "Carol")
    to_bob, to_carol = await direct_chat(deps, alice, bob), await direct_chat(deps, alice, carol)
    for who, name in ((bob, "bob"), (carol, "carol")):
        status, _ = await rest(w1, "POST", "/push/subscriptions", who, sink.subscription(name))
        assert status == 201
    await send(w1, alice, to_bob, "one")  # the idle planner takes it at once…
    got = await sink.wait_for(1)
    assert got[0]["payload"]["body"] == "one"
    await send(w1, alice, to_bob, "two")  # …then gathers events for a minute
    await send(w1, alice, to_carol, "three")
    await asyncio.sleep(0.5)
    assert not await PushOutbox.filter(thread=to_carol).exists()  # only in memory
    w1.kill9()
    assert len(sink.received) == 1
    await workers(url, "w2")
    got = await sink.wait_for(3, timeout=20)
    await asyncio.sleep(2)
    assert len(sink.received) == 3, [g["payload"]["body"] for g in sink.received]
    by_name = {}
    for g in got:
        by_name.setdefault(g["name"], []).append(g["payload"]["body"])
    assert by_name["carol"] == ["three"]
    assert by_name["bob"][0] == "one" and by_name["bob"][1].endswith("two")
    assert sink.errors == []
    assert not await PushOutbox.filter(pending=True).exists()
