"""L1 "bare" target: stock python-socketio AsyncServer on aiohttp, no storage.

The client authenticates with ``auth={"user": "u17"}`` (optionally ``"group"``);
the server puts the socket in a room named after the user (and the group).
Event ``send`` {to, ...} is re-emitted as ``msg`` to room ``to`` and acked with
``{"ok": true}``.  Stock settings on purpose: this is the baseline that Parley's
own overhead (auth, validation, storage) is measured against.

Usage: python -m bench.refs.l1_socketio PORT
"""

import sys

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp")


@sio.event
async def connect(sid, environ, auth):
    auth = auth or {}
    user = auth.get("user")
    if not user:
        raise socketio.exceptions.ConnectionRefusedError("unauthorized")
    await sio.enter_room(sid, user)
    if auth.get("group"):
        await sio.enter_room(sid, auth["group"])


@sio.event
async def send(sid, data):
    await sio.emit("msg", data, room=data["to"])
    return {"ok": True}


def main() -> None:
    port = int(sys.argv[1])
    app = web.Application()
    sio.attach(app)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
