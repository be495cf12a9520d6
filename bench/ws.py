"""Minimal WebSocket client transport (RFC 6455) on a raw asyncio Protocol.

Why not ``aiohttp.ClientSession.ws_connect``: every ``await ws.receive()`` costs a
task wake-up per frame, and the generator has to *receive* two frames for every one
the server receives (the relayed message and the ack).  Measured on this machine
class, an aiohttp-client generator saturates its core well below the L0 relay's
capacity, so it would measure itself instead of the server.  This transport parses
all frames that arrived in one ``data_received`` call in a tight loop and calls
``on_text`` synchronously — no per-frame task switch.

Client frames use the all-zero masking key: it is a legal key (RFC 6455 §5.3 only
requires the key to be present), so frames can be written without XOR-ing the payload.
Server frames are unmasked.  Only what the targets use is implemented: text/binary
frames, fragmentation, ping→pong, close.
"""

import asyncio

_ZERO_MASK = b"\0\0\0\0"
_HANDSHAKE = (
    "GET {path} HTTP/1.1\r\n"
    "Host: {host}:{port}\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: cGFybGV5LWJlbmNoLWtleQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """Encode one client→server frame (FIN set, zero mask key)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, 0x80 | n)) + _ZERO_MASK + payload
    if n < 65536:
        return bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big") + _ZERO_MASK + payload
    return bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big") + _ZERO_MASK + payload


class WSClient(asyncio.Protocol):
    """Subclass and implement ``on_text(payload: bytes)`` (and optionally ``on_open``)."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self._request = _HANDSHAKE.format(path=path, host=host, port=port).encode()
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._upgraded = False
        self._fragments: list[bytes] = []
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()  # resolved by the subclass (protocol-level ready)
        self.closed = False

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if not self._upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > 65536:
                    self.fail(ConnectionError("oversized HTTP response"))
                self._buf = data
                return
            status = data[: data.find(b"\r\n")]
            if b" 101 " not in status:
                self.fail(ConnectionError(f"upgrade refused: {status!r}"))
                return
            self._upgraded = True
            self.on_open()
            data = data[end + 4 :]
        self._parse(data)

    # -- framing ------------------------------------------------------------------------
    def _parse(self, data: bytes) -> None:
        pos, end = 0, len(data)
        on_text = self.on_text
        while end - pos >= 2:
            b0 = data[pos]
            ln = data[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if end - pos < 4:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 4], "big")
                hl = 4
            elif ln == 127:
                if end - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hl = 10
            start = pos + hl
            if end - start < ln:
                break
            payload = data[start : start + ln]
            pos = start + ln
            op = b0 & 0x0F
            if b0 & 0x80:  # FIN
                if op == 0:  # last fragment of a fragmented message
                    self._fragments.append(payload)
                    payload = b"".join(self._fragments)
                    self._fragments = []
                    on_text(payload)
                elif op <= 2:
                    on_text(payload)
                elif op == 9:
                    self.transport.write(frame(payload, 0xA))
                elif op == 8:
                    self.close()
                    return
            else:
                self._fragments.append(payload)
        if pos < end:
            self._buf = data[pos:]

    def send(self, payload: bytes) -> None:
        self.transport.write(frame(payload))

    def fail(self, exc: Exception) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(b"\x03\xe8", 0x8))
            self.transport.close()

    # -- hooks --------------------------------------------------------------------------
    def on_open(self) -> None:  # HTTP upgrade done
        pass

    def on_text(self, payload: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
