"""The /chat namespace's dispatcher (app/realtime/chat.py): failures are logged
once, with who and what, never swallowed; a graceful shutdown reads no new
events while it waits for the running ones."""

from __future__ import annotations

import asyncio

from app.realtime import chat
from app.server import SIO_KEY
from tests.factories import connect, make_user, until


async def test_a_failing_disconnect_hook_is_logged_once_with_context(deps, base_url, caplog,
                                                                      monkeypatch):
    """Its store (Redis) away fails a hook at every disconnect: the log tells
    the run once, with the first client's who and what, not once per client."""
    calls = []

    async def broken(deps, conn):
        calls.append(conn.user_id)
        raise RuntimeError("hook bug")

    monkeypatch.setattr(chat, "ON_DISCONNECT", [broken, *chat.ON_DISCONNECT])
    users = [await make_user(deps) for _ in range(3)]
    for user in users:
        sio = await connect(base_url, user.access_token)
        await sio.disconnect()
        await until(lambda u=user: u.user_id in calls, "the hook ran")
    records = [r for r in caplog.records if "broken" in r.getMessage()]
    assert [r.getMessage() for r in records] == [
        "disconnect hook tests.test_chat.broken failed (RuntimeError); retrying"]
    assert "hook bug" in caplog.text
    assert records[0].fields["hook"] == "broken"
    assert records[0].fields["user_id"] == users[0].user_id and records[0].fields["sid"]


async def test_drain_reads_no_new_event_while_the_running_ones_finish(deps, server, base_url,
                                                                      monkeypatch):
    started, release, seen = asyncio.Event(), asyncio.Event(), []

    async def slow(deps, conn, payload):
        seen.append(payload["n"])
        started.set()
        await release.wait()
        return {"ok": True}

    monkeypatch.setitem(chat.EVENTS, "chat-test:slow", slow)
    namespace = server.app[SIO_KEY].namespace_handlers["/chat"]
    user = await make_user(deps)
    client = await connect(base_url, user.access_token)
    acks = []
    try:
        await client.emit("chat-test:slow", {"n": 1}, namespace="/chat", callback=acks.append)
        await asyncio.wait_for(started.wait(), 10)
        drain = asyncio.create_task(namespace.drain(timeout=30))
        await asyncio.sleep(0.2)  # the drain has stopped reading the socket
        await client.emit("chat-test:slow", {"n": 2}, namespace="/chat", callback=acks.append)
        await asyncio.sleep(0.5)
        assert not drain.done()  # event 1 still runs
        release.set()
        await asyncio.wait_for(drain, 10)
        # Event 1 finished and was acked before the socket closed; event 2 was never
        # read (no ack: the client sends it again after reconnecting).
        assert seen == [1] and acks == [{"ok": True}]
    finally:
        release.set()
        await client.disconnect()
