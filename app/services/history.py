"""Reading messages: history pages, sync after reconnect, and the one serialiser.

The REST route and the socket `history` / `sync` events all come through here.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Annotated, NamedTuple

import msgspec
from tortoise import Tortoise

from app import replicas
from app.deps import Deps
from app.errors import Invalid, NotFound
from app.models.messaging import Conversation, HiddenMessage, Membership, Message
from app.services import conversations as convs
from app.services.message_changes import attach_mine
from app.services.sql import is_postgres, select_joined
from app.validation import Id, Payload, Seq

SeqValue = Seq
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=200)]


class HistoryIn(Payload):
    conversation_id: Id
    before_seq: SeqValue | None = None
    limit: PageLimit = 50
    # A page centred on this seq (opening a chat at a found message).
    around_seq: SeqValue | None = None


SyncPageSize = Annotated[int, msgspec.Meta(ge=1, le=100)]


class SyncIn(Payload):
    cursors: dict[Id, SeqValue] = {}
    limit: PageLimit = 100
    # Paging across conversations: `next_cursor` of the previous answer.
    cursor: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    conversation_limit: SyncPageSize = 50
    # Change cursors: per conversation, the `change_seq` of the previous answer.
    changes: dict[Id, SeqValue] = {}



# --- serialisation ----------------------------------------------------------
#
# One serialiser for every message a client sees (history, sync, summaries, the
# send path), working on plain rows: history pages come straight from the
# connection as tuples, so no Tortoise model is built per message. Model objects
# (the send path, summaries) are turned into the same row shape first.
#
# Row shape (ROW_COLUMNS): the message, then its reply target (all None without one).
ROW_COLUMNS = (
    'm."id", m."conversation_id", m."seq", m."sender_id", m."type", m."text", '
    'm."client_msg_id", m."reply_to_id", m."data", m."created_at", m."recalled_at", '
    'r."id" AS r_id, r."seq" AS r_seq, r."sender_id" AS r_sender_id, r."type" AS r_type, '
    'r."text" AS r_text, r."recalled_at" AS r_recalled_at'
)
_EXTRA_KEYS = ("system", "mentions", "mention_all", "media",
               # Richer messages (app/services/message_changes.py, forwarding.py).
               "forwarded", "edited_at", "reactions", "pinned", "chat_record",
               "contact_card", "location")
_json_decode = msgspec.json.decode


def _iso(value) -> str:
    """A stored timestamp as Tortoise hands it out (aware, UTC), in ISO 8601."""
    if value.__class__ is str:  # SQLite keeps text: Tortoise writes str(aware UTC datetime)
        n = len(value)
        if value.endswith("+00:00") and (
                (n == 25 and value[19] == "+")
                or (n == 32 and value[19] == "." and value[20:26] != "000000")):
            # Already what isoformat() gives, give or take the separator.
            return value if value[10] == "T" else f"{value[:10]}T{value[11:]}"
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    return value.isoformat()


def unavailable_preview(reply_to) -> dict:
    """The preview of a message the reader may not see (sent before they joined,
    deleted for them): it says only that the original is unavailable."""
    return {"id": str(reply_to), "seq": None, "sender_id": None, "type": None, "text": "",
            "recalled": False, "unavailable": True}


def serialize_row(row, deps: Deps | None, viewer=None) -> dict:
    """`viewer`: whom the media links are signed for (see services.media).
    A row whose reply columns are empty although it has `reply_to` quotes a
    message the reader may not see."""
    (mid, cid, seq, sender, mtype, text, client_msg_id, reply_to, data, created, recalled_at,
     rid, rseq, rsender, rtype, rtext, rrecalled_at, *_extra) = row
    recalled = recalled_at is not None
    out = {
        "id": str(mid),
        "conversation_id": str(cid),
        "seq": seq,
        "sender_id": str(sender) if sender else None,
        "type": mtype,
        "text": "" if recalled else text,
        "client_msg_id": client_msg_id,
        "reply_to": str(reply_to) if reply_to else None,
        "created_at": _iso(created),
        "recalled": recalled,
    }
    if rid is not None:
        out["reply_preview"] = {
            "id": str(rid),
            "seq": rseq,
            "sender_id": str(rsender) if rsender else None,
            "type": rtype,
            "text": "" if rrecalled_at else rtext[:200],
            "recalled": rrecalled_at is not None,
        }
    elif reply_to:
        out["reply_preview"] = unavailable_preview(reply_to)
    if data is not None and not recalled:
        if data.__class__ is str:  # JSON text from the connection
            data = _json_decode(data)
        if data:
            # Extra typed data: system events, mentions, media (added by their issues).
            for key in _EXTRA_KEYS:
                if key in data:
                    out[key] = data[key]
            if "media" in data or "chat_record" in data:
                sign_media(out, deps, viewer)
    return out


def sign_media(out: dict, deps: Deps | None, viewer) -> dict:
    """Sign the media links of a serialised message (its own media, the media of
    a chat record's items) for `viewer`, in place. Links are signed per read,
    never stored with the message."""
    from app.services import media

    if "media" in out:
        out["media"] = media.public_media(out["media"], deps, viewer)
    record = out.get("chat_record")
    if record and any("media" in it for it in record.get("items", ())):
        out["chat_record"] = {**record, "items": [
            {**it, "media": media.public_media(it["media"], deps, viewer)} if "media" in it
            else it for it in record["items"]]}
    return out


def per_reader(message: dict) -> bool:
    """Whether this message carries links signed per reader."""
    if "media" in message:
        return True
    record = message.get("chat_record")
    return bool(record) and any("media" in it for it in record.get("items", ()))


def _model_row(msg: Message, reply: Message | None) -> tuple:
    head = (msg.id, msg.conversation_id, msg.seq, msg.sender_id, msg.type, msg.text,
            msg.client_msg_id, msg.reply_to_id, msg.data, msg.created_at, msg.recalled_at)
    if reply is None:
        return head + (None,) * 6
    return head + (reply.id, reply.seq, reply.sender_id, reply.type, reply.text,
                   reply.recalled_at)


async def serialize_messages(rows: list[Message], viewer_id=None, deps: Deps | None = None
                             ) -> list[dict]:
    """Message model objects → what `viewer_id` gets (reply previews in one query,
    limited to what the viewer may see in two more)."""
    reply_ids = {m.reply_to_id for m in rows if m.reply_to_id}
    replies = {}
    if reply_ids:
        replies = {r.id: r for r in await Message.filter(id__in=reply_ids)}
        if viewer_id is not None:
            for rid in await _unseen(viewer_id, list(replies.values())):
                del replies[rid]
    return [serialize_row(_model_row(m, replies.get(m.reply_to_id)), deps, viewer_id)
            for m in rows]


async def _unseen(viewer_id, targets: list[Message]) -> set[int]:
    """Ids of these messages the viewer may not see: outside their window, or
    deleted for them (recalled ones stay: their tombstone is visible)."""
    windows = {m.conversation_id: m for m in await Membership.filter(
        user_id=viewer_id, conversation_id__in={t.conversation_id for t in targets})}
    hidden = set(await HiddenMessage.filter(
        user_id=viewer_id, message_id__in=[t.id for t in targets]
    ).values_list("message_id", flat=True))
    out = set()
    for t in targets:
        m = windows.get(t.conversation_id)
        if (m is None or t.seq <= m.visible_from_seq or t.id in hidden
                or (m.left_seq is not None and t.seq > m.left_seq)):
            out.add(t.id)
    return out


async def serialize_message(msg: Message, deps: Deps | None = None, viewer_id=None) -> dict:
    return (await serialize_messages([msg], viewer_id, deps=deps))[0]


async def reply_unseen_by(conversation_id, reply: Message, user_ids) -> set[str]:
    """Who among `user_ids` may not see `reply` (the message a new one quotes):
    they get the new message with an unavailable preview."""
    ids = [str(u) for u in user_ids]
    out = {str(u) for u in await Membership.filter(
        conversation_id=conversation_id, user_id__in=ids, visible_from_seq__gte=reply.seq
    ).values_list("user_id", flat=True)}
    out |= {str(u) for u in await HiddenMessage.filter(
        user_id__in=ids, message_id=reply.id).values_list("user_id", flat=True)}
    return out


async def audience_views(deps: Deps, message: dict, recipients, reply: Message | None,
                         ) -> list[tuple[list[str], dict]]:
    """A new message as each recipient may see it, grouped: (users, payload).

    Usually one group: everybody gets the same payload in one emit. A reply
    whose original some recipients may not see splits off a group with an
    unavailable preview; a media message carries links signed per user, so
    each recipient gets their own payload."""
    signed = per_reader(message)
    if reply is None and not signed:
        return [(recipients, message)]  # the common case: nothing per reader
    recipients = [str(u) for u in recipients]
    blind: set[str] = set()
    if reply is not None and "reply_preview" in message:
        blind = await reply_unseen_by(message["conversation_id"], reply, recipients)
    if not signed:
        if not blind:
            return [(recipients, message)]
        hidden_view = {**message, "reply_preview": unavailable_preview(message["reply_to"])}
        seeing = [u for u in recipients if u not in blind]
        return [g for g in ((seeing, message), ([u for u in recipients if u in blind],
                                                 hidden_view)) if g[0]]

    out = []
    for u in recipients:
        view = sign_media(dict(message), deps, u)
        if u in blind:
            view["reply_preview"] = unavailable_preview(message["reply_to"])
        out.append(([u], view))
    return out


# --- reading ----------------------------------------------------------------
#
# A page is one statement: the reader's membership (visibility window
# (visible_from_seq, left_seq]), the messages in it minus the ones the reader
# hid (NOT EXISTS on the hidden_messages unique index), and each message's
# reply target (LEFT JOIN), newest-first or oldest-first, limit + 1 rows to
# learn `has_more`. Several pages (sync) go out as one UNION ALL.

_MAX_SEQ = 2**63 - 1
_SYNC_CHUNK = 100  # pages per statement (SQLite caps compound SELECTs at 500 terms)


def _page_sql(pg: bool, n: int, desc: bool, counted: bool = False) -> str:
    """The page statement for parameters $n…$n+4 (SQLite: ?n…): conversation, user,
    lower bound (exclusive), upper bound (inclusive), limit; `counted` adds two,
    a seq range (exclusive, inclusive) whose unread messages (conversations.
    unread_count's rule) come back in the extra last column of every row.

    The reader's window comes from scalar subqueries on the membership (evaluated
    once, then used as the index range on (conversation_id, seq)); a joined
    membership row made PostgreSQL walk the index and filter instead. Not a
    member: the bounds are NULL and the page is empty."""
    c, u, lo, hi, lim, rlo, rhi = ((f"${i}" if pg else f"?{i}") for i in range(n, n + 7))
    if pg:
        c, u = f"{c}::uuid", f"{u}::uuid"
    greatest, least = ("GREATEST", "LEAST") if pg else ("MAX", "MIN")
    member = f'FROM "memberships" mb WHERE mb."conversation_id" = {c} AND mb."user_id" = {u}'
    unread = "CAST(NULL AS BIGINT)"
    if counted:
        # Not correlated with the row: computed once per statement.
        unread = (f'(SELECT COUNT(*) FROM "messages" x WHERE x."conversation_id" = {c} '
                  f'AND x."seq" > {rlo} AND x."seq" <= {rhi} AND x."recalled_at" IS NULL '
                  f'AND NOT x."type" = \'system\' AND NOT x."sender_id" = {u})')
    return (
        f'SELECT {ROW_COLUMNS}, {unread} AS unread FROM "messages" m '
        # The quoted message only if the reader may see it (their window, not
        # deleted for them); otherwise its columns are NULL: "unavailable".
        'LEFT JOIN "messages" r ON r."id" = m."reply_to_id" '
        f'AND r."seq" > (SELECT mb."visible_from_seq" {member}) '
        'AND NOT EXISTS (SELECT 1 FROM "hidden_messages" hr '
        f'WHERE hr."user_id" = {u} AND hr."message_id" = r."id") '
        f'WHERE m."conversation_id" = {c} '
        f'AND m."seq" > (SELECT {greatest}(mb."visible_from_seq", {lo}) {member}) '
        f'AND m."seq" <= (SELECT {least}(COALESCE(mb."left_seq", {_MAX_SEQ}), {hi}) {member}) '
        'AND NOT EXISTS (SELECT 1 FROM "hidden_messages" h '
        f'WHERE h."user_id" = {u} AND h."message_id" = m."id") '
        f'ORDER BY m."seq" {"DESC" if desc else "ASC"} LIMIT {lim}'
    )


_SQL_CACHE: dict = {}


def _pages_sql(pg: bool, shapes: tuple[tuple[bool, bool], ...]) -> str:
    """One statement for pages of the given shapes: (newest first, counted)."""
    key = (pg, shapes)
    sql = _SQL_CACHE.get(key)
    if sql is None:
        if len(shapes) == 1:
            sql = _page_sql(pg, 1, *shapes[0])
        else:
            # Each page keeps its own ORDER BY / LIMIT inside a derived table.
            terms, n = [], 1
            for i, (desc, counted) in enumerate(shapes):
                terms.append(f"SELECT * FROM ({_page_sql(pg, n, desc, counted)}) AS p{i}")
                n += 7 if counted else 5
            sql = " UNION ALL ".join(terms)
        if len(_SQL_CACHE) < 512:
            _SQL_CACHE[key] = sql
    return sql


def _db():
    conn = Tortoise.get_connection("default")
    return conn, is_postgres(conn)


def _uuid_param(pg: bool, value: uuid.UUID):
    return value if pg else str(value)


class PageSpec(NamedTuple):
    conversation_id: uuid.UUID
    after: int | None = None   # ascending from here (exclusive)
    before: int | None = None  # descending from here (exclusive); both None: newest
    limit: int = 50
    unread: tuple[int, int] | None = None  # also count unread in (read_seq, last]


async def _fetch_pages(user_id: uuid.UUID, specs: list[PageSpec]) -> list[list]:
    """Raw rows per spec (in the spec's own order: newest first unless `after`)."""
    if not specs:
        return []
    conn, pg = _db()
    uid = _uuid_param(pg, user_id)
    out: list[list] = []
    for start in range(0, len(specs), _SYNC_CHUNK):
        chunk = specs[start:start + _SYNC_CHUNK]
        params: list = []
        shapes = []
        for s in chunk:
            desc = s.after is None
            shapes.append((desc, s.unread is not None))
            lo = s.after if s.after is not None else 0
            hi = s.before - 1 if s.before is not None else _MAX_SEQ
            params += [_uuid_param(pg, s.conversation_id), uid, lo, hi, s.limit + 1]
            if s.unread is not None:
                params += s.unread
        _n, rows = await conn.execute_query(_pages_sql(pg, tuple(shapes)), params)
        if len(chunk) == 1:
            out.append(list(rows))
            continue
        by_conv: dict[str, list] = {str(s.conversation_id): [] for s in chunk}
        for row in rows:
            by_conv[str(row[1])].append(row)
        for s in chunk:  # UNION ALL promises no order: restore each page's own
            page = by_conv[str(s.conversation_id)]
            page.sort(key=_seq_of, reverse=s.after is None)
            out.append(page)
    return out


def _seq_of(row) -> int:
    return row[2]


def _finish(rows: list, spec: PageSpec, deps: Deps | None, viewer
            ) -> tuple[list[dict], bool]:
    has_more = len(rows) > spec.limit
    rows = rows[:spec.limit]
    if spec.after is None:
        rows.reverse()
    return [serialize_row(r, deps, viewer) for r in rows], has_more


async def _is_reader(conversation_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    return await Membership.filter(conversation_id=conversation_id, user_id=user_id).exists()


async def _replayed(cid: uuid.UUID, known: int | None) -> None:
    """On a read replica: send the read to the primary when the client already
    knows seq `known` of this conversation and the replica has not replayed it
    (a message and its conversation's last_seq commit together)."""
    if known is None or known <= 0 or not replicas.on_replica():
        return
    last = await Conversation.filter(id=cid).values_list("last_seq", flat=True)
    replicas.stale(not last or last[0] < known)


async def history(deps: Deps, user_id: str, data: HistoryIn) -> dict:
    """The page before `before_seq` (the newest without), ascending.

    One statement in the common case; an empty page costs one more to tell
    "nothing there" from "not a member" (NotFound). Served by a read replica
    when one is fit and has replayed the page's anchor (app/replicas.py)."""
    cid = convs.parse_uuid(data.conversation_id)
    uid = convs.parse_uuid(user_id, "user")
    return await replicas.read(deps, lambda: _history(deps, user_id, uid, cid, data))


async def _history(deps: Deps, user_id: str, uid: uuid.UUID, cid: uuid.UUID,
                   data: HistoryIn) -> dict:
    if data.around_seq is not None:
        await _replayed(cid, data.around_seq)
    elif data.before_seq is not None:
        await _replayed(cid, data.before_seq - 1)
    if data.around_seq is not None:
        return await _around(deps, user_id, uid, cid, data)
    spec = PageSpec(cid, before=data.before_seq, limit=data.limit)
    rows = (await _fetch_pages(uid, [spec]))[0]
    if not rows and not await _is_reader(cid, uid):
        raise NotFound(convs.NO_SUCH_CONVERSATION)
    messages, has_more = _finish(rows, spec, deps, user_id)
    return {"messages": await attach_mine(user_id, messages), "has_more": has_more}


async def _around(deps: Deps, user_id: str, uid: uuid.UUID, cid: uuid.UUID,
                  data: HistoryIn) -> dict:
    """Up to `limit` messages around `around_seq`, ascending: the message at
    that seq (when visible) and those before it, then those after; `has_more`
    says there is more before, `has_more_after` more after (page on with
    `before_seq` = the first seq, and `sync` / history after the last)."""
    if data.before_seq is not None:
        raise Invalid("Give before_seq or around_seq, not both.",
                      details={"field": "around_seq"})
    older_n = max(1, (data.limit + 1) // 2)
    older = PageSpec(cid, before=min(data.around_seq, _MAX_SEQ - 1) + 1, limit=older_n)
    newer = PageSpec(cid, after=data.around_seq, limit=max(1, data.limit - older_n))
    old_rows = (await _fetch_pages(uid, [older]))[0]
    new_rows = (await _fetch_pages(uid, [newer]))[0]
    if not old_rows and not new_rows and not await _is_reader(cid, uid):
        raise NotFound(convs.NO_SUCH_CONVERSATION)
    before, has_more = _finish(old_rows, older, deps, user_id)
    after, has_more_after = _finish(new_rows, newer, deps, user_id)
    if data.limit == 1:
        after, has_more_after = [], bool(new_rows)
    return {"messages": before + after, "has_more": has_more,
            "has_more_after": has_more_after}


async def memberships_of(user_id: uuid.UUID) -> list[Membership]:
    """Every membership of the user with its conversation; sync runs on every
    reconnect, so from one cached statement (sql.select_joined)."""
    return await select_joined(Membership, "conversation", "user_id", user_id,
                               order_by="id")


async def sync(deps: Deps, user_id: str, data: SyncIn) -> dict:
    """What changed since the client's cursors: missed messages in order, plus read state.

    A conversation absent from `cursors` returns its summary and newest page.
    At most `conversation_limit` conversations per answer, in membership order;
    `next_cursor` (None at the end) asks for the next page.
    A constant number of statements however many conversations the user has:
    memberships, then every page with its unread count (UNION ALL, 100 pages per
    statement), mention counts (groups only) and the summaries of the
    conversations the device did not know. A reconnecting client whose chats
    are all known: two statements.

    With read replicas, the memberships come from the primary and the rest
    from a fit replica that has replayed every one of them as the primary has
    it (each conversation's last_seq and change_seq, the reader's marks and
    window); else the primary answers (app/replicas.py). So a reconnecting
    client never misses a message whose event it lost, however far behind a
    replica is.
    """
    uid = convs.parse_uuid(user_id, "user")
    after = _decode_sync_cursor(data.cursor) if data.cursor else 0
    memberships = await memberships_of(uid)  # ordered by membership id
    return await replicas.read(deps, lambda: _sync(deps, user_id, uid, after, data,
                                                   memberships))


def _sync_view(memberships: list[Membership]) -> dict:
    """What a sync answer is built from, per membership: the replica must show
    exactly this (the primary's) before it may answer."""
    return {m.id: (m.conversation.last_seq, m.conversation.change_seq, m.read_seq,
                   m.visible_from_seq, m.left_seq, m.left_at is None) for m in memberships}


async def _sync(deps: Deps, user_id: str, uid: uuid.UUID, after: int, data: SyncIn,
                memberships: list[Membership]) -> dict:
    if replicas.on_replica():
        primary = memberships
        memberships = await memberships_of(uid)
        replicas.stale(_sync_view(memberships) != _sync_view(primary))
    # (m, page or None: only changes, is new to the device, change cursor)
    wanted: list[tuple[Membership, PageSpec | None, bool, int | None]] = []
    next_cursor = None
    for m in memberships:
        if m.id <= after:
            continue  # returned by an earlier page
        cid = str(m.conversation_id)
        cursor = data.cursors.get(cid)
        change_cursor = data.changes.get(cid) if cursor is not None else None
        changed = change_cursor is not None and m.conversation.change_seq > change_cursor
        if cursor is None:
            if m.left_at is not None:
                continue  # left before this device knew it: nothing to show
            spec = PageSpec(m.conversation_id, limit=data.limit)
        elif (last := convs.visible_last_seq(m)) > cursor:
            # The unread count rides along in the page statement (one round trip).
            unread = (m.read_seq, last) if last > m.read_seq else None
            spec = PageSpec(m.conversation_id, after=cursor, limit=data.limit, unread=unread)
        elif changed:
            spec = None  # nothing new, but held messages changed
        else:
            continue
        if len(wanted) == data.conversation_limit:
            # More to come: the next page starts after the last one returned.
            next_cursor = _encode_sync_cursor(wanted[-1][0].id)
            break
        wanted.append((m, spec, cursor is None, change_cursor if changed else None))
    if not wanted:
        return {"conversations": [], "next_cursor": None}
    fetched = iter(await _fetch_pages(uid, [w[1] for w in wanted if w[1] is not None]))
    pages = [next(fetched) if w[1] is not None else [] for w in wanted]
    new = [w[0] for w in wanted if w[2]]
    known = [w[0] for w in wanted if not w[2]]
    summaries = {}
    if new:
        for entry in await convs.summaries(deps, uid, new):
            summaries[entry["id"]] = entry
    unread = {}
    uncounted = []
    for (m, spec, is_new, _c), rows in zip(wanted, pages, strict=True):
        if is_new:
            continue
        if spec is None or spec.unread is None:
            if spec is None and convs.visible_last_seq(m) > m.read_seq:
                uncounted.append(m)
            continue
        if rows:
            unread[str(m.conversation_id)] = rows[0][-1]
        else:  # nothing visible came back (all hidden): count on its own
            uncounted.append(m)
    unread.update(await convs.unread_counts(uid, uncounted))
    mentions = await convs.mention_counts(uid, known)
    out = []
    for (m, spec, is_new, change_cursor), rows in zip(wanted, pages, strict=True):
        cid = str(m.conversation_id)
        if is_new:
            entry = summaries[cid]
        else:
            entry = {"id": cid, "last_seq": convs.visible_last_seq(m), "read_seq": m.read_seq,
                     "unread_count": unread.get(cid, 0),
                     "mention_count": mentions.get(cid, 0),
                     "left": m.left_at is not None}
        if spec is not None:
            entry["messages"], entry["has_more"] = _finish(rows, spec, deps, user_id)
        else:
            entry["messages"], entry["has_more"] = [], False
        await attach_mine(user_id, entry["messages"])
        entry["change_seq"] = m.conversation.change_seq
        if change_cursor is not None:
            held = data.cursors[cid]
            changes, more, upto = await _changes(deps, uid, m, held, change_cursor, data.limit)
            entry["changes"], entry["changes_more"] = changes, more
            entry["change_seq"] = upto
        out.append(entry)
    return {"conversations": out, "next_cursor": next_cursor}


async def _changes(deps: Deps, uid: uuid.UUID, m: Membership, held: int, after: int,
                   limit: int) -> tuple[list[dict], bool, int]:
    """Messages the device holds (seq <= held, inside the reader's window, not
    deleted for them) changed after change number `after`, in change order and
    in their current state; (messages, more to come, the next change cursor)."""
    hi = min(held, convs.visible_last_seq(m))
    rows = await Message.filter(
        conversation_id=m.conversation_id, change_seq__gt=after,
        seq__gt=m.visible_from_seq, seq__lte=hi).order_by("change_seq").limit(limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    if more:
        upto = rows[-1].change_seq
    else:
        # Changes commit in change order, so having seen the newest one
        # committed, none below it is still to come.
        upto = max([m.conversation.change_seq, *(r.change_seq for r in rows)])
    hidden = set(await HiddenMessage.filter(
        user_id=uid, message_id__in=[r.id for r in rows]).values_list("message_id", flat=True)
    ) if rows else set()
    shown = [r for r in rows if r.id not in hidden]
    return (await attach_mine(uid, await serialize_messages(shown, uid, deps)), more, upto)


# A sync page ends after a membership (memberships are visited in id order, so a
# conversation joined while a client pages shows up on a later page, never in a
# gap). Opaque to clients.


def _encode_sync_cursor(membership_id: int) -> str:
    return base64.urlsafe_b64encode(f"s{membership_id}".encode()).decode().rstrip("=")


def _decode_sync_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if raw[:1] != "s" or not raw[1:].isdigit():
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, UnicodeDecodeError):
        raise Invalid("Bad cursor.", details={"field": "cursor"}) from None
