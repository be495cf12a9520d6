"""Presence rules: who is told that a user came online or went offline, and
whose presence a viewer may see. The online state itself is kept by
deps.presence (app/presence.py), shared between processes through Redis.

Visibility follows the subject's `last_seen_visibility`:
- everyone: anyone who has them as a contact sees it;
- contacts: only people they have in their own list as well;
- nobody:   nobody (presence is null).
Someone the subject blocked never sees it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from app.deps import Deps
from app.models.accounts import User
from app.models.contacts import Block, Contact

log = logging.getLogger("parley.presence")


def _visible(subject: User, in_subject_contacts: bool, blocked_by_subject: bool) -> bool:
    if blocked_by_subject:
        return False
    if subject.last_seen_visibility == "everyone":
        return True
    return subject.last_seen_visibility == "contacts" and in_subject_contacts


async def presence_for(deps: Deps, viewer_id, subjects: list[User]) -> dict[str, dict | None]:
    """{user id: {online, last_seen} or None when hidden from this viewer}."""
    if not subjects:
        return {}
    ids = [s.id for s in subjects]
    in_contacts = {str(u) for u in await Contact.filter(
        owner_id__in=ids, contact_id=viewer_id).values_list("owner_id", flat=True)}
    blockers = {str(u) for u in await Block.filter(
        blocker_id__in=ids, blocked_id=viewer_id).values_list("blocker_id", flat=True)}
    visible = [s for s in subjects
               if _visible(s, str(s.id) in in_contacts, str(s.id) in blockers)]
    online = await deps.presence.online([str(s.id) for s in visible])
    out: dict[str, dict | None] = {str(s.id): None for s in subjects}
    for s in visible:
        uid = str(s.id)
        is_online = uid in online
        out[uid] = {
            "online": is_online,
            "last_seen": None if is_online or s.last_seen_at is None
            else s.last_seen_at.isoformat(),
        }
    return out


async def watchers(subject: User) -> list[str]:
    """Users who get `presence` events about `subject`."""
    if subject.last_seen_visibility == "nobody":
        return []
    have_me = {str(u) for u in await Contact.filter(contact_id=subject.id).values_list(
        "owner_id", flat=True)}
    if subject.last_seen_visibility != "everyone":
        mine = {str(u) for u in await Contact.filter(owner_id=subject.id).values_list(
            "contact_id", flat=True)}
        have_me &= mine
    if have_me:
        blocked = {str(u) for u in await Block.filter(blocker_id=subject.id).values_list(
            "blocked_id", flat=True)}
        have_me -= blocked
    return sorted(have_me)


async def _announce(deps: Deps, user_id: str, online: bool, last_seen: datetime | None) -> None:
    subject = await User.get_or_none(id=user_id)
    if subject is None:
        return
    to = await watchers(subject)
    if to:
        await deps.fanout.to_users(to, "presence", {
            "user_id": str(user_id), "online": online,
            "last_seen": last_seen.isoformat() if last_seen else None,
        })


async def user_connected(deps: Deps, user_id: str) -> None:
    if await deps.presence.connect(user_id):
        await _announce(deps, user_id, True, None)


async def user_disconnected(deps: Deps, user_id: str) -> None:
    async def went_offline(uid: str) -> None:
        seen = datetime.now(UTC)
        await User.filter(id=uid).update(last_seen_at=seen)
        await _announce(deps, uid, False, seen)

    deps.presence.disconnect(user_id, went_offline)
