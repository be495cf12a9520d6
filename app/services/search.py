"""Search: messages, contacts and groups a user can see.

Matching rules: app/services/search_text.py (pure). The index and its
backends: app/services/search_index.py. This module holds what a user may
find, as SQL built from the same visibility rule as history
(services.history): a message is found only if

- the reader is (or was) a member and its seq is in their window
  (visible_from_seq, left_seq]: nothing from before they joined or cleared the
  history (both raise visible_from_seq), nothing from after they left;
- it is not recalled, not a system line, and not deleted for the reader.

Results are newest first (message id order, which is commit order); the
cursor is the last id returned, so pages neither repeat nor skip messages.
"""

from __future__ import annotations

import base64
import time
import uuid
import weakref
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from tortoise import Tortoise

from app import replicas
from app.deps import Deps
from app.errors import Invalid, NotFound, Unavailable
from app.models.contacts import Contact
from app.models.messaging import Membership, Message
from app.ratelimit import Limit
from app.services import conversations as convs
from app.services import search_text
from app.services.history import ROW_COLUMNS, serialize_row
from app.services.search_index import (
    SEARCHABLE_TYPES,
    Filters,
    TokenStats,
    backend_for,
    item_tokens,
    message_texts,
    nothing_matches,
    tsquery_sql,
)
from app.services.sql import is_postgres
from app.validation import MAX_INT64, Id, Payload, representable_in_utc

Query = Annotated[str, msgspec.Meta(max_length=4 * search_text.MAX_QUERY_LENGTH)]
BOX_SCAN = 1000  # matches the search box counts per query (newest first)
SearchLimit = Annotated[int, msgspec.Meta(ge=1, le=50)]
# `type`: one message type, or several separated by commas ("image,video").
TypeFilter = Annotated[str, msgspec.Meta(max_length=64)]


class SearchIn(Payload):
    q: Query
    conversation_id: Id | None = None
    sender_id: Id | None = None
    type: TypeFilter | None = None
    after: datetime | None = None
    before: datetime | None = None
    limit: SearchLimit = 20
    cursor: Annotated[str, msgspec.Meta(max_length=64)] | None = None

    def __post_init__(self):
        representable_in_utc(self.after)
        representable_in_utc(self.before)


class SearchAllIn(Payload):
    q: Query
    limit: SearchLimit = 20


def parse_terms(q: str) -> list[search_text.Term]:
    try:
        return search_text.parse_query(q)
    except search_text.BadQuery as exc:
        raise Invalid(str(exc), details={"field": "q"}) from None


def _types(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    out = tuple(dict.fromkeys(t.strip() for t in value.split(",")))
    bad = [t for t in out if t not in SEARCHABLE_TYPES]
    if not out or bad:
        raise Invalid(f"type must be among {', '.join(SEARCHABLE_TYPES)}.",
                      details={"field": "type"})
    return out


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise Invalid(f"{field} needs a time zone (e.g. 2026-01-31T00:00:00Z).",
                      details={"field": field})
    return value.astimezone(UTC)


def _encode_cursor(message_id: int) -> str:
    return base64.urlsafe_b64encode(f"q{message_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if raw[:1] != "q" or not raw[1:].isascii() or not raw[1:].isdigit() or len(raw) > 20:
            raise ValueError(raw)
        value = int(raw[1:])
        if value > MAX_INT64:
            raise ValueError(raw)
        return value
    except (ValueError, UnicodeDecodeError):
        raise Invalid("Bad cursor.", details={"field": "cursor"}) from None


def _db():
    conn = Tortoise.get_connection("default")
    return conn, is_postgres(conn)


class _Params:
    def __init__(self, pg: bool) -> None:
        self.pg = pg
        self.values: list = []

    def __call__(self, value, cast: str = "") -> str:
        self.values.append(value)
        n = len(self.values)
        return f"${n}{cast}" if self.pg else f"?{n}"


def _ts_param(pg: bool, value: datetime):
    return value if pg else str(value)  # SQLite keeps Tortoise's text form


def _visible_sql(pg: bool, user_id: uuid.UUID, terms, f: Filters, p: _Params,
                 prepared=None, own: bool = False) -> tuple[str, str, str]:
    """(FROM … joins, WHERE …, the id column to order by) of the messages
    `user_id` may find for `terms`. `own` (SQLite): joined from the reader's
    memberships to their messages to the index, in that order (CROSS JOIN is
    SQLite's way to fix the order)."""
    backend = backend_for(pg)
    u = p(user_id if pg else str(user_id), "::uuid" if pg else "")
    if f.ids:
        # PostgreSQL's candidates matched the index a moment ago: only the
        # visibility rule is left to check, and without the tsquery literal
        # the statement's text is the same for every search, so PostgreSQL
        # plans it once instead of once per search.
        join, match, id_column = "", None, 'm."id"'
    else:
        join, match = backend.match_sql(terms, p, prepared)
        id_column = 'm."id"' if own else backend.id_column
    where = [
        'm."seq" > mb."visible_from_seq"',
        '(mb."left_seq" IS NULL OR m."seq" <= mb."left_seq")',
        'm."recalled_at" IS NULL',
        "m.\"type\" <> 'system'",
        'NOT EXISTS (SELECT 1 FROM "hidden_messages" h '
        f'WHERE h."user_id" = {u} AND h."message_id" = m."id")',
    ]
    if f.conversation_id is not None:
        cid = uuid.UUID(f.conversation_id)
        where.append(f'm."conversation_id" = {p(cid if pg else str(cid), "::uuid" if pg else "")}')
    if f.sender_id is not None:
        sid = uuid.UUID(f.sender_id)
        where.append(f'm."sender_id" = {p(sid if pg else str(sid), "::uuid" if pg else "")}')
    if f.types:
        where.append(f'm."type" IN ({", ".join(p(t) for t in f.types)})')
    if f.after is not None:
        where.append(f'm."created_at" >= {p(_ts_param(pg, f.after))}')
    if f.before is not None:
        where.append(f'm."created_at" < {p(_ts_param(pg, f.before))}')
    if match is not None:
        where.insert(0, match)
    if f.below_id is not None:
        where.append(f'{id_column} < {p(f.below_id)}')
    if f.above_id is not None:
        where.append(f'{id_column} > {p(f.above_id)}')
    if f.ids:  # PostgreSQL only: the candidates of _pg_page
        where.append(f'{id_column} = ANY({p(list(f.ids), "::bigint[]")})')
    if own:
        frm = ('"memberships" mb CROSS JOIN "messages" m '
               f'ON m."conversation_id" = mb."conversation_id" CROSS {join}')
        where.insert(0, f'mb."user_id" = {u}')
        return frm, " AND ".join(where), id_column
    frm = (
        f'"messages" m {join} '
        'JOIN "memberships" mb ON mb."conversation_id" = m."conversation_id" '
        f'AND mb."user_id" = {u}'
    )
    return frm, " AND ".join(where), id_column


def _reply_join(u_param: str) -> str:
    # The quoted message only if the reader may see it (as in history pages).
    return ('LEFT JOIN "messages" r ON r."id" = m."reply_to_id" '
            'AND r."seq" > mb."visible_from_seq" '
            'AND NOT EXISTS (SELECT 1 FROM "hidden_messages" hr '
            f'WHERE hr."user_id" = {u_param} AND hr."message_id" = r."id") ')


def _parse_filters(data: SearchIn) -> Filters:
    f = Filters(types=_types(data.type), after=_aware(data.after, "after"),
                before=_aware(data.before, "before"))
    if data.conversation_id is not None:
        f.conversation_id = str(convs.parse_uuid(data.conversation_id))
    if data.sender_id is not None:
        f.sender_id = str(convs.parse_uuid(data.sender_id, "user"))
    if data.cursor is not None:
        f.below_id = _decode_cursor(data.cursor)
    return f


async def _hit_limit(deps: Deps, user_id) -> None:
    await deps.limiter.hit(f"search:{user_id}", Limit.parse(deps.settings.search_rate_limit))


def _result(row, terms, deps: Deps, viewer) -> dict:
    message = serialize_row(row, deps, viewer)
    text = row[5] or ""
    marks = search_text.highlights(text, terms)
    out = {"message": message, "conversation_id": message["conversation_id"],
           "highlights": marks, "highlight_field": "text"}
    if not marks and row[4] == "file":
        name = (message.get("media") or {}).get("name") or ""
        out["highlights"] = search_text.highlights(name, terms)
        out["highlight_field"] = "media.name"
    return out


async def search_messages(deps: Deps, user_id: str, data: SearchIn) -> dict:
    """`{results: [{message, conversation_id, highlights}], next_cursor}`,
    newest first. Highlights: [start, end) in UTF-16 code units of the text
    named by `highlight_field` (see search_text)."""
    terms = parse_terms(data.q)
    uid = convs.parse_uuid(user_id, "user")
    f = _parse_filters(data)
    await _hit_limit(deps, user_id)
    if not deps.settings.search_index:
        raise Unavailable("Message search is turned off on this server (SEARCH_INDEX).")

    async def run() -> dict:
        if f.conversation_id is not None and not await Membership.filter(
                conversation_id=f.conversation_id, user_id=uid).exists():
            raise NotFound(convs.NO_SUCH_CONVERSATION)
        if f.below_id is not None and replicas.on_replica():
            # The client has seen the message at its cursor: a replica that
            # has not replayed it yet would answer from before it.
            replicas.stale(not await Message.filter(id__gte=f.below_id).exists())
        return await _search_page(deps, user_id, uid, terms, f, data.limit)

    return await replicas.read(deps, run)


async def _search_page(deps: Deps, user_id: str, uid: uuid.UUID, terms, f: Filters,
                       limit: int) -> dict:
    conn, pg = _db()
    prepared = await backend_for(pg).prepare(conn, terms)
    rows = await _matches(conn, pg, uid, terms, f, prepared, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    results = [_result(r, terms, deps, user_id) for r in rows]
    return {"results": results,
            "next_cursor": _encode_cursor(rows[-1][0]) if more and rows else None}


# What the search box needs of a match: (message id, conversation id).
HIT_COLUMNS = 'm."id", m."conversation_id"'


async def _matches(conn, pg: bool, uid, terms, f: Filters, prepared, n: int,
                   columns: str = ROW_COLUMNS) -> list:
    """Up to `n` visible matches, newest first, as rows of `columns`
    (ROW_COLUMNS: what serialize_row reads)."""
    await backend_for(pg).before_search(conn)
    if pg:
        return await _pg_page(conn, uid, terms, f, prepared, n, columns)
    reader_messages, everyone = await _sqlite_sizes(conn, uid, f)
    return await _page(conn, pg, uid, terms, f, prepared, n, columns=columns,
                       own=sqlite_reads_own(reader_messages, everyone, n))


async def _page(conn, pg: bool, uid, terms, f: Filters, prepared, n: int,
                by_index: bool = True, columns: str = ROW_COLUMNS, own: bool = False) -> list:
    """Up to `n` visible matches, newest first, in one statement. `by_index`
    False (PostgreSQL): order by an expression, so the planner gathers the
    matches from the GIN index and sorts them instead of walking the primary
    key backwards. `own` (SQLite): read the reader's messages and look each
    up in the index, instead of reading the index's matches newest first."""
    p = _Params(pg)
    frm, where, id_column = _visible_sql(pg, uid, terms, f, p, prepared, own)
    u = "$1::uuid" if pg else "?1"  # the first parameter is always the user
    order = id_column + ("" if by_index else " + 0")
    reply = _reply_join(u) if columns == ROW_COLUMNS else ""
    sql = (f"SELECT {columns} FROM {frm} {reply} WHERE {where} "
           f"ORDER BY {order} DESC LIMIT {p(n)}")
    _n, rows = await conn.execute_query(sql, p.values)
    return list(rows)


# SQLite keeps no statistics of its index, so it chooses on sizes alone. Read
# newest first, the index's matches of a common term are the reader's in
# proportion to their share of everyone's messages: filling a page of `n`
# reads about n × everyone / reader_messages matches (SQLITE_MATCH_COST each),
# where looking each of the reader's messages up in the index reads
# reader_messages (SQLITE_ROW_COST each), whatever the term. The cap bounds
# what that costs a rare term, whose few matches the index reads at once.
# Costs relative to each other, from the timings in docs/benchmarks.md.
SQLITE_OWN_MAX = 2_000
SQLITE_ROW_COST = 8.5
SQLITE_MATCH_COST = 1.0


def sqlite_reads_own(reader_messages: int, everyone: int, n: int) -> bool:
    """Whether to search the reader's own messages for a page of `n`."""
    return (reader_messages <= SQLITE_OWN_MAX
            and reader_messages * reader_messages * SQLITE_ROW_COST
            <= n * everyone * SQLITE_MATCH_COST)


# How many messages the reader may see in one membership's window (a left
# chat up to where they left), per database. A subquery per membership:
# joined, PostgreSQL's planner would read the whole conversations table.
_READER_MESSAGES_PG = (
    'COALESCE(SUM(GREATEST(0, LEAST((SELECT c."last_seq" FROM "conversations" c '
    'WHERE c."id" = mb."conversation_id"), mb."left_seq") - mb."visible_from_seq")), 0)')
_READER_MESSAGES_SQLITE = (
    'COALESCE(SUM(MAX(0, MIN((SELECT c."last_seq" FROM "conversations" c '
    'WHERE c."id" = mb."conversation_id"), COALESCE(mb."left_seq", 1 << 62)) '
    '- mb."visible_from_seq")), 0)')
# The reader's history only steers the choice of plan, and reading it costs
# a lookup per conversation: each process reads it at most this often per
# reader (and search scope), and forgets them all past READER_SIZES_MAX.
READER_SIZES_EVERY = 30.0
READER_SIZES_MAX = 10_000
# Per database client: (reader, conversation or None) → (when read, what was
# read: the reader's messages; on SQLite with the newest message's id).
_reader_sizes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _known_size(conn, key):
    known = _reader_sizes.setdefault(conn, {}).get(key)
    if known is None or time.monotonic() - known[0] >= READER_SIZES_EVERY:
        return None
    return known[1]


def _remember_size(conn, key, n) -> None:
    sizes = _reader_sizes.setdefault(conn, {})
    if len(sizes) >= READER_SIZES_MAX:
        sizes.clear()
    sizes[key] = (time.monotonic(), n)


async def _sqlite_sizes(conn, uid, f: Filters) -> tuple[int, int]:
    """(messages the reader may see in the conversations searched, the
    newest message's id), both remembered as the reader's size is."""
    key = (uid, f.conversation_id)
    known = _known_size(conn, key)
    if known is not None:
        return known
    only, values = "", [str(uid)]
    if f.conversation_id is not None:
        only = ' AND mb."conversation_id" = ?2'
        values.append(str(uuid.UUID(f.conversation_id)))
    _n, r = await conn.execute_query(
        f'SELECT (SELECT {_READER_MESSAGES_SQLITE} FROM "memberships" mb '
        f'WHERE mb."user_id" = ?1{only}), (SELECT MAX("id") FROM "messages")', values)
    sizes = (int(r[0][0] or 0), int(r[0][1] or 0))
    _remember_size(conn, key, sizes)
    return sizes


# PostgreSQL: how many of the newest index entries the first pass may walk,
# for one token and for several (which all must match, so rarely fill a page
# by walking and are better gathered from the GIN index early).
PG_WINDOW = 20_000
PG_WINDOW_AND = 2_000
# Candidates fetched beyond what the page still needs: a few may be invisible
# to the reader (before they joined, after they left, deleted for them).
PG_SLACK = 8
# The reader's share of the newest entries, as a multiple of their share of
# all history: their chats may be busier lately than on average.
SHARE_MARGIN = 2.0
# What each source of candidates costs, relative to each other: reading one
# of the reader's own messages and its index entry (the conversations' walk),
# fetching one match of a single token from the GIN index (its table row is
# read to learn the conversation), and decoding one posting of the rarest
# term when several must match (the rows read are then only the few matching
# all). From the plans in docs/benchmarks.md.
CONVERSATION_ROW_COST = 5.0
GIN_MATCH_COST = 0.5
GIN_POSTING_COST = 0.06


def term_frequency(term: search_text.Term, prepared: dict | None, stats: TokenStats) -> float:
    """The share of index entries expected to match one term: a word stands
    for the indexed words it is a prefix of, a longer CJK term for a phrase
    that cannot be more common than its rarest bigram."""
    if term.prefix:
        known = (prepared or {}).get(term)
        if known is None:  # queried as a prefix: no telling how many words
            return 1.0
        return min(1.0, sum(stats.frequency(w) for w in known))
    return min(stats.frequency(tok) for tok in term.tokens())


def rarest_frequency(terms, prepared: dict | None, stats: TokenStats) -> float:
    """The expected share of entries matching all `terms`, counted as if all
    matched wherever the rarest does."""
    return min(term_frequency(t, prepared, stats) for t in terms)


def single_token(terms) -> bool:
    return len(terms) == 1 and len(terms[0].tokens()) == 1


def walk_may_fill(terms, prepared: dict | None, stats: TokenStats | None, window: int,
                  k: int, share: float = 1.0) -> bool:
    """Whether walking the newest `window` index entries can be expected to
    find `k` matches, `share` of the entries being the reader's. Counted as
    if all terms matched wherever the rarest does, so it errs towards
    walking: below that, the walk would read its whole window and find too
    few, and the GIN index gathers a rare term's few matches at once.
    Without statistics (a table never analysed), walk."""
    if stats is None:
        return True
    return window * share * rarest_frequency(terms, prepared, stats) >= k


def reader_share(reader_messages: int, indexed: int) -> float:
    """The share of the newest index entries expected in the reader's
    conversations, from their share of all messages (SHARE_MARGIN)."""
    return min(1.0, SHARE_MARGIN * reader_messages / max(1, indexed))


def conversations_pay(terms, prepared: dict | None, stats: TokenStats | None,
                      reader_messages: int, indexed: int) -> bool:
    """Whether reading the reader's own conversations, newest first, costs
    less than the GIN index: their messages are few next to the term's
    matches in everyone's history. At worst it reads all `reader_messages`;
    the GIN index reads every match (one token) or decodes the rarest term's
    postings (several). Without statistics, never."""
    if stats is None:
        return False
    per_match = GIN_MATCH_COST if single_token(terms) else GIN_POSTING_COST
    return (reader_messages * CONVERSATION_ROW_COST
            <= indexed * rarest_frequency(terms, prepared, stats) * per_match)


async def _pg_page(conn, uid, terms, f: Filters, prepared, n: int,
                   columns: str = ROW_COLUMNS) -> list:
    """Up to `n` visible matches, newest first.

    Walking the index's primary key backwards is the best plan for a term
    found everywhere and the worst for a rare one (it reads the whole table);
    the GIN index is the reverse (it gathers every match, then sorts); and
    reading the reader's own conversations is best when they hold few
    messages next to the term's matches in everyone's. So candidates come
    from one of three sources, chosen from the index's statistics and the
    size of the reader's history: walking the newest PG_WINDOW entries of
    `message_search` in the reader's conversations, then the GIN index below
    them, where the term is common enough to fill the page in that window
    (`walk_may_fill`); the reader's conversations newest first where that
    pays (`conversations_pay`); otherwise the GIN index at once. Only the
    candidates are joined to messages and memberships for the visibility
    rule, so the planner never has to guess how many of a term's matches one
    reader sees. Filters on the message itself (sender, type, dates) are
    answered by one joined statement instead (`_pg_filtered_page`)."""
    if f.sender_id is not None or f.types or f.after is not None or f.before is not None:
        return await _pg_filtered_page(conn, uid, terms, f, prepared, n, columns)
    if nothing_matches(prepared):
        return []
    conversations, top, newest, reader_messages = await _pg_scope(conn, uid, f)
    if not conversations:
        return []
    window = PG_WINDOW if single_token(terms) else PG_WINDOW_AND
    floor = max(0, top - window)
    stats = await backend_for(True).token_stats(conn)
    share = reader_share(reader_messages, newest)
    walking = walk_may_fill(terms, prepared, stats, window, n + PG_SLACK, share)
    mine = not walking and conversations_pay(terms, prepared, stats, reader_messages, newest)
    out: list = []
    pending: tuple[int, ...] = ()
    while len(out) < n:
        k = n - len(out) + PG_SLACK - len(pending)
        if mine:
            ids = await _pg_conversation_candidates(conn, uid, f, terms, prepared, top, k)
        else:
            ids = await _pg_candidates(conn, conversations, terms, prepared, top,
                                       floor if walking else 0, k, walking)
        last = False
        if len(ids) == k:
            top = ids[-1]  # more candidates below the last one, same pass
        elif walking and floor > 0:
            walking, top = False, floor + 1  # then the GIN index below the window
            if len(ids) < n - len(out):
                # Too few to fill the page even if all are visible: joined
                # for visibility with the GIN pass's, in one statement.
                pending = tuple(ids)
                continue
        else:
            last = True
        batch, pending = pending + tuple(ids), ()
        if batch:
            picked = replace(f, below_id=None, above_id=None, ids=batch)
            out += await _page(conn, True, uid, terms, picked, prepared, n - len(out),
                               columns=columns)
        if last:
            break
    return out


async def _pg_top(conn) -> int:
    _n, r = await conn.execute_query(_PG_TOP)
    return (r[0][0] or 0) + 1


_PG_TOP = 'SELECT MAX("message_id") FROM "message_search"'


async def _pg_scope(conn, uid, f: Filters) -> tuple[list[uuid.UUID], int, int, int]:
    """(the conversations to search, the index entry to start below, the
    newest entry + 1, how many messages the reader may see in them), in one
    round trip: each costs the server more than these index reads."""
    key = (uid, f.conversation_id)
    known = _known_size(conn, key)
    only, values = "", [uid]
    if f.conversation_id is not None:
        only = ' AND mb."conversation_id" = $2'
        values.append(uuid.UUID(f.conversation_id))
    counted = "NULL" if known is not None else _READER_MESSAGES_PG
    _n, r = await conn.execute_query(
        f'SELECT ARRAY_AGG(mb."conversation_id"), {counted}, ({_PG_TOP}) '
        f'FROM "memberships" mb WHERE mb."user_id" = $1{only}', values)
    conversations, counted, newest = r[0]
    if known is None:
        known = int(counted)
        _remember_size(conn, key, known)
    reader_messages = known
    newest = (newest or 0) + 1
    top = f.below_id if f.below_id is not None else newest
    return list(conversations or ()), top, newest, reader_messages


async def _pg_candidates(conn, conversations: list[uuid.UUID], terms, prepared, top: int,
                         floor: int, k: int, walking: bool) -> list[int]:
    """Ids of up to `k` index entries below `top` (and above `floor`) in the
    given conversations that match, newest first. Everything is a literal
    (ids, uuids and the tsquery), so each statement is planned for its own
    values: a generic plan cannot tell a window walk from a full-table one.
    `walking` False orders by an expression so the planner takes the GIN
    index and sorts rather than walking the primary key; `walking` True
    matches through the operator's function, which GIN cannot serve, so the
    planner walks: for exact words it would otherwise gather all of their
    matches from GIN to keep the few inside the window."""
    inside = ",".join(str(c) for c in conversations)
    query = tsquery_sql(terms, prepared)
    match = f's."doc" @@ {query}' if not walking else f'ts_match_vq(s."doc", {query})'
    sql = ('SELECT s."message_id" FROM "message_search" s '
           f"WHERE s.\"conversation_id\" = ANY('{{{inside}}}'::uuid[]) "
           f'AND s."message_id" < {int(top)} AND s."message_id" > {int(floor)} '
           f'AND {match} '
           f'ORDER BY s."message_id"{"" if walking else " + 0"} DESC LIMIT {int(k)}')
    _n, rows = await conn.execute_query(sql)
    return [row[0] for row in rows]


async def _pg_conversation_candidates(conn, uid: uuid.UUID, f: Filters, terms, prepared,
                                      top: int, k: int) -> list[int]:
    """Ids of up to `k` messages below `top` that match, newest first, read
    from each of the reader's conversations (inside their window, through the
    messages' conversation index) and matched through the operator's
    function, so the GIN index is not used. Literals, as in _pg_candidates."""
    query = tsquery_sql(terms, prepared)
    only = (f" AND mb.\"conversation_id\" = '{uuid.UUID(f.conversation_id)}'"
            if f.conversation_id is not None else "")
    sql = ('SELECT x."id" FROM "memberships" mb, LATERAL ('
           ' SELECT m."id" FROM "messages" m '
           ' JOIN "message_search" s ON s."message_id" = m."id" '
           ' WHERE m."conversation_id" = mb."conversation_id" '
           ' AND m."seq" > mb."visible_from_seq" '
           ' AND (mb."left_seq" IS NULL OR m."seq" <= mb."left_seq") '
           f' AND m."id" < {int(top)} AND ts_match_vq(s."doc", {query}) '
           f' ORDER BY m."id" DESC LIMIT {int(k)}) x '
           f"WHERE mb.\"user_id\" = '{uuid.UUID(str(uid))}'{only} "
           f'ORDER BY x."id" DESC LIMIT {int(k)}')
    _n, rows = await conn.execute_query(sql)
    return [row[0] for row in rows]


async def _pg_filtered_page(conn, uid, terms, f: Filters, prepared, n: int,
                            columns: str) -> list:
    """The page for searches filtered on the message itself, in joined
    statements: the newest PG_WINDOW index entries first, then the GIN index
    below them."""
    top = f.below_id if f.below_id is not None else await _pg_top(conn)
    floor = max(0, top - PG_WINDOW)
    first = replace(f, below_id=top, above_id=floor)
    rows = await _page(conn, True, uid, terms, first, prepared, n, columns=columns)
    if len(rows) >= n or floor == 0:
        return rows
    rest = replace(f, below_id=floor + 1, above_id=None)
    return rows + await _page(conn, True, uid, terms, rest, prepared, n - len(rows),
                              by_index=False, columns=columns)


async def _conversations_with_matches(deps: Deps, uid: uuid.UUID, terms, limit: int
                                      ) -> list[dict]:
    conn, pg = _db()
    prepared = await backend_for(pg).prepare(conn, terms)
    # Counted over the newest BOX_SCAN matches (the box answers as one types);
    # `more` says a conversation may have older ones beyond that.
    hits = await _matches(conn, pg, uid, terms, Filters(), prepared, BOX_SCAN + 1,
                          HIT_COLUMNS)
    capped = len(hits) > BOX_SCAN
    counts: dict = {}
    latest_of: dict = {}  # newest first: a conversation's first hit is its latest
    for mid, cid in hits:
        counts[cid] = counts.get(cid, 0) + 1
        latest_of.setdefault(cid, mid)
    rows = [(cid, counts[cid], mid) for cid, mid in latest_of.items()][:limit]
    if not rows:
        return []
    latest_ids = [r[2] for r in rows]
    p = _Params(pg)
    u = p(uid if pg else str(uid), "::uuid" if pg else "")
    ids = ", ".join(p(i) for i in latest_ids)
    _n, latest_rows = await conn.execute_query(
        f'SELECT {ROW_COLUMNS} FROM "messages" m JOIN "memberships" mb '
        f'ON mb."conversation_id" = m."conversation_id" AND mb."user_id" = {u} '
        f'{_reply_join(u)} WHERE m."id" IN ({ids})', p.values)
    latest = {r[0]: r for r in latest_rows}
    memberships = {str(m.conversation_id): m for m in await Membership.filter(
        user_id=uid, conversation_id__in=[str(r[0]) for r in rows]
    ).select_related("conversation")}
    summaries = {s["id"]: s for s in await convs.summaries(deps, uid, list(memberships.values()))}
    out = []
    for cid, n, latest_id in rows:
        s = summaries.get(str(cid))
        if s is None or latest_id not in latest:
            continue
        out.append({"conversation": s, "match_count": int(n), "more": capped,
                    **_latest(latest[latest_id], terms, deps, uid)})
    return out


def _latest(row, terms, deps, uid) -> dict:
    r = _result(row, terms, deps, str(uid))
    return {"latest": r["message"], "highlights": r["highlights"]}


async def _contacts(deps: Deps, uid: uuid.UUID, q: str, limit: int) -> list[dict]:
    from app.services import contacts

    rows = await Contact.filter(owner_id=uid).select_related("contact")
    found = [c for c in rows if search_text.name_matches(
        q, c.remark, c.contact.display_name, c.contact.username)]
    found.sort(key=lambda c: ((c.remark or c.contact.display_name).casefold(),
                              str(c.contact_id)))
    return await contacts.contacts_out(deps, uid, found[:limit])


async def _groups(deps: Deps, uid: uuid.UUID, q: str, limit: int) -> list[dict]:
    ms = await Membership.filter(user_id=uid, left_at=None,
                                 conversation__type="group").select_related("conversation")
    found = [m for m in ms if search_text.name_matches(q, m.conversation.title)]
    found.sort(key=lambda m: m.conversation.last_message_at or m.conversation.created_at,
               reverse=True)
    return await convs.summaries(deps, uid, found[:limit])


async def search_all(deps: Deps, user_id: str, data: SearchAllIn) -> dict:
    """The one search box: contacts, group chats and chats with matching messages."""
    terms = parse_terms(data.q)
    uid = convs.parse_uuid(user_id, "user")
    await _hit_limit(deps, user_id)

    async def run() -> dict:
        return {
            "contacts": await _contacts(deps, uid, data.q, data.limit),
            "groups": await _groups(deps, uid, data.q, data.limit),
            "conversations_with_matches": await _conversations_with_matches(
                deps, uid, terms, data.limit) if deps.settings.search_index else [],
        }

    return await replicas.read(deps, run)


# --- index maintenance -----------------------------------------------------------


async def reindex_message(message_id: int, conn=None) -> None:
    """Bring one message's index entry in line with the stored message: call it
    in the same transaction (`conn`) as any change of a message's text, caption
    or data (edits), after recall and delete-for-everyone. A recalled, system
    or missing message leaves the index."""
    conn = conn or Tortoise.get_connection("default")
    pg = is_postgres(conn)
    msg = await Message.filter(id=message_id).using_db(conn).first()
    tokens: list[str] = []
    cid = None
    if msg is not None:
        cid = msg.conversation_id
        if msg.recalled_at is None:
            tokens = item_tokens(msg.type, msg.text, msg.data)
    await backend_for(pg).replace(conn, [(message_id, cid, tokens)])


async def ensure_schema(conn=None) -> None:
    conn = conn or Tortoise.get_connection("default")
    await backend_for(is_postgres(conn)).ensure_schema(conn)


async def backfill(batch: int = 2000, *, progress=None) -> int:
    """Index every stored message the index lacks, in short transactions of
    `batch` messages (newest first: recent history is searchable first), so
    writers are never held up for long; then (PostgreSQL) list every word of
    the index in the word list, which servers older than the list did not
    write. Safe to run while the server runs and to run again: returns how
    many messages it indexed."""
    conn, pg = _db()
    backend = backend_for(pg)
    await backend.ensure_schema(conn)
    done = 0
    below = None
    from tortoise.transactions import in_transaction

    while True:
        q = Message.filter(recalled_at=None, type__in=SEARCHABLE_TYPES).order_by("-id")
        if below is not None:
            q = q.filter(id__lt=below)
        rows = await q.limit(batch).values("id", "conversation_id", "type", "text", "data")
        if not rows:
            if pg:
                await backend.fill_words(conn)
            return done
        below = rows[-1]["id"]
        ids = [r["id"] for r in rows]
        have = await _indexed(conn, pg, ids)
        todo = [(r["id"], r["conversation_id"],
                 item_tokens(r["type"], r["text"], r["data"])) for r in rows
                if r["id"] not in have and message_texts(r["type"], r["text"], r["data"])]
        if todo:
            async with in_transaction() as tx:
                await backend.replace(tx, todo)
            done += len(todo)
        if progress is not None:
            progress(done)


async def _indexed(conn, pg: bool, ids: list[int]) -> set[int]:
    marks = ", ".join(f"${i}" if pg else f"?{i}" for i in range(1, len(ids) + 1))
    if pg:
        sql = f'SELECT "message_id" FROM "message_search" WHERE "message_id" IN ({marks})'
    else:  # in the index, or waiting in its pending list (search_index.SqliteFts5)
        sql = (f'SELECT rowid FROM "message_search" WHERE rowid IN ({marks}) UNION '
               f'SELECT "id" FROM "message_search_pending" WHERE "id" IN ({marks})')
    _n, rows = await conn.execute_query(sql, ids)
    return {r[0] for r in rows}


def cursor_for(message_id: int) -> str:
    return _encode_cursor(message_id)



async def backfill_command(database_url: str, batch: int) -> int:
    """`python -m app search-backfill`: connect, backfill, disconnect."""
    from app.db import init_db

    ctx = await init_db(database_url)
    try:
        return await backfill(batch)
    finally:
        await ctx.close_connections()
