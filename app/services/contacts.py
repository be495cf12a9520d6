"""Contacts, friend requests, blocks and privacy settings (WeChat-like).

- You find someone by exact handle/email/phone (accounts.search_users), send a
  request with a short greeting; once accepted you are each other's contacts
  and share a direct conversation.
- A contact is one row per side: deleting someone removes them from *my* list
  only; they keep me, but their messages to me are refused until we are
  contacts again.
- Blocking keeps the contact (WeChat) but refuses their requests and messages
  with the same answers anyone else would get, and hides my presence.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Literal

import msgspec
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.clock import now
from app.deps import Deps
from app.errors import (
    AlreadyContact,
    Conflict,
    Invalid,
    NotFound,
    RequestExpired,
    RequestRefused,
    YouBlocked,
)
from app.models.accounts import User
from app.models.contacts import Block, Contact, ContactRequest
from app.ratelimit import Limit
from app.services import conversations as convs
from app.services import presence
from app.services.accounts import public_user, user_by_id
from app.validation import Id, Payload, clean_optional_name, int_id

GREETING_MAX = 200
REMARK_MAX = 64
# A recipient with this many pending requests takes no more until they answer
# some. Answered with the same generic refusal as a block.
MAX_PENDING_INCOMING = 500

Greeting = Annotated[str, msgspec.Meta(max_length=GREETING_MAX)]
Remark = Annotated[str, msgspec.Meta(max_length=REMARK_MAX)]


class RequestIn(Payload):
    user_id: Id
    message: Greeting = ""


class ContactPatch(Payload):
    remark: Remark


class BlockIn(Payload):
    user_id: Id


class SettingsPatch(Payload):
    allow_strangers: bool | None = None
    send_read_receipts: bool | None = None
    last_seen_visibility: Literal["everyone", "contacts", "nobody"] | None = None
    discoverable_by_email: bool | None = None
    discoverable_by_phone: bool | None = None
    # Push notifications (checked by app/services/push.py)
    push_enabled: bool | None = None
    push_preview: str | None = None
    dnd_start: str | None = None
    dnd_end: str | None = None
    timezone: str | None = None


SETTINGS_FIELDS = ("allow_strangers", "send_read_receipts", "last_seen_visibility",
                   "discoverable_by_email", "discoverable_by_phone")


def _pending_key(from_id, to_id) -> str:
    return f"{from_id}:{to_id}"


def _is_expired(r: ContactRequest) -> bool:
    return r.status == "pending" and r.expires_at <= now()


# --- serialisation -----------------------------------------------------------


def request_out(r: ContactRequest) -> dict:
    """`from_user` / `to_user` must be fetched (select_related)."""
    return {
        "id": str(r.id),
        "from_user": public_user(r.from_user),
        "to_user": public_user(r.to_user),
        "message": r.message,
        "status": "expired" if _is_expired(r) else r.status,
        "created_at": r.created_at.isoformat(),
        "expires_at": r.expires_at.isoformat(),
    }


async def contacts_out(deps: Deps, viewer_id, rows: list[Contact]) -> list[dict]:
    """`contact` must be fetched. Presence is null when the person hides it from me."""
    seen = await presence.presence_for(deps, viewer_id, [c.contact for c in rows])
    return [
        {
            "user": public_user(c.contact),
            "remark": c.remark,
            "created_at": c.created_at.isoformat(),
            "presence": seen.get(str(c.contact_id)),
        }
        for c in rows
    ]


async def contact_out(deps: Deps, owner_id, contact_id) -> dict:
    row = await Contact.get(owner_id=owner_id, contact_id=contact_id).select_related("contact")
    return (await contacts_out(deps, owner_id, [row]))[0]


async def _request(rid) -> ContactRequest:
    return await ContactRequest.get(id=rid).select_related("from_user", "to_user")


# --- small queries ------------------------------------------------------------


async def has_blocked(blocker_id, blocked_id) -> bool:
    return await Block.exists(blocker_id=blocker_id, blocked_id=blocked_id)


async def has_contact(owner_id, contact_id) -> bool:
    return await Contact.exists(owner_id=owner_id, contact_id=contact_id)


async def _peer(me_id: str, user_id: str) -> User:
    peer = await user_by_id(user_id)
    if str(peer.id) == str(me_id):
        raise Invalid("That is you.", details={"field": "user_id"})
    return peer


async def _add_contacts(conn, a, b) -> None:
    """Both sides of a friendship. Rows that exist stay as they are (a concurrent
    accept, or one side kept the other): ON CONFLICT DO NOTHING, which unlike a
    caught IntegrityError leaves a PostgreSQL transaction usable. The two rows go
    in the same order whichever side accepts: two people accepting each other at
    once would otherwise each wait on the row the other inserted first."""
    a, b = sorted((str(a), str(b)))
    await Contact.bulk_create([Contact(owner_id=a, contact_id=b), Contact(owner_id=b, contact_id=a)],
                              ignore_conflicts=True, using_db=conn)


async def _settle_requests(conn, ids, **fields) -> int:
    """Close pending requests (by id or pending_key) as accepted."""
    q = ContactRequest.filter(**ids)
    if "id" in ids:
        q = q.filter(status="pending")
    return await q.using_db(conn).update(status="accepted", pending_key=None,
                                         responded_at=now(), **fields)


async def _expire_pending(user_id) -> None:
    """Close lapsed pending requests to or from this user (frees their pending_key)."""
    for field_name in ("from_user_id", "to_user_id"):
        await ContactRequest.filter(
            **{field_name: user_id}, status="pending", expires_at__lte=now()
        ).update(status="expired", pending_key=None)


# --- requests -------------------------------------------------------------------


async def send_request(deps: Deps, me_id: str, data: RequestIn) -> dict:
    """Returns {request} (pending), or {request, contact, conversation} when the
    request was accepted on the spot (they had requested me too, or they still
    have me as a contact after I removed them)."""
    await deps.limiter.hit(f"contact_request:{me_id}",
                           Limit.parse(deps.settings.contact_request_rate_limit))
    peer = await _peer(me_id, data.user_id)
    if peer.deactivated_at is not None:  # deleting their account, or deleted
        raise NotFound("No such user.")
    greeting = data.message.strip()
    if await has_blocked(me_id, peer.id):
        raise YouBlocked()
    if await has_blocked(peer.id, me_id):
        raise RequestRefused()
    mine, theirs = await has_contact(me_id, peer.id), await has_contact(peer.id, me_id)
    if mine and theirs:
        raise AlreadyContact()
    await _expire_pending(me_id)
    reverse = await ContactRequest.get_or_none(pending_key=_pending_key(peer.id, me_id))
    if reverse is not None and await _accept_pair(deps, reverse):
        # They asked me first: asking back accepts both.
        return await _record_accepted(deps, me_id, peer, greeting)
    if theirs:
        # They kept me after I removed them: their consent stands.
        return await _record_accepted(deps, me_id, peer, greeting)
    if await ContactRequest.filter(to_user_id=peer.id, status="pending",
                                   expires_at__gt=now()).count() >= MAX_PENDING_INCOMING:
        raise RequestRefused()

    key = _pending_key(me_id, peer.id)
    expires = now() + timedelta(days=deps.settings.contact_request_ttl_days)
    updated = await ContactRequest.filter(pending_key=key).update(message=greeting,
                                                                  expires_at=expires)
    if not updated:
        try:
            await ContactRequest.create(from_user_id=me_id, to_user_id=peer.id,
                                              message=greeting, pending_key=key,
                                              expires_at=expires)
        except IntegrityError:
            # Sent twice at once from two devices: keep one request, newest greeting.
            await ContactRequest.filter(pending_key=key).update(message=greeting,
                                                                expires_at=expires)
    row = await ContactRequest.get(pending_key=key).select_related("from_user", "to_user")
    # Both asked at the same moment: the later one sees the other and accepts both.
    reverse = await ContactRequest.get_or_none(pending_key=_pending_key(peer.id, me_id))
    if reverse is not None and not _is_expired(reverse) and await _accept_pair(deps, reverse):
        return await _record_accepted(deps, me_id, peer, greeting, row_id=row.id)
    out = request_out(row)
    await deps.fanout.to_users([peer.id], "contact:request", {"request": out})
    return {"request": out}


async def _record_accepted(deps: Deps, me_id: str, peer: User, greeting: str,
                           row_id: int | None = None) -> dict:
    """My own request (`row_id`, else my pending one, else a new row), accepted at
    once; we become contacts both ways."""
    fields = dict(status="accepted", pending_key=None, responded_at=now(), message=greeting)
    if row_id is None:
        row = await ContactRequest.get_or_none(pending_key=_pending_key(me_id, peer.id))
        row_id = row.id if row is not None else None
    async with in_transaction() as conn:
        if row_id is not None:
            await ContactRequest.filter(id=row_id).using_db(conn).update(**fields)
            rid = row_id
        else:
            rid = (await ContactRequest.create(from_user_id=me_id, to_user_id=peer.id,
                                               expires_at=now(), using_db=conn, **fields)).id
        await _add_contacts(conn, me_id, peer.id)
    return await _tell_requester(deps, await _request(rid))


async def _accept_pair(deps: Deps, r: ContactRequest) -> bool:
    """Mark a pending request accepted (once) and befriend; tell its requester."""
    if _is_expired(r):
        return False
    async with in_transaction() as conn:
        won = await _settle_requests(conn, {"id": r.id})
        if won:
            await _add_contacts(conn, r.from_user_id, r.to_user_id)
    if not won:
        return False
    await _tell_requester(deps, await _request(r.id))
    return True


async def _tell_requester(deps: Deps, r: ContactRequest) -> dict:
    """contact:accepted to the requester's devices; returns the requester's view."""
    requester, other = str(r.from_user_id), str(r.to_user_id)
    conv, _ = await convs.get_or_create_direct(deps, requester, other)
    view = {
        "request": request_out(r),
        "contact": await contact_out(deps, requester, other),
        "conversation": await convs.conversation_for(deps, requester, conv.id),
    }
    await deps.fanout.to_users([requester], "contact:accepted", view)
    return view


def _parse_request_id(request_id) -> int:
    rid = int_id(request_id, "request_id")
    if rid is None:
        raise NotFound("No such request.")
    return rid


async def _incoming(me_id: str, request_id) -> ContactRequest:
    """A request sent to me. Unknown ids and other people's requests look the same."""
    r = await ContactRequest.get_or_none(
        id=_parse_request_id(request_id), to_user_id=me_id
    ).select_related("from_user", "to_user")
    if r is None:
        raise NotFound("No such request.")
    return r


async def accept(deps: Deps, me_id: str, request_id) -> dict:
    """→ {request, contact, conversation}: the new contact and our direct chat."""
    r = await _incoming(me_id, request_id)
    if r.status == "pending":
        if _is_expired(r):
            raise RequestExpired()
        # One transaction: the request, both contact rows and my request the
        # other way change together or not at all.
        async with in_transaction() as conn:
            won = await _settle_requests(conn, {"id": r.id})
            if won:
                await _add_contacts(conn, me_id, r.from_user_id)
                # Any request of mine the other way is settled too.
                await _settle_requests(
                    conn, {"pending_key": _pending_key(me_id, r.from_user_id)})
        if won:
            await _tell_requester(deps, await _request(r.id))
        r = await _request(r.id)
    if r.status == "expired":
        raise RequestExpired()
    if r.status != "accepted":
        raise Conflict(f"This request was already {r.status}.")
    # Accepted (now or before: accepting twice is harmless).
    if not await has_contact(me_id, r.from_user_id):
        raise Conflict("This request was accepted, but you have removed the contact since.")
    conv, _ = await convs.get_or_create_direct(deps, me_id, r.from_user_id)
    return {
        "request": request_out(r),
        "contact": await contact_out(deps, me_id, r.from_user_id),
        "conversation": await convs.conversation_for(deps, me_id, conv.id),
    }


async def reject(deps: Deps, me_id: str, request_id) -> dict:
    """The requester is not told (WeChat); their request simply never turns into a contact."""
    r = await _incoming(me_id, request_id)
    if r.status == "pending" and _is_expired(r):
        raise RequestExpired()
    if r.status == "pending":
        await ContactRequest.filter(id=r.id, status="pending").update(
            status="rejected", pending_key=None, responded_at=now())
        r = await _request(r.id)
    if r.status == "expired":
        raise RequestExpired()
    if r.status != "rejected":
        raise Conflict(f"This request was already {r.status}.")
    return {"request": request_out(r)}


async def list_requests(deps: Deps, me_id: str) -> dict:
    """Pending, unexpired requests, newest first. Requests from people I blocked are hidden."""
    await _expire_pending(me_id)
    blocked = set(await Block.filter(blocker_id=me_id).values_list("blocked_id", flat=True))
    incoming = await ContactRequest.filter(to_user_id=me_id, status="pending").order_by(
        "-id").select_related("from_user", "to_user")
    outgoing = await ContactRequest.filter(from_user_id=me_id, status="pending").order_by(
        "-id").select_related("from_user", "to_user")
    return {"incoming": [request_out(r) for r in incoming if r.from_user_id not in blocked],
            "outgoing": [request_out(r) for r in outgoing]}


# --- contacts ---------------------------------------------------------------------


def _sort_name(row: Contact) -> str:
    return (row.remark or row.contact.display_name).casefold()


async def list_contacts(deps: Deps, me_id: str) -> list[dict]:
    rows = await Contact.filter(owner_id=me_id).select_related("contact")
    rows.sort(key=lambda c: (_sort_name(c), str(c.contact_id)))
    return await contacts_out(deps, me_id, rows)


async def _my_contact(me_id: str, user_id: str) -> Contact:
    try:
        uid = uuid.UUID(str(user_id))
    except ValueError:
        raise NotFound("No such contact.") from None
    row = await Contact.get_or_none(owner_id=me_id, contact_id=uid).select_related("contact")
    if row is None:
        raise NotFound("No such contact.")
    return row


async def set_remark(deps: Deps, me_id: str, user_id: str, data: ContactPatch) -> dict:
    row = await _my_contact(me_id, user_id)
    row.remark = clean_optional_name(data.remark, "remark")
    await row.save(update_fields=["remark"])
    out = (await contacts_out(deps, me_id, [row]))[0]
    await deps.fanout.to_users([me_id], "contact:updated", {"contact": out})
    return out


async def remove_contact(deps: Deps, me_id: str, user_id: str) -> None:
    """One-sided: they keep me, but I no longer accept their messages."""
    row = await _my_contact(me_id, user_id)
    await Contact.filter(id=row.id).delete()
    await deps.fanout.to_users([me_id], "contact:removed", {"user_id": str(row.contact_id)})


# --- blocks -------------------------------------------------------------------------


def _block_out(b: Block) -> dict:
    return {"user": public_user(b.blocked), "created_at": b.created_at.isoformat()}


async def block(deps: Deps, me_id: str, data: BlockIn) -> tuple[dict, bool]:
    """→ (block, created). Keeps the contact (WeChat); their pending requests to me
    are rejected. They are not told."""
    peer = await _peer(me_id, data.user_id)
    created = False
    try:
        _, created = await Block.get_or_create(blocker_id=me_id, blocked_id=peer.id)
    except IntegrityError:
        pass
    await ContactRequest.filter(pending_key=_pending_key(peer.id, me_id)).update(
        status="rejected", pending_key=None, responded_at=now())
    row = await Block.get(blocker_id=me_id, blocked_id=peer.id).select_related("blocked")
    return _block_out(row), created


async def unblock(deps: Deps, me_id: str, user_id: str) -> None:
    try:
        uid = uuid.UUID(str(user_id))
    except ValueError:
        raise NotFound("No such block.") from None
    if not await Block.filter(blocker_id=me_id, blocked_id=uid).delete():
        raise NotFound("No such block.")


async def list_blocks(deps: Deps, me_id: str) -> list[dict]:
    rows = await Block.filter(blocker_id=me_id).order_by("-created_at", "-id").select_related(
        "blocked")
    return [_block_out(b) for b in rows]


# --- privacy settings ----------------------------------------------------------------


def settings_out(user: User) -> dict:
    from app.services import push

    return {**{name: getattr(user, name) for name in SETTINGS_FIELDS},
            **push.settings_out(user)}


async def get_settings(deps: Deps, user: User) -> dict:
    return settings_out(user)


async def update_settings(deps: Deps, user: User, data: SettingsPatch) -> dict:
    from app.services import push

    changed = []
    for name, value in push.check_settings(data).items():
        if value != getattr(user, name):
            setattr(user, name, value)
            changed.append(name)
    for name in SETTINGS_FIELDS:
        value = getattr(data, name)
        if value is not None and value != getattr(user, name):
            setattr(user, name, value)
            changed.append(name)
    if changed:
        await user.save(update_fields=changed)
        from app.services import read_cache

        await read_cache.changed(deps, "user", [user.id])
    return settings_out(user)
