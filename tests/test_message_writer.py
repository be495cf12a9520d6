"""The group-commit writer: gapless seqs, dedupe inside and across batches."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from app.models.messaging import Conversation, Message
from app.services.message_writer import MessageWriter, NewMessage, UnknownConversation
from tests.factories import make_user


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


async def test_postgres_plans_each_batch_for_the_tables_current_size(deps):
    """A generic plan cached while `messages` was small would scan the whole table
    for every dedupe lookup from then on (sql.begin_and_lock_pg)."""
    from tortoise import Tortoise

    from app.services.message_writer import write_batch
    from app.services.sql import SEND_CHECKS_PG, WRITE_BATCH_PG, is_postgres

    client = Tortoise.get_connection("default")
    if not is_postgres(client):
        pytest.skip("PostgreSQL's plan cache")
    a = await make_user(deps)
    conv = await Conversation.create(id=uuid.uuid4(), type="group")
    async with client.acquire_connection() as con:
        for i in range(8):  # PostgreSQL considers a generic plan from the 6th run on
            [w] = await write_batch([new(conv.id, a.user_id, f"p{i}")], con)
            assert w.new and w.seq == i + 1
        rows = await con.fetch("SELECT statement, generic_plans, custom_plans "
                               "FROM pg_prepared_statements")
    plans = {r["statement"]: (r["generic_plans"], r["custom_plans"]) for r in rows}
    assert plans[SEND_CHECKS_PG] == (0, 8)
    assert plans[WRITE_BATCH_PG] == (0, 8)
