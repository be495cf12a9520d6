"""Shared fixtures: a real database (SQLite file; PostgreSQL when
TEST_DATABASE_URL is set), a real server on a real port, real clients.

Every test that uses `app` runs once per database backend. A backend that is
named but unreachable makes its tests fail, never skip.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import pytest
from tortoise import Tortoise

from app.api.http import DEPS_KEY
from app.config import load_settings
from app.server import create_app

# Under `pytest -n N` (pytest-xdist) every worker gets its own Redis database and
# its own queue channel, so presence keys, registries and broadcasts of tests that
# run at the same time never meet. PostgreSQL databases and SQLite files are
# already per run and per test.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if XDIST_WORKER:
    os.environ.setdefault("MESSAGE_QUEUE_CHANNEL", f"parley-{XDIST_WORKER}")
    if os.environ.get("TEST_REDIS_URL"):
        _base, _, _db = os.environ["TEST_REDIS_URL"].rpartition("/")
        if _db.isdigit() and _base.count("/") >= 2:
            os.environ["TEST_REDIS_URL"] = f"{_base}/{1 + int(XDIST_WORKER.removeprefix('gw'))}"

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")

BACKENDS = ["sqlite"] + (["postgres"] if TEST_DATABASE_URL else [])


def pytest_collection_modifyitems(config, items):
    """Files marked `heavy` first (in collection order), then the rest by their
    number of tests, most first (the order pytest-xdist's loadfile would pick). Under `-n N --dist loadfile` a
    file runs on one worker from its first test to its last, so a file that
    takes minutes in a few tests, sorted by count, would start last and the
    whole run would wait on it; CI passes `--no-loadscope-reorder` so that
    xdist keeps this order. Without xdist the order does not matter: every
    test builds its own state."""
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def weight(group: list) -> tuple[bool, int]:
        light = group[0].get_closest_marker("heavy") is None
        return (light, -len(group) if light else 0)

    items[:] = [item for group in sorted(files.values(), key=weight) for item in group]


def _pg_admin_dsn() -> str:
    return TEST_DATABASE_URL.replace("postgres://", "postgresql://", 1)


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(_pg_admin_dsn(), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database():
    """One throw-away PostgreSQL database per test run, dropped at the end."""
    name = f"parley_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base, _, _ = TEST_DATABASE_URL.rpartition("/")
    yield f"{base}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'parley.db'}"
    return request.getfixturevalue("pg_database")


def make_settings(database_url: str, tmp_path, **overrides):
    base = dict(
        database_url=database_url,
        secret_key="test-secret-key-" + "x" * 40,
        media_root=str(tmp_path / "media"),
        # Generous limits so only the tests about throttling meet them.
        socket_event_rate="1000000/1",
        login_rate_limit="1000/60",
        code_rate_limit="1000/60",
        send_rate_limit="10000/1",
        register_rate_limit="100000/60",
        register_global_rate_limit="100000/60",
        contact_request_rate_limit="100000/60",
        group_create_rate_limit="100000/60",
        upload_rate_limit="100000/60",
        presence_grace_seconds=0.3,
        message_queue_channel=os.environ.get("MESSAGE_QUEUE_CHANNEL", "parley"),
    )
    base.update(overrides)
    return load_settings(environ={}, **base)


@pytest.fixture
def flushed(monkeypatch) -> list[str]:
    """The paths `os.fsync` is called on from now, in order (it still flushes
    them): what a write promised to be on the disk before it returned."""
    paths: list[str] = []
    fsync = os.fsync

    def spy(fd):
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return paths


@pytest.fixture
def settings_overrides():
    """Override in a test module (or with indirect parametrisation) to change settings."""
    return {}


@pytest.fixture
def settings(database_url, tmp_path, settings_overrides):
    return make_settings(database_url, tmp_path, **settings_overrides)


async def _truncate_all() -> None:
    conn = Tortoise.get_connection("default")
    tables = [m._meta.db_table for app in Tortoise.apps.values() for m in app.values()]
    if conn.capabilities.dialect == "postgres":
        # The search index's tables are not models (search_index.PostgresTsvector).
        tables += ["message_search", "message_search_words"]
        sql = "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
        # The app's background workers (push outbox, erasure, exports) have just
        # started and may hold a row lock the TRUNCATE waits for while they wait
        # for a table it has locked: PostgreSQL aborts one side; try again.
        for attempt in range(5):
            try:
                await conn.execute_script(sql)
                return
            except Exception as exc:
                if "deadlock" not in str(exc).lower() or attempt == 4:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))


@pytest.fixture
async def app(settings):
    return create_app(settings, generate_schemas=True)


@pytest.fixture
async def server(app, aiohttp_server):
    srv = await aiohttp_server(app)
    # PostgreSQL keeps one database for the run: start every test empty.
    await _truncate_all()
    return srv


@pytest.fixture
async def client(server, aiohttp_client):
    return await aiohttp_client(server)


@pytest.fixture
def deps(server):
    return server.app[DEPS_KEY]


@pytest.fixture
def base_url(server):
    return f"http://{server.host}:{server.port}"
