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

- sends that carry a `judge` are checked inside that transaction, on facts
  read after the batch's conversations are locked (one statement per batch):
  membership, group settings, blocks, contacts, privacy. A change committed
  before a message got its seq is honoured by it, on every process, and a
  refused send spends no seq;
- the recipients of a judged send are the members at the moment it got its
  seq (group lists come from a version-checked cache, or are read in the same
  transaction);
- `ordered` sends get a Turn: their place in the conversation's emit order, so
  the events of one conversation leave this process in seq order whatever
  order the senders' coroutines resume in.

Nothing waits on a timer: under light load a batch holds one message and the
latency is that of a single transaction.

The writer task is supervised: if it ever ends while not closed (a bug, a
cancellation), the sends of the batch it was writing fail with `Unavailable`
(their transaction may or may not have committed: the client retries with
the same client_msg_id and gets the original if it did), a fresh task takes
over the queue, and later sends never wait on a dead task. The queue is
bounded (`MAX_PENDING_SENDS`): beyond it a send fails at once with `Busy`.
`close()` drains the queue for at most `WRITER_DRAIN_SECONDS`, then fails
what is left with `Unavailable`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from tortoise import Tortoise
from tortoise.exceptions import IntegrityError

from app.errors import Busy, Unavailable
from app.services import member_cache
from app.services.search_index import item_tokens, sqlite_index, tsvector_literal
from app.services.sql import (
    MEMBERS_PG,
    MEMBERS_SQLITE,
    SEND_CHECK_SQLITE,
    SEND_CHECKS_PG,
    WRITE_BATCH_PG,
    begin_and_lock_pg,
    is_postgres,
)

log = logging.getLogger("parley.writer")

MAX_BATCH = 256
# How long an emit waits for the previous message of its conversation to be
# emitted (a safety net: every Turn is released, normally within milliseconds).
TURN_PATIENCE = 10.0

# judge(item, facts) raises to refuse a send; facts is the row of
# sql.SEND_CHECKS_* (mid None: the sender is no active member). It runs inside
# the writer's transaction, so it is a plain function: it cannot await, so it
# cannot touch the database (on SQLite that would wait for the writer forever).
Judge = Callable[["NewMessage", Mapping], None]


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
    # Check the send in the batch's transaction (see Judge). A judged send's
    # membership_id comes from the facts.
    judge: Judge | None = None
    # Give the stored message a Turn in its conversation's emit order.
    ordered: bool = False
    # Search index tokens (search_index.item_tokens), computed before the
    # transaction so it holds its locks no longer for them.
    search_tokens: list | None = field(default=None, repr=False, compare=False)
    # Derived once (the writer needs them several times per item).
    cid_text: str = field(init=False, repr=False, compare=False)
    sender_text: str | None = field(init=False, repr=False, compare=False)
    dedupe_key: tuple[str, str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.cid_text = str(self.conversation_id)
        self.sender_text = str(self.sender_id) if self.sender_id else None
        self.dedupe_key = _dedupe_key(self)


@dataclass
class Written:
    id: int
    seq: int
    new: bool  # False: the (sender, client_msg_id) was already stored
    # New judged sends: who receives it (user ids), as of the moment it got its seq.
    recipients: tuple[str, ...] | None = None
    # New `ordered` sends: emit through it (Turn.wait, emit, Turn.release).
    turn: Turn | None = None


class Turn:
    """One message's place in its conversation's emit order.

    Reserved by the writer in seq order, synchronously, when the batch commits.
    The sender emits after `await turn.wait()` (every earlier message of the
    conversation has been emitted, or given up on) and must `release()` it in
    any case, also on failure: the next message waits for it.
    """

    __slots__ = ("_order", "_key", "_prev", "_done")

    def __init__(self, order: EmitOrder, key, prev: asyncio.Future | None,
                 done: asyncio.Future) -> None:
        self._order = order
        self._key = key
        self._prev = prev
        self._done = done

    async def wait(self) -> None:
        prev = self._prev
        self._prev = None
        if prev is not None and not prev.done():
            # asyncio.wait: our cancellation must not cancel the other's future.
            done, _ = await asyncio.wait((prev,), timeout=TURN_PATIENCE)
            if not done:
                log.warning("emit order: gave up waiting for the previous message of %s",
                            self._key)

    def release(self) -> None:
        if not self._done.done():
            self._done.set_result(None)
        self._order.forget(self._key, self._done)


class EmitOrder:
    """Per-conversation chains of Turns; only the newest Turn of each
    conversation is remembered, and only until it is released."""

    def __init__(self) -> None:
        self._tails: dict = {}

    def reserve(self, key) -> Turn:
        done = asyncio.get_running_loop().create_future()
        prev = self._tails.get(key)
        self._tails[key] = done
        return Turn(self, key, prev, done)

    def forget(self, key, done: asyncio.Future) -> None:
        if self._tails.get(key) is done:
            del self._tails[key]


class UnknownConversation(Exception):
    pass


def _dedupe_key(m: NewMessage) -> tuple[str, str] | None:
    return (str(m.sender_id), m.client_msg_id) if m.sender_id and m.client_msg_id else None


class MessageWriter:
    """Queues NewMessages and writes them in batches; one per process."""

    def __init__(self, max_pending: int = 5000, drain_seconds: float = 10.0) -> None:
        self._queue: list[tuple[NewMessage, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False
        # The batch being written: what a dying task leaves unanswered.
        self._current: list[tuple[NewMessage, asyncio.Future]] = []
        self.max_pending = max_pending
        self.drain_seconds = drain_seconds
        self.restarts = 0
        self.order = EmitOrder()
        self.index_search = True  # SEARCH_INDEX

    def start(self, settings=None) -> None:
        """Start the writer task (the app factory calls this at start-up; a
        write starts it too), taking its limits from the settings."""
        if settings is not None:
            self.max_pending = settings.max_pending_sends
            self.drain_seconds = settings.writer_drain_seconds
            self.index_search = settings.search_index
        self._ensure_running()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def write(self, msg: NewMessage) -> Written:
        if self._closed:
            raise Unavailable("The server is shutting down; retry shortly.")
        if len(self._queue) >= self.max_pending:
            raise Busy()
        self._ensure_running()
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((msg, fut))
        self._wakeup.set()
        try:
            return await fut
        except asyncio.CancelledError:
            # Cancelled after the result was set: nobody will emit through its
            # Turn, so hand it on now.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                turn = fut.result().turn
                if turn is not None:
                    turn.release()
            raise

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="parley-message-writer")
            self._task.add_done_callback(self._supervise)

    def _supervise(self, task: asyncio.Task) -> None:
        """The writer task ended: fine after close(); otherwise answer what it was
        writing and start a fresh task for the queue."""
        if task is not self._task:
            return
        failure = None if task.cancelled() else task.exception()
        if not task.cancelled() and failure is None and self._closed:
            return
        lost = self._fail(self._current)
        self._current = []
        self._task = None
        log.error("message writer task died (%s); %d sends in progress answered "
                  "'unavailable', %d queued go to a fresh writer",
                  "cancelled" if failure is None else type(failure).__name__, lost,
                  len(self._queue), exc_info=failure)
        if self._closed:
            self._fail(self._queue)
            self._queue = []
            return
        self.restarts += 1
        if self._queue:
            self._ensure_running()

    @staticmethod
    def _fail(batch) -> int:
        n = 0
        for _item, fut in batch:
            if not fut.done():
                fut.set_exception(Unavailable("The message was not confirmed; retry it "
                                              "with the same client_msg_id."))
                n += 1
        return n

    async def close(self, timeout: float | None = None) -> None:
        """Finish what is queued (for at most `timeout` seconds, default
        drain_seconds), then stop; sends still unwritten get Unavailable."""
        self._closed = True
        self._wakeup.set()
        task = self._task
        if task is not None and not task.done():
            limit = self.drain_seconds if timeout is None else timeout
            done, _ = await asyncio.wait([task], timeout=limit)
            if not done:
                log.warning("message writer: %d sends still queued after %.1f s of "
                            "shutdown; answering them 'unavailable'", len(self._queue), limit)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._fail(self._current)
        self._fail(self._queue)
        self._current, self._queue = [], []

    async def _run(self) -> None:
        while True:
            # Queue first: a fresh task takes over what its predecessor left.
            while self._queue:
                await self._burst()
            if self._closed:
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    def _take(self) -> list[tuple[NewMessage, asyncio.Future]]:
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        return batch

    async def _burst(self) -> None:
        """Write batches until the queue is empty. PostgreSQL: on one pooled
        connection held for the whole burst (no pool acquire, release and
        connection reset per batch); a broken one is given back at once."""
        client = Tortoise.get_connection("default")
        if not is_postgres(client):
            while self._queue:
                await self._commit(self._take(), None)
            return
        holder = client.acquire_connection()
        try:
            con = await holder.__aenter__()
        except Exception as exc:  # noqa: BLE001 - the database is unreachable
            self._resolve(self._take(), None, exc)
            return
        try:
            while self._queue and not con.is_closed():
                await self._commit(self._take(), con)
        finally:
            try:
                await holder.__aexit__(None, None, None)
            except Exception:  # noqa: BLE001 - the pool discards it
                log.warning("message writer: could not release its connection", exc_info=True)

    async def _commit(self, batch: list[tuple[NewMessage, asyncio.Future]], con) -> None:
        items = [m for m, _ in batch]
        if not self.index_search:
            for it in items:
                it.search_tokens = []
        self._current = batch
        try:
            results = await write_batch(items, con)
        except IntegrityError:
            # A concurrent writer (another process) stored one of these
            # client_msg_ids first. Retry one by one so only that one answers
            # with the stored message and the others still commit.
            results = []
            for item in items:
                try:
                    results += await write_batch([item], con)
                except Exception as exc:  # noqa: BLE001 - handed to that caller
                    results.append(exc)
        except Exception as exc:  # noqa: BLE001 - every caller gets the failure
            results = [exc] * len(items)
        self._resolve(batch, results)
        self._current = []

    def _resolve(self, batch, results: list | None, exc: BaseException | None = None) -> None:
        if results is None:
            results = [exc] * len(batch)
        for (item, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                if item.ordered and result.new:
                    # In batch order, which is seq order within a conversation.
                    result.turn = self.order.reserve(item.conversation_id)
                fut.set_result(result)


async def write_batch(items: list[NewMessage], con=None) -> list[Written | Exception]:
    """Write one batch. `con`: a pooled asyncpg connection to use (PostgreSQL);
    without one, one is taken from the pool for this batch."""
    for it in items:
        if it.search_tokens is None:
            it.search_tokens = item_tokens(it.type, it.text, it.data)
    client = Tortoise.get_connection("default")
    if not is_postgres(client):
        return await _write_sqlite(client, items)
    if con is not None:
        return await _write_postgres(con, items)
    async with client.acquire_connection() as con:
        return await _write_postgres(con, items)


# --- the parts both backends share -------------------------------------------


def _checked(items) -> list[int]:
    """Items the check statement is run for: judged or deduplicated ones."""
    return [i for i, it in enumerate(items) if it.judge is not None or it.dedupe_key]


def _read_checks(items, rows) -> tuple[dict, dict]:
    """Rows of the check statement → (existing messages by dedupe key, facts by item)."""
    existing = {}
    facts = {}
    for row in rows:
        i = row["i"]
        if row["dup_id"] is not None:
            existing[items[i].dedupe_key] = (row["dup_id"], row["dup_seq"])
        facts[i] = row
    return existing, facts


def _judge(items, existing: dict, facts: dict) -> dict:
    """{item index: exception} for the judged sends that are refused. A repeat of a
    stored message is not judged: it gets the original, as it would have anyway."""
    rejected = {}
    for i, item in enumerate(items):
        if item.judge is None or (item.dedupe_key and item.dedupe_key in existing):
            continue
        row = facts[i]
        try:
            item.judge(item, row)
        except Exception as exc:  # noqa: BLE001 - that caller's answer
            rejected[i] = exc
            continue
        item.membership_id = row["mid"]
    return rejected


def _group_versions(items, existing, rejected, facts) -> dict:
    """Group conversations of judged new sends → their member-list version."""
    out = {}
    for i, item in enumerate(items):
        if item.judge is None or i in rejected or (item.dedupe_key and
                                                   item.dedupe_key in existing):
            continue
        row = facts[i]
        if row["type"] == "group":
            out[item.conversation_id] = member_cache.as_version(row["members_version"])
    return out


def _cached_members(versions: dict) -> tuple[dict, list]:
    """(lists cached at exactly these versions, conversations to read in the transaction)."""
    have = {}
    load = []
    for cid, version in versions.items():
        ids = member_cache.get(cid, version)
        if ids is None:
            load.append(cid)
        else:
            have[cid] = ids
    return have, load


def _recipients(items, facts, seqs, versions, have, loaded) -> dict:
    """{item index: recipients} for the judged sends stored now. Groups: the list
    read in this transaction, or the one cached at exactly the version read under
    the conversation's lock."""
    for cid, ids in loaded.items():
        member_cache.put(cid, versions[cid], ids)
    have = {**have, **loaded}
    out = {}
    for i in seqs:
        item = items[i]
        if item.judge is None:
            continue
        row = facts[i]
        if row["type"] == "group":
            out[i] = have[item.conversation_id]
        elif row["peer_id"] is not None:  # a direct chat: the two of us
            out[i] = (item.sender_text, str(row["peer_id"]))
        else:
            out[i] = (item.sender_text,)
    return out


class _Plan:
    """Which items become new messages, and the answers for the others.

    results[i]: None (new), ("existing", (id, seq)), ("same_as", index of the
    first item with that client_msg_id in this batch) or an exception. `counts`
    and `newest` per conversation are what the seq UPDATE needs."""

    __slots__ = ("results", "fresh", "counts", "newest")

    def __init__(self, items, existing: dict, rejected: dict) -> None:
        results: list = [None] * len(items)
        first_of: dict = {}
        fresh = []
        counts: dict = {}
        newest: dict = {}
        for i, item in enumerate(items):
            key = item.dedupe_key
            if key:
                if key in existing:
                    results[i] = ("existing", existing[key])
                    continue
                if key in first_of:
                    results[i] = ("same_as", first_of[key])
                    continue
            if i in rejected:
                results[i] = rejected[i]
                continue
            if key:
                first_of[key] = i
            fresh.append(i)
            cid = item.conversation_id
            counts[cid] = counts.get(cid, 0) + 1
            at = newest.get(cid)
            if at is None or item.created_at > at:
                newest[cid] = item.created_at
        self.results, self.fresh, self.counts, self.newest = results, fresh, counts, newest

    def assign(self, items, last_seqs: dict) -> dict:
        """Seqs of the new items, from each conversation's last_seq after this
        batch's increment; items of an unknown conversation fail."""
        seqs = {}
        results = self.results
        next_by_conv = {cid: last_seqs[cid] - n + 1 for cid, n in self.counts.items()
                        if cid in last_seqs}
        for i in self.fresh:
            cid = items[i].conversation_id
            nxt = next_by_conv.get(cid)
            if nxt is None:
                results[i] = UnknownConversation(str(cid))
                continue
            seqs[i] = nxt
            next_by_conv[cid] = nxt + 1
        return seqs


def _finish(results, seqs, ids, recipients) -> list:
    out = []
    for i, r in enumerate(results):
        if isinstance(r, Exception):
            out.append(r)
        elif r is None:
            out.append(Written(id=ids[i], seq=seqs[i], new=True, recipients=recipients.get(i)))
        elif r[0] == "existing":
            out.append(Written(id=r[1][0], seq=r[1][1], new=False))
        else:  # same client_msg_id twice in one batch: the first one wins
            first = r[1]
            out.append(Written(id=ids[first], seq=seqs[first], new=False))
    return out


# --- SQLite: the batch in one hop to the connection's thread (two when judged) ---


async def _write_sqlite(client, items: list[NewMessage]) -> list:
    # Tortoise serialises use of its one aiosqlite connection with a lock; we
    # hold it and run the batch as functions on aiosqlite's thread, instead of
    # paying a thread hop (and an event-loop turn) per statement. BEGIN
    # IMMEDIATE takes SQLite's write lock first, so the checks read the latest
    # committed state and nothing commits between them and the writes.
    async with client.acquire_connection() as aioconn:
        run, db = aioconn._execute, aioconn._conn
        try:
            if not any(it.judge is not None for it in items):
                return await run(_sqlite_batch, db, items)
            existing, facts = await run(_sqlite_begin, db, items)
            rejected = _judge(items, existing, facts)
            versions = _group_versions(items, existing, rejected, facts)
            have, load = _cached_members(versions)
            results, seqs, ids, loaded = await run(_sqlite_write, db, items, existing,
                                                   rejected, load)
        except BaseException:
            # Also when cancelled: the function we were awaiting still runs on the
            # connection's thread (it may have just sent BEGIN); this one runs after
            # it, so the shared connection is never left inside our transaction.
            await run(_sqlite_rollback, db)
            raise
        return _finish(results, seqs, ids,
                       _recipients(items, facts, seqs, versions, have, loaded))


def _ts(value: datetime) -> str:
    return str(value)  # Tortoise's own text format for SQLite timestamps


def _sqlite_rollback(db) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


def _sqlite_begin(db, items: list[NewMessage]) -> tuple[dict, dict]:
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = []
        for i in _checked(items):
            item = items[i]
            cur = db.execute(SEND_CHECK_SQLITE,
                             (i, item.cid_text, item.sender_text, item.client_msg_id))
            names = [d[0] for d in cur.description]
            rows += [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        return _read_checks(items, rows)
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _sqlite_batch(db, items: list[NewMessage]) -> list:
    existing, _facts = _sqlite_begin(db, items)
    results, seqs, ids, _loaded = _sqlite_write(db, items, existing, {}, [])
    return _finish(results, seqs, ids, {})


def _sqlite_write(db, items, existing, rejected, load) -> tuple:
    """The rest of the transaction _sqlite_begin opened, then COMMIT."""
    import sqlite3

    try:
        plan = _Plan(items, existing, rejected)
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
        sqlite_index(db, [(ids[i], items[i].search_tokens) for i in seqs])
        loaded = {cid: tuple(r[0] for r in db.execute(MEMBERS_SQLITE, (str(cid),)))
                  for cid in load}
        db.execute("COMMIT")
    except sqlite3.IntegrityError as exc:
        db.execute("ROLLBACK")
        raise IntegrityError(exc) from exc
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return results, seqs, ids, loaded


# --- PostgreSQL: four round trips per batch, whatever its size --------------
#
# BEGIN + lock the conversations (one simple-protocol script), the checks (one
# statement, which also reads the locked last_seqs), every write (one statement
# of data-modifying CTEs), COMMIT. Each round trip is a socket write and a
# wake-up of the backend: on a busy one-core server they cost more than the SQL.


async def _write_postgres(con, items: list[NewMessage]) -> list:
    import asyncpg

    try:
        await con.execute(begin_and_lock_pg(it.conversation_id for it in items))
        idx = list(range(len(items)))
        rows = await con.fetch(SEND_CHECKS_PG, idx, [it.conversation_id for it in items],
                               [it.sender_id for it in items],
                               [it.client_msg_id for it in items])
        existing, facts = _read_checks(items, rows)
        current = {items[r["i"]].conversation_id: r["conv_last_seq"] for r in rows
                   if r["conv_last_seq"] is not None}
        rejected = _judge(items, existing, facts)
        versions = _group_versions(items, existing, rejected, facts)
        have, load = _cached_members(versions)
        plan = _Plan(items, existing, rejected)
        counts = plan.counts
        last = {cid: current[cid] + n for cid, n in counts.items() if cid in current}
        seqs = plan.assign(items, last)
        ids = {}
        order = sorted(seqs)
        if order:
            cids = sorted(last)
            marks = [(items[i].membership_id, seqs[i]) for i in order
                     if items[i].membership_id is not None]
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
            )
            by_pos = {(r["conversation_id"], r["seq"]): r["id"] for r in written}
            for i in order:
                ids[i] = by_pos[(items[i].conversation_id, seqs[i])]
        loaded: dict = {}
        if load:
            for r in await con.fetch(MEMBERS_PG, load):
                loaded.setdefault(r["conversation_id"], []).append(str(r["user_id"]))
            loaded = {cid: tuple(loaded.get(cid, ())) for cid in load}
        await con.execute("COMMIT")
    except BaseException as exc:
        if not con.is_closed():
            try:
                await con.execute("ROLLBACK")
            except Exception as rollback_exc:  # noqa: BLE001 - the pool drops the connection
                log.warning("message writer: ROLLBACK failed (%s) after %s",
                            type(rollback_exc).__name__, type(exc).__name__)
        if isinstance(exc, asyncpg.UniqueViolationError):
            raise IntegrityError(exc) from exc
        raise
    return _finish(plan.results, seqs, ids,
                   _recipients(items, facts, seqs, versions, have, loaded))


def _search_columns(items, order, seqs) -> tuple[list, list, list]:
    """(conversation ids, seqs, tsvector literals) of the new messages that
    have something to index."""
    found = [i for i in order if items[i].search_tokens]
    return ([items[i].conversation_id for i in found], [seqs[i] for i in found],
            [tsvector_literal(items[i].search_tokens) for i in found])
