"""Rooms per socket, so a disconnect costs the rooms of that socket, not of everyone.

python-socketio's `BaseManager.basic_disconnect` finds the rooms of the leaving
socket by copying the namespace's whole room table and testing every room
(`for room in rooms.copy(): if sid in room`). Every socket has at least three
rooms here (its sid room, its user room, its session room), so with N sockets
connected one disconnect is O(3N) and N sockets dropping at once (a reconnect
storm, a network blip, a deploy) is O(N²) on the event loop, long enough to
starve every other socket of the process (pings, acks).

`SidRoomIndex` keeps `(namespace, sid) -> rooms` next to the library's table,
through the library's own entry points (`basic_enter_room`, `basic_leave_room`),
and answers `basic_disconnect` / `get_rooms` from it. Put it first in the bases
of a manager: `class LocalManager(SidRoomIndex, socketio.AsyncManager)`.

Library internals (python-socketio, pinned in pyproject.toml, checked by
tests/test_library_internals.py): `BaseManager.basic_enter_room`,
`basic_leave_room` (extended), `basic_disconnect` and `get_rooms` (replaced),
and the manager's `rooms`, `callbacks`, `pending_connect` and
`pending_disconnect` tables, which `basic_disconnect` clears as the library's
does. docs/upstream-patches.md proposes the index upstream.
"""
from __future__ import annotations


class SidRoomIndex:
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sid_rooms: dict[tuple[str, str], set] = {}

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        key = (namespace, sid)
        rooms = self._sid_rooms.get(key)
        if rooms is None:
            rooms = self._sid_rooms[key] = set()
        rooms.add(room)

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        rooms = self._sid_rooms.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._sid_rooms[(namespace, sid)]

    def basic_disconnect(self, sid, namespace, **kwargs):
        # The library's method minus the scan of every room of the namespace.
        if namespace not in self.rooms:
            return
        for room in list(self._sid_rooms.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self._sid_rooms.pop((namespace, sid), None)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if len(waiting) == 0:
                    del pending[namespace]

    def get_rooms(self, sid, namespace):
        """The rooms a client is in (the library scans every room for this too)."""
        return [r for r in self._sid_rooms.get((namespace, sid), ()) if r is not None]
