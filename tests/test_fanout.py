"""SocketIOFanout: fan-out after a commit never fails the request nor holds it."""

import asyncio

import socketio

from app.fanout import SocketIOFanout
from app.metrics import Metrics


class _FailingServer(socketio.AsyncServer):
    async def emit(self, *args, **kwargs):
        raise ConnectionError("peer gone")


class _StuckManager(socketio.AsyncManager):
    async def disconnect_room(self, room, namespace):
        await asyncio.Event().wait()  # never returns


async def test_a_failing_emit_is_counted_and_swallowed():
    metrics = Metrics()
    fanout = SocketIOFanout(_FailingServer(), metrics)
    await fanout.to_users(["u1", "u2"], "message:new", {"seq": 1})
    assert metrics.fanout_errors._value.get() == 1


async def test_a_stuck_disconnect_is_bounded():
    metrics = Metrics()
    fanout = SocketIOFanout(socketio.AsyncServer(client_manager=_StuckManager()), metrics,
                            timeout=0.05)
    await asyncio.wait_for(fanout.disconnect_session("s1"), 5)
    assert metrics.fanout_errors._value.get() == 1

