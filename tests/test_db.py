"""app/db.py: what every PostgreSQL connection of Parley starts with."""

from __future__ import annotations

import os

import pytest
from tortoise import Tortoise

from app.db import init_db, pg_credentials
from tests.cluster_helpers import create_database, drop_database

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
