"""The few statements the ORM cannot express in one round trip."""

from __future__ import annotations

import uuid
from datetime import datetime

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from app.validation import TextUUID


def is_postgres(conn: BaseDBAsyncClient) -> bool:
    return conn.capabilities.dialect == "postgres"


def as_datetime(value):
    """A timestamp column as read from either backend (SQLite hands back text)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def model_columns(model) -> list[str]:
    """The model's database columns, in the order `_init_from_db` takes them."""
    meta = model._meta
    return [key for key, _name, _field in
            (*meta.db_native_fields, *meta.db_default_fields, *meta.db_complex_fields)]


_JOINED_SQL: dict[tuple, str] = {}


async def select_joined(model, related: str, where: str, value: uuid.UUID,
                        order_by: str | None = None) -> list:
    """`model.filter(<where>=value).select_related(related)`, from one cached
    statement with the objects built straight from its rows.

    For hot paths (every socket connect and REST call authenticates; every
    reconnect syncs), where building the ORM query cost more than running it."""
    conn = Tortoise.get_connection("default")
    pg = is_postgres(conn)
    fk = model._meta.fields_map[related]
    other = fk.related_model
    cols, other_cols = model_columns(model), model_columns(other)
    key = (model, related, where, order_by, pg)
    sql = _JOINED_SQL.get(key)
    if sql is None:
        select = ", ".join([f'a."{c}"' for c in cols] + [f'b."{c}"' for c in other_cols])
        sql = _JOINED_SQL[key] = (
            f'SELECT {select} FROM "{model._meta.db_table}" a '
            f'JOIN "{other._meta.db_table}" b ON b."{other._meta.db_pk_column}" = '
            f'a."{fk.source_field}" WHERE a."{where}" = {"$1" if pg else "?"}'
            + (f' ORDER BY a."{order_by}"' if order_by else ""))
    _n, rows = await conn.execute_query(sql, [value if pg else str(value)])
    out = []
    split = len(cols)
    for row in rows:
        row = tuple(row)
        obj = model._init_from_db(**dict(zip(cols, row[:split], strict=True)))
        setattr(obj, related, other._init_from_db(**dict(zip(other_cols, row[split:],
                                                             strict=True))))
        out.append(obj)
    return out


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
        params = [str(now), str(conversation_id)]  # Tortoise's SQLite timestamp format
    # execute_query_dict always fetches; asyncpg's execute_query drops RETURNING rows.
    rows = await conn.execute_query_dict(sql, params)
    if not rows:
        return None
    return int(rows[0]["last_seq"])


# What a send is judged on: the sender's membership (m), the conversation's flags
# and member-list version (c), and for a direct chat the peer (p, u) and the
# contact/block facts between the two. Shared by the single lookup below and the
# writer's batched lookup (WRITER_FACTS_*); the rules on them are send_rules.py.
_FACTS_COLUMNS = (
    'm."id" AS mid, m."role", m."visible_from_seq", m."muted_until", m."read_seq", '
    'c."type", c."dissolved_at", c."only_admins_can_send", c."updated_at" AS members_version, '
    'p."user_id" AS peer_id, '
    'EXISTS(SELECT 1 FROM "blocks" b WHERE b."blocker_id" = m."user_id" '
    'AND b."blocked_id" = p."user_id") AS i_blocked, '
    'EXISTS(SELECT 1 FROM "blocks" b WHERE b."blocker_id" = p."user_id" '
    'AND b."blocked_id" = m."user_id") AS they_blocked, '
    'EXISTS(SELECT 1 FROM "contacts" k WHERE k."owner_id" = p."user_id" '
    'AND k."contact_id" = m."user_id") AS they_have_me, '
    'u."allow_strangers" AS peer_allows_strangers'
)
_PEER_JOINS = (
    'LEFT JOIN "memberships" p ON c."type" = \'direct\' '
    'AND p."conversation_id" = m."conversation_id" AND p."user_id" <> m."user_id" '
    'LEFT JOIN "users" u ON u."id" = p."user_id"'
)
_SEND_FACTS = (
    f'SELECT {_FACTS_COLUMNS} '
    'FROM "memberships" m JOIN "conversations" c ON c."id" = m."conversation_id" '
    f'{_PEER_JOINS} '
    'WHERE m."conversation_id" = {0} AND m."user_id" = {1} AND m."left_at" IS NULL'
)
_SEND_FACTS_PG = _SEND_FACTS.format("$1", "$2")
_SEND_FACTS_SQLITE = _SEND_FACTS.format("?", "?")


async def send_facts_row(conn: BaseDBAsyncClient, conversation_id: uuid.UUID,
                           user_id: uuid.UUID) -> dict | None:
    """Everything a send is judged on, in one round trip: the sender's
    membership, the conversation's flags and, for a direct chat, the peer and
    the contact/block facts between the two (see services.send_rules)."""
    return await _member_row(conn, _SEND_FACTS_PG, _SEND_FACTS_SQLITE, conversation_id,
                             user_id)


async def _member_row(conn: BaseDBAsyncClient, pg: str, sqlite: str,
                      conversation_id: uuid.UUID, user_id: uuid.UUID) -> dict | None:
    """The one row of a statement on (conversation id, user id), or None."""
    if is_postgres(conn):
        rows = await conn.execute_query_dict(pg, [conversation_id, user_id])
    else:
        rows = await conn.execute_query_dict(sqlite, [str(conversation_id), str(user_id)])
    return rows[0] if rows else None


# --- a member's read mark and typing ----------------------------------------

_MEMBER_FACTS = (
    'SELECT m."id" AS id, m."read_seq" AS read_seq, m."left_at" AS left_at, '
    'm."left_seq" AS left_seq, c."last_seq" AS last_seq, c."type" AS type, '
    'c."updated_at" AS members_version, c."dissolved_at" AS dissolved_at, '
    'p."user_id" AS peer_id, '
    'u."send_read_receipts" AS send_read_receipts '
    'FROM "memberships" m JOIN "conversations" c ON c."id" = m."conversation_id" '
    'JOIN "users" u ON u."id" = m."user_id" '
    'LEFT JOIN "memberships" p ON c."type" = \'direct\' '
    'AND p."conversation_id" = m."conversation_id" AND p."user_id" <> m."user_id" '
    'AND p."left_at" IS NULL '
    'WHERE m."conversation_id" = {0} AND m."user_id" = {1}'
)
_MEMBER_FACTS_PG = _MEMBER_FACTS.format("$1", "$2")
_MEMBER_FACTS_SQLITE = _MEMBER_FACTS.format("?", "?")
# Only forward: a stale device cannot move the mark back.
_MOVE_READ = ('UPDATE "memberships" SET "read_seq" = {0} '
              'WHERE "id" = {1} AND "read_seq" < {2} RETURNING "read_seq"')
_MOVE_READ_PG = _MOVE_READ.format("$1", "$2", "$3")
_MOVE_READ_SQLITE = _MOVE_READ.format("?", "?", "?")


async def member_facts_row(conn: BaseDBAsyncClient, conversation_id: uuid.UUID,
                           user_id: uuid.UUID) -> dict | None:
    """What a read mark or a typing state is judged on, in one round trip: the
    member's membership (left or not), the conversation's last seq and whether
    it was dissolved, whether they send read receipts, and who receives their
    events: a direct chat's peer, or a group's member-list version
    (services.member_cache)."""
    return await _member_row(conn, _MEMBER_FACTS_PG, _MEMBER_FACTS_SQLITE, conversation_id,
                             user_id)


async def move_read_mark(conn: BaseDBAsyncClient, membership_id: int, seq: int) -> bool:
    """Move the membership's read_seq forward to `seq` → whether it moved."""
    sql = _MOVE_READ_PG if is_postgres(conn) else _MOVE_READ_SQLITE
    return bool(await conn.execute_query_dict(sql, [seq, membership_id, seq]))


# --- the writer's batched facts ---------------------------------------------
#
# One row per queued send q(i, cid, uid, cmid): the message already stored under
# (sender, client_msg_id) if any (dup_id, dup_seq), and the send facts above
# (all NULL when the sender is no active member). Every join is a LEFT JOIN on a
# unique key, so each q yields exactly one row.

_WRITER_MEMBER_JOINS = (
    'LEFT JOIN "memberships" m ON m."conversation_id" = q.cid AND m."user_id" = q.uid '
    'AND m."left_at" IS NULL '
    'LEFT JOIN "conversations" c ON c."id" = m."conversation_id" '
    f'{_PEER_JOINS}'
)
# PostgreSQL also reads each conversation's last_seq (cl): the rows are locked
# by begin_and_lock_pg's statement before this one, so it is final until COMMIT.
# Its dedupe lookup is a LATERAL subquery with LIMIT, which the planner cannot
# flatten into a join: every plan, generic ones included (begin_and_lock_pg),
# probes the (sender_id, client_msg_id) index once per send. A plain join is
# planned as a hash join over all of `messages` when the statistics say the
# table is small, and `messages` outgrows its statistics between two ANALYZEs.
WRITER_FACTS_PG = (
    f'SELECT q.i, d."id" AS dup_id, d."seq" AS dup_seq, cl."last_seq" AS conv_last_seq, '
    f'{_FACTS_COLUMNS} '
    'FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::text[]) AS q(i, cid, uid, cmid) '
    'LEFT JOIN "conversations" cl ON cl."id" = q.cid '
    'LEFT JOIN LATERAL (SELECT "id", "seq" FROM "messages" '
    'WHERE "sender_id" = q.uid AND "client_msg_id" = q.cmid LIMIT 1) d ON TRUE '
    f'{_WRITER_MEMBER_JOINS}'
)
WRITER_FACTS_SQLITE = (
    f'SELECT q.i, d."id" AS dup_id, d."seq" AS dup_seq, {_FACTS_COLUMNS} '
    'FROM (SELECT ? AS i, ? AS cid, ? AS uid, ? AS cmid) AS q '
    'LEFT JOIN "messages" d ON d."sender_id" = q.uid AND d."client_msg_id" = q.cmid '
    f'{_WRITER_MEMBER_JOINS}'
)


# Id types whose str() is known to be a canonical UUID (begin_and_lock_pg).
_PRINTS_HEX = (uuid.UUID, TextUUID)


def begin_and_lock_pg(conversation_ids, *, nowait: bool = False) -> str:
    """BEGIN, then lock these conversation rows in id order: one simple-protocol
    round trip (it takes no parameters, so the ids are written in as literals;
    they go through uuid.UUID, which only ever prints hex digits and dashes, as
    does TextUUID's kept text).

    Taken first in the writer's transaction, in one order for every writer:
    every membership or settings change of a group locks its conversation row
    first, so the checks that follow (a new statement, a new READ COMMITTED
    snapshot) see everything committed before this batch gets its seqs.

    `nowait`: fail at once (lock_not_available) rather than wait for a row
    another transaction holds (the writer's chained begin, message_writer/postgres.py).
    """
    ids = sorted({str(c if type(c) in _PRINTS_HEX else uuid.UUID(str(c)))
                  for c in set(conversation_ids)})
    listed = ", ".join(f"'{c}'" for c in ids)
    # force_generic_plan: the batch statements are prepared once per connection
    # and planned once, not per batch: when batches are small, planning them
    # costs the database more than running them. A plan is kept until an ANALYZE
    # of a table it reads; autovacuum runs one whenever a table has grown by a
    # tenth, so each join method still follows its table's size, except for
    # `messages`, which can grow tenfold between two runs of autovacuum.
    # enable_seqscan = off, and the dedupe lookup written as a LATERAL
    # subquery (WRITER_FACTS_PG): however small `messages` looked when the plan
    # was made, every send probes the (sender_id, client_msg_id) index.
    # jit = off: PostgreSQL compiles a plan whose estimated cost passes
    # jit_above_cost at every execution (compiled code is not kept with a
    # prepared plan), and a generic plan's estimate for a large group's send
    # passes it: compiling takes far longer than the statement runs.
    # join_collapse_limit = 1: the writer's statements are written in the order
    # they run best at any size (the batch's rows first, then each table joined
    # by its key), so the planner keeps that order instead of searching every
    # other one; it still picks each join's method.
    return ('BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; '
            'SET LOCAL enable_seqscan = off; SET LOCAL jit = off; '
            'SET LOCAL join_collapse_limit = 1; '
            'SELECT 1 FROM "conversations" '
            f'WHERE "id" IN ({listed}) ORDER BY "id" FOR UPDATE{" NOWAIT" if nowait else ""}')


# A batch's writes in one statement (PostgreSQL), seqs computed by the writer
# from the locked last_seq: the conversations' new last_seq, the senders' read
# marks, the messages, and their mentions (joined to the inserted rows by
# (conversation, seq)). Returns the new messages' ids.
WRITE_BATCH_PG = (
    'WITH conv AS ('
    '  UPDATE "conversations" c SET "last_seq" = v.last, "last_message_at" = v.at'
    '  FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS v(id, last, at)'
    '  WHERE c."id" = v.id'
    '), marks AS ('
    '  UPDATE "memberships" mb SET "read_seq" = v.seq'
    '  FROM (SELECT id, max(seq) AS seq FROM unnest($4::bigint[], $5::bigint[]) AS t(id, seq)'
    '        GROUP BY id) v'
    '  WHERE mb."id" = v.id AND mb."read_seq" < v.seq'
    '), ins AS ('
    '  INSERT INTO "messages" ("seq", "client_msg_id", "type", "text", "reply_to_id", "data",'
    '    "created_at", "conversation_id", "sender_id")'
    '  SELECT * FROM unnest($6::bigint[], $7::text[], $8::text[], $9::text[], $10::bigint[],'
    '    $11::jsonb[], $12::timestamptz[], $13::uuid[], $14::uuid[])'
    '  RETURNING "id", "conversation_id", "seq"'
    '), mentions AS ('
    '  INSERT INTO "message_mentions" ("message_id", "conversation_id", "seq", "user_id")'
    '  SELECT ins."id", ins."conversation_id", ins."seq", t.uid'
    '  FROM unnest($15::uuid[], $16::bigint[], $17::uuid[]) AS t(cid, seq, uid)'
    '  JOIN ins ON ins."conversation_id" = t.cid AND ins."seq" = t.seq'
    # The search index entry (search_index.tsvector_literal), same transaction.
    '), searched AS ('
    '  INSERT INTO "message_search" ("message_id", "conversation_id", "doc")'
    '  SELECT ins."id", ins."conversation_id", t.doc::tsvector'
    '  FROM unnest($18::uuid[], $19::bigint[], $20::text[]) AS t(cid, seq, doc)'
    '  JOIN ins ON ins."conversation_id" = t.cid AND ins."seq" = t.seq'
    # Words the word list may lack, sorted (search_index.PostgresTsvector).
    '), words AS ('
    '  INSERT INTO "message_search_words" ("term")'
    '  SELECT unnest($21::text[]) ON CONFLICT DO NOTHING'
    ') SELECT "id", "conversation_id", "seq" FROM ins'
)
MEMBERS_PG = (
    'SELECT "conversation_id", "user_id" FROM "memberships" '
    'WHERE "conversation_id" = ANY($1::uuid[]) AND "left_at" IS NULL'
)
MEMBERS_SQLITE = (
    'SELECT "user_id" FROM "memberships" WHERE "conversation_id" = ? AND "left_at" IS NULL'
)


async def chat_list_page(user_id: uuid.UUID, after: tuple[datetime, str] | None,
                         limit: int) -> list[int]:
    """Ids of one page of the user's current memberships, newest activity
    first, keyset-paginated on (activity, conversation id) strictly below
    `after`: the database sorts and cuts, so a page costs the same with ten
    chats or ten thousand. Activity is the last message's time, else the
    conversation's creation (services.conversations.activity)."""
    conn = Tortoise.get_connection("default")
    pg = is_postgres(conn)
    activity = 'COALESCE(c."last_message_at", c."created_at")'
    where = ""
    if pg:
        params: list = [user_id]
        if after is not None:
            params += [after[0], uuid.UUID(after[1])]
            where = f' AND ({activity} < $2 OR ({activity} = $2 AND c."id" < $3))'
        params.append(limit)
        marks = ("$1", f"${len(params)}")
    else:
        # SQLite compares the text Tortoise wrote, str(datetime), as passed here.
        params = [str(user_id)]
        if after is not None:
            params += [str(after[0]), str(after[0]), after[1]]
            where = f' AND ({activity} < ? OR ({activity} = ? AND c."id" < ?))'
        params.append(limit)
        marks = ("?", "?")
    sql = ('SELECT m."id" FROM "memberships" m JOIN "conversations" c ON c."id" = m."conversation_id" '
           f'WHERE m."user_id" = {marks[0]} AND m."left_at" IS NULL AND c."dissolved_at" IS NULL'
           f'{where} ORDER BY {activity} DESC, c."id" DESC LIMIT {marks[1]}')
    _n, rows = await conn.execute_query(sql, params)
    return [row[0] for row in rows]
