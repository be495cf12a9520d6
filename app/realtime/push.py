"""`client:state`: the page says whether it is in the foreground (push
notifications skip users with a foreground session; app/foreground.py)."""

from typing import Literal

from app.realtime.chat import ON_CONNECT, ON_DISCONNECT, Conn, event, ok
from app.validation import Payload, convert


class ClientStateIn(Payload):
    state: Literal["foreground", "background"]


def _tracker(deps):
    return deps.extras.get("foreground")


@event("client:state")
async def client_state(deps, conn: Conn, payload):
    data = convert(ClientStateIn, payload)
    tracker = _tracker(deps)
    if tracker is not None:
        await tracker.set(conn.user_id, conn.sid, data.state == "foreground")
    return ok(state=data.state)


async def _connected(deps, conn: Conn) -> None:
    # A socket that never said otherwise is in the foreground.
    tracker = _tracker(deps)
    if tracker is not None:
        await tracker.set(conn.user_id, conn.sid, True)


async def _disconnected(deps, conn: Conn) -> None:
    tracker = _tracker(deps)
    if tracker is not None:
        await tracker.set(conn.user_id, conn.sid, False)


ON_CONNECT.append(_connected)
ON_DISCONNECT.append(_disconnected)
