"""L0 "limit" target: the least a Python relay can do on aiohttp.

No Socket.IO, no storage. Each client opens ``/ws?user=<name>[&group=<g>]``
and sends JSON text frames ``{"to": <user-or-group>, "f", "s", "n", "ts", ...}``.
The server parses just enough to route (msgspec, into a 1-field struct), forwards the
*original* text unchanged to the recipient(s) and acks the sender with ``{"ack":<a>}``.
This is the ceiling any aiohttp-based server (Parley included) can approach.

Usage: python -m bench.refs.l0_aiohttp PORT
"""

import sys

import msgspec
from aiohttp import WSMsgType, web


class _Route(msgspec.Struct):
    to: str
    a: int = 0  # ack id chosen by the client


_decode = msgspec.json.Decoder(_Route).decode


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    users = request.app["users"]
    groups = request.app["groups"]
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    user = request.query.get("user", "")
    group = request.query.get("group")
    users[user] = ws
    if group:
        groups.setdefault(group, set()).add(ws)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = msg.data
            route = _decode(data)
            peer = users.get(route.to)
            if peer is not None:
                await peer.send_str(data)
            else:
                for member in tuple(groups.get(route.to, ())):
                    await member.send_str(data)
            await ws.send_str(f'{{"ack":{route.a}}}')
    finally:
        if users.get(user) is ws:
            del users[user]
        if group:
            groups.get(group, set()).discard(ws)
    return ws


def main() -> None:
    port = int(sys.argv[1])
    app = web.Application()
    app["users"] = {}
    app["groups"] = {}
    app.router.add_get("/ws", ws_handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
