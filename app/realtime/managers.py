"""Client managers that can disconnect a whole room on every process.

python-socketio's managers can emit to a room everywhere but only disconnect a
single sid. Logout needs "drop every socket of this session, wherever it is",
so a reserved event name travels the normal emit path and each process turns
it into local disconnects. Subclassing the documented managers keeps us on
their public extension points.
"""

from __future__ import annotations

import socketio

KICK_EVENT = "__parley_disconnect_room__"


async def _disconnect_local(manager, namespace: str, room: str) -> None:
    sids = [sid for sid, _eio in manager.get_participants(namespace, room)]
    for sid in sids:
        await manager.server.disconnect(sid, namespace=namespace, ignore_queue=True)


class LocalManager(socketio.AsyncManager):
    async def disconnect_room(self, room: str, namespace: str) -> None:
        await _disconnect_local(self, namespace, room)


class RedisManager(socketio.AsyncRedisManager):
    async def disconnect_room(self, room: str, namespace: str) -> None:
        await self.emit(KICK_EVENT, None, namespace=namespace, room=room)

    async def _handle_emit(self, message):
        if message.get("event") == KICK_EVENT:
            await _disconnect_local(self, message.get("namespace") or "/", message.get("room"))
            return
        await super()._handle_emit(message)
