"""Presence: the stores (memory; Redis when TEST_REDIS_URL is set — unreachable
means fail), the per-process tracker with its reload grace period, and the
`presence` events seen by contacts across several devices and processes."""

import asyncio
import logging
import os
import socket
import time
import uuid

import pytest
import redis.asyncio as redis

from app.presence import Coalesced, MemoryPresence, PresenceTracker, RedisPresence
from tests.factories import connect, make_contacts, make_user, until

API = "/api/v1"
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
STORES = ["memory"] + (["redis", "redis-coalesced"] if TEST_REDIS_URL else [])
needs_redis = pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL not set")


@pytest.fixture
async def redis_client():
    client = redis.from_url(TEST_REDIS_URL)
    await client.ping()  # unreachable: the test fails here, it does not skip
    yield client
    await client.aclose()


@pytest.fixture
def prefix():
    return f"parley:test:{uuid.uuid4().hex}:"


@pytest.fixture(params=STORES)
async def make_store(request, prefix):
    """Factory of stores that share state the way processes would."""
    if request.param == "memory":
        shared = MemoryPresence()
        yield lambda proc=None: shared
        return
    client = redis.from_url(TEST_REDIS_URL)
    await client.ping()  # unreachable: the test fails here, it does not skip
    if request.param == "redis":
        yield lambda proc=None: RedisPresence(client, proc_id=proc, prefix=prefix)
    else:
        yield lambda proc=None: Coalesced(RedisPresence(client, proc_id=proc, prefix=prefix))
    await client.delete(*[k async for k in client.scan_iter(f"{prefix}*")] or ["-"])
    await client.aclose()


def uid() -> str:
    return str(uuid.uuid4())


async def test_store_mark_unmark_online(make_store):
    store = make_store("p1")
    a, b, c = uid(), uid(), uid()
    assert await store.online([a, b, c]) == set()
    await store.mark([a, b])
    assert await store.online([a, b, c]) == {a, b}
    await store.unmark([a])
    assert await store.online([a, b, c]) == {b}
    assert await store.online([]) == set()


@needs_redis
async def test_redis_store_is_shared_between_processes(redis_client, prefix):
    p1 = RedisPresence(redis_client, proc_id="p1", prefix=prefix)
    p2 = RedisPresence(redis_client, proc_id="p2", prefix=prefix)
    u = uid()
    await p1.mark([u])
    await p2.mark([u])
    assert await p2.online([u]) == {u}
    await p1.unmark([u])
    assert await p1.online([u]) == {u}  # p2 still holds a socket
    await p2.unmark([u])
    assert await p1.online([u]) == set()


@needs_redis
async def test_redis_entries_of_a_crashed_process_lapse(redis_client, prefix):
    crashed = RedisPresence(redis_client, proc_id="crashed", prefix=prefix, ttl=30)
    u = uid()
    await crashed.mark([u])
    # The key itself carries a TTL, so nothing is left behind for good.
    assert 0 < await redis_client.ttl(f"{prefix}{u}") <= 30
    now_view = RedisPresence(redis_client, proc_id="alive", prefix=prefix)
    assert await now_view.online([u]) == {u}
    # Seen from a moment past the TTL without a heartbeat, the user is offline.
    later = RedisPresence(redis_client, proc_id="alive", prefix=prefix,
                          clock=lambda: time.time() + 31)
    assert await later.online([u]) == set()
    # A live process keeps its entries fresh with the heartbeat.
    await crashed.mark([u])
    assert await now_view.online([u]) == {u}


class Offline:
    def __init__(self):
        self.users: list[str] = []
        self.calls = 0
        self.event = asyncio.Event()

    async def __call__(self, user_ids):
        self.calls += 1
        self.users.extend(user_ids)
        self.event.set()


async def test_tracker_counts_devices_and_grace_covers_a_reload(make_store):
    tracker = PresenceTracker(make_store("p1"), grace=60)
    offline = Offline()
    u = uid()
    try:
        assert await tracker.connect(u) is True   # came online
        assert await tracker.connect(u) is False  # a second device
        tracker.disconnect(u, offline)
        assert tracker.local[u] == 1 and u not in tracker._timers
        tracker.disconnect(u, offline)             # last device gone: grace starts
        assert u in tracker._timers
        assert await tracker.online([u]) == {u}   # still online during the grace
        assert await tracker.connect(u) is False  # the reload came back in time
        assert u not in tracker._timers
        assert offline.users == []
    finally:
        await tracker.close()
    assert await tracker.store.online([u]) == set()  # close() forgets its users


async def test_tracker_goes_offline_after_the_grace(make_store):
    tracker = PresenceTracker(make_store("p1"), grace=0.05)
    offline = Offline()
    u = uid()
    try:
        assert await tracker.connect(u) is True
        tracker.disconnect(u, offline)
        await asyncio.wait_for(offline.event.wait(), 5)
        assert offline.users == [u]
        assert await tracker.online([u]) == set()
        assert await tracker.connect(u) is True  # a later visit is "online" again
    finally:
        await tracker.close()


async def expire_each(tracker, users, on_offline) -> None:
    """Disconnect the users one by one, each expiry run before the next."""
    for u in users:
        tracker.disconnect(u, on_offline)
        await until(lambda u=u: u not in tracker._timers, "the expiry ran")


def assert_end_told(caplog, *, failed: int) -> None:
    """The outage's first line, then one line for its end and nothing between."""
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and said[1].startswith(
        "presence offline handling works again after "), said
    assert said[1].endswith(f"({failed} failed attempts)"), said


@needs_redis
async def test_a_redis_away_at_each_expiry_is_told_once_and_its_end(caplog):
    """Users going offline while Redis is unreachable: the tracker cannot
    unmark them, says so once for the whole outage, and says when it can again."""
    from tests.cluster_helpers import TcpProxy, via

    caplog.set_level(logging.INFO, "parley.presence")
    proxy = TcpProxy(int(TEST_REDIS_URL.rpartition(":")[2].split("/")[0]))
    await proxy.start()
    client = redis.from_url(via(TEST_REDIS_URL, proxy.port), socket_timeout=2)
    tracker = PresenceTracker(RedisPresence(client, prefix=f"parley:test:{uuid.uuid4().hex}:"),
                              grace=0.05)
    offline = Offline()
    users = [uid() for _ in range(3)]
    try:
        for u in users:
            await tracker.connect(u)
        await proxy.cut()
        await expire_each(tracker, users[:2], offline)  # two expiries, each failing
        told = [r.getMessage() for r in caplog.records]
        assert len(told) == 1 and told[0].startswith("presence offline handling failed ("), told
        await proxy.restore()
        tracker.disconnect(users[2], offline)
        await asyncio.wait_for(offline.event.wait(), 5)
        assert offline.users == [users[2]]
        assert_end_told(caplog, failed=2)
    finally:
        await tracker.close()
        await client.aclose()
        await proxy.close()


async def test_an_offline_callback_failing_at_each_expiry_is_told_once_and_its_end(caplog):
    """The callback records who went offline in the database: while it fails,
    each expiry's failure is not a traceback of its own."""
    caplog.set_level(logging.INFO, "parley.presence")
    tracker = PresenceTracker(MemoryPresence(), grace=0.05)
    offline = Offline()
    failing = True

    async def on_offline(user_ids):
        if failing:
            raise ConnectionRefusedError("the database is away")
        await offline(user_ids)

    users = [uid() for _ in range(4)]
    try:
        for u in users:
            await tracker.connect(u)
        await expire_each(tracker, users[:3], on_offline)  # three expiries, each failing
        told = [r.getMessage() for r in caplog.records]
        assert told == ["presence offline handling failed (ConnectionRefusedError); retrying"], told
        failing = False
        tracker.disconnect(users[3], on_offline)
        await asyncio.wait_for(offline.event.wait(), 5)
        assert_end_told(caplog, failed=3)
    finally:
        await tracker.close()


async def test_tracker_handles_a_storm_of_disconnects_in_batches(make_store):
    """Thousands of sockets dropping at once: one sweep, one on_offline call for
    everyone due, no task per user; the ones who came back are left out."""
    tracker = PresenceTracker(make_store("p1"), grace=0.2)
    offline = Offline()
    users = [uid() for _ in range(1500)]
    try:
        for u in users:
            assert await tracker.connect(u) is True
        for u in users:
            tracker.disconnect(u, offline)
        assert len(tracker._timers) == len(users)
        back = users[::3]
        for u in back:
            assert await tracker.connect(u) is False  # within the grace: nobody told
        await until(lambda: not tracker._timers, "every grace period over")
        gone = [u for u in users if u not in set(back)]
        assert offline.users == gone  # in disconnect order
        assert offline.calls <= 2  # SWEEP_BATCH users per call
        assert await tracker.online(users) == set(back)
        # Came back while the sweep was telling the store: waits, then is online.
        tracker.disconnect(back[0], offline)
        await until(lambda: back[0] in tracker._expiring or not tracker._timers, "sweep")
        assert await tracker.connect(back[0]) is True
    finally:
        await tracker.close()


class CountingPresence(RedisPresence):
    """Counts round trips (each `apply` is one pipeline)."""

    trips = 0

    async def apply(self, marks, questions):
        self.trips += 1
        return await super().apply(marks, questions)


@needs_redis
async def test_coalesced_store_serves_a_storm_through_a_small_pool(prefix):
    """5,000 sockets marking and unmarking at once through a pool of 2 connections
    that gives up after 0.2 s: every call succeeds, in a few round trips. (Each
    call with its own pipeline waits for one of the 2 connections, and most give
    up: "No connection available".)"""
    pool = redis.BlockingConnectionPool.from_url(TEST_REDIS_URL, max_connections=2, timeout=0.2)
    client = redis.Redis(connection_pool=pool)
    inner = CountingPresence(client, prefix=prefix)
    store = Coalesced(inner)
    users = [uid() for _ in range(5000)]
    try:
        await asyncio.gather(*(store.mark([u]) for u in users))
        assert await inner.online(users) == set(users)
        asked = await asyncio.gather(*(store.online([u]) for u in users[:100]))
        assert asked == [{u} for u in users[:100]]
        await asyncio.gather(*(store.unmark([u]) for u in users))
        assert await inner.online(users) == set()
        assert inner.trips <= 3 + 3 + 3 + 2  # per storm: the first call's trip, then the rest
    finally:
        await client.delete(*[k async for k in client.scan_iter(f"{prefix}*")] or ["-"])
        await client.aclose()


@needs_redis
async def test_coalesced_store_keeps_the_last_write_and_answers_after_it(prefix):
    client = redis.from_url(TEST_REDIS_URL)
    inner = CountingPresence(client, prefix=prefix)
    store = Coalesced(inner)
    a, b = uid(), uid()
    try:
        first = asyncio.gather(store.mark([a]), store.mark([a, b]))
        await until(lambda: inner.trips == 1, "the first trip is out")
        # Issued while it is out: all in the next trip, where the last write per
        # user wins and the question sees the writes before it.
        *_, online = await asyncio.gather(
            first, store.unmark([a]), store.mark([a]), store.unmark([a]), store.online([a, b]))
        assert online == {b}
        assert inner.trips == 2
    finally:
        await client.delete(*[k async for k in client.scan_iter(f"{prefix}*")] or ["-"])
        await client.aclose()


async def test_coalesced_store_fails_every_call_of_a_failed_trip_then_recovers(prefix):
    """Redis down: every caller of the trip gets the error (none hangs); a caller
    cancelled meanwhile does not take the others' answers with it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    down = redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    store = Coalesced(RedisPresence(down, prefix=prefix))
    calls = [asyncio.ensure_future(store.mark([uid()])) for _ in range(20)]
    calls.append(asyncio.ensure_future(store.online([uid()])))
    calls[0].cancel()
    results = await asyncio.wait_for(asyncio.gather(*calls[1:], return_exceptions=True), 10)
    assert all(isinstance(r, redis.ConnectionError) for r in results), results
    await down.aclose()
    if TEST_REDIS_URL:  # the same store again once a server answers
        store.store.redis = redis.from_url(TEST_REDIS_URL)
        u = uid()
        await store.mark([u])
        assert await store.online([u]) == {u}
        await store.unmark([u])
        await store.store.redis.aclose()


async def reference_watchers(subject) -> list[str]:
    """The one-subject-at-a-time rule the batched lookup replaced, kept as the spec."""
    from app.models.contacts import Block, Contact

    if subject.last_seen_visibility == "nobody":
        return []
    have_me = {str(u) for u in await Contact.filter(contact_id=subject.id).values_list(
        "owner_id", flat=True)}
    if subject.last_seen_visibility != "everyone":
        mine = {str(u) for u in await Contact.filter(owner_id=subject.id).values_list(
            "contact_id", flat=True)}
        have_me &= mine
    if have_me:
        blocked = {str(u) for u in await Block.filter(blocker_id=subject.id).values_list(
            "blocked_id", flat=True)}
        have_me -= blocked
    return sorted(have_me)


async def test_watchers_of_many_match_one_by_one(deps):
    from app.models.accounts import User
    from app.models.contacts import Block
    from app.services import presence

    people = [await make_user(deps) for _ in range(6)]
    a, b, c, d, e, f = people
    for x, y in ((a, b), (a, c), (a, d), (b, c), (e, f)):
        await make_contacts(deps, x, y)  # both ways
    await make_contacts(deps, f, a)
    await User.filter(id=b.user_id).update(last_seen_visibility="contacts")
    await User.filter(id=e.user_id).update(last_seen_visibility="nobody")
    await Block.create(blocker_id=a.user_id, blocked_id=d.user_id)
    subjects = await User.filter(id__in=[p.user_id for p in people])
    batched = await presence.watchers_of(subjects)
    for s in subjects:
        assert batched[str(s.id)] == await reference_watchers(s)
        assert await presence.watchers(s) == batched[str(s.id)]
    assert batched[a.user_id] == sorted([b.user_id, c.user_id, f.user_id])  # d is blocked
    assert batched[e.user_id] == []


@needs_redis
async def test_trackers_on_two_processes(redis_client, prefix):
    one = PresenceTracker(RedisPresence(redis_client, proc_id="one", prefix=prefix), grace=0.05)
    two = PresenceTracker(RedisPresence(redis_client, proc_id="two", prefix=prefix), grace=0.05)
    offline = Offline()
    u = uid()
    try:
        assert await one.connect(u) is True
        assert await two.connect(u) is False  # already online through process one
        one.disconnect(u, offline)
        await until(lambda: u not in one._timers, "grace over on process one")
        assert offline.users == []            # process two still holds a socket
        two.disconnect(u, offline)
        await asyncio.wait_for(offline.event.wait(), 5)
        assert offline.users == [u]
    finally:
        await one.close()
        await two.close()


# --- end to end: real server, real clients ------------------------------------------


async def contact_presence(client, viewer, subject):
    r = await client.get(f"{API}/contacts", headers=viewer.headers)
    rows = {c["user"]["id"]: c for c in (await r.json())["contacts"]}
    return rows[subject.user_id]["presence"]


async def marker(client, deps, sender, watcher_sock, watcher):
    """An event that reaches the watcher after everything sent to them before."""
    r = await client.post(f"{API}/contacts/requests", json={"user_id": watcher.user_id},
                          headers=sender.headers)
    assert r.status == 201
    await watcher_sock.log.wait_for("contact:request")


@pytest.mark.parametrize("settings_overrides", [{"presence_grace_seconds": 60}])
async def test_two_devices_and_a_page_reload_do_not_flap(client, deps, base_url):
    alice, bob, other = await make_user(deps), await make_user(deps), await make_user(deps)
    await make_contacts(deps, alice, bob)
    watcher = await connect(base_url, alice.access_token)
    phone = laptop = reloaded = None
    try:
        phone = await connect(base_url, bob.access_token)
        (online,) = await watcher.log.wait_for("presence")
        assert online == {"user_id": bob.user_id, "online": True, "last_seen": None}
        laptop = await connect(base_url, bob.access_token)
        await until(lambda: deps.presence.local.get(bob.user_id) == 2, "second device counted")

        await phone.disconnect()
        await until(lambda: deps.presence.local.get(bob.user_id) == 1, "phone gone")
        assert bob.user_id not in deps.presence._timers  # the laptop keeps him online

        await laptop.disconnect()  # a page reload: gone for a moment...
        await until(lambda: bob.user_id in deps.presence._timers, "grace period started")
        assert (await contact_presence(client, alice, bob))["online"] is True
        reloaded = await connect(base_url, bob.access_token)  # ...and back
        await until(lambda: deps.presence.local.get(bob.user_id) == 1, "reload counted")
        assert bob.user_id not in deps.presence._timers

        await marker(client, deps, other, watcher, alice)
        assert watcher.log.of("presence") == [online]  # one "online", no flapping
        assert await contact_presence(client, alice, bob) == {"online": True, "last_seen": None}
    finally:
        for sock in (watcher, phone, laptop, reloaded):
            if sock is not None and sock.connected:
                await sock.disconnect()


async def test_offline_after_the_last_device_and_the_grace(client, deps, base_url):
    alice, bob = await make_user(deps), await make_user(deps)
    await make_contacts(deps, alice, bob)
    watcher = await connect(base_url, alice.access_token)
    try:
        assert await contact_presence(client, alice, bob) == {"online": False,
                                                              "last_seen": None}
        one = await connect(base_url, bob.access_token)
        two = await connect(base_url, bob.access_token)
        await watcher.log.wait_for("presence")
        await one.disconnect()
        await two.disconnect()
        events = await watcher.log.wait_for("presence", count=2)
        assert [e["online"] for e in events] == [True, False]
        assert events[1]["user_id"] == bob.user_id and events[1]["last_seen"]
        assert await contact_presence(client, alice, bob) == {
            "online": False, "last_seen": events[1]["last_seen"]}
    finally:
        await watcher.disconnect()


@needs_redis
@pytest.mark.parametrize("settings_overrides", [{"redis_url": TEST_REDIS_URL}])
async def test_presence_through_redis_with_another_process(client, deps, base_url):
    """The server keeps presence in Redis; a second process (a RedisPresence of
    its own) holding one of Bob's sockets keeps him online here."""
    assert isinstance(deps.presence.store, Coalesced)
    assert isinstance(deps.presence.store.store, RedisPresence)
    alice, bob, other = await make_user(deps), await make_user(deps), await make_user(deps)
    await make_contacts(deps, alice, bob)
    elsewhere = RedisPresence(deps.redis, proc_id=f"elsewhere-{uuid.uuid4().hex}")
    watcher = await connect(base_url, alice.access_token)
    try:
        await elsewhere.mark([bob.user_id])
        assert (await contact_presence(client, alice, bob))["online"] is True
        here = await connect(base_url, bob.access_token)
        await until(lambda: deps.presence.local.get(bob.user_id) == 1, "bob counted")
        await here.disconnect()
        await until(lambda: bob.user_id not in deps.presence.local
                    and bob.user_id not in deps.presence._timers, "grace finished")
        await marker(client, deps, other, watcher, alice)
        # Online elsewhere the whole time: no event either way.
        assert watcher.log.of("presence") == []
        assert (await contact_presence(client, alice, bob))["online"] is True
        # The other process stops (it clears its entries, or they lapse after a crash).
        await elsewhere.unmark([bob.user_id])
        assert (await contact_presence(client, alice, bob))["online"] is False
    finally:
        await watcher.disconnect()


async def test_shutdown_sends_queued_announcements_before_the_database_closes(
        server, deps, monkeypatch):
    from app.services import presence as presence_service

    alice, bob = await make_user(deps), await make_user(deps)
    await make_contacts(deps, alice, bob)
    real = presence_service._announce_many
    release = asyncio.Event()
    outcome = []

    async def held(deps_, changes):
        await release.wait()
        try:
            await real(deps_, changes)
        except Exception as exc:
            outcome.append(exc)
            raise
        outcome.append("announced")

    monkeypatch.setattr(presence_service, "_announce_many", held)
    announcer = presence_service.announcer(deps)
    announcer.add([(bob.user_id, True, None)])  # as a connect's would be, in flight
    closing = asyncio.ensure_future(server.close())
    await asyncio.sleep(0.3)  # the shutdown is under way
    release.set()
    await closing
    await asyncio.gather(announcer.task, return_exceptions=True)
    assert outcome == ["announced"]
    # Nothing is taken once closed; a caller waiting on it is not left hanging.
    done = announcer.add([(alice.user_id, False, None)], wait=True)
    assert done.done() and announcer.queue == []


@needs_redis
async def test_clients_come_and_go_while_redis_is_away_and_the_log_says_so_once(
        tmp_path, aiohttp_client, caplog):
    """Presence and foreground state are best effort: with their Redis away
    every connect and disconnect still succeeds, and each hook's failures are
    one line for the outage, not a traceback per client."""
    from app.api.http import DEPS_KEY
    from app.server import create_app
    from tests.cluster_helpers import TcpProxy, via
    from tests.conftest import make_settings

    caplog.set_level(logging.INFO)
    proxy = TcpProxy(int(TEST_REDIS_URL.rpartition(":")[2].split("/")[0]))
    await proxy.start()
    try:
        settings = make_settings(f"sqlite://{tmp_path}/p.db", tmp_path,
                                 redis_url=via(TEST_REDIS_URL, proxy.port))
        client = await aiohttp_client(create_app(settings, generate_schemas=True))
        url = str(client.make_url(""))
        deps = client.app[DEPS_KEY]
        users = [await make_user(deps) for _ in range(3)]
        await proxy.cut()
        caplog.clear()
        for user in users:
            sio = await connect(url, user.access_token)  # not refused
            await sio.disconnect()
        await asyncio.sleep(1.5)  # the disconnect hooks and the grace period's expiry
        hooks = [r.getMessage().partition(" failed (")[0]
                 for r in caplog.records if " hook " in r.getMessage()]
        assert sorted(hooks) == [  # once each for the three clients
            "connect hook app.realtime.contacts._online",
            "connect hook app.realtime.push._connected",
            "disconnect hook app.realtime.push._disconnected",
        ], caplog.text
        # Going offline waits for the grace period; its expiries fail in turn.
        offline = [r.getMessage() for r in caplog.records
                   if r.getMessage().startswith("presence offline")]
        assert len(offline) == 1 and offline[0].startswith(
            "presence offline handling failed ("), offline
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        await proxy.close()
