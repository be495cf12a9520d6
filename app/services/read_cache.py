"""Per-process caches of hot reads, dropped on every process when the data changes.

What is cached: the session behind an access token (every socket connect and
REST call checks it) and user rows (the caller of every REST call, and profile
lookups). Entries are database rows, never shared ORM objects: each hit builds
fresh objects, so a caller that changes its copy changes nobody else's.

Invalidation. A write path calls `changed(deps, kind, keys)` right after its
commit: the entries go from this process at once, and from every other process
when the record arrives over the message queue (an `inv` record of
app/realtime/queue.py, in order with the events: a session's revoke is dropped
everywhere before the disconnect that follows it). A read that began before a
drop cannot store what it read: `put` takes the `token` read before the query
and stores nothing if the cache was dropped from since. A process that may have
missed records (a gap in the queue's frames, its listener re-subscribed, the
sender's broker outage ending) clears everything (`clear_all`, from the queue
manager's resync). Entries also expire after `ttl` seconds: the bound for a
change made where no queue reaches (the `erase-due` and `rotate-keys` commands,
SQL typed into the database).

Membership lists have their own version-checked cache (member_cache.py).
Conversation summaries are not cached: they carry the last message and unread
counts, which every send changes.

CACHE=false turns every cache off (`configure`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

enabled = True


class ReadCache:
    def __init__(self, name: str, size: int, ttl: float) -> None:
        self.name = name
        self.size = size
        self.ttl = ttl
        self.epoch = 0  # moves on every drop: a read that overlapped one stores nothing
        self._data: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str):
        if not enabled:
            return None
        hit = self._data.get(key)
        if hit is None or hit[0] < time.monotonic():
            if hit is not None:
                del self._data[key]
            self.misses += 1
            return None
        self.hits += 1
        self._data.move_to_end(key)
        return hit[1]

    def token(self) -> int:
        """Read before the query whose result goes to `put`."""
        return self.epoch

    def put(self, key: str, value, token: int) -> None:
        if not enabled or token != self.epoch:
            return
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def drop(self, keys: Iterable[str]) -> None:
        self.epoch += 1
        for key in keys:
            self._data.pop(key, None)

    def clear(self) -> None:
        self.epoch += 1
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


# session id → the auth_sessions row; user id → the users row. Sessions change
# only through the services (sign-in, revoke), so theirs may live longer.
SESSIONS = ReadCache("session", 100_000, ttl=600.0)
USERS = ReadCache("user", 100_000, ttl=30.0)
CACHES = {c.name: c for c in (SESSIONS, USERS)}


def configure(on: bool) -> None:
    global enabled
    enabled = on
    clear_all()


def drop_local(kind: str, keys: Iterable) -> None:
    cache = CACHES.get(kind)
    if cache is not None:
        cache.drop([str(k) for k in keys])


def clear_all() -> None:
    for cache in CACHES.values():
        cache.clear()


async def changed(deps, kind: str, keys: Iterable) -> None:
    """After committing a change to these `kind` ("session", "user") rows: drop
    them here now and on every other process when the record arrives."""
    keys = [str(k) for k in keys]
    if not keys:
        return
    drop_local(kind, keys)
    fanout = getattr(deps, "fanout", None)
    if fanout is not None:
        await fanout.invalidate(kind, keys)


# --- rows <-> objects ----------------------------------------------------------


# model → its (column, attribute) pairs, in the order rows are stored.
_COLUMNS: dict[type, tuple[tuple[str, str], ...]] = {}


def _columns(model) -> tuple[tuple[str, str], ...]:
    cols = _COLUMNS.get(model)
    if cols is None:
        meta = model._meta
        cols = _COLUMNS[model] = tuple(
            (col, name) for col, name, _f in
            (*meta.db_native_fields, *meta.db_default_fields, *meta.db_complex_fields))
    return cols


def row_of(obj) -> tuple:
    """The column values of a model instance, in `_columns` order: a tuple, not a
    dict, because every connected person's session and user rows stay in these
    caches (a dict of a user row's columns is five times its tuple)."""
    return tuple(getattr(obj, name) for _col, name in _columns(type(obj)))


def from_row(model, row: tuple):
    return model._init_from_db(**{col: v for (col, _n), v in
                                  zip(_columns(model), row, strict=True)})
