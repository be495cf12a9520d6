"""The message writer on SQLite: a batch, judged or not, in one hop to the
connection's thread."""

from __future__ import annotations

import json
from datetime import datetime

from tortoise.exceptions import IntegrityError

from app.services.message_writer.batch import (
    NewMessage,
    Plan,
    cached_members,
    finish,
    group_versions,
    needs_facts,
    read_facts,
    recipients_of,
    refused_sends,
)
from app.services.search_index import (
    known_words,
    pending_committed,
    remember_words,
    sqlite_index,
)
from app.services.sql import MEMBERS_SQLITE, WRITER_FACTS_SQLITE


async def write(client, items: list[NewMessage]) -> list:
    # Tortoise serialises use of its one aiosqlite connection with a lock; we
    # hold it and run the whole batch as one function on aiosqlite's thread,
    # judging included (the judges are plain functions), instead of paying a
    # thread hop (and an event-loop turn) per statement or per step. BEGIN
    # IMMEDIATE takes SQLite's write lock first, so the checks read the latest
    # committed state and nothing commits between them and the writes; the
    # lock is not held across an event-loop turn.
    async with client.acquire_connection() as aioconn:
        try:
            results, seqs, ids, recipients = await aioconn._execute(
                _batch, aioconn._conn, items, known_words(aioconn))
        except BaseException:
            # Also when cancelled: the function we were awaiting still runs on the
            # connection's thread (it may have just sent BEGIN); this one runs after
            # it, so the shared connection is never left inside our transaction.
            await aioconn._execute(_rollback, aioconn._conn)
            raise
        return finish(results, seqs, ids, recipients())


def _batch(db, items: list[NewMessage], known: set[str]) -> tuple:
    """The batch's transaction, on the connection's thread. Returns the
    recipients as a function: the member cache is filled on the event loop."""
    existing, facts = _begin(db, items)
    rejected = refused_sends(items, existing, facts)
    versions = group_versions(items, existing, rejected, facts)
    have, load = cached_members(versions)
    results, seqs, ids, loaded = _write_rest(db, items, existing, rejected, load, known)
    return results, seqs, ids, lambda: recipients_of(items, facts, seqs, versions, have, loaded)


def _ts(value: datetime) -> str:
    return str(value)  # Tortoise's own text format for SQLite timestamps


def _rollback(db) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


def _begin(db, items: list[NewMessage]) -> tuple[dict, dict]:
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = []
        for i in needs_facts(items):
            item = items[i]
            cur = db.execute(WRITER_FACTS_SQLITE,
                             (i, item.cid_text, item.sender_text, item.client_msg_id))
            names = [d[0] for d in cur.description]
            rows += [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        return read_facts(items, rows)
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _write_rest(db, items, existing, rejected, load, known: set[str]) -> tuple:
    """The rest of the transaction _begin opened, then COMMIT."""
    import sqlite3

    try:
        plan = Plan(items, existing, rejected)
        last_seqs = {}
        for cid, n in plan.counts.items():
            row = db.execute(
                'UPDATE "conversations" SET "last_seq" = "last_seq" + ?, "last_message_at" = ? '
                'WHERE "id" = ? RETURNING "last_seq"',
                (n, _ts(plan.newest[cid]), str(cid)),
            ).fetchone()
            if row:
                last_seqs[cid] = row[0]
        seqs = plan.assign(items, last_seqs)
        results = plan.results
        ids = {}
        for i, seq in seqs.items():
            item = items[i]
            cur = db.execute(
                'INSERT INTO "messages" ("seq", "client_msg_id", "type", "text", "reply_to_id", '
                '"data", "created_at", "conversation_id", "sender_id") '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, item.client_msg_id, item.type, item.text, item.reply_to_id,
                 json.dumps(item.data) if item.data is not None else None,
                 _ts(item.created_at), item.cid_text, item.sender_text),
            )
            ids[i] = cur.lastrowid
            if item.membership_id is not None:
                db.execute('UPDATE "memberships" SET "read_seq" = ? WHERE "id" = ? AND "read_seq" < ?',
                           (seq, item.membership_id, seq))
            for user_id in item.mentions:
                db.execute(
                    'INSERT INTO "message_mentions" ("message_id", "conversation_id", "seq", "user_id") '
                    "VALUES (?, ?, ?, ?)",
                    (ids[i], item.cid_text, seq, str(user_id) if user_id is not None else None),
                )
        words = sqlite_index(db, [(ids[i], items[i].search_tokens) for i in seqs], known)
        loaded = {cid: tuple(r[0] for r in db.execute(MEMBERS_SQLITE, (str(cid),)))
                  for cid in load}
        db.execute("COMMIT")
        pending_committed()
        remember_words(known, words)
    except sqlite3.IntegrityError as exc:
        db.execute("ROLLBACK")
        raise IntegrityError(exc) from exc
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return results, seqs, ids, loaded
