"""Several processes, no SECRET_KEY configured, one shared PostgreSQL database:
each process generates its own key file (as two checkouts or two machines
would), yet a token issued by one is accepted by the other, because the first
process stored its key in the database and every process signs with that one."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest

from app.db import init_db
from tests.cluster_helpers import Worker, create_database, drop_database, worker_env

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")

pytestmark = [
    pytest.mark.skipif(not TEST_DATABASE_URL.startswith("postgres"),
                       reason="needs TEST_DATABASE_URL (PostgreSQL)"),
    pytest.mark.timeout(90),
]


async def test_processes_without_secret_key_share_the_one_in_the_database(tmp_path):
    url = await create_database(TEST_DATABASE_URL)
    ctx = await init_db(url, generate_schemas=True)
    await ctx.close_connections()
    workers = []
    try:
        for name in ("checkout-a", "checkout-b"):
            env = worker_env(url, "", tmp_path, SECRET_KEY="",
                             SECRET_KEY_FILE=tmp_path / name / "secret_key")
            w = Worker(name, env, tmp_path)
            w.start()
            workers.append(w)
            await w.wait_ready()
        a, b = workers
        files = [await asyncio.to_thread(Path(tmp_path / n / "secret_key").read_text)
                 for n in ("checkout-a", "checkout-b")]
        assert files[0] != files[1]  # each process generated a key of its own
        async with aiohttp.ClientSession() as http:
            async with http.post(a.url + "/api/v1/auth/register", json={
                    "email": "shared@example.org", "password": "correct horse battery",
                    "display_name": "Shared"}) as r:
                assert r.status == 201, await r.text()
                token = (await r.json())["access_token"]
            for w in (a, b):
                async with http.get(w.url + "/api/v1/contacts",
                                    headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == 200, (w.name, r.status, await r.text())
    finally:
        for w in workers:
            w.stop()
        await asyncio.sleep(0)
        await drop_database(TEST_DATABASE_URL, url)
