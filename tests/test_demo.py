"""`python -m app demo`: demo accounts, contacts, a group and history, idempotent."""

from __future__ import annotations

from app import demo
from app.models.accounts import User
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
