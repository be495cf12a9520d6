"""Socket.IO events of richer messages: forward, react, edit, pin, delivered."""

from app.realtime.chat import Conn, event, ok
from app.services import forwarding
from app.services import message_changes as changes
from app.validation import convert


@event("message:forward")
async def forward(deps, conn: Conn, payload):
    return ok(**await forwarding.forward(deps, conn.user_id,
                                         convert(forwarding.ForwardIn, payload),
                                         origin=conn.sid))


@event("message:react")
async def react(deps, conn: Conn, payload):
    return ok(**await changes.react(deps, conn.user_id, convert(changes.ReactIn, payload)))


@event("message:edit")
async def edit(deps, conn: Conn, payload):
    return ok(**await changes.edit(deps, conn.user_id, convert(changes.EditIn, payload)))


@event("message:versions")
async def versions(deps, conn: Conn, payload):
    return ok(**await changes.versions(deps, conn.user_id, convert(changes.VersionsIn, payload)))


@event("message:pin")
async def pin(deps, conn: Conn, payload):
    return ok(**await changes.pin(deps, conn.user_id, convert(changes.PinIn, payload), on=True))


@event("message:unpin")
async def unpin(deps, conn: Conn, payload):
    return ok(**await changes.pin(deps, conn.user_id, convert(changes.PinIn, payload), on=False))


@event("message:delivered")
async def delivered(deps, conn: Conn, payload):
    return ok(**await changes.delivered(deps, conn.user_id,
                                        convert(changes.DeliveredIn, payload)))
