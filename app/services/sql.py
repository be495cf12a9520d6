"""The few statements the ORM cannot express in one round trip."""

from __future__ import annotations

import uuid

from tortoise.backends.base.client import BaseDBAsyncClient


def is_postgres(conn: BaseDBAsyncClient) -> bool:
    return conn.capabilities.dialect == "postgres"


def uuid_param(conn: BaseDBAsyncClient, value: uuid.UUID):
    # SQLite stores Tortoise UUIDs as text; asyncpg wants the uuid object.
    return value if is_postgres(conn) else str(value)


async def next_seq(conn: BaseDBAsyncClient, conversation_id: uuid.UUID, now) -> int | None:
    """Allocate the conversation's next seq inside the caller's transaction.

    The UPDATE takes the row lock (PostgreSQL) / the write lock (SQLite, where
    Tortoise also serialises transactions on its one connection), so concurrent
    senders get 1, 2, 3 … with no gap and no duplicate. None: no such conversation.
    """
    if is_postgres(conn):
        sql = ('UPDATE "conversations" SET "last_seq" = "last_seq" + 1, "last_message_at" = $1 '
               'WHERE "id" = $2 RETURNING "last_seq"')
        params = [now, conversation_id]
    else:
        sql = ('UPDATE "conversations" SET "last_seq" = "last_seq" + 1, "last_message_at" = ? '
               'WHERE "id" = ? RETURNING "last_seq"')
        params = [now.isoformat(), str(conversation_id)]
    # execute_query_dict always fetches; asyncpg's execute_query drops RETURNING rows.
    rows = await conn.execute_query_dict(sql, params)
    if not rows:
        return None
    return int(rows[0]["last_seq"])
