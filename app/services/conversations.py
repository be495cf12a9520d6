"""Conversations and memberships: lookup, access checks, summaries, the chat list."""

from __future__ import annotations

import base64
import functools
import uuid
from datetime import UTC, datetime, timedelta

from tortoise import Tortoise
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from app.deps import Deps
from app.errors import Invalid, NotFound
from app.models.accounts import User
from app.models.groups import MessageMention
from app.models.messaging import Conversation, Membership, Message
from app.services import member_cache, send_rules
from app.services.accounts import public_user
from app.services.avatars import avatar_url
from app.services.sql import chat_list_page, is_postgres, send_facts_row
from app.validation import Payload, TextUUID

NO_SUCH_CONVERSATION = send_rules.NO_SUCH_CONVERSATION


# Every send parses its conversation's and its sender's id: the same few
# texts over and over. Bounded (about 1 MB), so unknown ids only push others out.
_known_id = functools.lru_cache(maxsize=4096)(TextUUID)


def parse_uuid(value, what: str = "conversation") -> uuid.UUID:
    try:
        return _known_id(str(value))
    except ValueError:
        raise NotFound(f"No such {what}.") from None


def direct_key(a, b) -> str:
    x, y = sorted((str(a), str(b)))
    return f"{x}:{y}"


async def active_membership(conversation_id, user_id) -> Membership:
    """The caller's current membership, with its conversation.

    Non-members and unknown ids get the same NotFound, so nobody learns
    whether a conversation they are not in exists.
    """
    cid = parse_uuid(conversation_id)
    m = await Membership.get_or_none(
        conversation_id=cid, user_id=user_id, left_at=None
    ).select_related("conversation")
    if m is None or m.conversation.dissolved_at is not None:
        raise NotFound(NO_SUCH_CONVERSATION)
    return m


async def send_facts(conversation_id, user_id) -> send_rules.SendFacts:
    """What a send (or an action on a message) is judged on, in one query:
    active_membership plus the direct-chat facts (send_rules.SendFacts)."""
    cid = parse_uuid(conversation_id)
    uid = parse_uuid(user_id, "user")
    row = await send_facts_row(Tortoise.get_connection("default"), cid, uid)
    return send_rules.facts_of_row(cid, uid, row)


async def readable_membership(conversation_id, user_id) -> Membership:
    """Like active_membership, but a member who left may still read what they saw."""
    cid = parse_uuid(conversation_id)
    m = await Membership.get_or_none(conversation_id=cid, user_id=user_id).select_related(
        "conversation"
    )
    if m is None:
        raise NotFound(NO_SUCH_CONVERSATION)
    return m


def visible_last_seq(m: Membership) -> int:
    last = m.conversation.last_seq
    return min(last, m.left_seq) if m.left_seq is not None else last


# --- who receives a conversation's events ------------------------------------
#
# Group member lists are cached per process (app/services/member_cache.py), keyed
# by the conversation's `updated_at`, which every membership change moves forward
# *in the same transaction* (bump_members_version). Callers ask after their own
# commit, so a removal committed before a message got its seq is always seen, on
# every process: checking the cache costs one primary-key lookup instead of
# reading up to MAX_GROUP_MEMBERS rows, and a stale list is never used. Direct
# chats never change members and are not cached (their lookup is two rows).
# New messages get their recipients from the message writer instead, read under
# the conversation's lock in the transaction that gives them their seq.

MEMBER_CACHE_SIZE = member_cache.MEMBER_CACHE_SIZE
_member_cache = member_cache._member_cache  # the same dict (tests poke at it)
_direct_ids: set[str] = set()  # conversation type never changes


async def _load_members(cid) -> list[str]:
    rows = await Membership.filter(conversation_id=cid, left_at=None).values_list(
        "user_id", flat=True
    )
    return [str(r) for r in rows]


async def member_ids(conversation_id, head: tuple | None = None) -> list[str]:
    """Users who currently receive this conversation's events. `head`: the
    conversation's (type, updated_at) when the caller has just read them."""
    key = str(conversation_id)
    if key in _direct_ids:
        return await _load_members(conversation_id)
    if head is None:
        rows = await Conversation.filter(id=conversation_id).values_list("type", "updated_at")
        if not rows:
            return []
        head = rows[0]
    ctype, version = head
    if ctype != "group":
        if len(_direct_ids) < MEMBER_CACHE_SIZE * 10:
            _direct_ids.add(key)
        return await _load_members(conversation_id)
    hit = member_cache.get(key, version)
    if hit is not None:
        return list(hit)
    # One statement, one snapshot: the list and the version it belongs to.
    rows = await Membership.filter(conversation_id=conversation_id, left_at=None).values_list(
        "user_id", "conversation__updated_at"
    )
    ids = tuple(str(u) for u, _v in rows)
    member_cache.put(key, rows[0][1] if rows else None, ids)
    return list(ids)


async def bump_members_version(conn, conversation_id, when: datetime) -> None:
    """Call inside the transaction of any membership change of a group.

    Moves `updated_at` strictly forward (even within one clock tick), which
    invalidates every process's cached member list for this conversation.
    Call it after the conversation row is locked (e.g. after next_seq).
    """
    current = await Conversation.filter(id=conversation_id).using_db(conn).values_list(
        "updated_at", flat=True
    )
    new = when
    if current and current[0] is not None and current[0] >= when:
        new = current[0] + timedelta(microseconds=1)
    await Conversation.filter(id=conversation_id).using_db(conn).update(updated_at=new)


async def get_or_create_direct(deps: Deps, user_id, peer_id) -> tuple[Conversation, bool]:
    """The one direct conversation of two users; race-free through UNIQUE(direct_key)."""
    if str(user_id) == str(peer_id):
        raise Invalid("You cannot start a chat with yourself.", details={"field": "user_id"})
    peer = await User.get_or_none(id=parse_uuid(peer_id, "user"))
    if peer is None:
        raise NotFound("No such user.")
    key = direct_key(user_id, peer.id)
    conv = await Conversation.get_or_none(direct_key=key)
    if conv is not None:
        return conv, False
    try:
        async with in_transaction() as conn:
            conv = await Conversation.create(id=uuid.uuid4(), type="direct", direct_key=key,
                                             using_db=conn)
            await Membership.bulk_create(
                [Membership(conversation=conv, user_id=u) for u in (user_id, peer.id)],
                using_db=conn,
            )
    except IntegrityError:
        return await Conversation.get(direct_key=key), False
    # Both people's chat lists learn of it, each with their own view (title, peer).
    for uid in (str(user_id), str(peer.id)):
        await deps.fanout.to_users([uid], "conversation:updated",
                                   await conversation_for(deps, uid, conv.id))
    return conv, True


# --- summaries --------------------------------------------------------------


async def unread_count(m: Membership, user_id) -> int:
    """Messages from others after my read_seq (recalled and system lines excluded)."""
    return await unread_between(m.conversation_id, user_id, m.read_seq, visible_last_seq(m))


async def unread_between(conversation_id, user_id, read_seq: int, last: int) -> int:
    """unread_count for a read mark and a last visible seq already known."""
    if last <= read_seq:
        return 0
    return (
        await Message.filter(
            conversation_id=conversation_id, seq__gt=read_seq, seq__lte=last,
            recalled_at=None,
        )
        .exclude(type="system")
        .exclude(sender_id=user_id)
        .count()
    )


async def unread_counts(user_id, memberships: list[Membership]) -> dict:
    """unread_count of each membership (conversation preloaded), batched:
    {conversation id: count}, only for conversations with something unread.

    One COUNT per conversation glued with UNION ALL (100 per statement), so every
    term keeps its own index range on (conversation_id, seq)."""
    todo = [(str(m.conversation_id), m.read_seq, visible_last_seq(m)) for m in memberships]
    todo = [t for t in todo if t[2] > t[1]]
    if not todo:
        return {}
    conn = Tortoise.get_connection("default")
    pg = is_postgres(conn)
    uid = parse_uuid(user_id, "user")
    out = {}
    for start in range(0, len(todo), 100):
        chunk = todo[start:start + 100]
        terms = []
        params: list = []
        for i, (cid, read_seq, last) in enumerate(chunk):
            if pg:
                c, lo, hi, u = (f"${4 * i + j}" for j in range(1, 5))
                c, u = f"{c}::uuid", f"{u}::uuid"
                params += [uuid.UUID(cid), read_seq, last, uid]
            else:
                c = lo = hi = u = "?"
                params += [cid, read_seq, last, str(uid)]
            # The same filter as unread_count (NOT … = : a NULL sender does not count).
            terms.append(
                f'SELECT {i} AS k, COUNT(*) AS n FROM "messages" WHERE "conversation_id" = {c} '
                f'AND "seq" > {lo} AND "seq" <= {hi} AND "recalled_at" IS NULL '
                f'AND NOT "type" = \'system\' AND NOT "sender_id" = {u}'
            )
        _n, rows = await conn.execute_query(" UNION ALL ".join(terms), params)
        for k, n in rows:
            out[chunk[k][0]] = n
    return out


async def mention_counts(user_id, memberships: list[Membership]) -> dict:
    """Unread messages that mention me or @all, per group conversation, in one query."""
    wanted = Q()
    any_wanted = False
    for m in memberships:
        last = visible_last_seq(m)
        if m.conversation.type == "group" and last > m.read_seq:
            wanted |= Q(conversation_id=m.conversation_id, seq__gt=m.read_seq, seq__lte=last)
            any_wanted = True
    if not any_wanted:
        return {}
    rows = (
        await MessageMention.filter(wanted)
        .filter(Q(user_id=user_id) | Q(user_id=None), message__recalled_at=None)
        .annotate(n=Count("id"))
        .group_by("conversation_id")
        .values_list("conversation_id", "n")
    )
    return {str(cid): n for cid, n in rows}


async def mention_count(m: Membership, user_id) -> int:
    return (await mention_counts(user_id, [m])).get(str(m.conversation_id), 0)


async def summaries(deps: Deps, user_id, memberships: list[Membership]) -> list[dict]:
    """Chat-list entries for these memberships (conversation preloaded), batched."""
    from app.services.history import serialize_messages

    if not memberships:
        return []
    # Last visible message of each conversation, in one query.
    wanted = Q()
    any_wanted = False
    for m in memberships:
        last = visible_last_seq(m)
        if last > 0:
            wanted |= Q(conversation_id=m.conversation_id, seq=last)
            any_wanted = True
    last_by_conv = {}
    if any_wanted:
        rows = await Message.filter(wanted)
        for msg, data in zip(rows, await serialize_messages(rows, user_id, deps), strict=True):
            last_by_conv[msg.conversation_id] = data
    # Direct chats show the other person.
    direct_ids = [m.conversation_id for m in memberships if m.conversation.type == "direct"]
    peers = {}
    peer_reads: dict = {}
    peer_delivered: dict = {}  # the peer's devices received up to (✓ under my messages)
    if direct_ids:
        for pm in await Membership.filter(conversation_id__in=direct_ids).exclude(
            user_id=user_id
        ).select_related("user"):
            peers[pm.conversation_id] = public_user(pm.user)
            # The peer's read mark ("Read" under my messages) unless they hide receipts.
            peer_reads[pm.conversation_id] = pm.read_seq if pm.user.send_read_receipts else None
            peer_delivered[pm.conversation_id] = pm.delivered_seq
    mentions = await mention_counts(user_id, memberships)
    unread = await unread_counts(user_id, memberships)
    out = []
    for m in memberships:
        cid = str(m.conversation_id)
        out.append(summary(m, peers.get(m.conversation_id), last_by_conv.get(m.conversation_id),
                           unread.get(cid, 0), mentions.get(cid, 0)))
        if m.conversation.type == "direct":
            out[-1]["peer_read_seq"] = peer_reads.get(m.conversation_id)
            out[-1]["delivered_seq"] = peer_delivered.get(m.conversation_id, 0)
    return out


def summary(m: Membership, peer: dict | None, last_message: dict | None, unread: int,
            mention_count: int = 0) -> dict:
    c = m.conversation
    return {
        "id": str(c.id),
        "type": c.type,
        "title": c.title if c.type == "group" else (peer or {}).get("display_name", ""),
        "avatar_url": (avatar_url(c.avatar_key) if c.type == "group"
                       else (peer or {}).get("avatar_url")),
        "peer": peer,
        "last_message": last_message,
        "last_seq": visible_last_seq(m),
        # The change cursor a device starts from (sync `changes`, docs/protocol.md).
        "change_seq": c.change_seq,
        "read_seq": m.read_seq,
        "unread_count": unread,
        "mention_count": mention_count,  # unread messages mentioning me or @all ("[@me]")
        "muted": m.notifications_muted,
        "role": m.role,
        "left": m.left_at is not None,
        "created_at": c.created_at.isoformat(),
        "last_activity_at": activity(c).isoformat(),
    }


def activity(c: Conversation) -> datetime:
    return c.last_message_at or c.created_at


def _encode_cursor(c: Conversation) -> str:
    raw = f"{activity(c).isoformat()}|{c.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, cid = raw.partition("|")
        return datetime.fromisoformat(when).astimezone(UTC), str(uuid.UUID(cid))
    except (ValueError, OverflowError):  # OverflowError: a time zone past year 1 or 9999
        raise Invalid("Bad cursor.", details={"field": "cursor"}) from None


async def list_conversations(deps: Deps, user_id, cursor: str | None, limit: int) -> dict:
    """Mine, newest activity first, keyset-paginated on (activity, id)."""
    after = _decode_cursor(cursor) if cursor else None
    ids = await chat_list_page(parse_uuid(user_id, "user"), after, limit + 1)
    found = {m.id: m for m in await Membership.filter(id__in=ids[:limit])
             .select_related("conversation")}
    # A membership deleted between the two statements (its account erased) is skipped.
    page = [found[i] for i in ids[:limit] if i in found]
    next_cursor = _encode_cursor(page[-1].conversation) if len(ids) > limit and page else None
    return {"conversations": await summaries(deps, user_id, page), "next_cursor": next_cursor}


async def conversation_for(deps: Deps, user_id, conversation_id) -> dict:
    m = await active_membership(conversation_id, user_id)
    return (await summaries(deps, user_id, [m]))[0]


class ConversationPatch(Payload):
    muted: bool | None = None


async def update_my_settings(deps: Deps, user_id, conversation_id,
                             data: ConversationPatch) -> dict:
    """My own settings of a chat ("mute notifications"); my devices follow along."""
    m = await active_membership(conversation_id, user_id)
    if data.muted is not None and data.muted != m.notifications_muted:
        await Membership.filter(id=m.id).update(notifications_muted=data.muted)
    summary = await conversation_for(deps, user_id, m.conversation_id)
    await deps.fanout.to_users([str(user_id)], "conversation:updated", summary)
    return summary
