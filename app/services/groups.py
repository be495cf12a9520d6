"""Group chats (issue #5 fills this in)."""

from __future__ import annotations

from app.deps import Deps
from app.models.messaging import Membership


async def check_can_send(deps: Deps, membership: Membership) -> None:
    """Raise when this member may not post in the group (muted, admins-only)."""


async def resolve_mentions(deps: Deps, membership: Membership, data) -> dict:
    """Typed mention data for a message ({"mentions": [...], "mention_all": bool})."""
    from app.errors import Invalid

    raise Invalid("Mentions are only supported in group chats.", details={"field": "mentions"})
