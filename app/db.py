"""Tortoise set-up shared by the server, the CLI and the tests."""

from __future__ import annotations

from tortoise import Tortoise
from tortoise.context import TortoiseContext

from app.models import MODEL_MODULES


def normalise_db_url(url: str) -> str:
    # Heroku-style URLs say postgresql://; Tortoise's asyncpg backend wants postgres://.
    if url.startswith("postgresql://"):
        return "postgres://" + url[len("postgresql://") :]
    return url


def tortoise_config(database_url: str) -> dict:
    url = normalise_db_url(database_url)
    if url.startswith("sqlite://") and "journal_mode" not in url:
        # WAL lets readers run beside the single writer.
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}journal_mode=WAL&synchronous=NORMAL"
    return {
        "connections": {"default": url},
        "apps": {
            "models": {
                "models": MODEL_MODULES,
                "default_connection": "default",
                "migrations": "app.migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite://") and ":memory:" not in url:
        from pathlib import Path

        path = Path(url[len("sqlite://") :].split("?", 1)[0])
        path.parent.mkdir(parents=True, exist_ok=True)


async def init_db(database_url: str, *, generate_schemas: bool = False) -> TortoiseContext:
    """Connect and return the context; close it with `ctx.close_connections()`.

    The global fallback makes the context visible to every task (aiohttp handlers,
    Socket.IO event tasks), not only the one that ran the start-up.
    """
    _ensure_sqlite_dir(database_url)
    # Tortoise caches each model's INSERT/UPDATE SQL keyed by connection *name*,
    # not dialect; a process that re-inits on another backend (the test suite
    # runs SQLite then PostgreSQL) would reuse SQLite SQL on PostgreSQL.
    from tortoise.backends.base import executor

    executor.EXECUTOR_CACHE.clear()
    ctx = await Tortoise.init(
        config=tortoise_config(database_url), _enable_global_fallback=True
    )
    if generate_schemas:
        await ctx.generate_schemas(safe=True)
    return ctx


async def migrate(database_url: str) -> None:
    from tortoise.migrations.api.migrate import migrate as run_migrations

    _ensure_sqlite_dir(database_url)
    try:
        await run_migrations(config=tortoise_config(database_url))
    finally:
        # Also on failure: an open aiosqlite thread would keep the process alive.
        await Tortoise.close_connections()
