"""`python -m app demo`: demo accounts, contacts, a group and history, idempotent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app import demo
from app.models.accounts import AuthSession, User
from app.models.contacts import Contact
from app.models.messaging import Conversation, Message
from app.services import accounts


async def _counts():
    return (await User.all().count(), await Contact.all().count(),
            await Conversation.all().count(), await Message.all().count())


async def test_demo_seeds_contacts_group_and_history_and_is_idempotent(deps):
    first = await demo.seed(deps)
    assert first["usernames"] == ["alice", "bob", "carol"]
    users, contact_rows, conversations, messages = await _counts()
    assert users == 3
    assert contact_rows == 6  # everyone has the two others, both ways
    assert conversations == 3 + (1 if first["group_id"] else 0)
    assert messages >= len(demo.DIRECT_HISTORY)

    again = await demo.seed(deps)
    assert again == first
    assert await _counts() == (users, contact_rows, conversations, messages)

    # The printed password really signs in.
    out = await accounts.login(deps, accounts.LoginIn(login="alice", password=demo.PASSWORD),
                               accounts.Client(ip="127.0.0.1"))
    assert out["user"]["username"] == "alice"


async def test_demo_instructions_say_how_to_sign_in(settings):
    text = demo.instructions(settings, {"usernames": ["alice"], "group_id": "g"})
    assert demo.PASSWORD in text
    for username, _name, email in demo.PEOPLE:
        assert username in text and email in text
    assert f"http://{settings.host}:{settings.port}/" in text


async def test_demo_history_is_spread_over_days_and_every_direct_chat_has_some(deps):
    await demo.seed(deps)
    now = datetime.now(UTC)
    conversations = await Conversation.all()
    assert conversations
    for conv in conversations:
        messages = await Message.filter(conversation_id=conv.id).order_by("seq")
        assert messages, f"empty {conv.type} chat"
        times = [m.created_at for m in messages]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert all(t <= now for t in times)
        assert conv.last_message_at == times[-1]
    every = [m.created_at for m in await Message.all()]
    # A week of history on several days, at several hours, not all "just now".
    assert max(every) - min(every) >= timedelta(days=4)
    assert len({t.astimezone().date() for t in every}) >= 4
    assert len({t.astimezone().hour for t in every}) >= 6


async def test_demo_leaves_no_demo_device_signed_in(deps):
    await demo.seed(deps)
    assert await AuthSession.filter(device="demo").count() == 0
    # Signing in afterwards lists exactly that one device.
    out = await accounts.login(deps, accounts.LoginIn(login="bob", password=demo.PASSWORD),
                               accounts.Client(ip="127.0.0.1", device="Firefox"))
    auth = await accounts.authenticate(deps, out["access_token"])
    sessions = await accounts.list_sessions(deps, auth)
    assert [s["device"] for s in sessions] == ["Firefox"]
