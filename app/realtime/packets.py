"""Socket.IO packets without python-socketio's costly binary scan.

`socketio.packet.Packet.__init__` calls `data_is_binary(data)` on every packet
it builds (every emit, every ack) to decide between EVENT/ACK and their
BINARY_ variants; the library walks the payload with one `functools.reduce`
and one temporary list per container, a visible share of the server's CPU
under load (docs/benchmarks.md).

`FastPacket.data_is_binary` gives exactly the same answer for every input —
True iff a `bytes`/`bytearray` (or subclass) is reachable through `list` and
`dict` values (or subclasses); tuples and other types are not looked into,
as in the library — but skips the plain JSON leaves without a call and stops
at the first binary value. Nothing is assumed
about what the server emits: a payload with bytes still becomes a
BINARY_EVENT/BINARY_ACK with attachments, and incoming binary packets are
decoded by the library's unchanged code. Plugged in with
`socketio.AsyncServer(serializer=FastPacket)`.

Library internals (python-socketio, pinned in pyproject.toml, checked by
tests/test_library_internals.py): `Packet.data_is_binary` (overridden in
`FastPacket`); `AsyncServer._handle_eio_message` (replaced in `PacketGuard`,
which keeps pending binary packets in the server's `_binary_packet` table and
dispatches to the private `_handle_event`, `_handle_ack`, `_handle_connect`,
`_handle_disconnect` and `_send_packet`).
"""

from __future__ import annotations

import logging

import msgspec
from socketio import packet

from app import jsonfast
from app.errors import Invalid

_log = logging.getLogger("parley.realtime")


def has_binary(data) -> bool:
    t = type(data)
    if t is dict:
        values = data.values()
    elif t is list:
        values = data
    elif t is str or t is int or t is float or t is bool or data is None:
        return False
    elif isinstance(data, (bytes, bytearray)):
        return True
    elif isinstance(data, list):
        values = data
    elif isinstance(data, dict):
        values = data.values()
    else:
        return False
    for v in values:
        tv = type(v)
        if tv is str or tv is int or v is None or tv is bool or tv is float:
            continue
        if has_binary(v):
            return True
    return False


class FastPacket(packet.Packet):
    # Set here, not only through AsyncServer(json=...): decode_incoming relies on
    # its decoder raising ValueError alone.
    json = jsonfast

    @classmethod
    def data_is_binary(cls, data):
        return has_binary(data)


# --- what clients send ---------------------------------------------------------
#
# python-socketio trusts the shape of every incoming packet: `42/chat,5[]`
# reaches `data[0]` (IndexError), truncated JSON raises out of the decoder,
# `[["x"]]` is looked up as an unhashable event name, a client may emit the
# reserved `connect`/`disconnect` events into the namespace's own handlers,
# and a BINARY_EVENT announcing a million attachments makes the server keep
# every binary frame that follows. Each would end in a traceback or worse. The
# guard below checks each packet once, before any of that code runs: a bad
# EVENT that asked for an ack gets the same `invalid` ack a bad payload gets;
# anything else that is malformed is dropped with one log line.

# python-socketio's reserved names and those the JS client reserves.
RESERVED_EVENTS = frozenset(("connect", "connect_error", "disconnect", "__disconnect_final",
                             "disconnecting", "newListener", "removeListener"))
MAX_EVENT_NAME = 64
# Binary frames the server keeps for one packet until it is complete.
MAX_ATTACHMENTS = 16


class MalformedPacket(ValueError):
    """An incoming packet that cannot be handled; `namespace` and `id` are what
    could be read of its header before the problem (for the `invalid` ack)."""

    def __init__(self, reason: str, namespace: str | None = None, id: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.namespace = namespace
        self.id = id


def event_problem(data) -> str | None:
    """Why the data of an EVENT packet is not `[name, payload?...]`, or None."""
    if type(data) is not list or not data:
        return "An event is a JSON array that starts with the event name."
    name = data[0]
    if type(name) is not str or not name or len(name) > MAX_EVENT_NAME:
        return f"The event name must be a string of 1 to {MAX_EVENT_NAME} characters."
    if name in RESERVED_EVENTS:
        return f"{name!r} is a reserved event name."
    return None


def decode_incoming(packet_class, data):
    """Decode one client packet, raising MalformedPacket for anything that is
    not a well-formed CONNECT, DISCONNECT, EVENT or ACK."""
    if type(data) is not str or not data:
        raise MalformedPacket("A Socket.IO packet must be non-empty text.")
    pkt = packet_class.__new__(packet_class)
    pkt.packet_type, pkt.namespace, pkt.id, pkt.data = None, None, None, None
    pkt.attachments = []
    try:
        pkt.attachment_count = packet.Packet.decode(pkt, data) or 0
    except msgspec.DecodeError as exc:  # from jsonfast: already a readable reason
        raise MalformedPacket(str(exc), pkt.namespace, pkt.id) from None
    except (ValueError, TypeError, RecursionError) as exc:  # the header
        raise MalformedPacket(f"Malformed packet: {str(exc)[:120] or type(exc).__name__}",
                              pkt.namespace, pkt.id) from None
    kind = pkt.packet_type
    if kind in (packet.BINARY_EVENT, packet.BINARY_ACK):
        if pkt.attachment_count > MAX_ATTACHMENTS or pkt.attachment_count < 1:
            raise MalformedPacket(f"A packet carries 1 to {MAX_ATTACHMENTS} binary attachments.",
                                  pkt.namespace, pkt.id if kind == packet.BINARY_EVENT else None)
    elif kind == packet.EVENT:
        problem = event_problem(pkt.data)
        if problem:
            raise MalformedPacket(problem, pkt.namespace, pkt.id)
    elif kind == packet.ACK:
        if type(pkt.data) is not list:
            raise MalformedPacket("An ack is a JSON array.", pkt.namespace)
    elif kind not in (packet.CONNECT, packet.DISCONNECT):
        raise MalformedPacket(f"Unexpected packet type {str(kind)[:8]!r}.", pkt.namespace)
    return pkt


class PacketGuard:
    """Mixed into the Socket.IO server ahead of `socketio.AsyncServer`: every
    packet from a client (WebSocket and long-polling alike) passes
    `decode_incoming` before the library's handlers see it."""

    async def _handle_eio_message(self, eio_sid, data):
        pending = self._binary_packet.pop(eio_sid, None)
        if pending is not None:
            # The binary attachments of a BINARY_EVENT/BINARY_ACK being collected.
            await self._attachment(eio_sid, pending, data)
            return
        try:
            pkt = decode_incoming(self.packet_class, data)
        except MalformedPacket as exc:
            await self._refuse(eio_sid, exc)
            return
        kind = pkt.packet_type
        if kind == packet.EVENT:
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif kind == packet.ACK:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif kind == packet.CONNECT:
            await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif kind == packet.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace,
                                          self.reason.CLIENT_DISCONNECT)
        elif self.manager.sid_from_eio_sid(eio_sid, pkt.namespace or "/"):
            self._binary_packet[eio_sid] = pkt  # BINARY_*: wait for the attachments
        else:
            await self._refuse(eio_sid, MalformedPacket("Not connected to that namespace.",
                                                        pkt.namespace))

    async def _attachment(self, eio_sid, pkt, data) -> None:
        is_event = pkt.packet_type == packet.BINARY_EVENT
        try:
            if type(data) is not bytes:
                raise ValueError("expected a binary attachment")
            if not pkt.add_attachment(data):
                self._binary_packet[eio_sid] = pkt
                return
            problem = event_problem(pkt.data) if is_event else (
                None if type(pkt.data) is list else "An ack is a JSON array.")
        except (ValueError, TypeError, LookupError, RecursionError) as exc:
            problem = f"Malformed binary packet: {str(exc)[:120] or type(exc).__name__}"
        if problem:
            await self._refuse(eio_sid, MalformedPacket(problem, pkt.namespace,
                                                        pkt.id if is_event else None))
        elif is_event:
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
        else:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)

    async def _refuse(self, eio_sid, exc: MalformedPacket) -> None:
        namespace = exc.namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        connected = sid is not None and self.manager.is_connected(sid, namespace)
        _log.info("refused a malformed Socket.IO packet: %s", exc.reason,
                  extra={"fields": {"eio_sid": eio_sid, "namespace": namespace[:64]}})
        if exc.id is not None and connected:
            ack = {"ok": False, "error": Invalid(exc.reason).to_dict()}
            await self._send_packet(eio_sid, self.packet_class(
                packet.ACK, namespace=namespace, id=exc.id, data=[ack]))
