"""Sending, reading and syncing messages: the delivery guarantees live here.

- seq: allocated in the same transaction as the insert (app/services/message_writer/).
- persist before ack: callers get the message only after commit.
- idempotent: UNIQUE(sender, client_msg_id); a repeat returns the original, emits nothing.
- fan-out: one emit to the members' user rooms, after commit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from tortoise import Tortoise
from tortoise.exceptions import IntegrityError

from app.clock import now
from app.deps import Deps
from app.errors import DomainError, Invalid, NotFound
from app.models.messaging import HiddenMessage, Membership, Message
from app.ratelimit import Limit
from app.services import conversations as convs
from app.services import member_cache, message_changes, push, sql
from app.services import send_rules as rules

# The reading half (history, sync, the one serialiser) is app/services/history.py.
from app.services.history import audience_views, serialize_message, serialize_row
from app.services.message_writer import NewMessage, UnknownConversation
from app.validation import Id, Payload, Seq, convert, int_id

ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
SeqValue = Seq


class ContactCardIn(Payload):
    user_id: Id


class LocationIn(Payload):
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lng: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    address: Annotated[str, msgspec.Meta(max_length=500)] = ""


class SendIn(Payload):
    conversation_id: Id
    client_msg_id: ClientMsgId
    type: Literal["text", "image", "voice", "video", "file", "contact_card", "location"] = "text"
    text: str = ""  # the message, or the caption of an image/video
    reply_to: Id | None = None
    media_id: Id | None = None
    mentions: Annotated[list[Id], msgspec.Meta(max_length=100)] = []
    mention_all: bool = False
    contact_card: ContactCardIn | None = None  # type contact_card
    location: LocationIn | None = None  # type location


class ReadIn(Payload):
    conversation_id: Id
    seq: SeqValue


class MessageRef(Payload):
    message_id: Id


class TypingIn(Payload):
    conversation_id: Id
    state: Literal["typing", "recording", "idle"]


# --- sending ----------------------------------------------------------------
#
# One send, top to bottom (send_message): validate the payload (SendIn, then
# send_rules' text rules), read the facts it is judged on, judge it
# (send_rules.check_may_send), write it (the message writer), fan it out
# (publish_written).
#
# The rules run once, in the writer's transaction (send_rules.judge_queued_send),
# on facts read under the conversation's lock and batched with the other sends
# of that batch, so a block or mute committed before the message got its seq is
# honoured. A plain text message reads nothing before the write. Media,
# mentions, replies and typed content need the sender's membership first
# (convs.send_facts) to check what they refer to; who may post is still
# judged once, by the writer.


async def _existing(user_id: str, client_msg_id: str) -> Message | None:
    return await Message.get_or_none(sender_id=user_id, client_msg_id=client_msg_id)


def _new_message(written, cid: uuid.UUID, user_id: uuid.UUID, data: SendIn, text: str,
                 extra: dict, reply: Message | None, created: datetime, deps: Deps) -> dict:
    """The message just stored, as clients get it, without reading it back:
    the same row shape and serialiser as history (services.history)."""
    row = (written.id, cid, written.seq, user_id, data.type, text,
           data.client_msg_id, reply.id if reply is not None else None, extra or None,
           created, None)
    if reply is None:
        row += (None,) * 6
    else:
        row += (reply.id, reply.seq, reply.sender_id, reply.type, reply.text, reply.recalled_at)
    return serialize_row(row, deps, user_id)


async def send_message(deps: Deps, user_id: str, data: SendIn, *, origin: str | None = None
                       ) -> dict:
    """Persist, then fan out. Returns the stored message (the original on a repeat).

    `origin` is the sending socket, spared from the echo.
    """
    try:  # validate (and, for richer messages, read the facts)
        cid, uid, text, extra, reply = await _checked_send(deps, user_id, data)
    except DomainError:
        # A retry of a message that was stored before (lost ack) gets the
        # original, even if it would not pass the checks any more.
        repeat = await _existing(user_id, data.client_msg_id)
        if repeat is None:
            raise
        return await serialize_message(repeat, deps, user_id)
    created = now()
    item = NewMessage(
        conversation_id=cid,
        sender_id=uid,
        client_msg_id=data.client_msg_id,
        type=data.type,
        text=text,
        reply_to_id=reply.id if reply is not None else None,
        data=extra or None,
        created_at=created,
        # Sending a message means I have read everything up to it (the
        # writer moves the read mark of the membership it judged).
        mentions=[None] if extra.get("mention_all") else list(extra.get("mentions") or ()),
        judge=rules.judge_queued_send,
        ordered=True,
    )
    try:  # judge (send_rules, in the writer's transaction) and write
        written = await deps.writer.write(item)
    except UnknownConversation:
        raise NotFound(convs.NO_SUCH_CONVERSATION) from None
    if not written.new:
        # The same client_msg_id was stored first (retry, other device, race):
        # the writer answered before judging, so a retry gets the original.
        return await serialize_message(await Message.get(id=written.id), deps, user_id)
    return await publish_written(  # fan out
        deps, written, item, origin, reply,
        lambda: _new_message(written, cid, uid, data, text, extra, reply, created, deps))


async def publish_written(deps: Deps, written, item: NewMessage, origin: str | None,
                          reply: Message | None, build) -> dict:
    """Emit a message the writer just stored as new (`message:new`, in its
    conversation's seq order through its Turn), then hand it to push; returns
    the sender's view. `item` is what was written, `build()` makes the message
    as clients get it."""
    uid = item.sender_id
    turn = written.turn
    try:
        message = build()
        # Each recipient sees the quoted message and media links as their own
        # access allows (one payload for all in the common case).
        views = await audience_views(deps, message, written.recipients, reply)
        await turn.wait()  # every earlier message of this conversation went out first
        if len(views) == 1:
            await deps.fanout.to_users(views[0][0], "message:new", views[0][1], skip=origin)
        else:  # each user is in one group only: their order across messages holds
            await asyncio.gather(*(deps.fanout.to_users(u, "message:new", v, skip=origin)
                                   for u, v in views))
    finally:
        turn.release()
    # After the emit, without waiting: the planner queues pushes off the send path.
    push.message_stored(deps, message_id=written.id, conversation_id=item.conversation_id,
                        sender_id=uid, recipients=written.recipients, type=item.type,
                        text=item.text, data=item.data, seq=written.seq)
    for users, view in views:
        if str(uid) in users:
            return view  # the sender's own view
    return message


async def _checked_send(deps: Deps, user_id: str, data: SendIn):
    """Validate a send and resolve what it refers to; returns what the writer
    needs. Who may post is judged by the writer (send_rules.judge_queued_send)."""
    await deps.limiter.hit(f"send:{user_id}", Limit.parse(deps.settings.send_rate_limit),
                           exact=False)
    cid = convs.parse_uuid(data.conversation_id)
    uid = convs.parse_uuid(user_id, "user")
    max_length = deps.settings.max_text_length
    extra: dict = {}
    if rules.is_plain_text(data):
        rules.check_no_media_id(data)
        return cid, uid, rules.plain_text(data.text, max_length), extra, None
    # Media, mentions and replies refer to things only a member may use.
    facts = await convs.send_facts(cid, uid)
    m = facts.membership
    # Typed data other domains attach: media snapshot, mentions.
    if data.type in rules.MEDIA_TYPES:
        from app.services import media

        extra["media"] = await media.attach_to_message(deps, user_id, data)
        text = rules.caption(data.type, data.text, max_length)
    elif data.type in rules.TYPED_TYPES:
        from app.services import forwarding

        extra.update(await forwarding.typed_content(user_id, data))
        text = ""
    else:
        rules.typed_fields(data)
        text = rules.plain_text(data.text, max_length)
    if data.mentions or data.mention_all:
        from app.services import groups

        extra.update(await groups.resolve_mentions(deps, m, data))
    reply = None
    if data.reply_to is not None:
        reply = await _reply_target(m, data.reply_to)
    return cid, uid, text, extra, reply


async def send_from_payload(deps: Deps, user_id: str, payload, *, origin: str | None = None
                            ) -> dict:
    """The entry point both transports use: validate the raw payload, then send."""
    return await send_message(deps, user_id, convert(SendIn, payload), origin=origin)


async def _reply_target(m: Membership, reply_to: str) -> Message:
    rid = int_id(reply_to, "reply_to")
    if rid is None:
        raise Invalid("reply_to is not a message id.", details={"field": "reply_to"})
    target = await Message.get_or_none(id=rid, conversation_id=m.conversation_id)
    rules.check_reply_target(target.seq if target is not None else None, m.visible_from_seq)
    return target


async def _member_facts(conversation_id, user_id, *, live: bool = False
                        ) -> tuple[uuid.UUID, dict]:
    """A current member's facts (sql.member_facts_row) as a plain row, not
    models: reads and typing come about as often as sends do. `live`: a
    dissolved group is refused too (it can still be read, not written in)."""
    cid, uid = convs.parse_uuid(conversation_id), convs.parse_uuid(user_id, "user")
    m = await sql.member_facts_row(Tortoise.get_connection("default"), cid, uid)
    if m is None or m["left_at"] is not None or (live and m["dissolved_at"] is not None):
        # Left or removed: refused like a stranger (nothing of theirs reaches the group).
        raise NotFound(convs.NO_SUCH_CONVERSATION)
    return cid, m


async def _receivers(cid, user_id: str, m: dict) -> list[str]:
    """Who receives this member's events: a direct chat's two people, or the
    group's members (the cached list, checked against the version in `m`)."""
    if m["type"] == "direct":
        return [str(user_id)] + ([str(m["peer_id"])] if m["peer_id"] else [])
    return await convs.member_ids(cid, head=(
        m["type"], member_cache.as_version(m["members_version"])))


async def mark_read(deps: Deps, user_id: str, data: ReadIn) -> dict:
    cid, m = await _member_facts(data.conversation_id, user_id)
    last = m["last_seq"] if m["left_seq"] is None else min(m["last_seq"], m["left_seq"])
    target = min(data.seq, last)
    moved = target > m["read_seq"] and await sql.move_read_mark(
        Tortoise.get_connection("default"), m["id"], target)
    if moved:
        read_seq = target
    elif target > m["read_seq"]:
        # Another device moved it further meanwhile: answer with where it is.
        read_seq = (await _member_facts(cid, user_id))[1]["read_seq"]
    else:
        read_seq = m["read_seq"]
    unread = await convs.unread_between(cid, user_id, read_seq, last)
    if moved:
        event = {"conversation_id": str(cid), "user_id": str(user_id), "read_seq": read_seq}
        if m["send_read_receipts"]:
            recipients = await _receivers(cid, user_id, m)
        else:
            recipients = [str(user_id)]  # my own devices still clear their badge
        await deps.fanout.to_users(recipients, "conversation:read", event)
        push.conversation_read(deps, user_id=user_id, conversation_id=cid)
    return {"read_seq": read_seq, "unread_count": unread}


# --- recall and delete ------------------------------------------------------


# Recall changes a message members hold: it goes through the change log
# (app/services/message_changes.py), like edits, reactions and pins.
RecallExpired = message_changes.RecallExpired


async def _message_for(user_id: str, message_id: str) -> tuple[Message, Membership]:
    mid = int_id(message_id, "message_id")
    if mid is None:
        raise NotFound("No such message.")
    msg = await Message.get_or_none(id=mid)
    if msg is None:
        raise NotFound("No such message.")
    # Only current members act on messages: someone who left or was removed is
    # answered like a stranger.
    m = await Membership.get_or_none(conversation_id=msg.conversation_id, user_id=user_id,
                                     left_at=None).select_related("conversation")
    if m is None or msg.seq <= m.visible_from_seq:
        raise NotFound("No such message.")
    return msg, m


async def recall(deps: Deps, user_id: str, data: MessageRef) -> None:
    await message_changes.recall(deps, user_id, data.message_id)


async def delete_for_me(deps: Deps, user_id: str, data: MessageRef) -> None:
    msg, _m = await _message_for(user_id, data.message_id)
    try:
        await HiddenMessage.create(user_id=user_id, message_id=msg.id,
                                   conversation_id=msg.conversation_id)
    except IntegrityError:
        return  # already hidden: deleting twice is fine
    await deps.fanout.to_users(
        [user_id], "message:deleted",
        {"conversation_id": str(msg.conversation_id), "message_id": str(msg.id)},
    )


# --- typing -----------------------------------------------------------------

_typing_seen: dict[tuple[str, str], tuple[str, float]] = {}


async def typing(deps: Deps, user_id: str, data: TypingIn) -> None:
    cid, m = await _member_facts(data.conversation_id, user_id, live=True)
    key = (str(user_id), str(cid))
    now_s = time.monotonic()
    last = _typing_seen.get(key)
    # Throttled: the same state is repeated at most every TYPING_THROTTLE_SECONDS.
    if last and last[0] == data.state and now_s - last[1] < deps.settings.typing_throttle_seconds:
        return
    _typing_seen[key] = (data.state, now_s)
    if len(_typing_seen) > 100_000:
        _typing_seen.clear()
    others = [u for u in await _receivers(cid, user_id, m) if u != str(user_id)]
    await deps.fanout.to_users(others, "typing", {"conversation_id": str(cid),
                                                  "user_id": str(user_id), "state": data.state})
