"""The `/chat` namespace: authentication at connect, one dispatcher for every event.

Every client→server event is looked up in EVENTS, parsed, handed to a service
and answered with an ack `{ok: true, ...}` or `{ok: false, error: {code, message}}`.
Domain errors become acks here and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import socketio

from app.deps import Deps
from app.errors import DomainError, Invalid, Unauthorized
from app.fanout import NAMESPACE, session_room, user_room
from app.logs import Timer, log_event
from app.services import accounts

log = logging.getLogger("parley.realtime")


@dataclass
class Conn:
    """What we know about one connected socket."""

    sid: str
    user_id: str
    session_id: str
    auth: accounts.Auth


Handler = Callable[[Deps, Conn, object], Awaitable[dict]]
# name → handler; filled by the domain modules in app/realtime/ (see register()).
EVENTS: dict[str, Handler] = {}
# Called after a socket is authenticated / after it is gone (presence etc.).
ON_CONNECT: list[Callable[[Deps, Conn], Awaitable[None]]] = []
ON_DISCONNECT: list[Callable[[Deps, Conn], Awaitable[None]]] = []


def event(name: str):
    def decorator(fn: Handler) -> Handler:
        EVENTS[name] = fn
        return fn

    return decorator


def ok(**data) -> dict:
    return {"ok": True, **data}


def error_ack(exc: DomainError) -> dict:
    return {"ok": False, "error": exc.to_dict()}


class ChatNamespace(socketio.AsyncNamespace):
    def __init__(self, deps: Deps) -> None:
        super().__init__(NAMESPACE)
        self.deps = deps
        self.conns: dict[str, Conn] = {}

    async def trigger_event(self, event_name, *args):
        if event_name == "connect":
            return await self.handle_connect(*args)
        if event_name == "disconnect":
            return await self.handle_disconnect(args[0])
        sid = args[0]
        payload = args[1] if len(args) > 1 else None
        return await self.dispatch(sid, event_name, payload)

    async def handle_connect(self, sid, environ, auth=None):
        token = auth.get("token") if isinstance(auth, dict) else None
        timer = Timer()
        try:
            a = await accounts.authenticate(self.deps, token if isinstance(token, str) else None)
        except Unauthorized:
            log_event(event="connect", sid=sid, status="unauthorized", duration_ms=timer.ms())
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from None
        conn = Conn(sid=sid, user_id=a.user_id, session_id=str(a.session.id), auth=a)
        self.conns[sid] = conn
        await self.enter_room(sid, user_room(conn.user_id))
        await self.enter_room(sid, session_room(conn.session_id))
        for hook in ON_CONNECT:
            await hook(self.deps, conn)
        log_event(event="connect", sid=sid, user_id=conn.user_id, status="ok",
                  duration_ms=timer.ms())

    async def handle_disconnect(self, sid):
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        for hook in ON_DISCONNECT:
            try:
                await hook(self.deps, conn)
            except Exception:
                log.exception("disconnect hook failed")
        log_event(event="disconnect", sid=sid, user_id=conn.user_id, status="ok")

    async def dispatch(self, sid: str, name: str, payload) -> dict:
        timer = Timer()
        conn = self.conns.get(sid)
        handler = EVENTS.get(name)
        try:
            if conn is None:
                raise Unauthorized()
            if handler is None:
                raise Invalid(f"Unknown event {str(name)[:64]!r}.")
            result = await handler(self.deps, conn, payload)
        except DomainError as exc:
            result = error_ack(exc)
        except Exception:
            log.exception("event handler failed", extra={"fields": {"event": str(name)[:64]}})
            result = {"ok": False, "error": {"code": "internal",
                                             "message": "Something went wrong on our side."}}
        log_event(event=str(name)[:64], sid=sid, user_id=conn.user_id if conn else None,
                  status="ok" if result.get("ok") else result["error"]["code"],
                  duration_ms=timer.ms())
        return result
