"""Socket.IO events of the messaging core: parse, call the service, ack."""

from app.realtime.chat import Conn, event, ok
from app.services import history as reading
from app.services import messaging, search
from app.validation import convert


@event("message:send")
async def send(deps, conn: Conn, payload):
    message = await messaging.send_from_payload(deps, conn.user_id, payload, origin=conn.sid)
    return ok(message=message)


@event("sync")
async def sync(deps, conn: Conn, payload):
    return ok(**await reading.sync(deps, conn.user_id, convert(reading.SyncIn, payload)))


@event("history")
async def history(deps, conn: Conn, payload):
    return ok(**await reading.history(deps, conn.user_id, convert(reading.HistoryIn, payload)))


@event("message:read")
async def read(deps, conn: Conn, payload):
    return ok(**await messaging.mark_read(deps, conn.user_id, convert(messaging.ReadIn, payload)))


@event("message:recall")
async def recall(deps, conn: Conn, payload):
    await messaging.recall(deps, conn.user_id, convert(messaging.MessageRef, payload))
    return ok()


@event("message:delete")
async def delete(deps, conn: Conn, payload):
    await messaging.delete_for_me(deps, conn.user_id, convert(messaging.MessageRef, payload))
    return ok()


@event("typing")
async def typing(deps, conn: Conn, payload):
    await messaging.typing(deps, conn.user_id, convert(messaging.TypingIn, payload))
    return ok()


@event("search:messages")
async def search_messages(deps, conn: Conn, payload):
    return ok(**await search.search_messages(deps, conn.user_id,
                                             convert(search.SearchIn, payload)))
