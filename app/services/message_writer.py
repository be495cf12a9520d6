"""Group commit for new messages.

Every send used to run its own transaction: dedupe lookup, seq allocation,
insert, read-mark update — four or five round trips, each waiting its turn on
the database. The writer instead queues sends and commits whatever has queued
up while the previous batch was being written, in one transaction:

- duplicates of an already stored (sender, client_msg_id) are answered with
  the stored message (no seq is spent on them);
- seqs are allocated per conversation with one UPDATE … RETURNING per batch,
  so they stay gapless and unique under any concurrency;
- all rows go in with one INSERT per batch (PostgreSQL) or one thread hop
  (SQLite), and every caller's future resolves only after COMMIT: persist
  before ack holds for each message of the batch.

Nothing waits on a timer: under light load a batch holds one message and the
latency is that of a single transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from tortoise import Tortoise
from tortoise.exceptions import IntegrityError

log = logging.getLogger("parley.writer")

MAX_BATCH = 256


@dataclass
class NewMessage:
    conversation_id: uuid.UUID
    sender_id: uuid.UUID | None
    client_msg_id: str | None
    type: str
    text: str
    created_at: datetime
    reply_to_id: int | None = None
    data: dict | None = None
    # The sender's membership: its read_seq moves to the new message.
    membership_id: int | None = None
    # Users mentioned (None stands for @all); stored as message_mentions rows.
    mentions: list = field(default_factory=list)


@dataclass
class Written:
    id: int
    seq: int
    new: bool  # False: the (sender, client_msg_id) was already stored


class UnknownConversation(Exception):
    pass


def _dedupe_key(m: NewMessage):
    return (str(m.sender_id), m.client_msg_id) if m.sender_id and m.client_msg_id else None


class MessageWriter:
    """Queues NewMessages and writes them in batches; one per process."""

    def __init__(self) -> None:
        self._queue: list[tuple[NewMessage, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False

    async def write(self, msg: NewMessage) -> Written:
        if self._closed:
            raise RuntimeError("message writer is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="parley-message-writer")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((msg, fut))
        self._wakeup.set()
        return await fut

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._commit(batch)
            if self._closed and not self._queue:
                return

    async def _commit(self, batch: list[tuple[NewMessage, asyncio.Future]]) -> None:
        items = [m for m, _ in batch]
        try:
            results = await write_batch(items)
        except IntegrityError:
            # A concurrent writer (another process) stored one of these
            # client_msg_ids first. Retry one by one so only that one answers
            # with the stored message and the others still commit.
            results = []
            for item in items:
                try:
                    results += await write_batch([item])
                except Exception as exc:  # noqa: BLE001 - handed to that caller
                    results.append(exc)
        except Exception as exc:  # noqa: BLE001 - every caller gets the failure
            results = [exc] * len(items)
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)


async def write_batch(items: list[NewMessage]) -> list[Written | Exception]:
    conn = Tortoise.get_connection("default")
    if conn.capabilities.dialect == "postgres":
        return await _write_postgres(conn, items)
    return await _write_sqlite(conn, items)


def _plan(items, existing: dict, last_seqs: dict) -> tuple[list, list]:
    """Seq for each new item; answers for duplicates. `last_seqs` maps
    conversation → its last_seq after this batch's increment."""
    counts = defaultdict(int)
    results: list = [None] * len(items)
    first_of: dict = {}
    fresh = []
    for i, item in enumerate(items):
        key = _dedupe_key(item)
        if key and key in existing:
            results[i] = ("existing", existing[key])
            continue
        if key and key in first_of:
            results[i] = ("same_as", first_of[key])
            continue
        if key:
            first_of[key] = i
        counts[item.conversation_id] += 1
        fresh.append(i)
    seqs = {}
    next_by_conv = {cid: last_seqs[cid] - n + 1 for cid, n in counts.items() if cid in last_seqs}
    for i in fresh:
        cid = items[i].conversation_id
        if cid not in next_by_conv:
            results[i] = UnknownConversation(str(cid))
            continue
        seqs[i] = next_by_conv[cid]
        next_by_conv[cid] += 1
    return results, seqs


def _counts(items, existing) -> dict:
    counts = defaultdict(int)
    seen = set()
    for item in items:
        key = _dedupe_key(item)
        if key and (key in existing or key in seen):
            continue
        if key:
            seen.add(key)
        counts[item.conversation_id] += 1
    return counts


def _finish(items, results, seqs, ids) -> list:
    out = []
    for i, r in enumerate(results):
        if isinstance(r, Exception):
            out.append(r)
        elif r is None:
            out.append(Written(id=ids[i], seq=seqs[i], new=True))
        elif r[0] == "existing":
            out.append(Written(id=r[1][0], seq=r[1][1], new=False))
        else:  # same client_msg_id twice in one batch: the first one wins
            first = r[1]
            out.append(Written(id=ids[first], seq=seqs[first], new=False))
    return out


# --- SQLite: the whole batch in one hop to the connection's thread ----------


async def _write_sqlite(client, items: list[NewMessage]) -> list:
    # Tortoise serialises use of its one aiosqlite connection with a lock; we
    # hold it and run the batch as one function on aiosqlite's thread, instead
    # of paying a thread hop (and an event-loop turn) per statement.
    async with client.acquire_connection() as aioconn:
        return await aioconn._execute(_sqlite_batch, aioconn._conn, items)


def _ts(value: datetime) -> str:
    return str(value)  # Tortoise's own text format for SQLite timestamps


def _sqlite_batch(db, items: list[NewMessage]) -> list:
    import sqlite3

    db.execute("BEGIN IMMEDIATE")
    try:
        existing = {}
        for item in items:
            key = _dedupe_key(item)
            if key and key not in existing:
                row = db.execute(
                    'SELECT "id", "seq" FROM "messages" WHERE "sender_id" = ? AND "client_msg_id" = ?',
                    key,
                ).fetchone()
                if row:
                    existing[key] = (row[0], row[1])
        counts = _counts(items, existing)
        last_seqs = {}
        for cid, n in counts.items():
            newest = max(i.created_at for i in items if i.conversation_id == cid)
            row = db.execute(
                'UPDATE "conversations" SET "last_seq" = "last_seq" + ?, "last_message_at" = ? '
                'WHERE "id" = ? RETURNING "last_seq"',
                (n, _ts(newest), str(cid)),
            ).fetchone()
            if row:
                last_seqs[cid] = row[0]
        results, seqs = _plan(items, existing, last_seqs)
        ids = {}
        for i, seq in seqs.items():
            item = items[i]
            cur = db.execute(
                'INSERT INTO "messages" ("seq", "client_msg_id", "type", "text", "reply_to_id", '
                '"data", "created_at", "conversation_id", "sender_id") '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, item.client_msg_id, item.type, item.text, item.reply_to_id,
                 json.dumps(item.data) if item.data is not None else None,
                 _ts(item.created_at), str(item.conversation_id),
                 str(item.sender_id) if item.sender_id else None),
            )
            ids[i] = cur.lastrowid
            if item.membership_id is not None:
                db.execute('UPDATE "memberships" SET "read_seq" = ? WHERE "id" = ? AND "read_seq" < ?',
                           (seq, item.membership_id, seq))
            for user_id in item.mentions:
                db.execute(
                    'INSERT INTO "message_mentions" ("message_id", "conversation_id", "seq", "user_id") '
                    "VALUES (?, ?, ?, ?)",
                    (ids[i], str(item.conversation_id), seq,
                     str(user_id) if user_id is not None else None),
                )
        db.execute("COMMIT")
    except sqlite3.IntegrityError as exc:
        db.execute("ROLLBACK")
        raise IntegrityError(exc) from exc
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return _finish(items, results, seqs, ids)


# --- PostgreSQL: four statements per batch, whatever its size ---------------


async def _write_postgres(client, items: list[NewMessage]) -> list:
    import asyncpg
    from tortoise.transactions import in_transaction

    try:
        async with in_transaction() as conn:
            keyed = [(i, _dedupe_key(it)) for i, it in enumerate(items) if _dedupe_key(it)]
            existing = {}
            if keyed:
                rows = await conn.execute_query_dict(
                    'SELECT m."id", m."seq", m."sender_id"::text AS s, m."client_msg_id" AS c '
                    'FROM "messages" m JOIN unnest($1::uuid[], $2::text[]) AS k(s, c) '
                    'ON m."sender_id" = k.s AND m."client_msg_id" = k.c',
                    [[uuid.UUID(k[0]) for _, k in keyed], [k[1] for _, k in keyed]],
                )
                existing = {(r["s"], r["c"]): (r["id"], r["seq"]) for r in rows}
            counts = _counts(items, existing)
            last_seqs = {}
            if counts:
                # Sorted ids: concurrent batches lock conversation rows in one order.
                cids = sorted(counts)
                newest = {}
                for it in items:
                    if it.conversation_id in counts:
                        newest[it.conversation_id] = max(newest.get(it.conversation_id, it.created_at),
                                                         it.created_at)
                rows = await conn.execute_query_dict(
                    'UPDATE "conversations" c SET "last_seq" = c."last_seq" + v.n, '
                    '"last_message_at" = v.at '
                    "FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS v(id, n, at) "
                    'WHERE c."id" = v.id RETURNING c."id", c."last_seq"',
                    [cids, [counts[c] for c in cids], [newest[c] for c in cids]],
                )
                last_seqs = {r["id"]: r["last_seq"] for r in rows}
            results, seqs = _plan(items, existing, last_seqs)
            ids = {}
            order = sorted(seqs)
            if order:
                rows = await conn.execute_query_dict(
                    'INSERT INTO "messages" ("seq", "client_msg_id", "type", "text", "reply_to_id", '
                    '"data", "created_at", "conversation_id", "sender_id") '
                    "SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], "
                    "$5::bigint[], $6::jsonb[], $7::timestamptz[], $8::uuid[], $9::uuid[]) "
                    'RETURNING "id", "conversation_id", "seq"',
                    [
                        [seqs[i] for i in order],
                        [items[i].client_msg_id for i in order],
                        [items[i].type for i in order],
                        [items[i].text for i in order],
                        [items[i].reply_to_id for i in order],
                        [json.dumps(items[i].data) if items[i].data is not None else None
                         for i in order],
                        [items[i].created_at for i in order],
                        [items[i].conversation_id for i in order],
                        [items[i].sender_id for i in order],
                    ],
                )
                by_pos = {(r["conversation_id"], r["seq"]): r["id"] for r in rows}
                for i in order:
                    ids[i] = by_pos[(items[i].conversation_id, seqs[i])]
                marks = [(items[i].membership_id, seqs[i]) for i in order
                         if items[i].membership_id is not None]
                if marks:
                    await conn.execute_query_dict(
                        'UPDATE "memberships" mb SET "read_seq" = v.seq '
                        "FROM (SELECT id, max(seq) AS seq FROM unnest($1::bigint[], $2::bigint[]) "
                        "AS t(id, seq) GROUP BY id) v "
                        'WHERE mb."id" = v.id AND mb."read_seq" < v.seq',
                        [[m for m, _ in marks], [s for _, s in marks]],
                    )
                mentions = [(ids[i], items[i].conversation_id, seqs[i], u)
                            for i in order for u in items[i].mentions]
                if mentions:
                    await conn.execute_query_dict(
                        'INSERT INTO "message_mentions" ("message_id", "conversation_id", "seq", '
                        '"user_id") SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::bigint[], '
                        "$4::uuid[])",
                        [[m[0] for m in mentions], [m[1] for m in mentions],
                         [m[2] for m in mentions],
                         [uuid.UUID(str(m[3])) if m[3] is not None else None for m in mentions]],
                    )
    except asyncpg.UniqueViolationError as exc:
        raise IntegrityError(exc) from exc
    return _finish(items, results, seqs, ids)
