"""The read path (app/services/history.py): raw-row pages, batched sync, batched counts.

History pages are built from plain rows in one statement; everything here checks
they say exactly what the model-based serialiser (the send path) says, in the
same key order, on SQLite and PostgreSQL.
"""

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from app.errors import NotFound
from app.models.groups import MessageMention
from app.models.messaging import Conversation, HiddenMessage, Membership, Message
from app.services import conversations as convs
from app.services import groups, messaging
from app.services import history as reading
from tests.factories import make_contacts, make_user

MEDIA = {"id": str(uuid.UUID(int=7)), "kind": "image", "mime": "image/png", "size": 1234,
         "name": "a.png", "width": 10, "height": 20, "duration_ms": None}


async def direct(deps, a, b) -> uuid.UUID:
    await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return conv.id


async def put(cid, seq: int, sender, *, type="text", text=None, reply_to=None, data=None,
              recalled=False, created=None) -> Message:
    """A stored message, written directly (the writer is not under test here)."""
    msg = await Message.create(
        conversation_id=cid, seq=seq, sender_id=sender, client_msg_id=f"c{seq}-{uuid.uuid4().hex}",
        type=type, text=f"text {seq}" if text is None else text, reply_to_id=reply_to,
        data=data, recalled_at=datetime.now(UTC) if recalled else None,
        created_at=created or datetime(2026, 11, 27, 12, 0, seq % 60, 1000 * seq, tzinfo=UTC),
    )
    await Conversation.filter(id=cid).update(last_seq=seq)
    return msg


def encoded(obj) -> bytes:
    return msgspec.json.encode(obj)  # key order included: byte-for-byte


def reference_serialize(msg: Message, reply: Message | None, deps, viewer=None) -> dict:
    """The model-based serialiser the read path replaced, kept as the spec."""
    from app.services import media

    recalled = msg.recalled_at is not None
    out = {
        "id": str(msg.id),
        "conversation_id": str(msg.conversation_id),
        "seq": msg.seq,
        "sender_id": str(msg.sender_id) if msg.sender_id else None,
        "type": msg.type,
        "text": "" if recalled else msg.text,
        "client_msg_id": msg.client_msg_id,
        "reply_to": str(msg.reply_to_id) if msg.reply_to_id else None,
        "created_at": msg.created_at.isoformat(),
        "recalled": recalled,
    }
    if reply is not None:
        out["reply_preview"] = {
            "id": str(reply.id),
            "seq": reply.seq,
            "sender_id": str(reply.sender_id) if reply.sender_id else None,
            "type": reply.type,
            "text": "" if reply.recalled_at else reply.text[:200],
            "recalled": reply.recalled_at is not None,
        }
    if msg.data and not recalled:
        for key in ("system", "mentions", "mention_all", "media"):
            if key in msg.data:
                out[key] = msg.data[key]
        if "media" in msg.data:
            out["media"] = media.public_media(msg.data["media"], deps, viewer)
    return out


async def test_page_rows_serialise_exactly_like_models(deps):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await direct(deps, alice, bob)
    first = await put(cid, 1, alice.user_id, text="x" * 300)
    await put(cid, 2, bob.user_id, reply_to=first.id)
    gone = await put(cid, 3, alice.user_id, recalled=True, data={"mentions": [bob.user_id]})
    await put(cid, 4, bob.user_id, reply_to=gone.id)
    await put(cid, 5, None, type="system", text="", data={"system": {"event": "created"}})
    await put(cid, 6, alice.user_id, type="image", text="caption", data={"media": MEDIA})
    await put(cid, 7, alice.user_id, data={"mentions": [bob.user_id], "mention_all": True})
    await put(cid, 8, bob.user_id, data={})
    await put(cid, 9, bob.user_id, created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))

    page = await reading.history(deps, bob.user_id, reading.HistoryIn(conversation_id=str(cid)))
    models = await Message.filter(conversation_id=cid).order_by("seq")
    expected = await reading.serialize_messages(models, bob.user_id, deps)
    assert encoded(page["messages"]) == encoded(expected)
    by_id = {m.id: m for m in models}
    spec = [reference_serialize(m, by_id.get(m.reply_to_id), deps, bob.user_id) for m in models]
    assert encoded(page["messages"]) == encoded(spec)
    assert page["has_more"] is False

    by_seq = {m["seq"]: m for m in page["messages"]}
    assert list(by_seq[1]) == ["id", "conversation_id", "seq", "sender_id", "type", "text",
                               "client_msg_id", "reply_to", "created_at", "recalled"]
    assert by_seq[1]["conversation_id"] == str(cid) and by_seq[1]["sender_id"] == alice.user_id
    assert by_seq[2]["reply_preview"] == {"id": str(first.id), "seq": 1,
                                          "sender_id": alice.user_id, "type": "text",
                                          "text": "x" * 200, "recalled": False}
    assert by_seq[3]["text"] == "" and by_seq[3]["recalled"] is True and "mentions" not in by_seq[3]
    assert by_seq[4]["reply_preview"]["text"] == "" and by_seq[4]["reply_preview"]["recalled"]
    assert by_seq[5]["sender_id"] is None and by_seq[5]["system"] == {"event": "created"}
    media = by_seq[6]["media"]
    assert media["id"] == MEDIA["id"] and media["url"] and media["thumbnail_url"]  # signed
    assert by_seq[7]["mentions"] == [bob.user_id] and by_seq[7]["mention_all"] is True
    assert "mentions" not in by_seq[8]
    assert by_seq[9]["created_at"] == "2026-01-02T03:04:05+00:00"
    assert by_seq[1]["created_at"] == datetime(2026, 11, 27, 12, 0, 1, 1000,
                                               tzinfo=UTC).isoformat()


async def test_hidden_messages_are_filtered_inside_the_page(deps):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await direct(deps, alice, bob)
    msgs = [await put(cid, s, alice.user_id) for s in range(1, 11)]
    for m in msgs[6:9]:  # bob hides 7, 8, 9
        await HiddenMessage.create(user_id=bob.user_id, message_id=m.id, conversation_id=cid)

    page = await reading.history(deps, bob.user_id,
                                 reading.HistoryIn(conversation_id=str(cid), limit=4))
    # A full page of what bob can see, not a short one with holes.
    assert [m["seq"] for m in page["messages"]] == [4, 5, 6, 10] and page["has_more"]
    page = await reading.history(deps, bob.user_id, reading.HistoryIn(
        conversation_id=str(cid), before_seq=4, limit=3))
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3] and not page["has_more"]
    # Alice hid nothing.
    page = await reading.history(deps, alice.user_id,
                                 reading.HistoryIn(conversation_id=str(cid), limit=4))
    assert [m["seq"] for m in page["messages"]] == [7, 8, 9, 10]
    # Right below hidden ones: the page skips them.
    page = await reading.history(deps, bob.user_id, reading.HistoryIn(
        conversation_id=str(cid), before_seq=10, limit=3))
    assert [m["seq"] for m in page["messages"]] == [4, 5, 6] and page["has_more"]
    got = await reading.sync(deps, bob.user_id, reading.SyncIn(cursors={str(cid): 6}, limit=2))
    [conv] = got["conversations"]
    assert [m["seq"] for m in conv["messages"]] == [10] and conv["has_more"] is False
    m = await Membership.get(conversation_id=cid, user_id=bob.user_id).select_related(
        "conversation")
    assert conv["unread_count"] == await convs.unread_count(m, bob.user_id) == 10
    # Everything after the cursor hidden: an empty page, the count still right.
    await HiddenMessage.create(user_id=bob.user_id, message_id=msgs[9].id, conversation_id=cid)
    got = await reading.sync(deps, bob.user_id, reading.SyncIn(cursors={str(cid): 6}))
    [conv] = got["conversations"]
    assert conv["messages"] == [] and conv["has_more"] is False
    assert conv["unread_count"] == 10  # hiding is not reading


async def test_visibility_window_and_strangers(deps):
    alice, bob, eve = await make_user(deps), await make_user(deps), await make_user(deps)
    cid = await direct(deps, alice, bob)
    for s in range(1, 11):
        await put(cid, s, alice.user_id)
    await Membership.filter(conversation_id=cid, user_id=bob.user_id).update(
        visible_from_seq=2, left_seq=8, left_at=datetime.now(UTC))
    page = await reading.history(deps, bob.user_id,
                                 reading.HistoryIn(conversation_id=str(cid), limit=50))
    assert [m["seq"] for m in page["messages"]] == [3, 4, 5, 6, 7, 8]
    page = await reading.history(deps, bob.user_id, reading.HistoryIn(
        conversation_id=str(cid), before_seq=3))
    assert page == {"messages": [], "has_more": False}  # a member: empty, not NotFound
    got = await reading.sync(deps, bob.user_id, reading.SyncIn(cursors={str(cid): 0}))
    [conv] = got["conversations"]
    assert [m["seq"] for m in conv["messages"]] == [3, 4, 5, 6, 7, 8]
    assert conv["last_seq"] == 8 and conv["left"] is True
    for who, conversation_id in ((eve, str(cid)), (bob, "not-a-uuid"),
                                 (bob, str(uuid.uuid4()))):
        with pytest.raises(NotFound):
            await reading.history(deps, who.user_id,
                                  reading.HistoryIn(conversation_id=conversation_id))


async def test_unread_counts_match_unread_count(deps):
    alice, bob, carol = await make_user(deps), await make_user(deps), await make_user(deps)
    c1 = await direct(deps, alice, bob)
    c2 = await direct(deps, alice, carol)
    c3 = await direct(deps, bob, carol)  # not alice's
    await put(c1, 1, alice.user_id)
    await put(c1, 2, bob.user_id)
    await put(c1, 3, None, type="system", text="")
    await put(c1, 4, bob.user_id, recalled=True)
    await put(c1, 5, None)  # sender deleted: not counted, as unread_count says
    await put(c1, 6, bob.user_id)
    await put(c2, 1, carol.user_id)
    await put(c3, 1, bob.user_id)
    await Membership.filter(conversation_id=c2, user_id=alice.user_id).update(read_seq=1)
    ms = await Membership.filter(user_id=alice.user_id).select_related("conversation")
    batched = await convs.unread_counts(alice.user_id, ms)
    single = {str(m.conversation_id): await convs.unread_count(m, alice.user_id) for m in ms}
    assert single == {str(c1): 2, str(c2): 0}
    assert batched == {str(c1): 2}  # nothing unread: left out
    assert await convs.unread_counts(alice.user_id, []) == {}


async def test_sync_many_conversations_matches_one_by_one(deps):
    """A user with many chats: one batched sync says what per-chat reads say."""
    me = await make_user(deps)
    others = [await make_user(deps) for _ in range(12)]
    cids = [await direct(deps, me, o) for o in others]
    for i, (cid, o) in enumerate(zip(cids, others, strict=True)):
        for s in range(1, 4 + i):
            await put(cid, s, o.user_id if s % 2 else me.user_id)
    # A group with a mention of me, unknown to the device.
    await make_contacts(deps, others[0], others[1])
    g = await groups.create_group(deps, others[0].user_id, groups.CreateIn(
        name="g", member_ids=[me.user_id, others[1].user_id]))
    g = g.get("conversation", g)
    gid = uuid.UUID(g["id"])
    base = (await Conversation.get(id=gid)).last_seq
    await put(gid, base + 1, others[0].user_id, data={"mentions": [me.user_id]})
    msg = await Message.get(conversation_id=gid, seq=base + 1)
    await MessageMention.create(message_id=msg.id, conversation_id=gid, user_id=me.user_id,
                                seq=base + 1)
    cursors = {str(cids[i]): 2 for i in range(0, 8)}  # 8 known chats, behind by a few
    cursors[str(cids[8])] = 100  # up to date (unchanged): left out
    # cids[9:] and the group: unknown to the device
    got = await reading.sync(deps, me.user_id, reading.SyncIn(cursors=cursors, limit=3))
    by_id = {c["id"]: c for c in got["conversations"]}
    assert str(cids[8]) not in by_id and len(by_id) == 12
    ms = {str(m.conversation_id): m for m in
          await Membership.filter(user_id=me.user_id).select_related("conversation")}
    for cid, conv in by_id.items():
        m = ms[cid]
        assert conv["unread_count"] == await convs.unread_count(m, me.user_id)
        assert conv["mention_count"] == await convs.mention_count(m, me.user_id)
        if cid in cursors:
            assert set(conv) == {"id", "last_seq", "read_seq", "unread_count", "mention_count",
                                 "left", "messages", "has_more", "change_seq"}
            seqs = [s for s in range(3, convs.visible_last_seq(m) + 1)]
            assert [x["seq"] for x in conv["messages"]] == seqs[:3]
            assert conv["has_more"] == (len(seqs) > 3)
        else:
            expected = (await convs.summaries(deps, me.user_id, [m]))[0]
            assert {k: conv[k] for k in expected} == expected
            page = await reading.history(deps, me.user_id,
                                         reading.HistoryIn(conversation_id=cid, limit=3))
            assert encoded(conv["messages"]) == encoded(page["messages"])
            assert conv["has_more"] == page["has_more"]
    assert by_id[g["id"]]["mention_count"] == 1
    assert await reading.sync(deps, me.user_id, reading.SyncIn(
        cursors={c: 10**6 for c in ms})) == {"conversations": [], "next_cursor": None}


async def test_sync_pages_more_than_one_statement_of_conversations(deps, monkeypatch):
    monkeypatch.setattr(reading, "_SYNC_CHUNK", 2)  # several UNION ALL statements
    me = await make_user(deps)
    others = [await make_user(deps) for _ in range(5)]
    cids = [await direct(deps, me, o) for o in others]
    for i, cid in enumerate(cids):
        for s in range(1, 3 + i):
            await put(cid, s, others[i].user_id)
    got = await reading.sync(deps, me.user_id, reading.SyncIn(
        cursors={str(c): 1 for c in cids}, limit=200))
    by_id = {c["id"]: c for c in got["conversations"]}
    for i, cid in enumerate(cids):
        conv = by_id[str(cid)]
        assert [m["seq"] for m in conv["messages"]] == list(range(2, 3 + i))
        assert conv["unread_count"] == 2 + i  # nothing read yet
        assert conv["has_more"] is False


async def test_created_at_text_as_sqlite_stores_it():
    # Tortoise writes str(datetime) into SQLite; asyncpg hands back datetimes.
    when = datetime(2026, 11, 27, 21, 0, 0, 123456, tzinfo=UTC)
    for value in (str(when), when.isoformat(), when, when.replace(tzinfo=None),
                  when.astimezone(__import__("datetime").timezone(timedelta(hours=2)))):
        assert reading._iso(value) == when.isoformat()
    assert reading._iso("2026-11-27 21:00:00+00:00") == "2026-11-27T21:00:00+00:00"
    for text in ("2026-11-27 21:00:00.000000+00:00", "2026-11-27 21:00:00.5+00:00",
                 "2026-11-27T21:00:00.123456+00:00", "2026-11-27 23:00:00.123456+02:00",
                 "2026-11-27 21:00:00.123456", "2026-11-27T21:00:00Z"):
        expected = datetime.fromisoformat(text)
        expected = (expected.replace(tzinfo=UTC) if expected.tzinfo is None
                    else expected.astimezone(UTC))
        assert reading._iso(text) == expected.isoformat(), text


async def test_memberships_of_equals_the_orm_lookup(deps):
    me, a, b = await make_user(deps), await make_user(deps), await make_user(deps)
    for other in (a, b):
        await direct(deps, me, other)
    await Membership.filter(user_id=me.user_id).limit(1).update(
        left_seq=3, left_at=datetime.now(UTC), muted_until=datetime.now(UTC))
    fast = await reading.memberships_of(uuid.UUID(me.user_id))
    orm = await Membership.filter(user_id=me.user_id).select_related("conversation")
    assert len(fast) == len(orm) == 2
    orm = {m.id: m for m in orm}
    for m in fast:
        o = orm[m.id]
        for f in m._meta.db_fields:
            assert getattr(m, f) == getattr(o, f), f
        for f in m.conversation._meta.db_fields:
            assert getattr(m.conversation, f) == getattr(o.conversation, f), f
        assert convs.visible_last_seq(m) == convs.visible_last_seq(o)


# --- sync pages across conversations ----------------------------------------------


async def _sync_all(deps, user_id, cursors: dict, page: int) -> list[list[str]]:
    """Follow next_cursor to the end; the conversation ids of each page."""
    pages, cursor = [], None
    for _ in range(100):
        out = await reading.sync(deps, user_id, reading.SyncIn(
            cursors=cursors, cursor=cursor, conversation_limit=page, limit=5))
        assert len(out["conversations"]) <= page
        pages.append([c["id"] for c in out["conversations"]])
        cursor = out["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("sync never ended")


async def test_sync_pages_across_many_conversations_without_gaps_or_repeats(deps):
    owner, friend = await make_user(deps), await make_user(deps)
    await make_contacts(deps, owner, friend)
    created = [(await groups.create_group(deps, owner.user_id, groups.CreateIn(
        name=f"g{i}", member_ids=[friend.user_id])))["id"] for i in range(61)]
    conv, _ = await convs.get_or_create_direct(deps, owner.user_id, friend.user_id)
    everything = set(created) | {str(conv.id)}

    # A new device: every conversation once, with its summary, page after page.
    pages = await _sync_all(deps, owner.user_id, {}, 25)
    assert [len(p) for p in pages] == [25, 25, 12]
    flat = [cid for p in pages for cid in p]
    assert len(flat) == len(set(flat)) and set(flat) == everything

    # Known everywhere, then news in some: exactly those, each once.
    cursors = {cid: (await Conversation.get(id=cid)).last_seq for cid in everything}
    changed = created[::3]
    for cid in changed:
        await messaging.send_from_payload(deps, owner.user_id, {
            "conversation_id": cid, "client_msg_id": f"n-{cid}", "text": "news"})
    pages = await _sync_all(deps, owner.user_id, cursors, 7)
    flat = [cid for p in pages for cid in p]
    assert sorted(flat) == sorted(changed) and all(len(p) == 7 for p in pages[:-1])

    # A conversation that appears while a client pages is on a later page, not lost.
    first = await reading.sync(deps, owner.user_id, reading.SyncIn(conversation_limit=25))
    late = (await groups.create_group(deps, owner.user_id, groups.CreateIn(
        name="late", member_ids=[friend.user_id])))["id"]
    rest, cursor = [], first["next_cursor"]
    while cursor:
        out = await reading.sync(deps, owner.user_id, reading.SyncIn(cursor=cursor,
                                                                     conversation_limit=25))
        rest += [c["id"] for c in out["conversations"]]
        cursor = out["next_cursor"]
    seen = [c["id"] for c in first["conversations"]] + rest
    assert sorted(seen) == sorted(everything | {late})


async def test_sync_without_a_cursor_still_answers_with_the_first_page(deps, base_url):
    """Old clients send no cursor and no conversation_limit: the first page, plus a cursor."""
    from tests.factories import call, connect

    owner, friend = await make_user(deps), await make_user(deps)
    await make_contacts(deps, owner, friend)
    for i in range(52):
        await groups.create_group(deps, owner.user_id, groups.CreateIn(
            name=f"g{i}", member_ids=[friend.user_id]))
    sio = await connect(base_url, owner.access_token)
    try:
        ack = await call(sio, "sync", {"cursors": {}, "limit": 200})
        assert ack["ok"] and len(ack["conversations"]) == 50 and ack["next_cursor"]
        more = await call(sio, "sync", {"cursors": {}, "cursor": ack["next_cursor"]})
        assert len(more["conversations"]) == 3 and more["next_cursor"] is None
        bad = await call(sio, "sync", {"cursors": {}, "cursor": "not-a-cursor"})
        assert bad["error"]["code"] == "invalid" and bad["error"]["details"]["field"] == "cursor"
    finally:
        await sio.disconnect()


# --- reply previews follow the quoted message's visibility ------------------------------


SECRET = "said before Carol joined: the launch code is 0000"


def _is_unavailable(msg: dict) -> bool:
    p = msg["reply_preview"]
    return p["unavailable"] is True and p["text"] == "" and p["sender_id"] is None \
        and p["seq"] is None and SECRET not in msgspec.json.encode(msg).decode()


async def _group_with_late_joiner(deps):
    from app.services import messaging

    alice, bob, carol = (await make_user(deps, "alice"), await make_user(deps, "bob"),
                         await make_user(deps, "carol"))
    await make_contacts(deps, alice, bob)
    await make_contacts(deps, alice, carol)
    conv = await groups.create_group(deps, alice.user_id,
                                     groups.CreateIn(name="g", member_ids=[bob.user_id]))
    cid = conv["id"]
    old = await messaging.send_message(deps, alice.user_id, messaging.SendIn(
        conversation_id=cid, client_msg_id=uuid.uuid4().hex, text=SECRET))
    await groups.add_members(deps, alice.user_id, cid,
                             groups.AddMembersIn(user_ids=[carol.user_id]))
    return alice, bob, carol, cid, old


async def _views_of(deps, who, cid) -> dict:
    """The newest message of `cid` as `who` gets it from history, sync and the list."""
    page = await reading.history(deps, who.user_id, reading.HistoryIn(conversation_id=cid))
    synced = await reading.sync(deps, who.user_id, reading.SyncIn())
    (entry,) = [c for c in synced["conversations"] if c["id"] == cid]
    listed = await convs.list_conversations(deps, who.user_id, None, 50)
    (item,) = [c for c in listed["conversations"] if c["id"] == cid]
    return {"history": page["messages"][-1], "sync": entry["messages"][-1],
            "list": item["last_message"]}


async def test_late_joiner_sees_no_preview_of_earlier_messages(deps, base_url):
    from tests.factories import call, connect

    alice, bob, carol, cid, old = await _group_with_late_joiner(deps)
    socks = {p.user_id: await connect(base_url, p.access_token) for p in (alice, carol, bob)}
    try:
        ack = await call(socks[bob.user_id], "message:send", {
            "conversation_id": cid, "client_msg_id": uuid.uuid4().hex, "text": "agreed",
            "reply_to": old["id"]})
        assert ack["ok"], ack
        # The sender and Alice saw the original: the full preview.
        assert ack["message"]["reply_preview"]["text"] == SECRET
        (live_a,) = await socks[alice.user_id].log.wait_for(
            "message:new", where=lambda m: m.get("reply_to") == old["id"])
        assert live_a["reply_preview"]["text"] == SECRET
        # Carol joined after it: live, history, sync and the chat list say unavailable.
        (live_c,) = await socks[carol.user_id].log.wait_for(
            "message:new", where=lambda m: m.get("reply_to") == old["id"])
        assert _is_unavailable(live_c) and live_c["text"] == "agreed"
        for path, msg in (await _views_of(deps, carol, cid)).items():
            assert _is_unavailable(msg), path
        for path, msg in (await _views_of(deps, alice, cid)).items():
            assert msg["reply_preview"]["text"] == SECRET, path
    finally:
        for s in socks.values():
            await s.disconnect()


async def test_preview_of_a_message_deleted_for_me_is_unavailable_to_me_only(deps, base_url):
    from app.services import messaging
    from tests.factories import connect

    alice, bob, carol, cid, old = await _group_with_late_joiner(deps)
    mine = await messaging.send_message(deps, alice.user_id, messaging.SendIn(
        conversation_id=cid, client_msg_id=uuid.uuid4().hex, text=SECRET))
    await messaging.delete_for_me(deps, bob.user_id, messaging.MessageRef(message_id=mine["id"]))
    bob_sock = await connect(base_url, bob.access_token)
    try:
        await messaging.send_message(deps, alice.user_id, messaging.SendIn(
            conversation_id=cid, client_msg_id=uuid.uuid4().hex, text="see above",
            reply_to=mine["id"]))
        (live,) = await bob_sock.log.wait_for("message:new",
                                              where=lambda m: m.get("reply_to") == mine["id"])
        assert _is_unavailable(live)
    finally:
        await bob_sock.disconnect()
    for path, msg in (await _views_of(deps, bob, cid)).items():
        assert _is_unavailable(msg), path
    for who in (alice, carol):  # Carol joined before this one: she sees it
        for path, msg in (await _views_of(deps, who, cid)).items():
            assert msg["reply_preview"]["text"] == SECRET, (who.user_id, path)


async def test_preview_after_cleared_history_and_of_recalled_messages(deps, base_url):
    from app.services import messaging
    from tests.factories import connect

    alice, bob, carol, cid, old = await _group_with_late_joiner(deps)
    quoted = await messaging.send_message(deps, alice.user_id, messaging.SendIn(
        conversation_id=cid, client_msg_id=uuid.uuid4().hex, text=SECRET))
    # Bob's window starts after the quoted message (what clearing a history does).
    await Membership.filter(conversation_id=cid, user_id=bob.user_id).update(
        visible_from_seq=quoted["seq"])
    socks = [await connect(base_url, p.access_token) for p in (bob, carol)]
    try:
        reply = await messaging.send_message(deps, carol.user_id, messaging.SendIn(
            conversation_id=cid, client_msg_id=uuid.uuid4().hex, text="re",
            reply_to=quoted["id"]))
        (live,) = await socks[0].log.wait_for("message:new",
                                              where=lambda m: m["id"] == reply["id"])
        assert _is_unavailable(live)
        for path, msg in (await _views_of(deps, bob, cid)).items():
            assert _is_unavailable(msg), path
        # A recalled original: whoever can see it gets its tombstone, no text.
        await messaging.recall(deps, alice.user_id,
                               messaging.MessageRef(message_id=quoted["id"]))
        again = await messaging.send_message(deps, alice.user_id, messaging.SendIn(
            conversation_id=cid, client_msg_id=uuid.uuid4().hex, text="re again",
            reply_to=quoted["id"]))
        (live,) = await socks[1].log.wait_for("message:new",
                                              where=lambda m: m["id"] == again["id"])
        views = [live, *(await _views_of(deps, carol, cid)).values()]
        for msg in views:
            p = msg["reply_preview"]
            assert p["recalled"] is True and p["text"] == "" and "unavailable" not in p, msg
    finally:
        for s in socks:
            await s.disconnect()
