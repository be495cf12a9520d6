"""`python -m app demo`: demo accounts that are contacts, a group and some
history, built through the real services. Safe to run again: accounts are
looked up before they are created, requests that are already settled are
skipped, and messages use fixed client_msg_ids (sending is idempotent)."""

from __future__ import annotations

import logging

from app.config import Settings
from app.db import init_db, migrate
from app.deps import Deps
from app.errors import DomainError
from app.models.accounts import User
from app.models.messaging import Membership
from app.services import accounts, contacts, messaging
from app.services import conversations as convs

log = logging.getLogger("parley.demo")

PASSWORD = "parley-demo-2026"
PEOPLE = [
    ("alice", "Alice Chen", "alice@demo.example.org"),
    ("bob", "Bob Li", "bob@demo.example.org"),
    ("carol", "Carol Wang", "carol@demo.example.org"),
]
GROUP_NAME = "Weekend hiking"

DIRECT_HISTORY = [
    ("alice", "bob", "Hi Bob! Are you free on Saturday?"),
    ("bob", "alice", "Hey Alice, yes — what's the plan?"),
    ("alice", "bob", "Hiking in the hills, then dumplings 🥟"),
    ("bob", "alice", "Count me in. I'll bring snacks."),
    ("carol", "alice", "Alice, did you get the tickets?"),
    ("alice", "carol", "Yes! Two for Friday night."),
]
GROUP_HISTORY = [
    ("alice", "Welcome to the hiking group!"),
    ("bob", "Meet at the north gate at 8:00?"),
    ("carol", "Works for me. Weather looks sunny ☀️"),
]


async def _user(deps: Deps, username: str, name: str, email: str) -> User:
    user = await User.get_or_none(username=username)
    if user is None:
        data = accounts.RegisterIn(email=email, password=PASSWORD, display_name=name,
                                   username=username)
        await accounts.register(deps, data, accounts.Client(ip="127.0.0.1", device="demo"))
        user = await User.get(username=username)
    return user


async def _befriend(deps: Deps, a: User, b: User) -> None:
    if await contacts.has_contact(a.id, b.id) and await contacts.has_contact(b.id, a.id):
        return
    out = await contacts.send_request(deps, str(a.id), contacts.RequestIn(user_id=str(b.id)))
    if out["request"]["status"] == "pending":
        await contacts.accept(deps, str(b.id), out["request"]["id"])


async def _send(deps: Deps, sender: User, conversation_id, key: str, text: str) -> None:
    data = messaging.SendIn(conversation_id=str(conversation_id), client_msg_id=f"demo-{key}",
                            text=text)
    await messaging.send_message(deps, str(sender.id), data)


async def _group(deps: Deps, owner: User, members: list[User]):
    """The demo group, found by name among the owner's groups, else created."""
    for m in await Membership.filter(user_id=owner.id, left_at=None).select_related(
            "conversation"):
        c = m.conversation
        if c.type == "group" and c.title == GROUP_NAME and c.dissolved_at is None:
            return c.id
    try:
        from app.services import groups

        data = groups.CreateIn(name=GROUP_NAME, member_ids=[str(u.id) for u in members])
        conv = await groups.create_group(deps, str(owner.id), data)
    except (ImportError, AttributeError):
        return None  # a server without groups
    return conv["id"]


async def seed(deps: Deps) -> dict:
    """Create (or find) the demo data; returns the usernames and the group id."""
    users = {u: await _user(deps, u, name, email) for u, name, email in PEOPLE}
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    for a, b in ((alice, bob), (alice, carol), (bob, carol)):
        await _befriend(deps, a, b)
    for i, (frm, to, text) in enumerate(DIRECT_HISTORY):
        conv, _ = await convs.get_or_create_direct(deps, users[frm].id, users[to].id)
        await _send(deps, users[frm], conv.id, f"d{i}", text)
    group_id = await _group(deps, alice, [bob, carol])
    if group_id is not None:
        for i, (frm, text) in enumerate(GROUP_HISTORY):
            await _send(deps, users[frm], group_id, f"g{i}", text)
    return {"usernames": list(users), "group_id": str(group_id) if group_id else None}


async def run(settings: Settings) -> dict:
    await migrate(settings.database_url)  # a no-op when the schema is current
    ctx = await init_db(settings.database_url)
    deps = Deps(settings=settings)
    try:
        return await seed(deps)
    except DomainError as exc:
        log.error("demo data failed: %s", exc)
        raise
    finally:
        await deps.writer.close()
        await ctx.close_connections()


def instructions(settings: Settings, result: dict) -> str:
    url = f"http://{settings.host}:{settings.port}/"
    lines = [
        "Parley demo accounts are ready.",
        f"Open {url} and sign in as one of (password: {PASSWORD}):",
    ]
    lines += [f"  {username:<6} {name:<11} {email}" for username, name, email in PEOPLE]
    lines.append("They are each other's contacts and share some chats"
                 + (f" and the group \u201c{GROUP_NAME}\u201d." if result.get("group_id") else "."))
    lines.append("Tip: use a second browser profile (or a private window) for a second person.")
    return "\n".join(lines)
