"""Per-process cache of group member lists, keyed by the group's member-list version.

The version is the conversation's `updated_at`, which every membership change of a
group moves strictly forward *in the same transaction* as the change
(conversations.bump_members_version). A list is stored together with the version
it was read with (one statement, or one transaction under the conversation's lock),
and used only when the caller has just read the current version from the
database. So a list is never used after a change committed anywhere (another
process included) became visible to the caller: the version it read differs and
the list is reloaded. No cross-process invalidation message is needed.

The message writer and services.conversations both use it.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from datetime import datetime

from app.services.sql import as_datetime

MEMBER_CACHE_SIZE = 10_000

# conversation id (str) → (version, member user ids)
_member_cache: OrderedDict[str, tuple[datetime, tuple[str, ...]]] = OrderedDict()


# A version as read from either backend (SQLite hands back text).
as_version = as_datetime


def get(conversation_id, version) -> tuple[str, ...] | None:
    """The cached list if it was read at exactly this version."""
    key = str(conversation_id)
    hit = _member_cache.get(key)
    if hit is None or version is None or hit[0] != version:
        return None
    # SQLite's writer looks lists up on its connection's thread, where put() on
    # the event loop may have dropped this entry since the read above.
    with contextlib.suppress(KeyError):
        _member_cache.move_to_end(key)
    return hit[1]


def put(conversation_id, version, ids: tuple[str, ...]) -> None:
    """Remember `ids`, read together with `version` (same statement or same
    transaction under the conversation's lock)."""
    key = str(conversation_id)
    if version is None or not ids:
        _member_cache.pop(key, None)
        return
    _member_cache[key] = (version, ids)
    _member_cache.move_to_end(key)
    while len(_member_cache) > MEMBER_CACHE_SIZE:
        _member_cache.popitem(last=False)
