"""Tortoise's SQLite backend with its statements counted (app/db.py StatementCounter).

Named as the engine of SQLite connections in app/db.py's Tortoise config."""

from __future__ import annotations

from tortoise.backends.sqlite import client

from app.db import StatementCounter


def _count(sql: str) -> None:
    # SQLite also reports each statement a trigger runs, as "-- TRIGGER …".
    if not sql.startswith("--"):
        StatementCounter.value += 1


class CountingSqliteClient(client.SqliteClient):
    async def _post_connect(self) -> None:
        await super()._post_connect()
        # On aiosqlite's thread, where the sqlite3 connection lives.
        await self._connection.set_trace_callback(_count)


client_class = CountingSqliteClient
