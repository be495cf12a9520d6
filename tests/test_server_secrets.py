"""Several processes, no SECRET_KEY or VAPID_PRIVATE_KEY configured, one shared
PostgreSQL database: each process generates its own key files (as two checkouts
or two machines would), yet a token issued by one is accepted by the other and
both hand browsers the same Web Push key, because the first process stored its
keys in the database and every process uses those."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import aiohttp
import pytest

from app.db import init_db
from app.pushers.webpush import WebPushProvider
from tests.cluster_helpers import Worker, create_database, drop_database, worker_env

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")

pytestmark = [
    pytest.mark.skipif(not TEST_DATABASE_URL.startswith("postgres"),
                       reason="needs TEST_DATABASE_URL (PostgreSQL)"),
    pytest.mark.timeout(90),
]


@contextlib.asynccontextmanager
async def two_checkouts(tmp_path):
    """Two processes on one new database, each with key files of its own."""
    url = await create_database(TEST_DATABASE_URL)
    ctx = await init_db(url, generate_schemas=True)
    await ctx.close_connections()
    workers = []
    try:
        for name in ("checkout-a", "checkout-b"):
            env = worker_env(url, "", tmp_path, SECRET_KEY="", VAPID_PRIVATE_KEY="",
                             SECRET_KEY_FILE=tmp_path / name / "secret_key",
                             VAPID_PRIVATE_KEY_FILE=tmp_path / name / "vapid_private_key")
            w = Worker(name, env, tmp_path)
            w.start()
            workers.append(w)
            await w.wait_ready()
        yield workers
    finally:
        for w in workers:
            w.stop()
        await asyncio.sleep(0)
        await drop_database(TEST_DATABASE_URL, url)


async def files(tmp_path, name: str) -> list[str]:
    return [await asyncio.to_thread(Path(tmp_path / n / name).read_text)
            for n in ("checkout-a", "checkout-b")]


async def register(http, worker) -> str:
    async with http.post(worker.url + "/api/v1/auth/register", json={
            "email": "shared@example.org", "password": "correct horse battery",
            "display_name": "Shared"}) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["access_token"]


async def test_processes_without_secret_key_share_the_one_in_the_database(tmp_path):
    async with two_checkouts(tmp_path) as (a, b):
        secret = await files(tmp_path, "secret_key")
        assert secret[0] != secret[1]  # each process generated a key of its own
        async with aiohttp.ClientSession() as http:
            token = await register(http, a)
            for w in (a, b):
                async with http.get(w.url + "/api/v1/contacts",
                                    headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == 200, (w.name, r.status, await r.text())


async def test_processes_without_vapid_key_share_the_one_in_the_database(tmp_path):
    """A browser subscribes with the public key one process hands out; a push
    planned by the other must be signed with the same key."""
    async with two_checkouts(tmp_path) as workers:
        generated = await files(tmp_path, "vapid_private_key")
        assert generated[0] != generated[1]
        served = []
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {await register(http, workers[0])}"}
            for w in workers:
                async with http.get(w.url + "/api/v1/push/vapid-public-key", headers=auth) as r:
                    assert r.status == 200, (w.name, r.status, await r.text())
                    served.append((await r.json())["key"])
        assert served[0] == served[1]
        stored = WebPushProvider(generated[0], "mailto:a@example.org").public_key
        assert served[0] == stored  # the first process's key, stored for both
