"""Group chats: WeChat-like groups with an owner, admins, an
announcement, invite links, mentions and read lists.

Rules that hold everywhere below:

- Every change is a `system` message written **in the same transaction** as the
  change, with its own seq (the `system` field of the Message object:
  `data.system = {event, actor_id, target_ids, ...}`). Offline members learn
  it through `sync`.
- A member who leaves or is removed gets `left_seq` = the seq of that line:
  they see the line itself and nothing after it.
- A member who joins gets `visible_from_seq` = (seq of their join line) - 1:
  they see their own join line and nothing before it. `read_seq` starts there.
- Every mutation first locks the conversation row (PostgreSQL row lock; SQLite
  runs one transaction at a time), then re-reads the memberships it decides
  on, so concurrent changes to one group apply one after the other.
- Membership changes move the member-list version
  (conversations.bump_members_version) in that transaction, which invalidates
  every process's cached member list at once.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Literal

import msgspec
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from app.clock import now
from app.deps import Deps
from app.errors import Forbidden, GroupFull, Invalid, InviteExpired, NotContact, NotFound
from app.models.accounts import User
from app.models.contacts import Block, Contact
from app.models.groups import GroupInvite
from app.models.messaging import Conversation, Membership, Message
from app.ratelimit import Limit
from app.services import conversations as convs
from app.services import send_rules
from app.services.accounts import public_user
from app.services.avatars import avatar_url, avatar_urls
from app.services.sql import next_seq
from app.validation import Id, Payload, clean_name, int_id, representable_in_utc

RANK = {"owner": 2, "admin": 1, "member": 0}
NO_SUCH_GROUP = "No such group."
READERS_LIST_LIMIT = 100  # groups larger than this get read counts only
DEFAULT_INVITE_TTL = 7 * 24 * 3600
INVITE_TOKEN_MAX = 64  # GroupInvite.token

GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
AnnouncementText = Annotated[str, msgspec.Meta(max_length=2000)]
UserIdList = Annotated[list[Id], msgspec.Meta(max_length=1000)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


class CreateIn(Payload):
    name: GroupName
    member_ids: UserIdList


class PatchIn(Payload):
    name: GroupName | None = None
    announcement: AnnouncementText | None = None
    only_admins_can_send: bool | None = None
    members_can_invite: bool | None = None
    members_can_pin: bool | None = None


class AddMembersIn(Payload):
    user_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=1000)]


class MemberPatch(Payload):
    role: Literal["admin", "member"] | None = None
    # Absent: unchanged; null: unmute; a time: muted until then.
    muted_until: AwareTime | None | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self):
        representable_in_utc(self.muted_until)


class TransferIn(Payload):
    user_id: Id


class InviteIn(Payload):
    max_uses: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    expires_in: Annotated[int, msgspec.Meta(ge=60, le=30 * 24 * 3600)] | None = None


class JoinIn(Payload):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class _NothingToDo(Exception):
    """Rolls back a transaction that found nothing left to change."""


# --- small helpers ---------------------------------------------------------------


def _uuid_str(value) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _dedupe(ids, exclude=()) -> list[str]:
    """Canonical ids in first-seen order; malformed ids are kept verbatim (they fail later)."""
    out: dict[str, None] = {}
    skip = {str(x) for x in exclude}
    for raw in ids:
        key = _uuid_str(raw) or str(raw)
        if key not in skip:
            out[key] = None
    return list(out)


async def _membership(conversation_id, user_id) -> Membership:
    m = await convs.active_membership(conversation_id, user_id)
    if m.conversation.type != "group":
        raise NotFound(NO_SUCH_GROUP)
    return m


async def _lock(conn, cid) -> Conversation:
    """The group row, locked for the rest of the transaction; NotFound once dissolved."""
    conv = await Conversation.filter(id=cid).using_db(conn).select_for_update().first()
    if conv is None or conv.type != "group" or conv.dissolved_at is not None:
        raise NotFound(NO_SUCH_GROUP)
    return conv


async def _active(conn, cid, user_id) -> Membership | None:
    uid = _uuid_str(user_id)
    if uid is None:
        return None
    return await Membership.filter(conversation_id=cid, user_id=uid, left_at=None).using_db(
        conn).first()


async def _actor(conn, cid, user_id) -> Membership:
    m = await _active(conn, cid, user_id)
    if m is None:
        raise NotFound(NO_SUCH_GROUP)
    return m


def _require_admin(m: Membership, what: str = "do that") -> None:
    if RANK[m.role] < RANK["admin"]:
        raise Forbidden(f"Only the group's owner and admins can {what}.")


def _require_owner(m: Membership, what: str = "do that") -> None:
    if m.role != "owner":
        raise Forbidden(f"Only the group's owner can {what}.")


async def _line(conn, cid, actor_id, event: str, target_ids=(), **fields) -> Message:
    """A system line with the next seq, inside the caller's transaction."""
    created = now()
    seq = await next_seq(conn, cid, created)
    if seq is None:
        raise NotFound(NO_SUCH_GROUP)
    system = {"event": event, "actor_id": str(actor_id) if actor_id else None,
              "target_ids": [str(t) for t in target_ids], **fields}
    return await Message.create(conversation_id=cid, seq=seq, sender_id=None, type="system",
                                data={"system": system}, created_at=created, using_db=conn)


async def _count_active(conn, cid) -> int:
    return await Membership.filter(conversation_id=cid, left_at=None).using_db(conn).count()


async def _check_addable(deps: Deps, actor_id, ids: list[str]) -> None:
    """People added to a group must be the actor's contacts (and not have blocked them).

    A block answers exactly like a missing contact, as for direct messages.
    """
    valid = [i for i in ids if _uuid_str(i)]
    contacts = set()
    blockers = set()
    if valid:
        contacts = {str(c) for c in await Contact.filter(
            owner_id=actor_id, contact_id__in=valid).values_list("contact_id", flat=True)}
        blockers = {str(b) for b in await Block.filter(
            blocker_id__in=valid, blocked_id=actor_id).values_list("blocker_id", flat=True)}
    bad = [i for i in ids if i not in contacts or i in blockers]
    if bad:
        raise NotContact("You can only add your contacts to a group.",
                         details={"field": "user_ids", "user_ids": bad})


def _check_capacity(deps: Deps, current: int, adding: int) -> None:
    limit = deps.settings.max_group_members
    if current + adding > limit:
        raise GroupFull(f"A group holds at most {limit} members.",
                        details={"limit": limit, "members": current})


async def _admit(conn, cid, user_ids: list[str], line: Message) -> None:
    """Make these users members from `line` on (new rows, or re-joins of old ones)."""
    start = line.seq - 1
    joined = line.created_at
    old = {str(u) for u in await Membership.filter(
        conversation_id=cid, user_id__in=user_ids).using_db(conn).values_list("user_id", flat=True)}
    if old:
        await Membership.filter(conversation_id=cid, user_id__in=list(old)).using_db(conn).update(
            role="member", left_at=None, left_seq=None, visible_from_seq=start, read_seq=start,
            joined_at=joined, muted_until=None, notifications_muted=False)
    fresh = [u for u in user_ids if u not in old]
    if fresh:
        await Membership.bulk_create(
            [Membership(conversation_id=cid, user_id=u, role="member", visible_from_seq=start,
                        read_seq=start, joined_at=joined) for u in fresh],
            using_db=conn)
    await convs.bump_members_version(conn, cid, joined)


async def _depart(conn, cid, m: Membership, line: Message) -> None:
    moved = await Membership.filter(id=m.id, left_at=None).using_db(conn).update(
        left_at=line.created_at, left_seq=line.seq, role="member", muted_until=None)
    if not moved:
        raise NotFound("Not a member of this group.")
    await convs.bump_members_version(conn, cid, line.created_at)


# --- serialisation and events ----------------------------------------------------


def _member_out(m: Membership) -> dict:
    return {
        "user": public_user(m.user),
        "role": m.role,
        "joined_at": m.joined_at.isoformat(),
        "muted_until": m.muted_until.isoformat() if m.muted_until else None,
    }


def shared_summary(conv: Conversation, member_count: int, last_message: dict | None) -> dict:
    """The part of a group's chat-list entry that is the same for every member."""
    return {
        "id": str(conv.id),
        "type": "group",
        "title": conv.title,
        "avatar_url": avatar_url(conv.avatar_key),
        "announcement": conv.announcement,
        "only_admins_can_send": conv.only_admins_can_send,
        "members_can_invite": conv.members_can_invite,
        "members_can_pin": conv.members_can_pin,
        "member_count": member_count,
        "dissolved": conv.dissolved_at is not None,
        "last_message": last_message,
        "last_seq": last_message["seq"] if last_message else conv.last_seq,
        "created_at": conv.created_at.isoformat(),
        "last_activity_at": convs.activity(conv).isoformat(),
    }


async def _personal(deps: Deps, cid, user_id) -> dict:
    m = await Membership.get(conversation_id=cid, user_id=user_id).select_related("conversation")
    return (await convs.summaries(deps, user_id, [m]))[0]


async def _publish(deps: Deps, cid, lines: list[Message], *, also=(), personal=()) -> None:
    """After commit: the system lines to everyone concerned, then `conversation:updated`.

    `also`: people who just left and still get the line about it.
    `personal`: groups of users whose own entry changed; each group shares one state
    (e.g. everybody added by one line), so it gets one summary in one emit. The
    other members get the shared part of the entry, in one emit.
    """
    from app.services import history

    members = await convs.member_ids(cid)
    recipients = list(dict.fromkeys([*members, *(str(u) for u in also)]))
    serialized = await history.serialize_messages(lines) if lines else []
    for msg in serialized:
        await deps.fanout.to_users(recipients, "message:new", msg)
    conv = await Conversation.get(id=cid)
    personal = [[str(u) for u in grp] for grp in personal if grp]
    special = {u for grp in personal for u in grp}
    shared_to = [u for u in members if u not in special]
    if shared_to:
        await deps.fanout.to_users(
            shared_to, "conversation:updated",
            shared_summary(conv, len(members), serialized[-1] if serialized else None))
    for grp in personal:
        await deps.fanout.to_users(grp, "conversation:updated",
                                   await _personal(deps, cid, grp[0]))


# --- create and read ---------------------------------------------------------------


async def create_group(deps: Deps, user_id: str, data: CreateIn) -> dict:
    """The creator becomes owner; everyone else must be one of their contacts."""
    await deps.limiter.hit(f"group_create:{user_id}",
                           Limit.parse(deps.settings.group_create_rate_limit))
    name = clean_name(data.name, "name", "The group name")
    ids = _dedupe(data.member_ids, exclude=[user_id])
    if not ids:
        raise Invalid("Add at least one other member.", details={"field": "member_ids"})
    _check_capacity(deps, 1, len(ids))
    await _check_addable(deps, user_id, ids)
    cid = uuid.uuid4()
    async with in_transaction() as conn:
        await Conversation.create(id=cid, type="group", title=name, using_db=conn)
        line = await _line(conn, cid, user_id, "created", ids, name=name)
        await Membership.bulk_create(
            [Membership(conversation_id=cid, user_id=user_id, role="owner", read_seq=line.seq,
                        joined_at=line.created_at)]
            + [Membership(conversation_id=cid, user_id=u, role="member",
                          joined_at=line.created_at) for u in ids],
            using_db=conn)
    await _publish(deps, cid, [line], personal=[[user_id], ids])
    return await convs.conversation_for(deps, user_id, cid)


async def get_group(deps: Deps, user_id: str, conversation_id) -> dict:
    m = await _membership(conversation_id, user_id)
    return await _group_out(deps, m.conversation, user_id)


async def _group_out(deps: Deps, conv: Conversation, viewer_id) -> dict:
    members = await Membership.filter(conversation_id=conv.id, left_at=None).select_related(
        "user").order_by("joined_at", "id")
    owner = next((m for m in members if m.role == "owner"), None)
    mine = next((m for m in members if str(m.user_id) == str(viewer_id)), None)
    return {
        "id": str(conv.id),
        "name": conv.title,
        "avatar_url": avatar_url(conv.avatar_key),
        "avatar_urls": avatar_urls(conv.avatar_key),
        "announcement": conv.announcement,
        "only_admins_can_send": conv.only_admins_can_send,
        "members_can_invite": conv.members_can_invite,
        "members_can_pin": conv.members_can_pin,
        "owner_id": str(owner.user_id) if owner else None,
        "my_role": mine.role if mine else None,
        "member_count": len(members),
        "max_members": deps.settings.max_group_members,
        "created_at": conv.created_at.isoformat(),
        "members": [_member_out(m) for m in members],
    }


# --- settings -------------------------------------------------------------------------


async def update_group(deps: Deps, user_id: str, conversation_id, data: PatchIn) -> dict:
    m = await _membership(conversation_id, user_id)
    cid = m.conversation_id
    lines: list[Message] = []
    try:
        async with in_transaction() as conn:
            conv = await _lock(conn, cid)
            actor = await _actor(conn, cid, user_id)
            _require_admin(actor, "change the group's settings")
            changes: dict = {}
            if data.name is not None:
                name = clean_name(data.name, "name", "The group name")
                if name != conv.title:
                    changes["title"] = name
                    lines.append(await _line(conn, cid, user_id, "renamed", name=name))
            if data.announcement is not None:
                text = data.announcement.strip()
                if text != conv.announcement:
                    changes["announcement"] = text
                    lines.append(await _line(conn, cid, user_id, "announcement", text=text))
            settings = {}
            for key in ("only_admins_can_send", "members_can_invite", "members_can_pin"):
                value = getattr(data, key)
                if value is not None and value != getattr(conv, key):
                    settings[key] = value
            if settings:
                changes.update(settings)
                lines.append(await _line(conn, cid, user_id, "settings_changed", **settings))
            if not changes:
                raise _NothingToDo
            await Conversation.filter(id=cid).using_db(conn).update(**changes)
            await convs.bump_members_version(conn, cid, now())
    except _NothingToDo:
        pass
    if lines:
        await _publish(deps, cid, lines)
    return await get_group(deps, user_id, cid)


async def set_group_avatar(deps: Deps, user_id: str, conversation_id, chunks,
                           content_length: int | None) -> dict:
    """Owners and admins; `chunks=None` removes the avatar."""
    from app.services import avatars

    m = await _membership(conversation_id, user_id)
    _require_admin(m, "change the group's avatar")
    cid = m.conversation_id
    key = None
    if chunks is not None:
        key = await avatars.store_avatar(deps, user_id, chunks, content_length)
    try:
        async with in_transaction() as conn:
            conv = await _lock(conn, cid)
            old = conv.avatar_key
            # Still an admin now that the picture is ready.
            _require_admin(await _actor(conn, cid, user_id), "change the group's avatar")
            await Conversation.filter(id=cid).using_db(conn).update(avatar_key=key)
            await convs.bump_members_version(conn, cid, now())
    except BaseException:
        await avatars.delete_avatar(deps, key)
        raise
    await avatars.delete_avatar(deps, old)
    await _publish(deps, cid, [])  # every member's chat list shows the new picture
    return await get_group(deps, user_id, cid)


# --- membership -----------------------------------------------------------------------


async def add_members(deps: Deps, user_id: str, conversation_id, data: AddMembersIn) -> dict:
    """Admins, or any member when `members_can_invite`. Present members are skipped."""
    m = await _membership(conversation_id, user_id)
    cid = m.conversation_id
    ids = _dedupe(data.user_ids, exclude=[user_id])
    present = set(await convs.member_ids(cid))
    ids = [i for i in ids if i not in present]
    if not m.conversation.members_can_invite:
        _require_admin(m, "add members")
    if ids:
        await _check_addable(deps, user_id, ids)
    added: list[str] = []
    line = None
    try:
        async with in_transaction() as conn:
            conv = await _lock(conn, cid)
            actor = await _actor(conn, cid, user_id)
            if not conv.members_can_invite:
                _require_admin(actor, "add members")
            present = {str(u) for u in await Membership.filter(
                conversation_id=cid, left_at=None).using_db(conn).values_list("user_id", flat=True)}
            added = [i for i in ids if i not in present]
            if not added:
                raise _NothingToDo
            _check_capacity(deps, len(present), len(added))
            line = await _line(conn, cid, user_id, "member_added", added)
            await _admit(conn, cid, added, line)
    except _NothingToDo:
        added = []
    if line is not None:
        await _publish(deps, cid, [line], personal=[added])
    return {"added": added, "group": await get_group(deps, user_id, cid)}


async def remove_member(deps: Deps, user_id: str, conversation_id, target_id: str) -> None:
    """Kick (an admin removing someone of lower rank), or leave when target is me."""
    if _uuid_str(target_id) == _uuid_str(user_id):
        return await leave(deps, user_id, conversation_id)
    m = await _membership(conversation_id, user_id)
    cid = m.conversation_id
    async with in_transaction() as conn:
        await _lock(conn, cid)
        actor = await _actor(conn, cid, user_id)
        _require_admin(actor, "remove members")
        target = await _active(conn, cid, target_id)
        if target is None:
            raise NotFound("Not a member of this group.")
        if RANK[actor.role] <= RANK[target.role]:
            raise Forbidden("You can only remove members of a lower role.")
        line = await _line(conn, cid, user_id, "member_removed", [target.user_id])
        await _depart(conn, cid, target, line)
    await _publish(deps, cid, [line], also=[target.user_id], personal=[[target.user_id]])


async def leave(deps: Deps, user_id: str, conversation_id) -> None:
    """The owner leaving hands the group to the longest-standing admin, else the
    longest-standing member; the last person leaving dissolves it."""
    m = await _membership(conversation_id, user_id)
    cid = m.conversation_id
    lines: list[Message] = []
    heir = None
    async with in_transaction() as conn:
        await _lock(conn, cid)
        me = await _actor(conn, cid, user_id)
        lines.append(await _line(conn, cid, user_id, "member_left", [user_id]))
        await _depart(conn, cid, me, lines[0])
        if me.role == "owner":
            rest = Membership.filter(conversation_id=cid, left_at=None).using_db(conn)
            heir = (await rest.filter(role="admin").order_by("joined_at", "id").first()
                    or await rest.order_by("joined_at", "id").first())
            if heir is None:
                await Conversation.filter(id=cid).using_db(conn).update(dissolved_at=now())
            else:
                await Membership.filter(id=heir.id).using_db(conn).update(role="owner")
                lines.append(await _line(conn, cid, user_id, "owner_changed", [heir.user_id],
                                         reason="owner_left"))
    personal = [[user_id]] + ([[heir.user_id]] if heir else [])
    await _publish(deps, cid, lines, also=[user_id], personal=personal)


async def update_member(deps: Deps, user_id: str, conversation_id, target_id: str,
                        data: MemberPatch) -> dict:
    """The owner promotes/demotes (admin|member); admins mute members of lower rank."""
    m = await _membership(conversation_id, user_id)
    cid = m.conversation_id
    if data.role is None and data.muted_until is msgspec.UNSET:
        raise Invalid("Nothing to change: give role or muted_until.")
    if isinstance(data.muted_until, datetime) and data.muted_until <= now():
        raise Invalid("muted_until must be in the future (null unmutes).",
                      details={"field": "muted_until"})
    lines: list[Message] = []
    try:
        async with in_transaction() as conn:
            await _lock(conn, cid)
            actor = await _actor(conn, cid, user_id)
            target = await _active(conn, cid, target_id)
            if target is None:
                raise NotFound("Not a member of this group.")
            if target.id == actor.id:
                raise Forbidden("You cannot change your own role or mute yourself.")
            changes: dict = {}
            if data.role is not None:
                _require_owner(actor, "change roles")
                if target.role == "owner":
                    raise Forbidden("Use transfer to change the owner.")
                if data.role != target.role:
                    changes["role"] = data.role
                    lines.append(await _line(conn, cid, user_id, "role_changed",
                                             [target.user_id], role=data.role))
            if data.muted_until is not msgspec.UNSET:
                _require_admin(actor, "mute members")
                if RANK[actor.role] <= RANK[changes.get("role", target.role)]:
                    raise Forbidden("You can only mute members of a lower role.")
                until = data.muted_until
                changes["muted_until"] = until
                if until is not None:
                    lines.append(await _line(conn, cid, user_id, "member_muted",
                                             [target.user_id], until=until.isoformat()))
                elif target.muted_until is not None:
                    lines.append(await _line(conn, cid, user_id, "member_unmuted",
                                             [target.user_id]))
            if not lines:
                raise _NothingToDo
            await Membership.filter(id=target.id).using_db(conn).update(**changes)
    except _NothingToDo:
        pass
    if lines:
        await _publish(deps, cid, lines, personal=[[target.user_id]])
    return await get_group(deps, user_id, cid)


async def transfer(deps: Deps, user_id: str, conversation_id, data: TransferIn) -> dict:
    """The owner hands the group over; they stay on as a plain member (WeChat)."""
    m = await _membership(conversation_id, user_id)
    cid = m.conversation_id
    async with in_transaction() as conn:
        await _lock(conn, cid)
        actor = await _actor(conn, cid, user_id)
        _require_owner(actor, "transfer the group")
        target = await _active(conn, cid, data.user_id)
        if target is None:
            raise NotFound("Not a member of this group.")
        if target.id == actor.id:
            raise Invalid("You already own this group.", details={"field": "user_id"})
        line = await _line(conn, cid, user_id, "owner_changed", [target.user_id],
                           reason="transfer")
        await Membership.filter(id=target.id).using_db(conn).update(role="owner", muted_until=None)
        await Membership.filter(id=actor.id).using_db(conn).update(role="member")
    await _publish(deps, cid, [line], personal=[[user_id], [target.user_id]])
    return await get_group(deps, user_id, cid)


async def dissolve(deps: Deps, user_id: str, conversation_id) -> None:
    """Owner only. Members keep the history they saw; nobody can send any more."""
    m = await _membership(conversation_id, user_id)
    cid = m.conversation_id
    async with in_transaction() as conn:
        await _lock(conn, cid)
        actor = await _actor(conn, cid, user_id)
        _require_owner(actor, "dissolve the group")
        line = await _line(conn, cid, user_id, "dissolved")
        await Conversation.filter(id=cid).using_db(conn).update(dissolved_at=line.created_at)
        await GroupInvite.filter(conversation_id=cid, revoked_at=None).using_db(conn).update(
            revoked_at=line.created_at)
        await convs.bump_members_version(conn, cid, line.created_at)
    await _publish(deps, cid, [line])


# --- invite links ------------------------------------------------------------------------


def _invite_url(deps: Deps, token: str) -> str:
    return f"{deps.settings.public_url.rstrip('/')}/join/{token}"


def _invite_out(deps: Deps, inv: GroupInvite) -> dict:
    return {
        "token": inv.token,
        "url": _invite_url(deps, inv.token),
        "max_uses": inv.max_uses,
        "uses": inv.uses,
        "expires_at": inv.expires_at.isoformat() if inv.expires_at else None,
        "created_by": str(inv.created_by_id),
        "created_at": inv.created_at.isoformat() if inv.created_at else None,
    }


async def create_invite(deps: Deps, user_id: str, conversation_id, data: InviteIn) -> dict:
    """Admins, or any member when `members_can_invite`."""
    m = await _membership(conversation_id, user_id)
    if not m.conversation.members_can_invite:
        _require_admin(m, "create invite links")
    ttl = data.expires_in or DEFAULT_INVITE_TTL
    inv = await GroupInvite.create(
        token=secrets.token_urlsafe(18), conversation_id=m.conversation_id, created_by_id=user_id,
        max_uses=data.max_uses, expires_at=now() + timedelta(seconds=ttl))
    return _invite_out(deps, inv)


async def list_invites(deps: Deps, user_id: str, conversation_id) -> list[dict]:
    """The group's links that would still let someone in (what join checks: not
    revoked, not expired, not used up, creator still allowed to invite), newest
    first. Owner and admins only: a link is a way in, theirs to oversee."""
    m = await _membership(conversation_id, user_id)
    _require_admin(m, "see the group's invite links")
    conv = m.conversation
    rows = await GroupInvite.filter(
        Q(expires_at=None) | Q(expires_at__gt=now()),
        conversation_id=conv.id, revoked_at=None,
    ).order_by("-created_at", "-id")
    rows = [inv for inv in rows if inv.max_uses is None or inv.uses < inv.max_uses]
    roles = dict(await Membership.filter(
        conversation_id=conv.id, left_at=None,
        user_id__in=list({inv.created_by_id for inv in rows})).values_list("user_id", "role"))
    roles = {str(k): v for k, v in roles.items()}
    minimum = RANK["member"] if conv.members_can_invite else RANK["admin"]
    return [_invite_out(deps, inv) for inv in rows
            if str(inv.created_by_id) in roles
            and RANK[roles[str(inv.created_by_id)]] >= minimum]


async def revoke_invite(deps: Deps, user_id: str, conversation_id, token: str) -> None:
    """Owner and admins, or the member who made the link. Revoking twice is not an error.

    Taken under the group's lock, like join: a join that has not committed
    by the time the revoke commits is refused."""
    m = await _membership(conversation_id, user_id)
    cid = m.conversation_id
    async with in_transaction() as conn:
        await _lock(conn, cid)
        actor = await _actor(conn, cid, user_id)
        inv = await GroupInvite.filter(token=token, conversation_id=cid).using_db(conn).first()
        if inv is None:
            raise NotFound("No such invite.")
        if str(inv.created_by_id) != str(actor.user_id):
            _require_admin(actor, "revoke other people's invite links")
        if inv.revoked_at is None:
            await GroupInvite.filter(id=inv.id).using_db(conn).update(revoked_at=now())


def _check_usable(inv: GroupInvite) -> None:
    if inv.revoked_at is not None or inv.conversation.dissolved_at is not None:
        raise InviteExpired()
    if inv.expires_at is not None and inv.expires_at <= now():
        raise InviteExpired()
    if inv.max_uses is not None and inv.uses >= inv.max_uses:
        raise InviteExpired("This invite link has been used up.")


async def _invite(token: str) -> GroupInvite:
    if len(token) > INVITE_TOKEN_MAX:  # the ORM refuses to even look one up
        raise NotFound("No such invite.")
    inv = await GroupInvite.get_or_none(token=token).select_related("conversation")
    if inv is None:
        raise NotFound("No such invite.")
    return inv


async def preview_invite(deps: Deps, user_id: str, token: str) -> dict:
    inv = await _invite(token)
    _check_usable(inv)
    conv = inv.conversation
    count = await Membership.filter(conversation_id=conv.id, left_at=None).count()
    inviter = await User.get_or_none(id=inv.created_by_id)
    return {
        "group": {"id": str(conv.id), "name": conv.title, "member_count": count},
        "inviter": public_user(inviter) if inviter else None,
        "expires_at": inv.expires_at.isoformat() if inv.expires_at else None,
        "already_member": await Membership.exists(conversation_id=conv.id, user_id=user_id,
                                                  left_at=None),
    }


async def join(deps: Deps, user_id: str, data: JoinIn) -> dict:
    """Join through a link. Already a member: nothing happens and no use is spent.

    The link dies with its creator's right to invite (they left, or lost admin
    while members may not invite)."""
    inv = await _invite(data.token)
    cid = inv.conversation_id
    if inv.conversation.dissolved_at is None and await Membership.exists(
            conversation_id=cid, user_id=user_id, left_at=None):
        return await convs.conversation_for(deps, user_id, cid)
    _check_usable(inv)
    line = None
    async with in_transaction() as conn:
        conv = await _lock(conn, cid)
        if await _active(conn, cid, user_id) is None:
            inv = await GroupInvite.filter(id=inv.id).using_db(conn).first()
            inv.conversation = conv
            _check_usable(inv)
            inviter = await _active(conn, cid, inv.created_by_id)
            if inviter is None or (not conv.members_can_invite
                                   and RANK[inviter.role] < RANK["admin"]):
                raise InviteExpired()
            _check_capacity(deps, await _count_active(conn, cid), 1)
            await GroupInvite.filter(id=inv.id).using_db(conn).update(uses=F("uses") + 1)
            line = await _line(conn, cid, user_id, "member_joined", [user_id],
                               inviter_id=str(inv.created_by_id), via="invite")
            await _admit(conn, cid, [str(user_id)], line)
    if line is not None:
        await _publish(deps, cid, [line], personal=[[user_id]])
    return await convs.conversation_for(deps, user_id, cid)


# --- the hook called by messaging ---------------------------------------------------------


async def resolve_mentions(deps: Deps, membership: Membership, data) -> dict:
    """Typed mention data for a message ({"mentions": [...], "mention_all": bool}),
    judged by send_rules.check_mentions on the group's current members."""
    m = membership
    ids = _dedupe(data.mentions)
    members = None
    if ids and m.conversation.type == "group":
        members = set(await convs.member_ids(m.conversation_id))
    return send_rules.check_mentions(conversation_type=m.conversation.type, role=m.role,
                                     mentions=ids, mention_all=data.mention_all,
                                     members=members)


# --- read lists ---------------------------------------------------------------------------


async def readers(deps: Deps, user_id: str, conversation_id, message_id: str) -> dict:
    """Who has read a message: lists for chats up to READERS_LIST_LIMIT members,
    counts only above. Counted: current members other than the sender who were
    in the chat when it was sent. People who turned read receipts off always
    count as not read."""
    m = await convs.active_membership(conversation_id, user_id)
    mid = int_id(message_id, "message_id")
    if mid is None:
        raise NotFound("No such message.")
    msg = await Message.get_or_none(id=mid, conversation_id=m.conversation_id)
    if msg is None or msg.seq <= m.visible_from_seq:
        raise NotFound("No such message.")
    audience = Membership.filter(conversation_id=m.conversation_id, left_at=None,
                                 visible_from_seq__lt=msg.seq)
    if msg.sender_id is not None:
        audience = audience.exclude(user_id=msg.sender_id)
    seen = Q(read_seq__gte=msg.seq, user__send_read_receipts=True)
    out: dict = {"message_id": str(msg.id), "seq": msg.seq}
    size = await Membership.filter(conversation_id=m.conversation_id, left_at=None).count()
    if size > READERS_LIST_LIMIT:
        total = await audience.count()
        read = await audience.filter(seen).count()
        out.update(read_count=read, unread_count=total - read, readers=None, unread=None)
        return out
    rows = await audience.select_related("user").order_by("joined_at", "id")
    read_rows = [r for r in rows if r.read_seq >= msg.seq and r.user.send_read_receipts]
    read_ids = {r.id for r in read_rows}
    out.update(
        read_count=len(read_rows),
        unread_count=len(rows) - len(read_rows),
        readers=[public_user(r.user) for r in read_rows],
        unread=[public_user(r.user) for r in rows if r.id not in read_ids],
    )
    return out
