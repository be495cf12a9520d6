"""L1 "bare" target: stock python-socketio AsyncServer on aiohttp, no storage.

The client authenticates with ``auth={"user": "u17"}`` (optionally ``"group"``);
the server puts the socket in a room named after the user (and the group).
Event ``send`` {to, ...} is re-emitted as ``msg`` to room ``to`` and acked with
``{"ok": true}``.  Stock settings on purpose: this is the baseline that Parley's
own overhead (auth, validation, storage) is measured against.

Usage: python -m bench.refs.l1_socketio PORT [--gc-tuned=T0,T1,T2]

``--gc-tuned`` (the ``l1-gc`` target): the same relay with the collector set
up as Parley sets up its own: start-up objects frozen, and the thresholds
given (the target passes Parley's). A stock process's full collections walk
every start-up object and stall the loop for tens of milliseconds; whether
such a stall lands in a step's p99 can then decide the stock relay's S1 rate
more than its CPU does.
"""

import gc
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


def _gc_tuner(thresholds):
    async def tune_gc(app) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*thresholds)

    return tune_gc


def main() -> None:
    port = int(sys.argv[1])
    app = web.Application()
    for arg in sys.argv[2:]:
        if arg.startswith("--gc-tuned="):
            app.on_startup.append(_gc_tuner([int(t) for t in arg.split("=", 1)[1].split(",")]))
    sio.attach(app)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
