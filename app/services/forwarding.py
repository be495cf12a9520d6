"""Forwarding (each message copied, or one merged chat record), contact cards
and locations.

A forward is a send: every new message goes through the message writer with
the same in-transaction judgement (membership, contacts, group rules), gets its
seq there and is emitted in seq order. One `client_msg_id` makes the whole
forward idempotent: each new message's own client_msg_id is derived from it,
the target and the position, so a retry finds every message stored the first
time and only writes what is missing.

Media is never copied: the new message carries the same media snapshot, and a
MediaAttachment row for it lets its recipients download the media through it
(app/services/media.py) — for a chat record, through that record only.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from functools import partial
from typing import Annotated, Literal

import msgspec
from tortoise.exceptions import IntegrityError

from app.clock import now
from app.deps import Deps
from app.errors import DomainError, Invalid, NotFound
from app.models.accounts import User
from app.models.media import Media, MediaAttachment
from app.models.messaging import Conversation, Membership, Message
from app.ratelimit import Limit
from app.services import conversations as convs
from app.services import send_rules
from app.services.accounts import public_user
from app.services.message_changes import visible_message
from app.services.message_writer import NewMessage, UnknownConversation
from app.validation import Id, Payload, is_blank

MAX_FORWARD_MESSAGES = 100
MAX_FORWARD_TARGETS = 9
RECORD_TEXT_PREVIEW = 2000  # characters of one text kept in a chat record item

ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ForwardIn(Payload):
    message_ids: Annotated[list[Id], msgspec.Meta(min_length=1,
                                                  max_length=MAX_FORWARD_MESSAGES)]
    to: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_FORWARD_TARGETS)]
    mode: Literal["each", "merged"]
    client_msg_id: ClientMsgId


# --- contact cards and locations ---------------------------------------------------


async def typed_content(user_id, data) -> dict:
    """The stored data of a `contact_card` or `location` send (SendIn)."""
    from app.services import contacts

    if data.media_id is not None:
        raise Invalid("media_id needs a media message type.", details={"field": "media_id"})
    if not is_blank(data.text.strip()):
        raise Invalid(f"A {data.type} message takes no text.", details={"field": "text"})
    if data.type == "contact_card":
        if data.location is not None or data.contact_card is None:
            raise Invalid("A contact_card message needs contact_card: {user_id}.",
                          details={"field": "contact_card"})
        try:
            person = await User.get_or_none(id=uuid.UUID(str(data.contact_card.user_id)))
        except ValueError:
            person = None
        # A card of myself or of one of my contacts: nobody shares a stranger's.
        if person is None or (str(person.id) != str(user_id) and
                              not await contacts.has_contact(user_id, person.id)):
            raise NotFound("No such contact.", details={"field": "contact_card.user_id"})
        card = public_user(person)
        return {"contact_card": {"user_id": card["id"], "username": card["username"],
                                 "display_name": card["display_name"]}}
    if data.contact_card is not None or data.location is None:
        raise Invalid("A location message needs location: {lat, lng, name, address}.",
                      details={"field": "location"})
    loc = data.location
    if loc.lat != loc.lat or loc.lng != loc.lng:  # NaN
        raise Invalid("lat and lng must be numbers.", details={"field": "location"})
    name, address = loc.name.strip(), loc.address.strip()
    return {"location": {"lat": float(loc.lat), "lng": float(loc.lng),
                         "name": "" if is_blank(name) else name,
                         "address": "" if is_blank(address) else address}}


# --- forwarding ----------------------------------------------------------------------

_COPIED = ("media", "location", "contact_card", "chat_record")


def derived_id(client_msg_id: str, target: uuid.UUID, part: str) -> str:
    digest = hashlib.sha256(f"{client_msg_id}\x00{target}\x00{part}".encode()).hexdigest()
    return f"fw-{digest[:40]}"


def _media_ids(data: dict) -> list[str]:
    out = []
    if data.get("media"):
        out.append(data["media"]["id"])
    for it in (data.get("chat_record") or {}).get("items", ()):
        if it.get("media"):
            out.append(it["media"]["id"])
    return out


async def _sources(user_id, ids: list[str]) -> list[Message]:
    seen, out = set(), []
    for mid in ids:
        if mid in seen:
            continue
        seen.add(mid)
        msg, _ctx = await visible_message(user_id, mid)
        if msg.recalled_at is not None or msg.type == "system":
            raise Invalid("Recalled messages and system lines cannot be forwarded.",
                          details={"field": "message_ids", "message_id": str(msg.id)})
        out.append(msg)
    out.sort(key=lambda m: (m.created_at, m.seq))
    return out


async def _record(sources: list[Message]) -> dict:
    """The snapshot a merged forward carries: who said what, when."""
    people = {str(m.sender_id) for m in sources if m.sender_id}
    names = {str(u.id): u.display_name for u in await User.filter(id__in=list(people))}
    conv_ids = {m.conversation_id for m in sources}
    title = ""
    if len(conv_ids) == 1:
        conv = (await Conversation.get(id=next(iter(conv_ids))))
        if conv.type == "group":
            title = conv.title
        else:
            pair = await Membership.filter(conversation_id=conv.id).values_list(
                "user__display_name", flat=True)
            title = " & ".join(sorted(pair))
    items = []
    for m in sources:
        data = m.data or {}
        item: dict = {"sender_name": names.get(str(m.sender_id), ""),
                      "sent_at": m.created_at.isoformat(), "type": m.type}
        if m.text:
            item["text"] = m.text[:RECORD_TEXT_PREVIEW]
        for key in ("media", "location", "contact_card"):
            if key in data:
                item[key] = data[key]
        if "chat_record" in data:  # a record inside a record: its title only
            item["chat_record"] = {"title": data["chat_record"].get("title", ""),
                                   "count": len(data["chat_record"].get("items", ()))}
        items.append(item)
    return {"title": title, "items": items}


async def _share_media(media_ids, cid: uuid.UUID, user_id: uuid.UUID, cmid: str) -> None:
    """Let the new message grant access to media it carries (no bytes copied)."""
    for media_id in dict.fromkeys(media_ids):
        await Media.filter(id=media_id).update(last_attached_at=now())
        try:
            await MediaAttachment.create(media_id=media_id, conversation_id=cid,
                                         sender_id=user_id, client_msg_id=cmid)
        except IntegrityError:
            pass  # the same forward, retried


async def forward(deps: Deps, user_id: str, data: ForwardIn, *, origin: str | None = None
                  ) -> dict:
    """Returns {messages: [the new messages as the sender sees them]}, in target
    order (for `each`, the sources in time order within each target)."""
    from app.services import messaging

    uid = convs.parse_uuid(user_id, "user")
    targets = list(dict.fromkeys(convs.parse_uuid(t) for t in data.to))
    parts = ["m"] if data.mode == "merged" else None
    try:
        await deps.limiter.hit(f"send:{user_id}", Limit.parse(deps.settings.send_rate_limit),
                               exact=False)
        sources = await _sources(user_id, data.message_ids)
        # Every target is judged before anything is shared into one (media
        # grants, copies): a forward refused by one target shares nothing. The
        # writer judges each copy again under the conversation's lock.
        for cid in targets:
            from app.services.message_changes import check_can_act

            facts = await convs.send_facts(cid, uid)
            send_rules.check_may_send(facts, now())
            check_can_act(deps, facts)
    except DomainError:
        # A retry of a forward stored before gets what was stored.
        keys = [derived_id(data.client_msg_id, cid, p) for cid in targets
                for p in (parts or [str(i) for i in range(len(data.message_ids))])]
        stored = await Message.filter(sender_id=uid, client_msg_id__in=keys)
        if not stored:
            raise
        from app.services.history import serialize_messages

        order = {k: i for i, k in enumerate(keys)}
        stored.sort(key=lambda m: order[m.client_msg_id])
        return {"messages": await serialize_messages(stored, user_id, deps)}
    # What each target gets: (type, text, data, part)
    if data.mode == "merged":
        copies = [("chat_record", "", {"chat_record": await _record(sources)}, "m")]
    else:
        copies = []
        for i, m in enumerate(sources):
            src = m.data or {}
            copies.append((m.type, m.text, {"forwarded": True,
                                            **{k: src[k] for k in _COPIED if k in src}},
                           str(i)))
    created = now()
    items = []
    for cid in targets:
        for mtype, text, extra, part in copies:
            cmid = derived_id(data.client_msg_id, cid, part)
            await _share_media(_media_ids(extra), cid, uid, cmid)
            items.append(NewMessage(
                conversation_id=cid, sender_id=uid, client_msg_id=cmid, type=mtype,
                text=text, data=extra, created_at=created,
                judge=send_rules.judge_queued_send, ordered=True))
    # Queued in this order, so each target's copies get consecutive seqs in order.
    results = await asyncio.gather(*(deps.writer.write(it) for it in items),
                                   return_exceptions=True)
    out: list[dict | None] = [None] * len(items)
    failure = None
    for i, (item, written) in enumerate(zip(items, results, strict=True)):
        if isinstance(written, BaseException):
            if isinstance(written, UnknownConversation):
                written = NotFound(convs.NO_SUCH_CONVERSATION)
            failure = failure or written
            continue
        if not written.new:
            continue
        out[i] = await messaging.publish_written(
            deps, written, item, origin, None, partial(_built, deps, written, item))
    # Release what we will not emit (a failed neighbour must not stall the order).
    for written in results:
        if not isinstance(written, BaseException) and written.turn is not None:
            written.turn.release()
    if failure is not None:
        raise failure
    missing = [i for i, o in enumerate(out) if o is None]
    if missing:
        from app.services.history import serialize_messages

        stored = {m.client_msg_id: m for m in await Message.filter(
            sender_id=uid, client_msg_id__in=[items[i].client_msg_id for i in missing])}
        views = await serialize_messages([stored[items[i].client_msg_id] for i in missing],
                                         user_id, deps)
        for i, view in zip(missing, views, strict=True):
            out[i] = view
    return {"messages": out}


def _built(deps: Deps, written, item: NewMessage) -> dict:
    from app.services.history import serialize_row

    row = (written.id, item.conversation_id, written.seq, item.sender_id, item.type, item.text,
           item.client_msg_id, None, item.data, item.created_at, None) + (None,) * 6
    return serialize_row(row, deps, item.sender_id)
