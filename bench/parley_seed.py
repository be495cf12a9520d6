"""Seed a Parley database for a bench scenario, fast, without the REST API.

    python -m bench.parley_seed < spec.json > out.json

Runs in its own process (own Tortoise state, and the CPU it burns is not charged to the
generator).  Uses the app's own models (``bulk_create``) for users, sessions, contacts,
conversations and memberships, and plain SQL for the bulk of messages (SQLite:
``executemany`` in one transaction; PostgreSQL: one ``INSERT … SELECT generate_series``).

spec::

    {"database_url": "...", "secret_key": "...", "token_ttl": 7200,
     "users": ["u0", "u1", ...],
     "pairs": [["u0", "u50"], ...],              # direct conversations (+ contacts both ways)
     "groups": {"g": ["m0", "m1", ...]},          # first member owns it; all are its contacts
     "messages": {"g": [1000000, "m0"]}}          # pre-existing messages: count, sender

out: ``{"users": {name: id}, "tokens": {name: access token}, "convs": {"a|b" or group: id},
"seconds": {...}}``.  Accounts get no password (``password_hash`` NULL): they can only
be used through the issued tokens.
"""

import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime


def pair_key(a: str, b: str) -> str:
    return f"{a}|{b}" if a <= b else f"{b}|{a}"


async def seed(spec: dict) -> dict:
    from tortoise import Tortoise

    from app.db import init_db
    from app.models.accounts import AuthSession, User
    from app.models.contacts import Contact
    from app.models.messaging import Conversation, Membership
    from app.security import encode_access_token
    from app.services.conversations import direct_key

    timings = {}
    t0 = time.monotonic()
    ctx = await init_db(spec["database_url"])
    try:
        now = datetime.now(UTC)
        names = list(dict.fromkeys(spec.get("users", [])))
        for a, b in spec.get("pairs", []):
            names += [a, b]
        for members in spec.get("groups", {}).values():
            names += members
        names = list(dict.fromkeys(names))
        uid = {n: uuid.uuid4() for n in names}
        sid = {n: uuid.uuid4() for n in names}
        chunk = 5000
        users = [User(id=uid[n], username=n[:32], display_name=n[:64], created_at=now)
                 for n in names]
        for i in range(0, len(users), chunk):
            await User.bulk_create(users[i : i + chunk])
        sessions = [AuthSession(id=sid[n], user_id=uid[n], device="bench", created_at=now,
                                last_used_at=now) for n in names]
        for i in range(0, len(sessions), chunk):
            await AuthSession.bulk_create(sessions[i : i + chunk])
        timings["users"] = round(time.monotonic() - t0, 2)

        contacts: set[tuple[str, str]] = set()
        convs: list[Conversation] = []
        members: list[Membership] = []
        conv_ids: dict[str, str] = {}
        for a, b in spec.get("pairs", []):
            contacts |= {(a, b), (b, a)}
            cid = uuid.uuid4()
            conv_ids[pair_key(a, b)] = str(cid)
            convs.append(Conversation(id=cid, type="direct", direct_key=direct_key(uid[a], uid[b]),
                                      created_at=now, updated_at=now))
            members += [Membership(conversation_id=cid, user_id=uid[u], joined_at=now,
                                   updated_at=now) for u in (a, b)]
        for gname, gm in spec.get("groups", {}).items():
            owner = gm[0]
            cid = uuid.uuid4()
            conv_ids[gname] = str(cid)
            convs.append(Conversation(id=cid, type="group", title=gname[:64], created_at=now,
                                      updated_at=now))
            for i, u in enumerate(gm):
                members.append(Membership(conversation_id=cid, user_id=uid[u], joined_at=now,
                                          updated_at=now, role="owner" if i == 0 else "member"))
                if u != owner:
                    contacts |= {(owner, u), (u, owner)}
        cl = [Contact(owner_id=uid[a], contact_id=uid[b], created_at=now) for a, b in contacts]
        for i in range(0, len(cl), chunk):
            await Contact.bulk_create(cl[i : i + chunk])
        for i in range(0, len(convs), chunk):
            await Conversation.bulk_create(convs[i : i + chunk])
        for i in range(0, len(members), chunk):
            await Membership.bulk_create(members[i : i + chunk])
        timings["conversations"] = round(time.monotonic() - t0, 2)

        for key, (count, sender) in spec.get("messages", {}).items():
            await _bulk_messages(ctx, spec["database_url"], conv_ids[key], uid[sender],
                                 int(count), now)
        timings["messages"] = round(time.monotonic() - t0, 2)
        push = spec.get("push")
        if push:
            await _push_devices(uid, sid, push, conv_ids, now)
            timings["push"] = round(time.monotonic() - t0, 2)
        # A running database has statistics (autovacuum's ANALYZE), the bulk history
        # included; a freshly seeded one would otherwise be planned from default guesses
        # (PostgreSQL joined every membership of the database per message batch that way).
        await Tortoise.get_connection("default").execute_script("ANALYZE")
    finally:
        await ctx.close_connections()

    key, ttl = spec["secret_key"], int(spec.get("token_ttl", 7200))
    tokens = {n: encode_access_token(key, str(uid[n]), str(sid[n]), ttl) for n in names}
    timings["total"] = round(time.monotonic() - t0, 2)
    return {"users": {n: str(u) for n, u in uid.items()}, "tokens": tokens, "convs": conv_ids,
            "seconds": timings}


async def _push_devices(uid, sid, push: dict, conv_ids: dict, now) -> None:
    """A Web Push device for each of push["users"] at push["endpoint"]/<name>; with
    push["outbox"] set, one due push per device (the worker benchmark)."""
    import hashlib
    from datetime import timedelta

    from app.models.push import PushOutbox, PushSubscription

    # One browser key pair for all: the sink does not decrypt.
    p256dh = push["p256dh"]
    auth = push["auth"]
    subs, rows = [], []
    for n in push["users"]:
        address = f"{push['endpoint']}/{n}"
        sub = PushSubscription(id=uuid.uuid4(), user_id=uid[n], session_id=sid[n], kind="webpush",
                               address=address, p256dh=p256dh, auth=auth, created_at=now,
                               address_hash=hashlib.sha256(f"webpush:{address}".encode())
                               .hexdigest())
        subs.append(sub)
        if push.get("outbox"):
            rows.append(PushOutbox(
                subscription_id=sub.id, user_id=uid[n], thread=str(uuid.uuid4()),
                kind="message", pending=True, message_id=1, count=1, due_at=now,
                expires_at=now + timedelta(hours=1), created_at=now,
                payload={"preview": "full", "sender": "bench", "title": "", "group": False,
                         "type": "text", "text": "hello from the benchmark", "seq": 1}))
    for i in range(0, len(subs), 5000):
        await PushSubscription.bulk_create(subs[i : i + 5000])
    for i in range(0, len(rows), 5000):
        await PushOutbox.bulk_create(rows[i : i + 5000])


async def _bulk_messages(ctx, url: str, cid: str, sender: uuid.UUID, count: int, now) -> None:
    """``count`` text messages seq 1..count, then the conversation's last_seq = count."""
    if url.startswith("sqlite"):
        import sqlite3

        path = url.split("://", 1)[1].split("?", 1)[0]
        ts = now.isoformat(sep=" ")
        s = str(sender)
        db = sqlite3.connect(path, timeout=30)
        try:
            db.execute("PRAGMA synchronous=OFF")
            with db:
                db.executemany(
                    'INSERT INTO "messages" ("seq","type","text","created_at",'
                    '"conversation_id","sender_id") VALUES (?,?,?,?,?,?)',
                    ((i, "text", f"history message {i} " + "x" * 60, ts, cid, s)
                     for i in range(1, count + 1)))
                db.execute('UPDATE "conversations" SET "last_seq"=?, "last_message_at"=? '
                           'WHERE "id"=?', (count, ts, cid))
        finally:
            db.close()
        return
    import asyncpg

    pg = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        async with pg.transaction():
            await pg.execute(
                'INSERT INTO "messages" ("seq","type","text","created_at","conversation_id",'
                '"sender_id") SELECT i, \'text\', \'history message \' || i || \' \' || '
                "repeat('x', 60), $1, $2, $3 FROM generate_series(1, $4) AS i",
                now, uuid.UUID(cid), sender, count)
            await pg.execute('UPDATE "conversations" SET "last_seq"=$1, "last_message_at"=$2 '
                             'WHERE "id"=$3', count, now, uuid.UUID(cid))
    finally:
        await pg.close()


def main() -> None:
    spec = json.load(sys.stdin)
    out = asyncio.run(seed(spec))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
