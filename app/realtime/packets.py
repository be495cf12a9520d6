"""Socket.IO packets without python-socketio's costly binary scan.

`socketio.packet.Packet.__init__` calls `data_is_binary(data)` on every packet
it builds (every emit, every ack) to decide between EVENT/ACK and their
BINARY_ variants; the library walks the payload with one `functools.reduce`
and one temporary list per container: ~10 µs for a `message:new` payload,
3–6 % of the server's CPU under load (py-spy, docs/benchmarks.md).

`FastPacket.data_is_binary` gives exactly the same answer for every input —
True iff a `bytes`/`bytearray` (or subclass) is reachable through `list` and
`dict` values (or subclasses); tuples and other types are not looked into,
as in the library — but skips the plain JSON leaves without a call and stops
at the first binary value: ~1.3 µs for the same payload. Nothing is assumed
about what the server emits: a payload with bytes still becomes a
BINARY_EVENT/BINARY_ACK with attachments, and incoming binary packets are
decoded by the library's unchanged code. Plugged in with
`socketio.AsyncServer(serializer=FastPacket)`.
"""

from __future__ import annotations

from socketio import packet


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
    @classmethod
    def data_is_binary(cls, data):
        return has_binary(data)
