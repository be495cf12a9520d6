"""Interop: the official socket.io-client (Node, npm) speaks Parley's protocol.

Needs Node.js >= 18 and `npm ci` (scripts/test runs it); fails, never skips, without them.
"""

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from app.services import conversations as convs
from tests.factories import call, connect, make_contacts, make_user

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "tests" / "interop" / "chat_client.mjs"


async def node(*args):
    node_bin = shutil.which("node")
    assert node_bin, "Node.js is required for the interop tests"
    assert (ROOT / "node_modules" / "socket.io-client").is_dir(), "run npm ci (scripts/test does)"
    return await asyncio.create_subprocess_exec(
        node_bin, str(CLIENT), *args, stdout=asyncio.subprocess.PIPE, cwd=str(ROOT)
    )


async def read_json_line(proc) -> dict:
    line = await asyncio.wait_for(proc.stdout.readline(), 15)
    assert line, "node client printed nothing"
    return json.loads(line)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_official_client_sends_with_ack_and_receives(deps, base_url, transport):
    alice, bob = await make_user(deps), await make_user(deps)
    await make_contacts(deps, alice, bob)
    conv, _ = await convs.get_or_create_direct(deps, alice.user_id, bob.user_id)
    cid = str(conv.id)
    # Bob (Python client) receives what Node-Alice sends.
    b = await connect(base_url, bob.access_token)
    try:
        proc = await node(base_url, alice.access_token, "send", cid, transport)
        out = await read_json_line(proc)
        assert await proc.wait() == 0, out
        ack = out["ack"]
        assert ack["ok"] is True and ack["message"]["text"] == "hello from socket.io-client"
        [got] = await b.log.wait_for("message:new")
        assert got == ack["message"]

        # Node-Bob receives what Python-Alice sends.
        proc = await node(base_url, bob.access_token, "receive", cid, transport)
        assert (await read_json_line(proc)) == {"ready": True}
        a = await connect(base_url, alice.access_token)
        sent = await call(a, "message:send", {"conversation_id": cid, "client_msg_id": "py-1",
                                               "type": "text", "text": "hello node"})
        await a.disconnect()
        out = await read_json_line(proc)
        assert await proc.wait() == 0
        assert out["received"] == sent["message"]
    finally:
        await b.disconnect()


async def test_official_client_gets_unauthorized_connect_error(base_url, deps):
    proc = await node(base_url, "not-a-token", "ready")
    out = await read_json_line(proc)
    assert out == {"connect_error": "unauthorized"}
    assert await proc.wait() == 3
