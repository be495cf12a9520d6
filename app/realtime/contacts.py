"""Presence hooks on the /chat namespace. Contact events (contact:request,
contact:accepted, contact:updated, contact:removed, presence) are emitted by
the services through deps.fanout; clients manage contacts over REST."""

from app.realtime.chat import ON_CONNECT, ON_DISCONNECT, Conn
from app.services import presence


async def _online(deps, conn: Conn) -> None:
    await presence.user_connected(deps, conn.user_id)


async def _offline(deps, conn: Conn) -> None:
    await presence.user_disconnected(deps, conn.user_id)


ON_CONNECT.append(_online)
ON_DISCONNECT.append(_offline)
