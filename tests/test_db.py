"""app/db.py: what every database connection of Parley starts with."""

from __future__ import annotations

import os

import pytest
from tortoise import Tortoise

from app.db import init_db, pg_credentials
from tests.cluster_helpers import _dsn, create_database, drop_database

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
    import asyncpg

    url = await create_database(TEST_DATABASE_URL)
    name = url.rpartition("/")[2]
    admin = await asyncpg.connect(_dsn(TEST_DATABASE_URL), timeout=10)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = {configured}')
    finally:
        await admin.close()
    ctx = await init_db(url)
    try:
        conn = Tortoise.get_connection("default")
        for _ in range(3):
            _n, rows = await conn.execute_query("SHOW synchronous_commit")
            assert rows[0][0] == used
    finally:
        await ctx.close_connections()
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
