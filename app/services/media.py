"""Uploaded media (issue #6 fills this in)."""

from __future__ import annotations

from app.deps import Deps
from app.errors import Invalid


async def attach_to_message(deps: Deps, user_id: str, data) -> dict:
    """Check the sender may attach `data.media_id` as `data.type`; return the
    media snapshot stored with the message."""
    raise Invalid("Media messages are not supported yet.", details={"field": "type"})
