"""A 200-member group over 200 real python-socketio clients: every member's
client receives every message exactly once."""

import asyncio
import uuid

from app.models.accounts import User
from app.models.contacts import Contact
from app.services import accounts, groups, messaging
from tests.factories import connect

MEMBERS = 200
MESSAGES = 5


async def _people(deps, n: int) -> list[tuple[str, str]]:
    """(user id, access token) for n users, created straight in the table: no
    argon2 cost, since nobody signs in with a password here."""
    tag = uuid.uuid4().hex[:6]
    users = [User(id=uuid.uuid4(), username=f"fan_{tag}_{i:03d}", display_name=f"Fan {i}")
             for i in range(n)]
    await User.bulk_create(users)
    users = await User.filter(id__in=[u.id for u in users]).order_by("username")
    out = []
    for u in users:
        tokens = await accounts.issue_tokens(deps, u, accounts.Client(ip="127.0.0.1", device="t"))
        out.append((str(u.id), tokens["access_token"]))
    return out


async def test_200_member_group_each_client_gets_each_message_once(deps, base_url):
    people = await _people(deps, MEMBERS)
    owner_id = people[0][0]
    others = [uid for uid, _ in people[1:]]
    # Group members must be the creator's contacts.
    await Contact.bulk_create([Contact(owner_id=owner_id, contact_id=u) for u in others])
    socks = []
    try:
        for i in range(0, MEMBERS, 50):
            socks += await asyncio.gather(*(connect(base_url, tok) for _, tok in people[i:i + 50]))
        conv = await groups.create_group(
            deps, owner_id, groups.CreateIn(name="Stadium", member_ids=others))
        cid = conv["id"]
        senders = [people[i][0] for i in range(MESSAGES)]
        sent = []
        for n, sender in enumerate(senders):
            sent.append(await messaging.send_from_payload(
                deps, sender, {"conversation_id": cid, "client_msg_id": f"fan-{n}",
                               "text": f"message {n}"}))
        # A last message as a fence: per socket, delivery is in order, so once it
        # arrives any duplicate of the others would already be in the log.
        fence = await messaging.send_from_payload(
            deps, owner_id, {"conversation_id": cid, "client_msg_id": "fan-fence", "text": "end"})

        def is_fence(m):
            return m["id"] == fence["id"]

        await asyncio.gather(*(s.log.wait_for("message:new", where=is_fence, timeout=30)
                               for s in socks))
        expected = [m["id"] for m in sent]
        for s in socks:
            got = [m["id"] for m in s.log.of("message:new") if m["type"] == "text"]
            assert got == expected + [fence["id"]]
            lines = [m for m in s.log.of("message:new") if m["type"] == "system"]
            assert [m["system"]["event"] for m in lines] == ["created"]
        assert [m["seq"] for m in sent] == list(range(2, 2 + MESSAGES))
    finally:
        await asyncio.gather(*(s.disconnect() for s in socks))
