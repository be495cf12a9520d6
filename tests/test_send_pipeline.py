"""The send pipeline end to end: every kind of send is judged by the send rules
exactly once (in the message writer's transaction), and a refusal there stops a
media send as it stopped it before (same error, nothing stored)."""

from __future__ import annotations

import pytest

from app.models.messaging import Message
from app.services import contacts, messaging, send_rules
from tests.factories import make_user
from tests.test_media_api import chat_between, error_code, noise_png, send_media, uploaded


@pytest.fixture
def judged(monkeypatch) -> list:
    """The facts every call of send_rules.check_may_send judged."""
    calls: list = []
    real = send_rules.check_may_send

    def counting(facts, at):
        calls.append(facts)
        return real(facts, at)

    monkeypatch.setattr(send_rules, "check_may_send", counting)
    return calls


async def test_text_send_is_judged_once(deps, judged):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    await messaging.send_message(deps, alice.user_id, messaging.SendIn(
        conversation_id=cid, client_msg_id="t1", text="hello"))
    assert len(judged) == 1


async def test_reply_send_is_judged_once(deps, judged):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    first = await messaging.send_message(deps, bob.user_id, messaging.SendIn(
        conversation_id=cid, client_msg_id="r0", text="question"))
    judged.clear()
    reply = await messaging.send_message(deps, alice.user_id, messaging.SendIn(
        conversation_id=cid, client_msg_id="r1", text="answer", reply_to=first["id"]))
    assert reply["reply_to"] == first["id"]
    assert len(judged) == 1


async def test_media_send_is_judged_once(deps, client, judged):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    m = await uploaded(client, alice, noise_png(), name="a.png", kind="image",
                       content_type="image/png")
    resp = await send_media(client, alice, cid, m["id"], "image", "look")
    assert resp.status == 201, await resp.json()
    assert len(judged) == 1


@pytest.mark.parametrize(("blocker", "code"), [("bob", "not_contact"), ("alice", "blocked")])
async def test_media_send_refused_by_a_block_stores_nothing(deps, client, judged, blocker, code):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    m = await uploaded(client, alice, noise_png(), name="a.png", kind="image",
                       content_type="image/png")
    me, them = (bob, alice) if blocker == "bob" else (alice, bob)
    await contacts.block(deps, me.user_id, contacts.BlockIn(user_id=them.user_id))
    resp = await send_media(client, alice, cid, m["id"], "image")
    assert resp.status == 403 and await error_code(resp) == code
    assert len(judged) == 1
    assert await Message.filter(conversation_id=cid).count() == 0
