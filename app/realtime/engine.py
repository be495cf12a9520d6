"""A leaner Engine.IO WebSocket path, plugged in through python-socketio's
own extension point (`AsyncServer._engineio_server_class`).

python-engineio's WebSocket handler spends most of its per-packet time on
machinery rather than work: every received frame gets a fresh task plus an
`asyncio.wait_for` (for the ping timeout), and every sent packet goes through
a queue to a writer task that wakes up once per packet. For a chat server that
doubles the CPU cost of a message.

FastSocket keeps the protocol and the library's socket object, and changes
only the WebSocket transport loop:
- frames are read in a plain loop (dead peers are still found: the engine's
  service task checks ping timeouts and closing the socket ends the loop);
- packets are written straight to the WebSocket instead of via queue + task.
Long-polling, and upgrades from polling to WebSocket, keep the library's code.
"""

from __future__ import annotations

import logging

import engineio
import socketio
from engineio import exceptions, packet
from engineio.async_socket import AsyncSocket

log = logging.getLogger("parley.engine")


class FastSocket(AsyncSocket):
    _wsock = None  # engineio's aiohttp WebSocket wrapper, once on a pure WebSocket

    async def send(self, pkt):
        ws = self._wsock
        if ws is None or self.upgrading:
            return await super().send(pkt)
        if not await self.check_ping_timeout():
            return
        try:
            await ws.send(pkt.encode())
        except Exception:  # peer gone mid-write: the read loop ends the socket
            self._wsock = None

    async def close(self, wait=True, abort=False, reason=None):
        ws = self._wsock
        await super().close(wait=wait, abort=abort, reason=reason)
        if ws is not None:
            self._wsock = None
            await ws.close()  # unblocks the read loop

    async def _websocket_handler(self, ws):
        if self.connected:
            # An upgrade from long-polling: keep the library's probe handshake.
            return await super()._websocket_handler(ws)
        self.connected = True
        self.upgraded = True
        # Packets queued before the transport existed (the OPEN packet).
        while not self.queue.empty():
            pending = self.queue.get_nowait()
            self.queue.task_done()
            if pending is not None:
                await ws.send(pending.encode())
        self._wsock = ws
        max_size = self.server.max_http_buffer_size
        try:
            while not self.closed:
                try:
                    data = await ws.wait()
                except Exception:
                    break
                if not data or len(data) > max_size:
                    break
                try:
                    await self.receive(packet.Packet(encoded_packet=data))
                except exceptions.UnknownPacketError:
                    pass
                except exceptions.SocketIsClosedError:
                    break
                except Exception:
                    log.exception("engine.io receive error")
        finally:
            self._wsock = None
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
            await ws.close()


class _SocketTable(dict):
    """engineio creates every socket as AsyncSocket and stores it here; the
    table hands back a FastSocket (same object, same state, leaner transport)."""

    def __setitem__(self, sid, sock):
        if type(sock) is AsyncSocket:
            sock.__class__ = FastSocket
        super().__setitem__(sid, sock)


class FastEngineServer(engineio.AsyncServer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sockets = _SocketTable()


class AsyncServer(socketio.AsyncServer):
    def _engineio_server_class(self):
        return FastEngineServer
