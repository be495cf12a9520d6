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

import asyncio
import logging
from datetime import UTC, datetime

from app.deps import Deps
from app.logs import Retrying
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
    return (await watchers_of([subject]))[str(subject.id)]


_IN_CHUNK = 500  # ids per IN (…) list


def _chunks(items: list, n: int = _IN_CHUNK):
    for i in range(0, len(items), n):
        yield items[i:i + n]


async def watchers_of(subjects) -> dict[str, list[str]]:
    """`watchers` of many subjects in three queries per 500 subjects (not three each).

    `subjects`: User objects or (id, last_seen_visibility) pairs."""
    vis = {}
    for s in subjects:
        uid, v = (str(s.id), s.last_seen_visibility) if isinstance(s, User) else (str(s[0]), s[1])
        vis[uid] = v
    out: dict[str, list[str]] = {u: [] for u in vis}
    shown = [u for u, v in vis.items() if v != "nobody"]
    for chunk in _chunks(shown):
        have_me: dict[str, set[str]] = {u: set() for u in chunk}
        for subject, owner in await Contact.filter(contact_id__in=chunk).values_list(
                "contact_id", "owner_id"):
            have_me[str(subject)].add(str(owner))
        picky = [u for u in chunk if vis[u] != "everyone" and have_me[u]]
        if picky:
            mine: dict[str, set[str]] = {u: set() for u in picky}
            for owner, contact in await Contact.filter(owner_id__in=picky).values_list(
                    "owner_id", "contact_id"):
                mine[str(owner)].add(str(contact))
            for u in picky:
                have_me[u] &= mine[u]
        told = [u for u in chunk if have_me[u]]
        if told:
            for blocker, blocked in await Block.filter(blocker_id__in=told).values_list(
                    "blocker_id", "blocked_id"):
                have_me[str(blocker)].discard(str(blocked))
        for u in chunk:
            out[u] = sorted(have_me[u])
    return out


Change = tuple[str, bool, datetime | None]  # (user id, online, last seen)


async def _announce_many(deps: Deps, changes: list[Change]) -> None:
    """`presence` events for these changes, in order, to each subject's watchers."""
    ids = list(dict.fromkeys(u for u, _on, _seen in changes))
    subjects = []
    for chunk in _chunks(ids):
        subjects += await User.filter(id__in=chunk).values_list("id", "last_seen_visibility")
    to = await watchers_of(subjects)
    failed = 0
    for user_id, online, last_seen in changes:
        who = to.get(str(user_id))
        if not who:
            continue
        try:
            await deps.fanout.to_users(who, "presence", {
                "user_id": str(user_id), "online": online,
                "last_seen": last_seen.isoformat() if last_seen else None,
            })
        except Exception:  # one failed emit does not cost the others theirs
            failed += 1
            if failed == 1:
                log.exception("presence event failed")
    if failed > 1:
        log.warning("%d more presence events failed in this batch", failed - 1)


class Announcer:
    """Presence changes of one process, announced in arrival order and in batches.

    While one batch is being looked up and sent, the changes that come in are
    queued and go out together next: a burst of thousands of (re)connects costs
    a handful of queries, not several per user, and never a task per user."""

    BATCH = 2000

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.queue: list[tuple[Change, asyncio.Future | None]] = []
        self.task: asyncio.Task | None = None
        self.closed = False
        self._outage = Retrying(log, "presence announcement")  # a batch is not sent again

    def add(self, changes: list[Change], *, wait: bool = False) -> asyncio.Future | None:
        done = asyncio.get_running_loop().create_future() if wait else None
        if self.closed:
            # Shutting down: the queue and the database are going; other
            # processes learn from the presence store that this one's users left.
            if done is not None:
                done.set_result(None)
            return done
        for i, change in enumerate(changes):
            self.queue.append((change, done if i == len(changes) - 1 else None))
        if not changes and done is not None:
            done.set_result(None)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        return done

    async def close(self, timeout: float) -> None:
        """Announce what is queued (at most `timeout` seconds), then take no more."""
        self.closed = True
        task = self.task
        if task is not None and not task.done():
            done, _ = await asyncio.wait([task], timeout=timeout)
            if not done:
                log.warning("shutdown: presence announcements still running after %.0f s; "
                            "cancelling them", timeout)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for _c, f in self.queue:
            if f is not None and not f.done():
                f.set_result(None)
        self.queue = []

    async def _run(self) -> None:
        while self.queue:
            batch, self.queue = self.queue[:self.BATCH], self.queue[self.BATCH:]
            try:
                await _announce_many(self.deps, [c for c, _f in batch])
            except Exception as exc:  # noqa: BLE001 - the database is away
                self._outage.failed(exc, f"({len(batch)} changes)")
            else:
                self._outage.ok()
            finally:
                for _c, f in batch:
                    if f is not None and not f.done():
                        f.set_result(None)


def announcer(deps: Deps) -> Announcer:
    a = deps.extras.get("presence_announcer")
    if a is None:
        a = deps.extras["presence_announcer"] = Announcer(deps)
    return a


async def close_announcer(deps: Deps, timeout: float = 5.0) -> None:
    """At shutdown, while the message queue and the database are still open."""
    await announcer(deps).close(timeout)


class _WentOffline:
    """The tracker's offline callback for one Deps (equal per Deps, so a sweep
    hands it every user who went offline at once)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def __eq__(self, other) -> bool:
        return isinstance(other, _WentOffline) and other.deps is self.deps

    def __hash__(self) -> int:
        return id(self.deps)

    async def __call__(self, user_ids: list[str]) -> None:
        seen = datetime.now(UTC)
        from app.services import read_cache

        for chunk in _chunks(user_ids):
            await User.filter(id__in=chunk).update(last_seen_at=seen)
            await read_cache.changed(self.deps, "user", chunk)
        done = announcer(self.deps).add([(u, False, seen) for u in user_ids], wait=True)
        await done


async def user_connected(deps: Deps, user_id: str) -> None:
    if await deps.presence.connect(user_id):
        # Queued, not awaited: the connect does not wait for the contacts' events.
        announcer(deps).add([(str(user_id), True, None)])


async def user_disconnected(deps: Deps, user_id: str) -> None:
    deps.presence.disconnect(user_id, _WentOffline(deps))
