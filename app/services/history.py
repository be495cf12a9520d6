"""Reading messages: history pages, sync after reconnect, and the one serialiser.

The REST route and the socket `history` / `sync` events all come through here.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from app.deps import Deps
from app.models.messaging import HiddenMessage, Membership, Message
from app.services import conversations as convs
from app.validation import Id, Payload

SeqValue = Annotated[int, msgspec.Meta(ge=0)]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=200)]


class HistoryIn(Payload):
    conversation_id: Id
    before_seq: SeqValue | None = None
    limit: PageLimit = 50


class SyncIn(Payload):
    cursors: dict[Id, SeqValue] = {}
    limit: PageLimit = 100



# --- serialisation ----------------------------------------------------------


def _serialize(msg: Message, reply: Message | None, deps: Deps | None = None) -> dict:
    recalled = msg.recalled_at is not None
    out = {
        "id": str(msg.id),
        "conversation_id": str(msg.conversation_id),
        "seq": msg.seq,
        "sender_id": str(msg.sender_id) if msg.sender_id else None,
        "type": msg.type,
        "text": "" if recalled else msg.text,
        "client_msg_id": msg.client_msg_id,
        "reply_to": str(msg.reply_to_id) if msg.reply_to_id else None,
        "created_at": msg.created_at.isoformat(),
        "recalled": recalled,
    }
    if reply is not None:
        out["reply_preview"] = {
            "id": str(reply.id),
            "seq": reply.seq,
            "sender_id": str(reply.sender_id) if reply.sender_id else None,
            "type": reply.type,
            "text": "" if reply.recalled_at else reply.text[:200],
            "recalled": reply.recalled_at is not None,
        }
    if msg.data and not recalled:
        # Extra typed data: system events, mentions, media (added by their issues).
        for key in ("system", "mentions", "mention_all", "media"):
            if key in msg.data:
                out[key] = msg.data[key]
        if "media" in msg.data:
            from app.services import media

            # Links are signed per read, never stored with the message.
            out["media"] = media.public_media(msg.data["media"], deps)
    return out


async def serialize_messages(rows: list[Message], viewer_id=None, deps: Deps | None = None
                             ) -> list[dict]:
    reply_ids = {m.reply_to_id for m in rows if m.reply_to_id}
    replies = {}
    if reply_ids:
        replies = {r.id: r for r in await Message.filter(id__in=reply_ids)}
    return [_serialize(m, replies.get(m.reply_to_id), deps) for m in rows]


async def serialize_message(msg: Message, deps: Deps | None = None) -> dict:
    return (await serialize_messages([msg], deps=deps))[0]


# --- reading ----------------------------------------------------------------


def _visible(m: Membership, qs):
    qs = qs.filter(conversation_id=m.conversation_id, seq__gt=m.visible_from_seq)
    if m.left_seq is not None:
        qs = qs.filter(seq__lte=m.left_seq)
    return qs


async def _page(m: Membership, user_id, *, after: int | None = None,
                before: int | None = None, limit: int, deps: Deps | None = None
                ) -> tuple[list[dict], bool]:
    """Messages visible to this member, ascending, minus the ones they deleted."""
    qs = _visible(m, Message.all())
    if after is not None:
        qs = qs.filter(seq__gt=after).order_by("seq")
    else:
        if before is not None:
            qs = qs.filter(seq__lt=before)
        qs = qs.order_by("-seq")
    rows = await qs.limit(limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    if after is None:
        rows.reverse()
    if rows:
        hidden = set(
            await HiddenMessage.filter(
                user_id=user_id, message_id__in=[r.id for r in rows]
            ).values_list("message_id", flat=True)
        )
        rows = [r for r in rows if r.id not in hidden]
    return await serialize_messages(rows, user_id, deps), has_more


async def history(deps: Deps, user_id: str, data: HistoryIn) -> dict:
    m = await convs.readable_membership(data.conversation_id, user_id)
    messages, has_more = await _page(m, user_id, before=data.before_seq, limit=data.limit,
                                     deps=deps)
    return {"messages": messages, "has_more": has_more}


async def sync(deps: Deps, user_id: str, data: SyncIn) -> dict:
    """What changed since the client's cursors: missed messages in order, plus read state.

    A conversation absent from `cursors` returns its summary and newest page.
    """
    memberships = await Membership.filter(user_id=user_id).select_related("conversation")
    out = []
    for m in memberships:
        cid = str(m.conversation_id)
        last = convs.visible_last_seq(m)
        cursor = data.cursors.get(cid)
        if cursor is None:
            if m.left_at is not None:
                continue  # left before this device knew it: nothing to show
            messages, has_more = await _page(m, user_id, limit=data.limit, deps=deps)
            entry = (await convs.summaries(deps, user_id, [m]))[0]
        elif last > cursor:
            messages, has_more = await _page(m, user_id, after=max(cursor, m.visible_from_seq),
                                             limit=data.limit, deps=deps)
            entry = {"id": cid, "last_seq": last, "read_seq": m.read_seq,
                     "unread_count": await convs.unread_count(m, user_id),
                     "mention_count": await convs.mention_count(m, user_id),
                     "left": m.left_at is not None}
        else:
            continue
        entry["messages"] = messages
        entry["has_more"] = has_more
        out.append(entry)
    return {"conversations": out}
