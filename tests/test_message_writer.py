"""The group-commit writer: gapless seqs, dedupe inside and across batches."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from app.errors import Unavailable
from app.models.messaging import Conversation, Message
from app.services.message_writer import MessageWriter, NewMessage, UnknownConversation
from tests.factories import make_user, until


def new(cid, sender, cmid=None, text="hi"):
    return NewMessage(conversation_id=cid, sender_id=uuid.UUID(sender), client_msg_id=cmid,
                      type="text", text=text, created_at=datetime.now(UTC))


async def test_concurrent_batches_give_gapless_seqs_and_dedupe(deps):
    a = await make_user(deps)
    convs = [await Conversation.create(id=uuid.uuid4(), type="group") for _ in range(4)]
    writer = MessageWriter()
    try:
        jobs = []
        for i in range(300):
            cid = convs[i % 4].id
            # Every 10th message repeats an earlier client_msg_id of the same sender.
            cmid = f"m{i - 5}" if i % 10 == 9 else f"m{i}"
            jobs.append(writer.write(new(cid if i % 10 != 9 else convs[(i - 5) % 4].id,
                                         a.user_id, cmid, f"text {i}")))
        results = await asyncio.gather(*jobs)
    finally:
        await writer.close()
    fresh = [r for r in results if r.new]
    assert len(fresh) == 270
    assert len({r.id for r in results}) == 270  # repeats answered with the original
    for conv in convs:
        seqs = await Message.filter(conversation_id=conv.id).order_by("seq").values_list(
            "seq", flat=True)
        assert list(seqs) == list(range(1, len(seqs) + 1))
        stored = await Conversation.get(id=conv.id)
        assert stored.last_seq == len(seqs) and stored.last_message_at is not None
    assert await Message.all().count() == 270


async def test_unknown_conversation_fails_only_that_message(deps):
    a = await make_user(deps)
    conv = await Conversation.create(id=uuid.uuid4(), type="group")
    writer = MessageWriter()
    try:
        ok, bad = await asyncio.gather(
            writer.write(new(conv.id, a.user_id, "x1")),
            writer.write(new(uuid.uuid4(), a.user_id, "x2")),
            return_exceptions=True,
        )
    finally:
        await writer.close()
    assert ok.seq == 1 and ok.new
    assert isinstance(bad, UnknownConversation)


async def test_stored_rows_read_back_through_the_orm(deps):
    a = await make_user(deps)
    conv = await Conversation.create(id=uuid.uuid4(), type="group")
    writer = MessageWriter()
    try:
        item = new(conv.id, a.user_id, "rt", "hello ünïcode")
        item.data = {"mentions": [a.user_id], "mention_all": False}
        w = await writer.write(item)
    finally:
        await writer.close()
    msg = await Message.get(id=w.id)
    assert msg.text == "hello ünïcode" and msg.data == item.data and msg.seq == 1
    assert str(msg.sender_id) == a.user_id and msg.created_at.tzinfo is not None
    assert abs((msg.created_at - item.created_at).total_seconds()) < 1e-3


async def test_postgres_plans_the_writer_once_and_probes_the_dedupe_index(deps):
    """The writer's statements are planned once per connection (a generic plan,
    sql.begin_and_lock_pg), and that plan looks each send's earlier copy up in
    the (sender_id, client_msg_id) index even when it was made while
    `messages` was empty and the table has grown since."""
    from app.services.message_writer import write_batch
    from app.services.sql import WRITE_BATCH_PG, WRITER_FACTS_PG

    client = _postgres_writer_or_skip()
    a = await make_user(deps)
    conv, other = [await Conversation.create(id=uuid.uuid4(), type="group") for _ in range(2)]
    async with client.acquire_connection() as con:
        await con.execute('ALTER TABLE "messages" SET (autovacuum_enabled = off)')
        try:
            # The plans are made while the statistics say `messages` is empty...
            await con.execute('ANALYZE "messages"')
            [w] = await write_batch([new(conv.id, a.user_id, "p0")], con)
            assert w.new and w.seq == 1
            # ...and stay in use when it no longer is.
            await con.execute(
                'INSERT INTO "messages" ("seq", "client_msg_id", "type", "text", '
                '"created_at", "conversation_id", "sender_id") '
                "SELECT g, 'old-' || g, 'text', 'hi', now(), $1, $2 "
                "FROM generate_series(1, 3000) g", other.id, uuid.UUID(a.user_id))
            for i in range(1, 8):
                [w] = await write_batch([new(conv.id, a.user_id, f"p{i}")], con)
                assert w.new and w.seq == i + 1
            [again] = await write_batch([new(conv.id, a.user_id, "p3")], con)
            assert not again.new and again.seq == 4
            rows = await con.fetch("SELECT name, statement, generic_plans, custom_plans "
                                   "FROM pg_prepared_statements")
            named = {r["statement"]: r for r in rows}
            assert (named[WRITER_FACTS_PG]["generic_plans"],
                    named[WRITER_FACTS_PG]["custom_plans"]) == (9, 0)
            assert (named[WRITE_BATCH_PG]["generic_plans"],
                    named[WRITE_BATCH_PG]["custom_plans"]) == (8, 0)
            plan = await _facts_plan(con, conv.id, a.user_id)
        finally:
            await con.execute('ALTER TABLE "messages" RESET (autovacuum_enabled)')
    assert "Seq Scan on messages" not in plan, plan
    assert "Index Cond: ((sender_id = q.uid)" in plan, plan


async def test_postgres_plans_the_writer_again_after_an_analyze(deps):
    """The writer's plans follow the other tables' sizes through ANALYZE,
    which autovacuum runs as a table grows (sql.begin_and_lock_pg): made
    while `memberships` was small, the plan reads the table whole; after it
    has grown and been analyzed, each sender is looked up by key."""
    from app.models.messaging import Membership
    from app.services.message_writer import write_batch

    client = _postgres_writer_or_skip()
    a = await make_user(deps)
    conv = await Conversation.create(id=uuid.uuid4(), type="group")
    async with client.acquire_connection() as con:
        await con.execute('ANALYZE "memberships"')
        [w] = await write_batch([new(conv.id, a.user_id, "a0")], con)
        assert w.new
        small = await _facts_plan(con, conv.id, a.user_id)
        others = [Conversation(id=uuid.uuid4(), type="group") for _ in range(5000)]
        await Conversation.bulk_create(others, batch_size=1000)
        await Membership.bulk_create([Membership(conversation_id=c.id, user_id=a.user_id)
                                      for c in others], batch_size=1000)
        await con.execute('ANALYZE "memberships"')
        [w] = await write_batch([new(conv.id, a.user_id, "a1")], con)
        assert w.new
        grown = await _facts_plan(con, conv.id, a.user_id)
    by_key = "Index Cond: ((conversation_id = q.cid) AND (user_id = q.uid))"
    assert by_key not in small, small
    assert by_key in grown, grown


async def _facts_plan(con, conversation_id, user_id) -> str:
    """The plan the writer's connection `con` has cached for its facts
    statement, as EXPLAIN prints it inside the writer's transaction."""
    from app.services.sql import WRITER_FACTS_PG, begin_and_lock_pg

    name = await con.fetchval("SELECT name FROM pg_prepared_statements WHERE statement = $1",
                              WRITER_FACTS_PG)
    await con.execute(begin_and_lock_pg([conversation_id]))
    try:
        return "\n".join(r[0] for r in await con.fetch(
            f"EXPLAIN EXECUTE {name}('{{0}}', '{{{conversation_id}}}', '{{{user_id}}}', '{{x}}')"))
    finally:
        await con.execute("ROLLBACK")


async def test_postgres_keeps_the_writers_join_order_in_its_transaction_only(deps):
    """The writer's statements are planned in the order they are written, once,
    without sequential scans or JIT (sql.begin_and_lock_pg); other statements
    on the connection are not."""
    from app.services.sql import begin_and_lock_pg

    client = _postgres_writer_or_skip()
    conv = await Conversation.create(id=uuid.uuid4(), type="group")
    async with client.acquire_connection() as con:
        default = await con.fetchval("SHOW join_collapse_limit")
        jit = await con.fetchval("SHOW jit")
        await con.execute(begin_and_lock_pg([conv.id]))
        try:
            assert await con.fetchval("SHOW join_collapse_limit") == "1"
            assert await con.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            assert await con.fetchval("SHOW enable_seqscan") == "off"
            assert await con.fetchval("SHOW jit") == "off"
        finally:
            await con.execute("ROLLBACK")
        assert await con.fetchval("SHOW join_collapse_limit") == default != "1"
        assert await con.fetchval("SHOW enable_seqscan") == "on"
        assert await con.fetchval("SHOW jit") == jit


def _postgres_writer_or_skip():
    from tortoise import Tortoise

    from app.services.sql import is_postgres

    client = Tortoise.get_connection("default")
    if not is_postgres(client):
        pytest.skip("the PostgreSQL writer's transactions")
    return client


async def test_postgres_batches_in_a_row_begin_with_the_previous_commit(deps, monkeypatch):
    """When sends are queued as a batch commits, the COMMIT's round trip also
    begins the next batch and locks its conversations (postgres.Chain): only
    the first batch of a burst has a BEGIN of its own."""
    from app.services import message_writer
    from app.services.message_writer import postgres

    _postgres_writer_or_skip()
    a = await make_user(deps)
    convs = [await Conversation.create(id=uuid.uuid4(), type="group") for _ in range(3)]
    begins = []
    real = postgres.begin_and_lock_pg

    def counted(ids, *, nowait=False):
        begins.append(nowait)
        return real(ids, nowait=nowait)

    monkeypatch.setattr(postgres, "begin_and_lock_pg", counted)
    monkeypatch.setattr(message_writer, "MAX_BATCH", 1)  # a batch per send
    writer = MessageWriter()
    try:
        results = await asyncio.gather(*(writer.write(new(convs[i % 3].id, a.user_id, f"c{i}"))
                                         for i in range(6)))
    finally:
        await writer.close()
    assert [r.seq for r in results] == [1, 1, 1, 2, 2, 2] and all(r.new for r in results)
    assert begins == [False] + [True] * 5  # six plain begins without the chain
    for conv in convs:
        assert await Message.filter(conversation_id=conv.id).count() == 2


async def test_postgres_a_batch_is_answered_without_waiting_for_the_next_ones_locks(
        deps, monkeypatch):
    """The next batch's locks are taken NOWAIT in the COMMIT's round trip: a
    conversation row held by another transaction does not hold up the answer
    of the batch that just committed; the next batch waits for it as usual."""
    from app.services import message_writer

    client = _postgres_writer_or_skip()
    a = await make_user(deps)
    free = await Conversation.create(id=uuid.uuid4(), type="group")
    held = await Conversation.create(id=uuid.uuid4(), type="group")
    monkeypatch.setattr(message_writer, "MAX_BATCH", 1)
    writer = MessageWriter()
    async with client.acquire_connection() as other:
        await other.execute("BEGIN")
        try:
            await other.execute('SELECT 1 FROM "conversations" WHERE "id" = $1 FOR UPDATE',
                                held.id)
            first = asyncio.ensure_future(writer.write(new(free.id, a.user_id, "f1")))
            second = asyncio.ensure_future(writer.write(new(held.id, a.user_id, "h1")))
            done = await asyncio.wait_for(first, 3)  # while `held` is still locked
            assert done.new and done.seq == 1
            await asyncio.sleep(0.2)
            assert not second.done()
            await other.execute("COMMIT")
            waited = await asyncio.wait_for(second, 5)
            assert waited.new and waited.seq == 1
        finally:
            if other.is_in_transaction():
                await other.execute("ROLLBACK")
            await writer.close()
    assert await Message.filter(conversation_id=held.id).count() == 1


async def test_postgres_a_commit_that_fails_in_the_chained_script_answers_no_one_as_stored(
        deps, monkeypatch):
    """A COMMIT that fails inside the script that also begins the next batch
    (a deferred constraint, checked at COMMIT) fails that batch's sends and
    stores nothing of it; the next batch begins on its own and gets the seq."""
    import asyncpg

    from app.services import message_writer
    from app.services.message_writer import postgres

    client = _postgres_writer_or_skip()
    a = await make_user(deps)
    conv = await Conversation.create(id=uuid.uuid4(), type="group")
    chained = []
    real = postgres._commit_and_begin

    async def counted(con, upcoming, chain):
        chained.append([it.client_msg_id for it in upcoming])
        return await real(con, upcoming, chain)

    monkeypatch.setattr(postgres, "_commit_and_begin", counted)
    monkeypatch.setattr(message_writer, "MAX_BATCH", 1)
    await client.execute_script(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF NEW.text = 'poison' THEN RAISE EXCEPTION 'poison at commit'; END IF;"
        " RETURN NULL; END $$;"
        " CREATE CONSTRAINT TRIGGER refuse_poison AFTER INSERT ON messages"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_poison();")
    writer = MessageWriter()
    try:
        first, second = await asyncio.gather(
            writer.write(new(conv.id, a.user_id, "p1", text="poison")),
            writer.write(new(conv.id, a.user_id, "ok1", text="fine")),
            return_exceptions=True)
    finally:
        await writer.close()
        await client.execute_script("DROP TRIGGER refuse_poison ON messages;"
                                    " DROP FUNCTION refuse_poison();")
    assert chained == [["ok1"]]  # the poisoned COMMIT was the chained one
    assert isinstance(first, asyncpg.RaiseError) and "poison at commit" in str(first)
    assert second.new and second.seq == 1
    stored = await Message.filter(conversation_id=conv.id).values_list("client_msg_id", "seq")
    assert stored == [("ok1", 1)]
    assert (await Conversation.get(id=conv.id)).last_seq == 1


# --- supervision, bounded queue, shutdown ---------------------------------------------


async def _send_until_stored(sio, cid, cmid, text, codes) -> dict:
    """A client's send loop: retry `unavailable` / `busy` with the same client_msg_id."""
    from tests.factories import call

    for _ in range(50):
        ack = await call(sio, "message:send", {"conversation_id": cid, "client_msg_id": cmid,
                                               "text": text}, timeout=10)
        if ack["ok"]:
            return ack["message"]
        codes[ack["error"]["code"]] += 1
        assert ack["error"]["code"] in ("unavailable", "busy"), ack
        await asyncio.sleep(0.01)
    raise AssertionError(f"{cmid} never stored")


async def _check_stored_exactly(cid, acked: list[dict]) -> None:
    rows = await Message.filter(conversation_id=cid).order_by("seq").values_list(
        "id", "seq", "client_msg_id", "text")
    assert [r[1] for r in rows] == list(range(1, len(rows) + 1))  # gapless
    assert len({r[2] for r in rows}) == len(rows) == len(acked)  # nothing doubled
    stored = {r[2]: r for r in rows}
    for m in acked:  # nothing acked is lost, and the ack told the truth
        assert stored[m["client_msg_id"]] == (int(m["id"]), m["seq"], m["client_msg_id"],
                                              m["text"])


async def _direct_chat(deps, a, b) -> str:
    from app.services import conversations as convs
    from tests.factories import make_contacts

    await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return str(conv.id)


async def test_writer_killed_mid_burst_loses_nothing_doubles_nothing_hangs_nothing(
        deps, base_url, caplog):
    from collections import Counter

    from tests.factories import connect

    a, b = await make_user(deps), await make_user(deps)
    cid = await _direct_chat(deps, a, b)
    socks = [await connect(base_url, a.access_token) for _ in range(4)]
    writer = deps.writer
    codes: Counter = Counter()

    async def killer():
        kills = 0
        while kills < 3:
            await asyncio.sleep(0)
            if writer._current and writer._task is not None:  # mid-batch
                writer._task.cancel()
                kills += 1
                await asyncio.sleep(0.02)
        return kills

    try:
        kill = asyncio.ensure_future(killer())
        acked = await asyncio.wait_for(asyncio.gather(*(
            _send_until_stored(socks[i % 4], cid, f"k{i}", f"text {i}", codes)
            for i in range(300))), 60)
        assert await asyncio.wait_for(kill, 10) == 3
    finally:
        for s in socks:
            await s.disconnect()
    await until(lambda: writer.restarts >= 3, "the writer restarted after each kill")
    assert codes["unavailable"] >= 1  # a kill did hit sends in flight
    await _check_stored_exactly(cid, acked)
    assert "message writer task died (cancelled)" in caplog.text


async def test_a_send_that_comes_before_a_dead_writers_supervisor_loses_no_batch(deps):
    """The writer dies mid-batch, and a send reaches the writer before the dead
    task's done callback runs (its step was queued first): the batch the dead
    task was writing is still answered, not left waiting for ever."""
    a = await make_user(deps)
    conv = await Conversation.create(id=uuid.uuid4(), type="group")
    writer = MessageWriter()
    try:
        async with asyncio.timeout(20):
            first = asyncio.ensure_future(writer.write(new(conv.id, a.user_id, "first")))
            while not writer._current:  # noqa: ASYNC110 - until the writer is mid-batch
                await asyncio.sleep(0)
            dead = writer._task
            dead.cancel()
            # Looked at every turn of the loop: once the task is done, its done
            # callback is queued and has not run yet.
            while not dead.done():  # noqa: ASYNC110 - each turn, not an event's later one
                await asyncio.sleep(0)
            # In this very step, as a socket's send would be: write() runs up to
            # its first wait before the dead task's supervisor.
            second = await writer.write(new(conv.id, a.user_id, "second"))
            with pytest.raises(Unavailable):
                await first
        assert second.new
        assert writer.restarts == 1
    finally:
        await writer.close()


async def test_writer_crash_is_logged_and_a_fresh_writer_takes_the_queue(deps, caplog):
    a = await make_user(deps)
    conv = await Conversation.create(id=uuid.uuid4(), type="group")
    writer = MessageWriter()
    original = writer._take
    crashes = []

    def take_or_crash(size=None):
        if not crashes:
            crashes.append(1)
            raise RuntimeError("bug in the writer")
        return original(size)

    writer._take = take_or_crash
    try:
        results = await asyncio.wait_for(asyncio.gather(
            *(writer.write(new(conv.id, a.user_id, f"c{i}")) for i in range(20))), 10)
    finally:
        await writer.close()
    assert [r.seq for r in sorted(results, key=lambda r: r.seq)] == list(range(1, 21))
    assert writer.restarts == 1
    died = [r for r in caplog.records if "message writer task died" in r.getMessage()]
    assert len(died) == 1 and died[0].exc_info and "bug in the writer" in caplog.text


@pytest.fixture
def held_writes(monkeypatch):
    """Every batch waits for `release` before it is written (a stalled database)."""
    from app.services import message_writer

    release = asyncio.Event()
    real = message_writer.write_batch

    async def held(items, con=None, **chained):
        await release.wait()
        return await real(items, con, **chained)

    monkeypatch.setattr(message_writer, "write_batch", held)
    return release


@pytest.mark.parametrize("settings_overrides", [{"max_pending_sends": 5}])
async def test_sends_beyond_max_pending_get_busy_at_once_and_succeed_on_retry(
        deps, base_url, held_writes, settings_overrides):
    from collections import Counter

    from tests.factories import call, connect

    a, b = await make_user(deps), await make_user(deps)
    cid = await _direct_chat(deps, a, b)
    sio = await connect(base_url, a.access_token)
    try:
        first = [asyncio.ensure_future(call(sio, "message:send", {
            "conversation_id": cid, "client_msg_id": f"b{i}", "text": f"t{i}"}))
            for i in range(12)]
        done, _ = await asyncio.wait(first, timeout=1.0)  # the busy ones, at once
        busy = [t.result() for t in done]
        assert busy and all(not r["ok"] and r["error"]["code"] == "busy" and
                            r["error"]["details"]["retry_after"] >= 1 for r in busy)
        assert deps.writer.pending <= 5  # the queue never grows beyond MAX_PENDING_SENDS
        held_writes.set()
        results = await asyncio.gather(*first)
        retry = [i for i, r in enumerate(results) if not r["ok"]]
        assert len(retry) == len(busy)
        codes: Counter = Counter()
        acked = [r["message"] for r in results if r["ok"]] + [
            await _send_until_stored(sio, cid, f"b{i}", f"t{i}", codes) for i in retry]
    finally:
        await sio.disconnect()
    await _check_stored_exactly(cid, acked)
    assert len(acked) == 12


async def test_shutdown_drains_within_its_timeout_and_answers_the_rest(deps, held_writes):
    a = await make_user(deps)
    conv = await Conversation.create(id=uuid.uuid4(), type="group")
    writer = MessageWriter()
    sends = [asyncio.ensure_future(writer.write(new(conv.id, a.user_id, f"s{i}")))
             for i in range(5)]
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    await writer.close(timeout=0.3)
    assert asyncio.get_running_loop().time() - started < 2
    results = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 2)
    assert all(isinstance(r, Unavailable) for r in results), results
    with pytest.raises(Unavailable):
        await writer.write(new(conv.id, a.user_id, "late"))


async def test_shutdown_finishes_what_is_queued(deps):
    a = await make_user(deps)
    conv = await Conversation.create(id=uuid.uuid4(), type="group")
    writer = MessageWriter()
    sends = [asyncio.ensure_future(writer.write(new(conv.id, a.user_id, f"q{i}")))
             for i in range(50)]
    await asyncio.sleep(0)
    await writer.close(timeout=10)
    assert sorted(r.seq for r in await asyncio.gather(*sends)) == list(range(1, 51))
