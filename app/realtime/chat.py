"""The `/chat` namespace: authentication at connect, one dispatcher for every event.

Every client→server event is looked up in EVENTS, parsed, handed to a service
and answered with an ack `{ok: true, ...}` or `{ok: false, error: {code, message}}`.
Domain errors become acks here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import socketio

from app import netaddr
from app.db import is_database_error
from app.deps import Deps
from app.errors import DomainError, Invalid, Unauthorized, Unavailable
from app.fanout import NAMESPACE, session_room, user_room
from app.logs import Retrying, Timer, event_log, log_event
from app.metrics import Metrics
from app.services import accounts

log = logging.getLogger("parley.realtime")


@dataclass(slots=True)
class Conn:
    """What we know about one connected socket (kept small: one per connection,
    for the connection's lifetime — no ORM objects)."""

    sid: str
    user_id: str
    session_id: str
    ip: str = ""  # the client's address at connect (app/netaddr.py), for per-address limits


Handler = Callable[[Deps, Conn, object], Awaitable[dict]]
# name → handler; filled by the domain modules in app/realtime/ (see register()).
EVENTS: dict[str, Handler] = {}
# Called after a socket is authenticated / after it is gone (presence etc.), best
# effort: see ChatNamespace._run_hooks.
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
    def __init__(self, deps: Deps, metrics: Metrics | None = None) -> None:
        super().__init__(NAMESPACE)
        self.deps = deps
        self.metrics = metrics or Metrics()
        self.conns: dict[str, Conn] = {}
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._hook_outages: dict[Callable, Retrying] = {}
        # Read when scraped: no gauge update (and its lock) twice per event.
        self.metrics.inflight_events.set_function(lambda: self.inflight)

    async def trigger_event(self, event_name, *args):
        if event_name == "connect":
            return await self.handle_connect(*args)
        if event_name == "disconnect":
            return await self.handle_disconnect(args[0])
        sid = args[0]
        payload = args[1] if len(args) > 1 else None
        return await self.dispatch(sid, event_name, payload)

    async def handle_connect(self, sid, environ, auth=None):
        """Any failure refuses the connection with a reason (`connect_error`):
        python-socketio would otherwise leave the client waiting for an answer
        to its CONNECT until its own timeout."""
        token = auth.get("token") if isinstance(auth, dict) else None
        timer = Timer()
        try:
            await self._connect(sid, environ, token, timer)
        except socketio.exceptions.ConnectionRefusedError:
            raise
        except Exception as exc:
            # Whatever was registered is undone (the disconnect hooks of what
            # the connect hooks did); nothing if the session check failed.
            await self.handle_disconnect(sid)
            if is_database_error(exc):
                reason = "unavailable"
                log.warning("connect failed: database unavailable (%s)", type(exc).__name__)
            else:
                reason = "internal"
                log.exception("connect failed", extra={"fields": {"sid": sid}})
            log_event(event="connect", sid=sid, status=reason, duration_ms=timer.ms())
            raise socketio.exceptions.ConnectionRefusedError(reason) from None

    async def _connect(self, sid, environ, token, timer: Timer) -> None:
        try:
            session = await accounts.authenticate_session(
                self.deps, token if isinstance(token, str) else None)
        except Unauthorized:
            log_event(event="connect", sid=sid, status="unauthorized", duration_ms=timer.ms())
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from None
        ip = netaddr.of_environ(environ, netaddr.parse_networks(self.deps.settings.trusted_proxies))
        conn = Conn(sid=sid, user_id=str(session.user_id), session_id=str(session.id), ip=ip)
        self.conns[sid] = conn
        self.metrics.connected_sockets.inc()
        bind = getattr(self.server, "bind_user_budget", None)
        if bind is not None:  # from now on the socket spends its user's event budget
            bind(self.server.manager.eio_sid_from_sid(sid, NAMESPACE), conn.user_id)
        await self.enter_room(sid, user_room(conn.user_id))
        await self.enter_room(sid, session_room(conn.session_id))
        await self._run_hooks(ON_CONNECT, conn, "connect")
        log_event(event="connect", sid=sid, user_id=conn.user_id, status="ok",
                  duration_ms=timer.ms())

    async def handle_disconnect(self, sid):
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        self.metrics.connected_sockets.dec()
        await self._run_hooks(ON_DISCONNECT, conn, "disconnect")
        log_event(event="disconnect", sid=sid, user_id=conn.user_id, status="ok")

    async def _run_hooks(self, hooks, conn: Conn, when: str) -> None:
        """The hooks are best effort (presence, foreground state): one that fails
        neither refuses the connection nor stops the others. Their store (Redis)
        being away fails every connect and disconnect, so a run of failures is
        told once per hook (Retrying), not once per client."""
        for hook in hooks:
            try:
                await hook(self.deps, conn)
            except Exception as exc:  # noqa: BLE001 - see above
                outage = self._hook_outages.get(hook)
                if outage is None:
                    outage = self._hook_outages[hook] = Retrying(
                        log, f"{when} hook {hook.__module__}.{hook.__name__}")
                outage.failed(exc, fields={"hook": hook.__name__, "sid": conn.sid,
                                           "user_id": conn.user_id})
            else:
                outage = self._hook_outages.get(hook)
                if outage is not None:
                    outage.ok()

    async def dispatch(self, sid: str, name: str, payload) -> dict:
        started = time.perf_counter()
        conn = self.conns.get(sid)
        handler = EVENTS.get(name)
        self.inflight += 1
        self._idle.clear()
        metrics = self.metrics
        try:
            if conn is None:
                raise Unauthorized()
            if handler is None:
                raise Invalid(f"Unknown event {str(name)[:64]!r}.")
            result = await handler(self.deps, conn, payload)
        except DomainError as exc:
            result = error_ack(exc)
        except Exception as exc:
            if is_database_error(exc):
                # Nothing was acked as stored: the client retries with the same
                # client_msg_id and gets the original if it did commit.
                metrics.database_errors.inc()
                log.warning("event failed: database unavailable (%s)", type(exc).__name__,
                            extra={"fields": {"event": str(name)[:64]}})
                result = error_ack(Unavailable("The database is unavailable; retry shortly."))
            else:
                log.exception("event handler failed",
                              extra={"fields": {"event": str(name)[:64]}})
                result = {"ok": False, "error": {"code": "internal",
                                                 "message": "Something went wrong on our side."}}
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()
        elapsed = time.perf_counter() - started
        ok = result.get("ok")
        if handler is not None:
            # One histogram child per event name (a known handler: bounded),
            # looked up once instead of labels() on every event.
            children = getattr(self, "_ack_children", None)
            if children is None:
                children = self._ack_children = {}
            child = children.get(name)
            if child is None:
                child = children[name] = metrics.ack_seconds.labels(event=name)
            child.observe(elapsed)
        if ok:
            if name == "message:send":
                metrics.messages_sent.inc()
        else:
            metrics.event_errors.labels(code=str(result["error"]["code"])[:32]).inc()
        if event_log.isEnabledFor(logging.INFO):  # skip building the fields when off
            log_event(event=str(name)[:64], sid=sid, user_id=conn.user_id if conn else None,
                      status="ok" if ok else result["error"]["code"],
                      duration_ms=round(elapsed * 1000, 2))
        return result

    async def drain(self, timeout: float = 10.0) -> None:
        """Graceful shutdown: let in-flight events finish and ack, then close every
        socket at the Engine.IO level so clients reconnect (through the balancer,
        to another process) instead of treating it as a server-side kick."""
        eio = self.server.eio
        # Read no more events first: under steady load the sockets would keep the
        # server from ever being idle, and every shutdown would wait the whole
        # timeout. What clients send meanwhile is unread and unacked, so they send
        # it again after reconnecting.
        for sock in list(eio.sockets.values()):
            sock.hold()  # a FastSocket (engine._SocketTable)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("shutdown: %d events still running after %.0f s", self.inflight, timeout)
        reason = eio.reason.SERVER_DISCONNECT
        for sock in list(eio.sockets.values()):
            # wait=False: a long-polling client that is already gone would never
            # collect its CLOSE packet, and waiting for it would hang shutdown.
            await sock.close(wait=False, reason=reason)
        try:
            # Events that slipped in just before the sockets closed.
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("shutdown: %d late events still running after %.0f s; leaving them",
                        self.inflight, timeout)
