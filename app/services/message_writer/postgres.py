"""The message writer on PostgreSQL: four round trips per batch, whatever its
size, and three while batches follow one another.

BEGIN + lock the conversations (one simple-protocol script), the facts (one
statement, which also reads the locked last_seqs), every write (one statement
of data-modifying CTEs), COMMIT. Each round trip is a socket write and a
wake-up of the backend, and on a busy server it also waits for a turn of the
event loop: it costs more than the SQL.

When more sends are queued as a batch commits (the writer is never idle
under load), the COMMIT's script also begins the next batch's transaction and
locks its conversations, without waiting (`Chain`). If another transaction
holds one of those rows, that lock fails at once, the batch is still
committed (the connection is left in the next, failed transaction), and the
next batch starts with ROLLBACK and takes its locks the usual way. So no
batch's answer waits for the next batch's locks.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable

from tortoise.exceptions import IntegrityError

from app.services.message_writer.batch import (
    NewMessage,
    Plan,
    cached_members,
    finish,
    group_versions,
    read_facts,
    recipients_of,
    refused_sends,
)
from app.services.search_index import new_words, remember_words, tsvector_literal
from app.services.sql import MEMBERS_PG, WRITE_BATCH_PG, WRITER_FACTS_PG, begin_and_lock_pg

log = logging.getLogger("parley.writer")


# Chain.state
LOCKED = "locked"  # the next batch's transaction is begun, its conversations locked
ABORTED = "aborted"  # a transaction whose locks failed is open: roll it back first


class Chain:
    """What the writer's connection holds between two of its batches: nothing
    (state None), or a transaction begun for the next `size` queued sends."""

    __slots__ = ("state", "size")

    def __init__(self) -> None:
        self.state: str | None = None
        self.size = 0


async def write(con, items: list[NewMessage], known: set[str], chain: Chain | None = None,
                peek: Callable[[], list[NewMessage]] | None = None) -> list:
    """`known`: search_index.known_words of the database `con` belongs to.
    `chain` (with `peek`, the sends queued after these): begin the next batch
    with this one's COMMIT; a LOCKED chain means `items` are the sends it was
    begun for."""
    import asyncpg

    state = None
    if chain is not None:
        state, chain.state = chain.state, None
    try:
        if state is not LOCKED:
            begin = begin_and_lock_pg(it.conversation_id for it in items)
            await con.execute(f"ROLLBACK; {begin}" if state is ABORTED else begin)
        idx = list(range(len(items)))
        rows = await con.fetch(WRITER_FACTS_PG, idx, [it.conversation_id for it in items],
                               [it.sender_id for it in items],
                               [it.client_msg_id for it in items])
        existing, facts = read_facts(items, rows)
        current = {items[r["i"]].conversation_id: r["conv_last_seq"] for r in rows
                   if r["conv_last_seq"] is not None}
        rejected = refused_sends(items, existing, facts)
        versions = group_versions(items, existing, rejected, facts)
        have, load = cached_members(versions)
        plan = Plan(items, existing, rejected)
        counts = plan.counts
        last = {cid: current[cid] + n for cid, n in counts.items() if cid in current}
        seqs = plan.assign(items, last)
        ids = {}
        order = sorted(seqs)
        words: list[str] = []
        if order:
            cids = sorted(last)
            marks = [(items[i].membership_id, seqs[i]) for i in order
                     if items[i].membership_id is not None]
            # Sorted: search_index.PostgresTsvector.INSERT_WORDS says why.
            words = sorted(new_words((items[i].search_tokens for i in order), known))
            mentions = [(items[i].conversation_id, seqs[i],
                         uuid.UUID(str(u)) if u is not None else None)
                        for i in order for u in items[i].mentions]
            written = await con.fetch(
                WRITE_BATCH_PG,
                cids, [last[c] for c in cids], [plan.newest[c] for c in cids],
                [m for m, _ in marks], [s for _, s in marks],
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
                [m[0] for m in mentions], [m[1] for m in mentions], [m[2] for m in mentions],
                *_search_columns(items, order, seqs),
                words,
            )
            by_pos = {(r["conversation_id"], r["seq"]): r["id"] for r in written}
            for i in order:
                ids[i] = by_pos[(items[i].conversation_id, seqs[i])]
        loaded: dict = {}
        if load:
            for r in await con.fetch(MEMBERS_PG, load):
                loaded.setdefault(r["conversation_id"], []).append(str(r["user_id"]))
            loaded = {cid: tuple(loaded.get(cid, ())) for cid in load}
        upcoming = peek() if chain is not None and peek is not None else None
        if upcoming:
            await _commit_and_begin(con, upcoming, chain)
        else:
            await con.execute("COMMIT")
        remember_words(known, set(words))
    except BaseException as exc:
        if chain is not None:
            chain.state = None  # whatever was begun is rolled back here
        if not con.is_closed():
            try:
                await con.execute("ROLLBACK")
            except Exception as rollback_exc:  # noqa: BLE001 - the pool drops the connection
                log.warning("message writer: ROLLBACK failed (%s) after %s",
                            type(rollback_exc).__name__, type(exc).__name__)
        if isinstance(exc, asyncpg.UniqueViolationError):
            raise IntegrityError(exc) from exc
        raise
    return finish(plan.results, seqs, ids,
                  recipients_of(items, facts, seqs, versions, have, loaded))


async def _commit_and_begin(con, upcoming: list[NewMessage], chain: Chain) -> None:
    """COMMIT, and in the same round trip begin the transaction of the sends
    queued now and lock their conversations, NOWAIT. Raises only when the
    COMMIT failed."""
    import asyncpg

    script = "COMMIT; " + begin_and_lock_pg((it.conversation_id for it in upcoming),
                                             nowait=True)
    try:
        await con.execute(script)
    except asyncpg.PostgresError:
        if not con.is_in_transaction():
            raise  # the COMMIT itself failed: the script stopped there
        chain.state = ABORTED  # committed; the next batch's locks were not free
        return
    chain.state, chain.size = LOCKED, len(upcoming)


def _search_columns(items, order, seqs) -> tuple[list, list, list]:
    """(conversation ids, seqs, tsvector literals) of the new messages that
    have something to index."""
    found = [i for i in order if items[i].search_tokens]
    return ([items[i].conversation_id for i in found], [seqs[i] for i in found],
            [tsvector_literal(items[i].search_tokens) for i in found])

