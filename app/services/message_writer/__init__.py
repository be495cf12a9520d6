"""Group commit for new messages.

The writer queues sends and commits whatever has queued up while the previous
batch was being written, in one transaction:

- duplicates of an already stored (sender, client_msg_id) are answered with
  the stored message (no seq is spent on them);
- seqs are allocated per conversation with one UPDATE … RETURNING per batch,
  so they stay gapless and unique under any concurrency;
- all rows go in with one INSERT per batch (PostgreSQL) or one thread hop
  (SQLite), and every caller's future resolves only after COMMIT: persist
  before ack holds for each message of the batch.

- sends that carry a `judge` are checked inside that transaction, on facts
  read after the batch's conversations are locked (one statement per batch):
  membership, group settings, blocks, contacts, privacy (the rules are
  app/services/send_rules.py). A change committed
  before a message got its seq is honoured by it, on every process, and a
  refused send spends no seq;
- the recipients of a judged send are the members at the moment it got its
  seq (group lists come from a version-checked cache, or are read in the same
  transaction);
- `ordered` sends get a Turn: their place in the conversation's emit order, so
  the events of one conversation leave this process in seq order whatever
  order the senders' coroutines resume in.

The package: this front (the queue, its supervision, the emit order), batch.py
(what both backends share: the items, the plan of a batch, the judging), and
one module per backend, sqlite.py and postgres.py.

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
import logging

from tortoise import Tortoise
from tortoise.exceptions import IntegrityError

from app.errors import Busy, Unavailable
from app.services.message_writer import postgres, sqlite
from app.services.message_writer.batch import (
    Judge,
    NewMessage,
    UnknownConversation,
    Written,
)
from app.services.search_index import item_tokens, known_words
from app.services.sql import is_postgres

__all__ = ["EmitOrder", "Judge", "MessageWriter", "NewMessage", "Turn", "UnknownConversation",
           "Written", "write_batch"]

log = logging.getLogger("parley.writer")

MAX_BATCH = 256
# How long an emit waits for the previous message of its conversation to be
# emitted (a safety net: every Turn is released, normally within milliseconds).
TURN_PATIENCE = 10.0


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
        if msg.search_tokens is None:
            # Here, in the sender's coroutine, rather than in the writer's
            # loop, whose batches are serial: the next batch waits for
            # whatever the writer computes.
            msg.search_tokens = item_tokens(msg.type, msg.text, msg.data) \
                if self.index_search else []
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
        task = self._task
        if task is not None and task.done():
            # It ended, but its done callback has not run yet (a send can come
            # first in the loop's queue): settle it now, so the batch it was
            # writing is answered before a fresh task takes `_current` over.
            self._supervise(task)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="parley-message-writer")
            self._task.add_done_callback(self._supervise)

    def _supervise(self, task: asyncio.Task) -> None:
        """The writer task ended: fine after close(); otherwise answer what it was
        writing and start a fresh task for the queue. Called as the task's done
        callback, and earlier from _ensure_running when a send comes first; the
        later call finds a fresh task in its place and does nothing."""
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

    def _take(self, size: int | None = None) -> list[tuple[NewMessage, asyncio.Future]]:
        size = MAX_BATCH if size is None else size
        batch, self._queue = self._queue[:size], self._queue[size:]
        return batch

    def _peek(self) -> list[NewMessage]:
        """The next batch, as it would be taken now."""
        return [m for m, _ in self._queue[:MAX_BATCH]]

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
        # A batch that commits while more sends are queued begins the next one
        # (postgres.Chain): that one is exactly the sends it locked for. An
        # open transaction left here is rolled back as the pool takes it back.
        chain = postgres.Chain()
        try:
            while self._queue and not con.is_closed():
                size = chain.size if chain.state is postgres.LOCKED else MAX_BATCH
                await self._commit(self._take(size), con, chain)
        finally:
            try:
                await holder.__aexit__(None, None, None)
            except Exception:  # noqa: BLE001 - the pool discards it
                log.warning("message writer: could not release its connection", exc_info=True)

    async def _commit(self, batch: list[tuple[NewMessage, asyncio.Future]], con,
                      chain: postgres.Chain | None = None) -> None:
        items = [m for m, _ in batch]
        self._current = batch
        try:
            results = await write_batch(items, con, chain=chain,
                                        peek=self._peek if chain is not None else None)
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



async def write_batch(items: list[NewMessage], con=None, *, chain: postgres.Chain | None = None,
                      peek=None) -> list[Written | Exception]:
    """Write one batch. `con`: a pooled asyncpg connection to use (PostgreSQL);
    without one, one is taken from the pool for this batch. `chain`, `peek`:
    see postgres.write (PostgreSQL, with `con`)."""
    for it in items:
        if it.search_tokens is None:
            it.search_tokens = item_tokens(it.type, it.text, it.data)
    client = Tortoise.get_connection("default")
    if not is_postgres(client):
        return await sqlite.write(client, items)
    known = known_words(client)
    if con is not None:
        return await postgres.write(con, items, known, chain, peek)
    async with client.acquire_connection() as con:
        return await postgres.write(con, items, known)
