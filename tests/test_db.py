"""app/db.py: what every database connection of Parley starts with."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
from tortoise import Tortoise

from app.db import init_db, pg_credentials
from tests.cluster_helpers import admin_execute, create_database, drop_database

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")


def test_settings_given_with_the_credentials_win():
    creds = pg_credentials({"server_settings": {"max_parallel_workers_per_gather": "2",
                                                "application_name": "parley-a"}})
    assert creds["server_settings"] == {"max_parallel_workers_per_gather": "2",
                                        "application_name": "parley-a"}
    assert pg_credentials({})["server_settings"] == {"max_parallel_workers_per_gather": "0"}


@pytest.mark.skipif(not TEST_DATABASE_URL.startswith("postgres"),
                    reason="needs TEST_DATABASE_URL (PostgreSQL)")
async def test_postgres_connections_plan_without_parallel_workers():
    url = await create_database(TEST_DATABASE_URL)
    ctx = await init_db(url)
    try:
        conn = Tortoise.get_connection("default")
        for _ in range(3):
            _n, rows = await conn.execute_query("SHOW max_parallel_workers_per_gather")
            assert rows[0][0] == "0"
    finally:
        await ctx.close_connections()
        await drop_database(TEST_DATABASE_URL, url)


@pytest.mark.skipif(not TEST_DATABASE_URL.startswith("postgres"),
                    reason="needs TEST_DATABASE_URL (PostgreSQL)")
@pytest.mark.parametrize("configured,used", [("off", "on"), ("local", "local"),
                                             ("remote_apply", "remote_apply")])
async def test_postgres_commits_wait_for_the_disk_whatever_the_database_says(configured, used):
    """A database set to `synchronous_commit = off` would let the writer ack a
    message whose commit is not on the disk yet: Parley's sessions turn it back
    on, and keep every setting that waits for the local flush."""
    url = await create_database(TEST_DATABASE_URL)
    name = url.rpartition("/")[2]
    await admin_execute(TEST_DATABASE_URL,
                        f'ALTER DATABASE "{name}" SET synchronous_commit = {configured}')
    ctx = await init_db(url)
    try:
        conn = Tortoise.get_connection("default")
        for _ in range(3):
            _n, rows = await conn.execute_query("SHOW synchronous_commit")
            assert rows[0][0] == used
    finally:
        await ctx.close_connections()
        await drop_database(TEST_DATABASE_URL, url)


@pytest.mark.skipif(not TEST_DATABASE_URL.startswith("postgres"),
                    reason="needs TEST_DATABASE_URL (PostgreSQL)")
async def test_a_database_that_stops_answering_gets_unavailable_not_a_hang(tmp_path,
                                                                         aiohttp_client):
    """Packets to PostgreSQL go unanswered (nothing refuses, nothing resets):
    after DATABASE_COMMAND_TIMEOUT a request is 503 and a send `unavailable`,
    and once the database answers again the resent message is stored once."""
    import time

    from app.api.http import DEPS_KEY
    from app.server import create_app
    from app.services import conversations as convs
    from tests.cluster_helpers import TcpProxy, via
    from tests.conftest import make_settings
    from tests.factories import call, connect, make_contacts, make_user

    url = await create_database(TEST_DATABASE_URL)
    proxy = TcpProxy(int(url.rpartition(":")[2].split("/")[0]))
    await proxy.start()
    try:
        settings = make_settings(via(url, proxy.port), tmp_path, database_command_timeout=1.0)
        client = await aiohttp_client(create_app(settings, generate_schemas=True))
        deps = client.app[DEPS_KEY]
        ann, bob = await make_user(deps, "Ann"), await make_user(deps, "Bob")
        await make_contacts(deps, ann, bob)
        cid = str((await convs.get_or_create_direct(deps, ann.user_id, bob.user_id))[0].id)
        sio = await connect(str(client.make_url("")), ann.access_token)
        send = {"conversation_id": cid, "client_msg_id": "m2", "text": "during"}
        assert (await call(sio, "message:send", {**send, "client_msg_id": "m1"}))["ok"]

        proxy.freeze()
        # Twice each: a statement that timed out cost its connection, so the
        # second round also opens connections through the silent network.
        for _ in range(2):
            started = time.monotonic()
            r = await client.patch("/api/v1/me", json={"display_name": "Ann B"},
                                   headers=ann.headers)
            assert r.status == 503, await r.text()
            assert (await call(sio, "message:send", send, timeout=20))["error"]["code"] \
                == "unavailable"
            waited = time.monotonic() - started  # both; each a timeout or two
            assert waited < 10, waited

        proxy.thaw()
        for _ in range(50):
            ack = await call(sio, "message:send", send)
            if ack["ok"]:
                break
            await asyncio.sleep(0.1)
        assert ack["ok"] and ack["message"]["seq"] == 2, ack
        assert (await call(sio, "message:send", send))["message"]["seq"] == 2  # not doubled
        await sio.disconnect()
    finally:
        proxy.thaw()
        await proxy.close()
        await drop_database(TEST_DATABASE_URL, url)


@pytest.mark.skipif(not TEST_DATABASE_URL.startswith("postgres"),
                    reason="needs TEST_DATABASE_URL (PostgreSQL)")
async def test_background_loops_tell_a_database_outage_once_and_its_end(tmp_path, aiohttp_client,
                                                                       caplog):
    """While the database refuses connections, each background loop says once
    that it fails, not every round (the push worker tries every 2 s, the
    search index's merger every second), and says when it works again."""
    from collections import Counter

    from app.server import create_app
    from tests.cluster_helpers import TcpProxy, via
    from tests.conftest import make_settings
    from tests.factories import until

    caplog.set_level(logging.INFO)
    loops = ("push worker: reading the outbox", "search index: merging the pending list",
             "export job")
    url = await create_database(TEST_DATABASE_URL)
    proxy = TcpProxy(int(url.rpartition(":")[2].split("/")[0]))
    await proxy.start()
    try:
        await aiohttp_client(create_app(make_settings(via(url, proxy.port), tmp_path),
                                        generate_schemas=True))
        await asyncio.sleep(1)  # the loops' first rounds
        caplog.clear()
        await proxy.cut()
        await asyncio.sleep(7)
        told = Counter(r.getMessage() for r in caplog.records
                       if r.name.startswith("parley.") and r.levelno >= logging.WARNING)
        # Refused connects, or first a pooled connection the cut broke: each
        # kind once, never a line again.
        for loop in loops:
            assert any(m.startswith(f"{loop} failed (") for m in told), told
        assert set(told.values()) == {1}, told

        await proxy.restore()

        def back(loop: str) -> bool:
            return any(r.levelname == "INFO" and r.getMessage().startswith(
                f"{loop} works again after ") for r in caplog.records)

        await until(lambda: all(back(loop) for loop in loops), "every loop says it is back")
    finally:
        await proxy.close()
        await drop_database(TEST_DATABASE_URL, url)


async def _sqlite_pragmas(url: str) -> tuple[int, str]:
    ctx = await init_db(url)
    try:
        conn = Tortoise.get_connection("default")
        _n, sync = await conn.execute_query("PRAGMA synchronous")
        _n, journal = await conn.execute_query("PRAGMA journal_mode")
        return sync[0][0], journal[0][0]
    finally:
        await ctx.close_connections()


async def test_sqlite_flushes_its_log_at_every_commit(tmp_path):
    # 2 is FULL: a commit, and so an ack, waits for the WAL to reach the disk.
    assert await _sqlite_pragmas(f"sqlite://{tmp_path}/p.db") == (2, "wal")


async def test_a_sqlite_url_that_names_its_journal_keeps_its_own_settings(tmp_path):
    url = f"sqlite://{tmp_path}/p.db?journal_mode=WAL&synchronous=NORMAL"
    assert await _sqlite_pragmas(url) == (1, "wal")
