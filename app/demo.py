"""`python -m app demo`: demo accounts that are contacts, a group and some
history, built through the real services. Safe to run again: accounts are
looked up before they are created, requests that are already settled are
skipped, and messages use fixed client_msg_ids (sending is idempotent)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from app.config import Settings
from app.db import init_db, migrate
from app.deps import Deps
from app.errors import DomainError
from app.models.accounts import AuthSession, User
from app.models.messaging import Conversation, Membership, Message
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

# (from, to, days ago, local time, text): a week of ordinary chats, in order
# within each conversation. Every pair of contacts has history, so no direct
# chat in the list is empty.
DIRECT_HISTORY = [
    ("alice", "bob", 6, "19:42", "Hi Bob! Are you free on Saturday?"),
    ("bob", "alice", 6, "20:15", "Hey Alice, yes — what's the plan?"),
    ("alice", "bob", 6, "20:17", "Hiking in the hills, then dumplings 🥟"),
    ("bob", "alice", 5, "08:03", "Count me in. I'll bring snacks."),
    ("alice", "bob", 1, "12:31", "Lunch at the noodle place tomorrow?"),
    ("bob", "alice", 1, "12:48", "Sure, 12:30 works."),
    ("carol", "alice", 4, "09:26", "Alice, did you get the tickets?"),
    ("alice", "carol", 4, "09:40", "Yes! Two for Friday night."),
    ("carol", "alice", 4, "09:41", "Great, see you at the entrance at 7."),
    ("bob", "carol", 3, "18:05", "Carol, can you send me the trail map?"),
    ("carol", "bob", 3, "18:22", "Sent it in the group. The red route is the easy one."),
    ("bob", "carol", 0, "08:54", "Thanks! Running late, save me a seat 🙏"),
]
# (from, days ago, local time, text)
GROUP_HISTORY = [
    ("alice", 3, "17:58", "Welcome to the hiking group!"),
    ("bob", 3, "18:10", "Meet at the north gate at 8:00?"),
    ("carol", 3, "18:19", "Works for me. Weather looks sunny ☀️"),
    ("alice", 2, "21:34", "Don't forget water and a jacket, it gets windy at the top."),
    ("bob", 0, "07:47", "On my way, 10 minutes!"),
]


def _at(days_ago: int, hhmm: str) -> datetime:
    """That local time, `days_ago` days before today, as an aware datetime;
    never in the future (today's later times move to yesterday)."""
    now = datetime.now().astimezone()
    hour, minute = (int(x) for x in hhmm.split(":"))
    when = (now - timedelta(days=days_ago)).replace(hour=hour, minute=minute, second=0,
                                                    microsecond=0)
    return when if when <= now else when - timedelta(days=1)


async def _user(deps: Deps, username: str, name: str, email: str) -> User:
    user = await User.get_or_none(username=username)
    if user is None:
        data = accounts.RegisterIn(email=email, password=PASSWORD, display_name=name,
                                   username=username)
        await accounts.register(deps, data, accounts.Client(ip="127.0.0.1", device="demo"))
        user = await User.get(username=username)
    # Registering signs the account in; nobody holds that session, so it would
    # only show up as a stray "demo" device in the account's device list.
    await AuthSession.filter(user_id=user.id, device="demo").delete()
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


async def _spread(conv_id, times: dict[str, datetime]) -> None:
    """Date the conversation's messages as scripted instead of all "just now".
    Messages without a scripted time (the group's creation notice) take the
    time of the next scripted one, minus a minute."""
    messages = await Message.filter(conversation_id=conv_id).order_by("-seq")
    if not messages:
        return
    dated = []
    following = None
    for m in messages:  # newest first
        when = times.get(m.client_msg_id or "")
        if when is None or (following is not None and when >= following):
            when = (following or datetime.now().astimezone()) - timedelta(minutes=1)
        dated.append((m.id, when))
        following = when
    for message_id, when in dated:
        await Message.filter(id=message_id).update(created_at=when)
    await Conversation.filter(id=conv_id).update(
        created_at=dated[-1][1] - timedelta(minutes=5), last_message_at=dated[0][1])


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
    times: dict[str, datetime] = {}  # client_msg_id → when it was "sent"
    conversations = []
    for i, (frm, to, days_ago, hhmm, text) in enumerate(DIRECT_HISTORY):
        conv, _ = await convs.get_or_create_direct(deps, users[frm].id, users[to].id)
        await _send(deps, users[frm], conv.id, f"d{i}", text)
        times[f"demo-d{i}"] = _at(days_ago, hhmm)
        conversations.append(conv.id)
    group_id = await _group(deps, alice, [bob, carol])
    if group_id is not None:
        for i, (frm, days_ago, hhmm, text) in enumerate(GROUP_HISTORY):
            await _send(deps, users[frm], group_id, f"g{i}", text)
            times[f"demo-g{i}"] = _at(days_ago, hhmm)
        conversations.append(group_id)
    for conv_id in dict.fromkeys(conversations):
        await _spread(conv_id, times)
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
