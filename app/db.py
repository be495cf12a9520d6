"""Tortoise set-up shared by the server, the CLI and the tests."""

from __future__ import annotations

import logging

import asyncpg
from tortoise import Tortoise
from tortoise.context import TortoiseContext

from app.models import MODEL_MODULES

log = logging.getLogger("parley.db")


def is_database_error(exc: BaseException) -> bool:
    """The database (or the way to it) failed, as opposed to a bug or bad input."""
    from tortoise import exceptions as orm

    for e in (exc, exc.__cause__, exc.__context__):
        if e is None:
            continue
        if type(e) in (orm.OperationalError, orm.DBConnectionError,
                       orm.TransactionManagementError):
            return True
        if isinstance(e, (ConnectionError, OSError, TimeoutError)):
            return True
        if type(e).__module__.split(".")[0] in ("asyncpg", "sqlite3", "aiosqlite"):
            return True
    return False


def normalise_db_url(url: str) -> str:
    # Heroku-style URLs say postgresql://; Tortoise's asyncpg backend wants postgres://.
    if url.startswith("postgresql://"):
        return "postgres://" + url[len("postgresql://") :]
    return url


# asyncpg pool size when DATABASE_URL does not say (`?maxsize=N`): Tortoise's
# default of 5 made sends, reads and (re)connect storms queue for connections.
PG_POOL_SIZE = 20
# Given to every PostgreSQL connection at start-up (so no SET, no reset). No
# parallel workers: Parley's statements are short and many run at once; a
# parallel plan spends a worker's start-up, longer than such a statement, on
# one of them and takes a core from the other clients' statements.
PG_SERVER_SETTINGS = {"max_parallel_workers_per_gather": "0"}


def pg_credentials(credentials: dict, command_timeout: float | None = None) -> dict:
    """Tortoise asyncpg credentials with Parley's connection class and settings.
    `command_timeout` (seconds): asyncpg's default for every statement, unless
    the URL gives its own (`?command_timeout=`), and the limit on opening a
    connection (unless `?timeout=`). A statement that times out costs its
    connection (asyncpg cannot confirm the cancel through a silent network), so
    the next statement opens one; without the second limit it would wait for
    asyncpg's own connect timeout, a minute, and not get its answer in time."""
    if command_timeout:
        credentials.setdefault("command_timeout", command_timeout)
        credentials.setdefault("timeout", command_timeout)
    credentials["connection_class"] = _LeanConnection
    credentials["server_settings"] = {**PG_SERVER_SETTINGS,
                                      **(credentials.get("server_settings") or {})}
    credentials["init"] = commits_reach_the_disk
    return credentials


_warned_fsync_off = False


async def commits_reach_the_disk(con) -> None:
    """Run on each new connection. Parley acks a message once its commit
    returns, so a commit must wait for the WAL to reach the disk: a server or
    database that says `synchronous_commit = off` (a common tuning tip) gets it
    turned back on for Parley's sessions. Every other value waits for the local
    flush already and is kept, with whatever it asks of synchronous standbys.
    `fsync = off` cannot be undone per session: say so, once per process."""
    global _warned_fsync_off
    sync, fsync = await con.fetchrow(
        "SELECT current_setting('synchronous_commit'), current_setting('fsync')")
    if sync == "off":
        await con.execute("SET synchronous_commit = on")
    if fsync == "off" and not _warned_fsync_off:
        _warned_fsync_off = True
        log.warning("PostgreSQL runs with fsync = off: messages Parley has acknowledged "
                    "can be lost, and the database corrupted, if its machine crashes")


class StatementCounter:
    """Statements this process has sent to its database (transaction control
    included), for parley_db_statements in /metrics: what a read cache spares
    shows there. Counted by the driver hooks below, so statements that bypass the
    ORM (the message writer's) count too."""

    value = 0


def statements_sent() -> int:
    return StatementCounter.value


class _LeanConnection(asyncpg.connection.Connection):
    """asyncpg runs a reset statement (advisory unlock, CLOSE ALL, UNLISTEN, RESET
    ALL) each time a connection goes back to the pool: a round trip per query
    through Tortoise. Parley sets no session state while it uses a connection
    (no SET, LISTEN, advisory locks or cursors outside a transaction), so there
    is nothing to reset; the one SET it may make, when the connection is opened
    (`commits_reach_the_disk`), is meant to last. An open transaction is still
    rolled back by asyncpg before that step."""

    def get_reset_query(self):
        return ""

    # Every statement goes through one of these three (fetch*, execute with
    # arguments: _execute; execute without: the simple query protocol).
    async def execute(self, query, *args, timeout=None):
        if not args:
            StatementCounter.value += 1
        return await super().execute(query, *args, timeout=timeout)

    async def _execute(self, *args, **kwargs):
        StatementCounter.value += 1
        return await super()._execute(*args, **kwargs)

    async def _executemany(self, *args, **kwargs):
        StatementCounter.value += 1
        return await super()._executemany(*args, **kwargs)


def _connection_config(url: str, command_timeout: float | None = None):
    from tortoise.backends.base.config_generator import expand_db_url

    if url.startswith("sqlite://"):
        config = expand_db_url(url)
        config["engine"] = "app.db_sqlite"  # Tortoise's client, statements counted
        return config
    if not url.startswith("postgres://"):
        return url
    config = expand_db_url(url)
    config["credentials"].setdefault("maxsize", PG_POOL_SIZE)
    pg_credentials(config["credentials"], command_timeout)
    return config


def tortoise_config(database_url: str, *, command_timeout: float | None = None) -> dict:
    url = normalise_db_url(database_url)
    if url.startswith("sqlite://") and "journal_mode" not in url:
        # WAL lets readers run beside the single writer. synchronous=FULL
        # flushes the WAL at every commit, so an acknowledged message survives a
        # crash of the machine, not only of the server process, as on PostgreSQL.
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}journal_mode=WAL&synchronous=FULL"
    return {
        "connections": {"default": _connection_config(url, command_timeout)},
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


async def init_db(database_url: str, *, generate_schemas: bool = False,
                  command_timeout: float | None = None) -> TortoiseContext:
    """Connect and return the context; close it with `ctx.close_connections()`.
    `command_timeout`: PostgreSQL statements without an answer after that many
    seconds fail (DATABASE_COMMAND_TIMEOUT, for the server; None: no limit).

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
        config=tortoise_config(database_url, command_timeout=command_timeout),
        _enable_global_fallback=True
    )
    if generate_schemas:
        await ctx.generate_schemas(safe=True)
        from app.services.search import ensure_schema

        await ensure_schema()  # not a model: created by its migration otherwise
    return ctx


async def migrate(database_url: str) -> int:
    """Apply pending migrations; returns how many were applied (0: up to date)."""
    from tortoise.context import get_current_context
    from tortoise.migrations.api.migrate import migrate as run_migrations

    applied = 0

    def progress(event: str, app_label: str, name: str) -> None:
        nonlocal applied
        if event == "apply_done":
            applied += 1

    _ensure_sqlite_dir(database_url)
    try:
        await run_migrations(config=tortoise_config(database_url), progress=progress)
    finally:
        # Also on failure: an open aiosqlite thread would keep the process alive.
        # Closed through the context: Tortoise.close_connections() would also log
        # an INFO "Tortoise-ORM shutdown" line into every start-up.
        ctx = get_current_context()
        if ctx is not None:
            await ctx.close_connections()
    return applied
