"""Contacts, requests, blocks and privacy (issue #4 fills this in)."""

from __future__ import annotations

from app.deps import Deps


async def check_can_message(deps: Deps, sender_id: str, recipient_id: str) -> None:
    """Raise when sender may not send a direct message to recipient.

    Until contact rules exist, anyone who shares a direct conversation may write.
    """
