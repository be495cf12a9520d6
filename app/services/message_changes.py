"""Changes to stored messages: recall, reactions, edits, pins, and the change log.

Every change to a message that members already hold runs in one transaction
that first advances its conversation's `change_seq` (taking the conversation
row's lock on PostgreSQL, the write lock on SQLite), then changes the message
and stamps it with that number. Changes of one conversation therefore commit
in change_seq order, and `sync` can hand a device every held message whose
change_seq is above the device's change cursor, in its current state: a device
that was offline replaces its copies and has converged (docs/protocol.md,
"Changes"). Only the latest state of a message is kept in the log, so a message
edited ten times while a device was away comes back once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated

import msgspec
import regex
from tortoise.transactions import in_transaction

from app.clock import now
from app.deps import Deps
from app.errors import DomainError, Forbidden, Invalid, NotFound
from app.models.message_extras import MessageReaction, MessageVersion, Pin
from app.models.messaging import HiddenMessage, Membership, Message
from app.services import conversations as convs
from app.services import push, send_rules
from app.services.send_rules import SendFacts
from app.services.sql import is_postgres, next_seq
from app.validation import Id, Payload, int_id, is_blank

NO_SUCH_MESSAGE = "No such message."
MAX_REACTION_EMOJI = 20  # distinct emoji on one message
MAX_PINS = 50  # pinned messages per conversation
EDITABLE = ("text", "image", "video")  # text messages, and the captions of these


# --- payloads ------------------------------------------------------------------

Emoji = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ReactIn(Payload):
    message_id: Id
    emoji: Emoji
    on: bool


class EditIn(Payload):
    message_id: Id
    text: str


class PinIn(Payload):
    message_id: Id


class VersionsIn(Payload):
    message_id: Id


# --- hooks ---------------------------------------------------------------------
#
# Called inside the transaction that changes a message's text (an edit, or a
# recall that empties it): the search index is brought in line in the same
# transaction, so a message is findable by its current text only. Extra hooks
# get (connection, message id, conversation id, new text, message type).
TextChanged = Callable[[object, int, uuid.UUID, str, str], Awaitable[None]]
TEXT_CHANGED: list[TextChanged] = []


async def _text_changed(conn, msg: Message, text: str) -> None:
    from app.services import search  # search reads rows through history, which imports us

    await search.reindex_message(msg.id, conn)
    for hook in TEXT_CHANGED:
        await hook(conn, msg.id, msg.conversation_id, text, msg.type)


# --- the change log ------------------------------------------------------------


async def advance(conn, conversation_id: uuid.UUID) -> int:
    """The conversation's next change number, inside the caller's transaction.

    Must be the transaction's first write to the conversation: the row lock it
    takes (PostgreSQL) is held until COMMIT, so a later change number never
    commits before an earlier one and a sync cursor never skips a change."""
    pg = is_postgres(conn)
    sql = ('UPDATE "conversations" SET "change_seq" = "change_seq" + 1 '
           f'WHERE "id" = {"$1" if pg else "?"} RETURNING "change_seq"')
    rows = await conn.execute_query_dict(sql, [conversation_id if pg else str(conversation_id)])
    if not rows:
        raise NotFound(NO_SUCH_MESSAGE)
    return int(rows[0]["change_seq"])


async def _reload(conn, message_id: int) -> Message:
    """The message as of now, read after advance() took the conversation's lock."""
    msg = await Message.filter(id=message_id).using_db(conn).first()
    if msg is None:
        raise NotFound(NO_SUCH_MESSAGE)
    return msg


async def _store(conn, msg: Message, change: int, **fields) -> None:
    await Message.filter(id=msg.id).using_db(conn).update(change_seq=change, **fields)


# --- who may act on a message --------------------------------------------------


class Target:
    """A message the caller may act on, and the facts that allowed it."""

    __slots__ = ("msg", "ctx")

    def __init__(self, msg: Message, ctx: SendFacts) -> None:
        self.msg = msg
        self.ctx = ctx


def check_can_act(deps: Deps, ctx: SendFacts) -> None:
    """Reacting, editing, pinning, forwarding into: like sending, a direct chat
    follows the contact rules (blocks, strangers) and a muted group member
    cannot act; only_admins_can_send does not stop reactions."""
    if ctx.conversation_type == "direct":
        if ctx.peer_id is not None:
            send_rules.check_direct(**ctx.contact_facts())
        return
    send_rules.check_not_muted(ctx.membership.muted_until, now())


async def visible_message(user_id, message_id) -> tuple[Message, SendFacts]:
    """A message of a live conversation the caller is an active member of, inside
    their history and not deleted for them; NotFound for anything else (the
    same answer for strangers, former members and unknown ids)."""
    mid = int_id(message_id, "message_id")
    if mid is None:
        raise NotFound(NO_SUCH_MESSAGE)
    msg = await Message.get_or_none(id=mid)
    if msg is None:
        raise NotFound(NO_SUCH_MESSAGE)
    try:
        ctx = await convs.send_facts(msg.conversation_id, user_id)
    except NotFound:
        raise NotFound(NO_SUCH_MESSAGE) from None
    if msg.seq <= ctx.row["visible_from_seq"]:
        raise NotFound(NO_SUCH_MESSAGE)
    if await HiddenMessage.filter(user_id=user_id, message_id=msg.id).exists():
        raise NotFound(NO_SUCH_MESSAGE)
    return msg, ctx


async def target(deps: Deps, user_id, message_id) -> Target:
    msg, ctx = await visible_message(user_id, message_id)
    check_can_act(deps, ctx)
    return Target(msg, ctx)


# --- recall --------------------------------------------------------------------


class RecallExpired(DomainError):
    code, status, default_message = "recall_expired", 403, "Too late to recall that message."


async def recall(deps: Deps, user_id, message_id) -> None:
    """The sender takes a message back for everyone (the delete-for-everyone of
    this server): a tombstone, its pin and reactions gone, a change for sync."""
    mid = int_id(message_id, "message_id")
    msg = await Message.get_or_none(id=mid) if mid is not None else None
    if msg is None:
        raise NotFound(NO_SUCH_MESSAGE)
    m = await Membership.get_or_none(conversation_id=msg.conversation_id, user_id=user_id,
                                     left_at=None)
    if m is None or msg.seq <= m.visible_from_seq:
        raise NotFound(NO_SUCH_MESSAGE)
    if str(msg.sender_id) != str(user_id) or msg.type == "system":
        raise Forbidden("Only the sender can recall a message.")
    if now() - msg.created_at > timedelta(seconds=deps.settings.recall_window_seconds):
        raise RecallExpired()
    if msg.recalled_at is not None:
        return  # recalled before: nothing new to tell anyone
    async with in_transaction() as conn:
        change = await advance(conn, msg.conversation_id)
        msg = await _reload(conn, msg.id)
        if msg.recalled_at is not None:
            return
        data = dict(msg.data or {})
        data.pop("pinned", None)
        await Pin.filter(message_id=msg.id).using_db(conn).delete()
        await MessageReaction.filter(message_id=msg.id).using_db(conn).delete()
        data.pop("reactions", None)
        await _store(conn, msg, change, recalled_at=now(), text="", data=data or None)
        await _text_changed(conn, msg, "")
    await deps.fanout.to_users(
        await convs.member_ids(msg.conversation_id), "message:recalled",
        {"conversation_id": str(msg.conversation_id), "message_id": str(msg.id),
         "seq": msg.seq},
    )
    push.message_recalled(deps, message_id=msg.id, conversation_id=msg.conversation_id)


# --- reactions -----------------------------------------------------------------

_GRAPHEME = regex.compile(r"\X")
_EMOJI_PART = regex.compile(r"[\p{Extended_Pictographic}\p{Regional_Indicator}\u20E3]")


def check_emoji(value: str) -> str:
    """One grapheme cluster that is an emoji (flags, keycaps, skin tones and ZWJ
    sequences included)."""
    if not _GRAPHEME.fullmatch(value) or not _EMOJI_PART.search(value):
        raise Invalid("A reaction is one emoji.", details={"field": "emoji"})
    return value


async def _counts(conn, message_id: int) -> dict:
    rows = await MessageReaction.filter(message_id=message_id).using_db(conn).order_by(
        "id").values_list("emoji", flat=True)
    counts: dict = {}
    for e in rows:  # in order of the first reaction with each emoji
        counts[e] = counts.get(e, 0) + 1
    return counts


async def mine_of(user_id, message_ids) -> dict[int, list[str]]:
    """{message id: the emoji this user put on it}, for the given messages."""
    if not message_ids:
        return {}
    out: dict[int, list[str]] = {}
    for mid, e in await MessageReaction.filter(
            user_id=user_id, message_id__in=list(message_ids)).order_by("id").values_list(
            "message_id", "emoji"):
        out.setdefault(mid, []).append(e)
    return out


async def attach_mine(user_id, messages: list[dict]) -> list[dict]:
    """Add `my_reactions` to the serialised messages that carry reactions (one
    query, only when some do)."""
    wanted = [int(m["id"]) for m in messages if m.get("reactions")]
    if not wanted or user_id is None:
        return messages
    mine = await mine_of(user_id, wanted)
    for m in messages:
        if m.get("reactions"):
            m["my_reactions"] = mine.get(int(m["id"]), [])
    return messages


async def react(deps: Deps, user_id, data: ReactIn) -> dict:
    """Put or take off one emoji; the same request twice changes nothing the
    second time (a retry is safe). Members get `message:reactions`."""
    emoji = check_emoji(data.emoji)
    t = await target(deps, user_id, data.message_id)
    msg = t.msg
    if msg.recalled_at is not None or msg.type == "system":
        raise Invalid("This message takes no reactions.", details={"field": "message_id"})
    changed = False
    async with in_transaction() as conn:
        change = await advance(conn, msg.conversation_id)
        msg = await _reload(conn, msg.id)
        if msg.recalled_at is not None:
            raise Invalid("This message takes no reactions.", details={"field": "message_id"})
        if data.on:
            # Checked, not caught: a failed INSERT would end a PostgreSQL
            # transaction. Every reaction change of this conversation holds its
            # lock (advance), so nothing slips in between.
            changed = not await MessageReaction.filter(
                message_id=msg.id, user_id=user_id, emoji=emoji).using_db(conn).exists()
            if changed:
                await MessageReaction.create(message_id=msg.id, user_id=user_id, emoji=emoji,
                                             using_db=conn)
        else:
            changed = bool(await MessageReaction.filter(
                message_id=msg.id, user_id=user_id, emoji=emoji).using_db(conn).delete())
        counts = await _counts(conn, msg.id)
        if len(counts) > MAX_REACTION_EMOJI:
            raise Invalid(f"A message takes at most {MAX_REACTION_EMOJI} different emoji.",
                          details={"field": "emoji", "limit": MAX_REACTION_EMOJI})
        if changed:
            stored = dict(msg.data or {})
            if counts:
                stored["reactions"] = counts
            else:
                stored.pop("reactions", None)
            await _store(conn, msg, change, data=stored or None)
    # Unchanged (a retry): the spent change number marks no message, nobody is told.
    if changed:
        await _publish_reactions(deps, msg, counts)
    return {"counts": counts, "mine": (await mine_of(user_id, [msg.id])).get(msg.id, [])}


async def _publish_reactions(deps: Deps, msg: Message, counts: dict) -> None:
    """`message:reactions` to every member, each with their own `mine` (members
    who reacted with nothing share one emit)."""
    members = await convs.member_ids(msg.conversation_id)
    mine: dict[str, list[str]] = {}
    for uid, e in await MessageReaction.filter(message_id=msg.id).order_by("id").values_list(
            "user_id", "emoji"):
        mine.setdefault(str(uid), []).append(e)
    base = {"conversation_id": str(msg.conversation_id), "message_id": str(msg.id),
            "counts": counts}
    plain = [u for u in members if u not in mine]
    if plain:
        await deps.fanout.to_users(plain, "message:reactions", {**base, "mine": []})
    for uid in members:
        if uid in mine:
            await deps.fanout.to_users([uid], "message:reactions", {**base, "mine": mine[uid]})


# --- edit ----------------------------------------------------------------------


def _resolve_mentions_again(msg: Message, text: str, names: dict, members: set[str],
                            role: str) -> dict:
    """The mentions an edited text keeps: a mentioned member still in the group
    whose `@name` is still in the text; @all while the editor may still use it
    and the text still mentions someone."""
    data = msg.data or {}
    keep = [u for u in data.get("mentions") or ()
            if u in members and names.get(u) and f"@{names[u]}" in text]
    mention_all = bool(data.get("mention_all")) and role != "member" and "@" in text
    return {"mentions": keep, "mention_all": mention_all}


async def edit(deps: Deps, user_id, data: EditIn) -> dict:
    """The sender rewrites a text message or a caption within EDIT_WINDOW_SECONDS.
    The earlier text is kept for the sender (`message:versions`)."""
    t = await target(deps, user_id, data.message_id)
    msg = t.msg
    if str(msg.sender_id) != str(user_id):
        raise Forbidden("Only the sender can edit a message.")
    if msg.type not in EDITABLE or msg.recalled_at is not None or (
            msg.data or {}).get("forwarded"):
        raise Invalid("Only your own text messages and captions can be edited.",
                      details={"field": "message_id"})
    if now() - msg.created_at > timedelta(seconds=deps.settings.edit_window_seconds):
        raise EditExpired()
    text = data.text.strip()
    if is_blank(text):
        text = ""
    if not text and msg.type == "text":
        raise Invalid("Message text cannot be empty.", details={"field": "text"})
    if len(text) > deps.settings.max_text_length:
        raise Invalid(f"Message text is limited to {deps.settings.max_text_length} characters.",
                      details={"field": "text"})
    mentions = None
    if (msg.data or {}).get("mentions") or (msg.data or {}).get("mention_all"):
        from app.models.accounts import User

        members = set(await convs.member_ids(msg.conversation_id))
        ids = [u for u in (msg.data or {}).get("mentions") or () if u in members]
        names = {str(u.id): u.display_name for u in await User.filter(id__in=ids)}
        mentions = _resolve_mentions_again(msg, text, names, members, t.ctx.row["role"])
    when = now()
    async with in_transaction() as conn:
        change = await advance(conn, msg.conversation_id)
        msg = await _reload(conn, msg.id)
        if msg.recalled_at is not None:
            raise Invalid("Only your own text messages and captions can be edited.",
                          details={"field": "message_id"})
        if msg.text == text:
            edited_at = (msg.data or {}).get("edited_at")
            return _edited(msg, text, edited_at)  # a retry: nothing to store
        old = msg.data or {}
        await MessageVersion.create(
            message_id=msg.id, text=msg.text,
            data={k: old[k] for k in ("mentions", "mention_all") if k in old} or None,
            written_at=datetime.fromisoformat(old["edited_at"]) if old.get("edited_at")
            else msg.created_at,
            replaced_at=when, using_db=conn)
        stored = {**old, "edited_at": when.isoformat()}
        if mentions is not None:
            from app.models.groups import MessageMention

            stored.update(mentions)
            await MessageMention.filter(message_id=msg.id).using_db(conn).delete()
            rows = [MessageMention(message_id=msg.id, conversation_id=msg.conversation_id,
                                   seq=msg.seq, user_id=u) for u in mentions["mentions"]]
            if mentions["mention_all"]:
                rows.append(MessageMention(message_id=msg.id, conversation_id=msg.conversation_id,
                                           seq=msg.seq, user_id=None))
            if rows:
                await MessageMention.bulk_create(rows, using_db=conn)
        await _store(conn, msg, change, text=text, data=stored)
        await _text_changed(conn, msg, text)
    event = _edited(msg, text, stored["edited_at"])
    if mentions is not None:
        event.update(mentions)
    await deps.fanout.to_users(await convs.member_ids(msg.conversation_id), "message:edited",
                               event)
    return event


def _edited(msg: Message, text: str, edited_at) -> dict:
    return {"conversation_id": str(msg.conversation_id), "message_id": str(msg.id),
            "text": text, "edited_at": edited_at}


class EditExpired(DomainError):
    code, status, default_message = "edit_expired", 403, "Too late to edit that message."


async def versions(deps: Deps, user_id, data: VersionsIn) -> dict:
    """Earlier texts of my own message, oldest first (the current one is the message)."""
    msg, _ctx = await visible_message(user_id, data.message_id)
    if str(msg.sender_id) != str(user_id):
        raise Forbidden("Only the sender can see earlier versions of a message.")
    if msg.recalled_at is not None:
        return {"message_id": str(msg.id), "versions": []}
    rows = await MessageVersion.filter(message_id=msg.id).order_by("id")
    return {"message_id": str(msg.id), "versions": [
        {"text": v.text, "written_at": v.written_at.isoformat(),
         "replaced_at": v.replaced_at.isoformat(),
         **{k: v.data[k] for k in ("mentions", "mention_all") if v.data and k in v.data}}
        for v in rows]}


# --- pins ----------------------------------------------------------------------


class _Unchanged(Exception):
    pass


def _check_can_pin(ctx: SendFacts, members_can_pin: bool) -> None:
    if ctx.conversation_type == "group" and ctx.row["role"] == "member" and not members_can_pin:
        raise Forbidden("Only the group's owner and admins can pin messages here.")


async def _system_line(conn, cid, actor_id, event: str, msg: Message) -> Message:
    created = now()
    seq = await next_seq(conn, cid, created)
    if seq is None:
        raise NotFound(convs.NO_SUCH_CONVERSATION)
    system = {"event": event, "actor_id": str(actor_id), "target_ids": [],
              "message_id": str(msg.id), "seq": msg.seq}
    return await Message.create(conversation_id=cid, seq=seq, sender_id=None, type="system",
                                data={"system": system}, created_at=created, using_db=conn)


async def pin(deps: Deps, user_id, data: PinIn, on: bool = True) -> dict:
    """Pin or unpin; a system line says who did; at most MAX_PINS per chat.
    Pinning a pinned message (or unpinning an unpinned one) changes nothing."""
    from app.models.messaging import Conversation

    t = await target(deps, user_id, data.message_id)
    msg = t.msg
    if msg.type == "system" or msg.recalled_at is not None:
        raise Invalid("This message cannot be pinned.", details={"field": "message_id"})
    cid = msg.conversation_id
    line = None
    try:
        async with in_transaction() as conn:
            change = await advance(conn, cid)
            conv = await Conversation.filter(id=cid).using_db(conn).first()
            _check_can_pin(t.ctx, bool(conv.members_can_pin))
            msg = await _reload(conn, msg.id)
            if msg.recalled_at is not None:
                raise Invalid("This message cannot be pinned.", details={"field": "message_id"})
            stored = dict(msg.data or {})
            if on:
                if await Pin.filter(message_id=msg.id).using_db(conn).exists():
                    raise _Unchanged
                if await Pin.filter(conversation_id=cid).using_db(conn).count() >= MAX_PINS:
                    raise Invalid(f"A chat has at most {MAX_PINS} pinned messages.",
                                  details={"field": "message_id", "limit": MAX_PINS})
                when = now()
                await Pin.create(conversation_id=cid, message_id=msg.id, pinned_by_id=user_id,
                                 pinned_at=when, using_db=conn)
                stored["pinned"] = {"by": str(user_id), "at": when.isoformat()}
            else:
                if not await Pin.filter(message_id=msg.id).using_db(conn).delete():
                    raise _Unchanged
                stored.pop("pinned", None)
            await _store(conn, msg, change, data=stored or None)
            line = await _system_line(conn, cid, user_id, "pinned" if on else "unpinned", msg)
    except _Unchanged:
        return {"pinned": on}
    from app.services.history import serialize_messages

    members = await convs.member_ids(cid)
    [serialized] = await serialize_messages([line])
    await deps.fanout.to_users(members, "message:new", serialized)
    event = {"conversation_id": str(cid), "message_id": str(msg.id), "seq": msg.seq,
             "pinned": stored.get("pinned")}
    await deps.fanout.to_users(members, "message:pinned" if on else "message:unpinned", event)
    return {"pinned": on}


async def pins(deps: Deps, user_id, conversation_id) -> dict:
    """The pinned messages of a chat, newest pin first, as this member sees them."""
    from app.services.history import serialize_messages

    m = await convs.active_membership(conversation_id, user_id)
    rows = await Pin.filter(conversation_id=m.conversation_id).order_by(
        "-pinned_at", "-id").select_related("message")
    hidden = set(await HiddenMessage.filter(
        user_id=user_id, message_id__in=[p.message_id for p in rows]).values_list(
        "message_id", flat=True))
    msgs = [p.message for p in rows
            if p.message.seq > m.visible_from_seq and p.message_id not in hidden
            and (m.left_seq is None or p.message.seq <= m.left_seq)]
    out = await attach_mine(user_id, await serialize_messages(msgs, user_id, deps))
    return {"pins": out}


# --- delivered receipts ----------------------------------------------------------


class DeliveredIn(Payload):
    conversation_id: Id
    up_to_seq: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


def _delivered_sql(pg: bool) -> str:
    cid, uid, up = ("$1::uuid", "$2::uuid", "$3::bigint") if pg else ("?1", "?2", "?3")
    least = "LEAST" if pg else "MIN"
    conv = f'(SELECT c."{{}}" FROM "conversations" c WHERE c."id" = {cid})'
    target = f'{least}({up}, {conv.format("last_seq")})'
    return (f'UPDATE "memberships" SET "delivered_seq" = {target} '
            f'WHERE "conversation_id" = {cid} AND "user_id" = {uid} AND "left_at" IS NULL '
            f'AND "delivered_seq" < {target} AND {conv.format("dissolved_at")} IS NULL '
            f'RETURNING "delivered_seq", {conv.format("direct_key")} AS direct_key')


_DELIVERED_SQL = {pg: _delivered_sql(pg) for pg in (True, False)}
_MARK_SQL = {pg: (
    'SELECT m."delivered_seq" FROM "memberships" m JOIN "conversations" c '
    'ON c."id" = m."conversation_id" AND c."dissolved_at" IS NULL '
    f'WHERE m."conversation_id" = {"$1::uuid" if pg else "?1"} '
    f'AND m."user_id" = {"$2::uuid" if pg else "?2"} AND m."left_at" IS NULL') for pg in (True, False)}


async def delivered(deps: Deps, user_id, data: DeliveredIn) -> dict:
    """A device received messages up to `up_to_seq`. Only moves forward; in a
    direct chat both people's devices get `conversation:delivered`.

    Every receiving device sends these, so the common case is one statement:
    the mark moves (clamped to the last seq) only for an active member of a
    live conversation, and hands back the direct chat's two people."""
    from tortoise import Tortoise

    cid = convs.parse_uuid(data.conversation_id)
    uid = convs.parse_uuid(user_id, "user")
    conn = Tortoise.get_connection("default")
    pg = is_postgres(conn)
    params = [cid, uid, data.up_to_seq] if pg else [str(cid), str(uid), data.up_to_seq]
    rows = await conn.execute_query_dict(_DELIVERED_SQL[pg], params)
    if not rows:
        # Nothing moved: already that far (another device said so first), or
        # not an active member of a live conversation (NotFound).
        rows = await conn.execute_query_dict(_MARK_SQL[pg], params[:2])
        if not rows:
            raise NotFound(convs.NO_SUCH_CONVERSATION)
        return {"delivered_seq": rows[0]["delivered_seq"]}
    up_to, key = rows[0]["delivered_seq"], rows[0]["direct_key"]
    if key:
        await deps.fanout.to_users(
            key.split(":"), "conversation:delivered",
            {"conversation_id": str(cid), "user_id": str(uid), "delivered_seq": up_to})
    return {"delivered_seq": up_to}
