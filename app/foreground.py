"""Which users have a session in the foreground, across server processes.

A socket is in the foreground until its client says `client:state
{state: "background"}` (a connected socket that never said counts as
foreground), and again after it says "foreground". Push notifications skip a
user while any of their sockets, on any process, is in the foreground.

The shared part reuses the presence stores (app/presence.py) under their own
key prefix: per user, the processes holding a foreground socket, each entry
refreshed by a heartbeat so a crashed process's entries lapse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from app.logs import Retrying
from app.presence import Coalesced, MemoryPresence, PresenceStore, RedisPresence

log = logging.getLogger("parley.foreground")


class ForegroundTracker:
    def __init__(self, store: PresenceStore) -> None:
        self.store = store
        self.local: dict[str, set[str]] = {}  # user id → foreground sids on this process
        self._beat: asyncio.Task | None = None

    async def start(self) -> None:
        if self.store.heartbeat_interval and self._beat is None:
            self._beat = asyncio.create_task(self._heartbeat(), name="parley-foreground-beat")

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
            self._beat = None
        users = list(self.local)
        self.local.clear()
        try:
            await self.store.unmark(users)
        except Exception:
            log.warning("could not clear foreground entries at shutdown", exc_info=True)

    async def set(self, user_id: str, sid: str, foreground: bool) -> None:
        user_id = str(user_id)
        sids = self.local.get(user_id)
        if foreground:
            if sids is None:
                self.local[user_id] = {sid}
                await self.store.mark([user_id])
            else:
                sids.add(sid)
            return
        if sids is None or sid not in sids:
            return
        sids.discard(sid)
        if not sids:
            del self.local[user_id]
            await self.store.unmark([user_id])

    async def in_foreground(self, user_ids: Iterable[str]) -> set[str]:
        user_ids = [str(u) for u in user_ids]
        if not user_ids:
            return set()
        return await self.store.online(user_ids)

    async def _heartbeat(self) -> None:
        outage = Retrying(log, "foreground heartbeat")
        while True:
            await asyncio.sleep(self.store.heartbeat_interval)
            try:
                await self.store.mark(list(self.local))
            except Exception as exc:  # noqa: BLE001 - Redis is away; next beat
                outage.failed(exc)
            else:
                outage.ok()


def build_foreground(redis=None) -> ForegroundTracker:
    store = (Coalesced(RedisPresence(redis, prefix="parley:fg:")) if redis is not None
             else MemoryPresence())
    return ForegroundTracker(store)
