"""Read replicas (app/replicas.py): history, sync and search served by a real
streaming replica, read-your-writes, lag and replica loss.

The machine's PostgreSQL takes no replication connections, so the suite
builds its own pair: a primary (initdb into a temporary directory, run as the
`postgres` user on a free port) and a standby of it (pg_basebackup -R, on
another free port). Runs when TEST_DATABASE_URL is set (PostgreSQL installed);
then a pair that cannot be built fails the suite, never skips it.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid

import asyncpg
import pytest

from app.api.http import DEPS_KEY
from app.errors import Invalid, RateLimited
from app.models.messaging import Conversation
from app.replicas import ReplicaState, choose, lag_behind
from app.server import create_app
from app.services import conversations as convs
from app.services import groups, message_changes, messaging, search
from app.services import history as reading
from tests.cluster_helpers import TcpProxy, free_port, via
from tests.conftest import make_settings
from tests.factories import make_contacts, make_user, until

NEEDS_PG = pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"),
                              reason="needs TEST_DATABASE_URL (PostgreSQL installed)")


# --- the pure rules ----------------------------------------------------------------


def _state(name, ok=True, standby=True, lag=0.0):
    return ReplicaState(name, reachable=ok, standby=standby, lag_seconds=lag)


def test_choose_round_robin_over_fit_replicas_only():
    states = [_state("a"), _state("b", ok=False), _state("c", lag=9.0),
              _state("d", standby=False), _state("e", lag=2.0)]
    assert [choose(states, 5.0, t) for t in range(4)] == [0, 4, 0, 4]
    assert choose(states, 10.0, 1) == 2  # within a looser limit c is fit again
    assert choose([_state("a", ok=False)], 5.0, 0) is None
    assert choose([], 5.0, 0) is None
    assert choose([ReplicaState("never checked")], 5.0, 0) is None


def test_lag_is_the_age_of_the_oldest_position_not_replayed():
    samples = [(10.0, 100), (11.0, 200), (12.0, 300)]
    assert lag_behind(samples, 300, 12.5) == 0.0  # replayed all
    assert lag_behind(samples, 250, 12.5) == 0.0  # only the newest sample is ahead
    assert lag_behind(samples, 150, 12.5) == 1.5  # behind since 11.0
    assert lag_behind(samples, 50, 12.5) == 2.5
    assert lag_behind([(10.0, 100)], 100, 99.0) == 0.0  # idle primary: never behind


def test_replicas_need_postgresql(tmp_path):
    with pytest.raises(ValueError, match="PostgreSQL"):
        make_settings(f"sqlite://{tmp_path / 'x.db'}", tmp_path,
                      database_replica_urls="postgres://postgres@127.0.0.1:1/x")
    with pytest.raises(ValueError, match="postgres://"):
        make_settings("postgres://postgres@127.0.0.1:5432/x", tmp_path,
                      database_replica_urls="mysql://x")
    s = make_settings(f"sqlite://{tmp_path / 'x.db'}", tmp_path)
    assert s.database_replica_urls == ""  # nothing set: every read on the primary


# --- a real primary and streaming replica ---------------------------------------------


def _pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are needed")
    return os.path.dirname(initdb)


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:  # the server refuses to run as root
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _run(cmd: list[str], timeout: float = 120) -> None:
    done = subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd[0]} failed:\n{done.stdout}\n{done.stderr}"


class PgNode:
    def __init__(self, bindir: str, root: str, name: str) -> None:
        self.bindir, self.root = bindir, root
        self.data = os.path.join(root, name)
        self.port = free_port()

    def start(self) -> None:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={self.root} -c fsync=off "
                "-c full_page_writes=off -c shared_buffers=16MB")
        _run([f"{self.bindir}/pg_ctl", "-D", self.data, "-o", opts,
              "-l", f"{self.data}.log", "-w", "-t", "60", "start"])

    def stop(self) -> None:
        _run([f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"])

    def url(self, db: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="module")
def pg_pair():
    """(primary, replica), started once for the module, removed at the end."""
    if not os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs TEST_DATABASE_URL (PostgreSQL installed)")
    bindir = _pg_bin()
    try:
        pw = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    except KeyError:
        pytest.fail("running as root, the servers need a `postgres` user to run as")
    root = tempfile.mkdtemp(prefix="parley-replica-")
    if pw is not None:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    primary, replica = PgNode(bindir, root, "primary"), PgNode(bindir, root, "replica")
    started = []
    try:
        # initdb's pg_hba.conf trusts local replication connections.
        _run([f"{bindir}/initdb", "-D", primary.data, "-U", "postgres", "--auth=trust",
              "-E", "UTF8", "--no-sync"])
        primary.start()
        started.append(primary)
        _run([f"{bindir}/pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port),
              "-U", "postgres", "-D", replica.data, "-R", "-X", "stream", "-c", "fast",
              "--no-sync"])
        replica.start()
        started.append(replica)
        asyncio.run(_wait_standby(replica))
        yield primary, replica
    finally:
        for node in reversed(started):
            try:
                node.stop()
            except AssertionError:
                pass  # already stopped by a test that failed half-way
        shutil.rmtree(root, ignore_errors=True)


async def _wait_standby(replica: PgNode) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = await asyncpg.connect(replica.dsn(), timeout=5)
            try:
                assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
                return
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError):
            assert time.monotonic() < deadline, "the replica did not come up"
            await asyncio.sleep(0.2)


async def _sql(dsn: str, sql: str):
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def caught_up(primary: PgNode, replica: PgNode) -> None:
    """Until the replica has replayed everything the primary has flushed."""
    target = await _sql(primary.dsn(), "SELECT pg_current_wal_lsn()")
    deadline = time.monotonic() + 30
    while await _sql(replica.dsn(), "SELECT pg_last_wal_replay_lsn()") < target:
        assert time.monotonic() < deadline, "the replica did not catch up"
        await asyncio.sleep(0.05)


@pytest.fixture
async def replica_proxy(pg_pair):
    """A TcpProxy in front of the replica; `replicated` reads through it when
    a test asks for both."""
    proxy = TcpProxy(pg_pair[1].port)
    await proxy.start()
    try:
        yield proxy
    finally:
        proxy.thaw()
        await proxy.close()


@pytest.fixture
async def replicated(pg_pair, tmp_path, aiohttp_server, request):
    """A running app on a fresh database of the pair, its replica in use.
    Settings overrides: the `replica_settings` marker's kwargs."""
    primary, replica = pg_pair
    name = f"parley_rep_{uuid.uuid4().hex[:10]}"
    await _sql(primary.dsn(), f'CREATE DATABASE "{name}"')
    marker = request.node.get_closest_marker("replica_settings")
    overrides = dict(replica_max_lag_seconds=60.0, replica_check_interval=0.1,
                     search_rate_limit="100000/60")
    overrides.update(marker.kwargs if marker else {})
    replica_url = replica.url(name)
    if "replica_proxy" in request.fixturenames:
        replica_url = via(replica_url, request.getfixturevalue("replica_proxy").port)
    settings = make_settings(primary.url(name), tmp_path,
                             database_replica_urls=replica_url, **overrides)
    app = create_app(settings, generate_schemas=True)
    server = await aiohttp_server(app)
    deps = app[DEPS_KEY]
    rs = deps.extras["replicas"]
    await caught_up(primary, replica)
    await until(lambda: rs.states[0].reason == "ok", "the replica in use", step=rs.check)
    try:
        yield deps, rs, server
    finally:
        await server.close()
        try:
            await _sql(replica.dsn(), "SELECT pg_wal_replay_resume()")
        except (OSError, asyncpg.PostgresError):
            pass  # a test that failed with the replica stopped
        await _sql(primary.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def served(rs, outcome: str) -> float:
    return rs.metrics.replica_reads.labels(outcome)._value.get()


async def say(deps, who, cid, text) -> dict:
    return await messaging.send_message(deps, who.user_id, messaging.SendIn(
        conversation_id=str(cid), client_msg_id=uuid.uuid4().hex, text=text))


async def chat(deps):
    a, b = await make_user(deps, "Ann"), await make_user(deps, "Bo")
    await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return a, b, conv.id


def texts(page) -> list[str]:
    return [m["text"] for m in page["messages"]]


async def chat_read_on_the_replica(deps, primary, replica):
    """A chat with one message, replayed by the replica and read there once
    (which opens the replica's pool)."""
    a, b, cid = await chat(deps)
    await say(deps, a, cid, "one")
    await caught_up(primary, replica)
    page = await reading.history(deps, b.user_id, reading.HistoryIn(conversation_id=str(cid)))
    assert texts(page) == ["one"]
    return a, b, cid


def sync_texts(answer, cid) -> list[str]:
    for c in answer["conversations"]:
        if c["id"] == str(cid):
            return [m["text"] for m in c["messages"]]
    return []


@NEEDS_PG
async def test_reads_come_from_the_replica_unless_the_client_knows_newer(replicated, pg_pair):
    deps, rs, _server = replicated
    primary, replica = pg_pair
    a, b, cid = await chat(deps)
    await say(deps, a, cid, "old one")
    await say(deps, a, cid, "old two")
    old_one = (await reading.history(deps, b.user_id, reading.HistoryIn(
        conversation_id=str(cid))))["messages"][0]
    c = await make_user(deps, "Cy")  # chats with Ann too, nothing new after the pause
    await make_contacts(deps, a, c)
    other, _ = await convs.get_or_create_direct(deps, a.user_id, c.user_id)
    await say(deps, a, other.id, "to Cy")
    await caught_up(primary, replica)
    await _sql(replica.dsn(), "SELECT pg_wal_replay_pause()")
    await say(deps, a, cid, "fresh three")
    m4 = await say(deps, a, cid, "fresh four")
    grp = await groups.create_group(deps, a.user_id, groups.CreateIn(
        name="after the pause", member_ids=[b.user_id]))
    await message_changes.react(deps, a.user_id, message_changes.ReactIn(
        message_id=old_one["id"], emoji="👍", on=True))
    change_seq = (await Conversation.get(id=cid)).change_seq

    # No anchor: the replica answers, from before the pause (the proof it served).
    before = served(rs, "replica")
    page = await reading.history(deps, b.user_id, reading.HistoryIn(conversation_id=str(cid)))
    assert texts(page) == ["old one", "old two"]
    assert served(rs, "replica") == before + 1
    found = await search.search_messages(deps, b.user_id, search.SearchIn(q="fresh"))
    assert found["results"] == []
    box = await search.search_all(deps, b.user_id, search.SearchAllIn(q="old"))
    assert [c["conversation"]["id"] for c in box["conversations_with_matches"]] == [str(cid)]
    assert box["contacts"] == [] and box["groups"] == []
    # Sync: the replica has everything of Cy's conversations as the primary has it.
    answer = await reading.sync(deps, c.user_id, reading.SyncIn(cursors={str(other.id): 0}))
    assert sync_texts(answer, other.id) == ["to Cy"]
    assert served(rs, "replica") == before + 4

    # The client holds seq 3 (it got message:new): the primary answers.
    stale = served(rs, "stale")
    page = await reading.history(deps, b.user_id, reading.HistoryIn(
        conversation_id=str(cid), before_seq=4))
    assert texts(page) == ["old one", "old two", "fresh three"]
    page = await reading.history(deps, b.user_id, reading.HistoryIn(
        conversation_id=str(cid), around_seq=4))
    assert texts(page)[-1] == "fresh four"
    answer = await reading.sync(deps, b.user_id, reading.SyncIn(cursors={str(cid): 3}))
    assert sync_texts(answer, cid) == ["fresh four"]
    # Sync also when the client knows nothing newer (its socket was down when
    # message:new went out): the replica lacks what the primary has of Bo's
    # conversations, so the primary answers and nothing is missed.
    answer = await reading.sync(deps, b.user_id, reading.SyncIn(cursors={str(cid): 2}))
    assert sync_texts(answer, cid) == ["fresh three", "fresh four"]
    answer = await reading.sync(deps, b.user_id, reading.SyncIn())  # a new device
    assert {c["id"] for c in answer["conversations"]} == {str(cid), grp["id"]}
    answer = await reading.sync(deps, b.user_id, reading.SyncIn(
        cursors={str(cid): 4}, changes={str(cid): change_seq - 1}))
    [entry] = [c for c in answer["conversations"] if c["id"] == str(cid)]
    assert [m["text"] for m in entry["changes"]] == ["old one"]
    # A search page after the newest message it was shown.
    found = await search.search_messages(deps, b.user_id, search.SearchIn(
        q="fresh", cursor=search.cursor_for(int(m4["id"]))))
    assert [r["message"]["text"] for r in found["results"]] == ["fresh three"]
    # A conversation the replica has not replayed: NotFound there, found on the primary.
    page = await reading.history(deps, b.user_id, reading.HistoryIn(
        conversation_id=grp["id"]))
    assert page["messages"]
    assert served(rs, "stale") == stale + 8

    # Replay again: the replica catches up and answers with everything.
    await _sql(replica.dsn(), "SELECT pg_wal_replay_resume()")
    await caught_up(primary, replica)
    before = served(rs, "replica")
    page = await reading.history(deps, b.user_id, reading.HistoryIn(conversation_id=str(cid)))
    assert texts(page) == ["old one", "old two", "fresh three", "fresh four"]
    answer = await reading.sync(deps, b.user_id, reading.SyncIn())
    assert {c["id"] for c in answer["conversations"]} == {str(cid), grp["id"]}
    answer = await reading.sync(deps, b.user_id, reading.SyncIn(
        cursors={str(cid): 4, grp["id"]: 1}, changes={str(cid): change_seq}))
    assert answer["conversations"] == []
    assert served(rs, "replica") == before + 3

    # Refused on the replica is refused, not asked again on the primary.
    failed = served(rs, "failed")
    with pytest.raises(Invalid):
        await reading.history(deps, b.user_id, reading.HistoryIn(
            conversation_id=str(cid), before_seq=2, around_seq=1))
    assert served(rs, "failed") == failed
    # A search counts once against the rate limit, wherever it is answered.
    deps.settings = deps.settings.with_(search_rate_limit="2/60")
    await search.search_messages(deps, a.user_id, search.SearchIn(q="old"))
    await search.search_messages(deps, a.user_id, search.SearchIn(q="fresh"))
    with pytest.raises(RateLimited):
        await search.search_messages(deps, a.user_id, search.SearchIn(q="old"))


@NEEDS_PG
@pytest.mark.replica_settings(replica_max_lag_seconds=1.0, replica_check_interval=0.1)
async def test_a_replica_further_behind_than_the_limit_is_skipped(replicated, pg_pair):
    deps, rs, _server = replicated
    primary, replica = pg_pair
    a, b, cid = await chat(deps)
    await say(deps, a, cid, "before")
    await caught_up(primary, replica)
    await _sql(replica.dsn(), "SELECT pg_wal_replay_pause()")
    await say(deps, a, cid, "while paused")
    # The checker (its own supervised loop) sees the replica fall behind.
    await until(lambda: rs.states[0].lag_seconds > 1.0, "the lag noticed")
    assert rs.states[0].reason.endswith("s behind")
    assert rs.metrics.replica_lag.labels("replica0")._value.get() > 1.0
    before = served(rs, "primary")
    page = await reading.history(deps, b.user_id, reading.HistoryIn(conversation_id=str(cid)))
    assert texts(page) == ["before", "while paused"]  # not the replica's past
    assert served(rs, "primary") == before + 1

    await _sql(replica.dsn(), "SELECT pg_wal_replay_resume()")
    await until(lambda: rs.states[0].reason == "ok", "the replica back in use")
    before = served(rs, "replica")
    page = await reading.history(deps, b.user_id, reading.HistoryIn(conversation_id=str(cid)))
    assert texts(page) == ["before", "while paused"]
    assert served(rs, "replica") == before + 1


@NEEDS_PG
@pytest.mark.replica_settings(replica_check_interval=3600.0)
async def test_a_lost_replica_is_skipped_and_used_again_when_back(replicated, pg_pair,
                                                                aiohttp_client):
    deps, rs, server = replicated
    primary, replica = pg_pair
    a, b, cid = await chat_read_on_the_replica(deps, primary, replica)
    replica.stop()
    try:
        await say(deps, a, cid, "two")
        # The checker has not run: the read fails on the replica and is redone
        # on the primary; the replica is skipped from then on.
        failed = served(rs, "failed")
        page = await reading.history(deps, b.user_id, reading.HistoryIn(
            conversation_id=str(cid)))
        assert texts(page) == ["one", "two"]
        assert served(rs, "failed") == failed + 1
        assert rs.states[0].reachable is False
        client = await aiohttp_client(server)
        headers = b.headers
        before = served(rs, "primary")
        resp = await client.get(f"/api/v1/conversations/{cid}/messages", headers=headers)
        assert resp.status == 200, await resp.text()
        assert texts(await resp.json()) == ["one", "two"]
        resp = await client.get("/api/v1/search/messages", params={"q": "two"},
                                headers=headers)
        assert resp.status == 200, await resp.text()
        assert len((await resp.json())["results"]) == 1
        answer = await reading.sync(deps, b.user_id, reading.SyncIn(cursors={str(cid): 1}))
        assert sync_texts(answer, cid) == ["two"]
        assert served(rs, "primary") == before + 3
        await rs.check()  # still gone
        assert rs.states[0].reachable is False
    finally:
        replica.start()
    await caught_up(primary, replica)
    await until(lambda: rs.states[0].reason == "ok", "the replica back", step=rs.check)
    before = served(rs, "replica")
    page = await reading.history(deps, b.user_id, reading.HistoryIn(conversation_id=str(cid)))
    assert texts(page) == ["one", "two"]
    assert served(rs, "replica") == before + 1


@NEEDS_PG
# The lag checker is run by hand only: the read alone must find out.
@pytest.mark.replica_settings(replica_check_interval=3600.0, database_command_timeout=1.0)
async def test_a_replica_that_stops_answering_is_skipped_after_the_command_timeout(
        replica_proxy, replicated, pg_pair):
    """A replica that neither answers nor refuses (DATABASE_COMMAND_TIMEOUT):
    the read waits one timeout, is redone on the primary, and the replica is
    skipped from then on."""
    deps, rs, _server = replicated
    primary, replica = pg_pair
    a, b, cid = await chat_read_on_the_replica(deps, primary, replica)
    replica_reads = served(rs, "replica")
    assert replica_reads >= 1
    replica_proxy.freeze()
    await say(deps, a, cid, "two")
    started = time.monotonic()
    page = await reading.history(deps, b.user_id, reading.HistoryIn(conversation_id=str(cid)))
    assert texts(page) == ["one", "two"]
    assert time.monotonic() - started < 10
    assert served(rs, "replica") == replica_reads
    await until(lambda: rs.states[0].reason != "ok", "the replica skipped", step=rs.check)
    before = served(rs, "primary")
    page = await reading.history(deps, b.user_id, reading.HistoryIn(conversation_id=str(cid)))
    assert texts(page) == ["one", "two"] and served(rs, "primary") == before + 1


@NEEDS_PG
async def test_a_replica_missing_from_the_start_leaves_reads_on_the_primary(
        pg_pair, tmp_path, aiohttp_server):
    primary, _replica = pg_pair
    name = f"parley_rep_{uuid.uuid4().hex[:10]}"
    await _sql(primary.dsn(), f'CREATE DATABASE "{name}"')
    nobody = free_port()  # nothing listens there
    settings = make_settings(primary.url(name), tmp_path, replica_check_interval=0.1,
                             database_replica_urls=f"postgres://postgres@127.0.0.1:{nobody}/x")
    app = create_app(settings, generate_schemas=True)
    server = await aiohttp_server(app)
    try:
        deps = app[DEPS_KEY]
        rs = deps.extras["replicas"]
        assert rs.states[0].reachable is False
        a, b, cid = await chat(deps)
        await say(deps, a, cid, "hello")
        before = served(rs, "primary")
        page = await reading.history(deps, b.user_id, reading.HistoryIn(
            conversation_id=str(cid)))
        assert texts(page) == ["hello"]
        assert served(rs, "primary") == before + 1
        assert rs.metrics.replica_lag.labels("replica0")._value.get() == -1
        # The checker is supervised: a task that dies is started again.
        task = rs._task
        task.cancel()
        await until(lambda: rs.restarts == 1 and rs._task is not task and not rs._task.done(),
                    "the checker restarted")
    finally:
        await server.close()
        await _sql(primary.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
