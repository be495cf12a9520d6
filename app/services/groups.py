"""Group chats (issue #5 fills this in)."""

from __future__ import annotations

from app.deps import Deps
from app.models.messaging import Membership


async def check_can_send(deps: Deps, membership: Membership) -> None:
    """Raise when this member may not post in the group (muted, admins-only)."""
