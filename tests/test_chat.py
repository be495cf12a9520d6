"""The /chat namespace's dispatcher (app/realtime/chat.py): failures are logged
once, with who and what, never swallowed."""

from __future__ import annotations

import asyncio

from app.realtime import chat
from tests.factories import connect, make_user


async def test_a_failing_disconnect_hook_is_logged_with_context(deps, base_url, caplog,
                                                                 monkeypatch):
    async def broken(deps, conn):
        raise RuntimeError("hook bug")

    monkeypatch.setattr(chat, "ON_DISCONNECT", [broken, *chat.ON_DISCONNECT])
    user = await make_user(deps)
    sio = await connect(base_url, user.access_token)
    await sio.disconnect()
    for _ in range(100):
        records = [r for r in caplog.records if r.getMessage() == "disconnect hook failed"]
        if records:
            break
        await asyncio.sleep(0.02)
    assert len(records) == 1 and "hook bug" in caplog.text
    assert records[0].fields["hook"] == "broken"
    assert records[0].fields["user_id"] == user.user_id and records[0].fields["sid"]
