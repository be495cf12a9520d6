"""Message, contact and group search (app/services/search.py), on SQLite and PostgreSQL.

Messages go in through the real send path (the message writer indexes them in
its transaction); visibility rules are checked one by one.
"""

import os
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from app.models.messaging import Membership, Message
from app.services import contacts, groups, messaging, search
from app.services import conversations as convs
from tests.factories import call, connect, make_contacts, make_user, until
from tests.test_cli import env_for, run


@pytest.fixture
def settings_overrides():
    return {"search_rate_limit": "100000/60"}


@pytest.fixture(params=["walk", "mine"])
def candidates(request, monkeypatch, database_url):
    """Where matches are read from: the index, newest first (on PostgreSQL the
    newest entries, then the GIN index: what an index never analysed takes),
    or the reader's own conversations, each message looked up in the index;
    forced here whatever the rules would choose."""
    if request.param == "walk":
        yield request.param
        return
    calls = []
    if database_url.startswith("sqlite"):
        real_page = search._page

        async def noted_page(*args, **kwargs):
            calls.append(kwargs.get("own"))
            return await real_page(*args, **kwargs)

        monkeypatch.setattr(search, "sqlite_reads_own", lambda *a: True)
        monkeypatch.setattr(search, "_page", noted_page)
        yield request.param
        assert any(calls), "the reader's conversations were never read"
        return
    real = search._pg_conversation_candidates

    async def noted(*args):
        calls.append(args)
        return await real(*args)

    monkeypatch.setattr(search, "walk_may_fill", lambda *a, **k: False)
    monkeypatch.setattr(search, "conversations_pay", lambda *a, **k: True)
    monkeypatch.setattr(search, "_pg_conversation_candidates", noted)
    yield request.param
    assert calls, "the reader's conversations were never read"


async def say(deps, who, cid, text) -> dict:
    return await messaging.send_message(deps, who.user_id, messaging.SendIn(
        conversation_id=str(cid), client_msg_id=uuid.uuid4().hex, text=text))


async def direct(deps, a, b) -> str:
    await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return str(conv.id)


async def find(client, who, q, **params) -> dict:
    resp = await client.get("/api/v1/search/messages", params={"q": q, **params},
                            headers=who.headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def texts(out) -> list[str]:
    return [r["message"]["text"] for r in out["results"]]


async def test_cjk_substrings_of_one_two_and_more_characters(client, deps, candidates):
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    for t in ("我们明天见", "你好", "明 天", "天明", "好的，明天早上八点"):
        await say(deps, a, cid, t)
    assert texts(await find(client, b, "好")) == ["好的，明天早上八点", "你好"]
    assert texts(await find(client, b, "明天")) == ["好的，明天早上八点", "我们明天见"]
    assert texts(await find(client, b, "明天见")) == ["我们明天见"]
    assert texts(await find(client, b, "天见")) == ["我们明天见"]
    assert texts(await find(client, b, "明见")) == []
    assert texts(await find(client, b, "早上八点")) == ["好的，明天早上八点"]


async def test_latin_words_by_prefix_case_and_width_folded(client, deps, candidates):
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    for t in ("Hello World", "concatenate", "ＦＵＬＬ width", "Straße 5"):
        await say(deps, a, cid, t)
    assert texts(await find(client, a, "hel")) == ["Hello World"]
    assert texts(await find(client, a, "WORLD")) == ["Hello World"]
    assert texts(await find(client, a, "ｗｏｒ")) == ["Hello World"]  # full-width query
    assert texts(await find(client, a, "full")) == ["ＦＵＬＬ width"]
    assert texts(await find(client, a, "cat")) == []  # words, not inside words
    assert texts(await find(client, a, "strasse")) == ["Straße 5"]
    # Several terms are ANDed, across scripts too.
    await say(deps, a, cid, "meeting 明天 at 9")
    assert texts(await find(client, a, "meet 明天")) == ["meeting 明天 at 9"]
    assert texts(await find(client, a, "hello 明天")) == []


async def test_highlights_are_utf16_offsets_on_emoji_and_cjk(client, deps):
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    await say(deps, a, cid, "😀你好 Hello 😀 好")
    out = await find(client, a, "好 hel")
    assert out["results"][0]["highlights"] == [[3, 4], [5, 8], [14, 15]]
    assert out["results"][0]["conversation_id"] == cid


async def test_late_joiner_and_left_member(client, deps, candidates):
    owner, m1, late = [await make_user(deps, n) for n in ("owner", "m1", "late")]
    for p in (m1, late):
        await make_contacts(deps, owner, p)
    cid = (await groups.create_group(deps, owner.user_id, groups.CreateIn(
        name="Team", member_ids=[m1.user_id])))["id"]
    await say(deps, owner, cid, "before join 秘密")
    await groups.add_members(deps, owner.user_id, cid, groups.AddMembersIn(user_ids=[late.user_id]))
    await say(deps, owner, cid, "after join 秘密")
    assert texts(await find(client, late, "秘密")) == ["after join 秘密"]
    assert len((await find(client, m1, "秘密"))["results"]) == 2
    await groups.leave(deps, m1.user_id, cid)
    await say(deps, owner, cid, "after leaving 秘密")
    # Up to the moment m1 left, nothing after.
    assert texts(await find(client, m1, "秘密")) == ["after join 秘密", "before join 秘密"]
    assert len((await find(client, late, "秘密"))["results"]) == 2


async def test_cleared_history_window(client, deps, candidates):
    # Clearing a chat's history raises the reader's window (visible_from_seq),
    # as joining does; search honours the window whatever raised it.
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    old = await say(deps, a, cid, "old 消息")
    await Membership.filter(conversation_id=cid, user_id=b.user_id).update(
        visible_from_seq=old["seq"])
    await say(deps, a, cid, "new 消息")
    assert texts(await find(client, b, "消息")) == ["new 消息"]
    assert texts(await find(client, a, "消息")) == ["new 消息", "old 消息"]


async def test_deleted_for_me_and_recalled(client, deps, candidates):
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    hidden = await say(deps, a, cid, "apple hidden")
    recalled = await say(deps, a, cid, "apple recalled")
    await say(deps, a, cid, "apple kept")
    await messaging.delete_for_me(deps, b.user_id, messaging.MessageRef(message_id=hidden["id"]))
    await messaging.recall(deps, a.user_id, messaging.MessageRef(message_id=recalled["id"]))
    assert texts(await find(client, b, "apple")) == ["apple kept"]
    assert texts(await find(client, a, "apple")) == ["apple kept", "apple hidden"]
    assert texts(await find(client, a, "recalled")) == []


async def test_stranger_finds_nothing_and_gets_404_for_the_conversation(client, deps):
    a, b, c = [await make_user(deps, n) for n in "abc"]
    cid = await direct(deps, a, b)
    await say(deps, a, cid, "private words")
    assert texts(await find(client, c, "private")) == []
    resp = await client.get("/api/v1/search/messages", headers=c.headers,
                            params={"q": "private", "conversation_id": cid})
    assert resp.status == 404
    resp = await client.get("/api/v1/search/messages", headers=c.headers,
                            params={"q": "private", "conversation_id": "not-a-uuid"})
    assert resp.status in (400, 404)


@pytest.mark.parametrize("params", [
    {"q": ""}, {"q": "   "}, {"q": "\u3000"}, {"q": "x" * 101}, {"q": "ok", "colour": "red"},
    {"q": "ok", "limit": "51"}, {"q": "ok", "limit": "0"}, {"q": "ok", "type": "system"},
    {"q": "ok", "cursor": "garbage!"}, {"q": "ok", "cursor": "cTk5OTk5OTk5OTk5OTk5OTk5OTk"}, {"q": "ok", "after": "yesterday"},
    {"q": "ok", "after": "2026-01-01T00:00:00"}, {},
])
async def test_bad_input_is_400_invalid(client, deps, params):
    a = await make_user(deps, "a")
    resp = await client.get("/api/v1/search/messages", params=params, headers=a.headers)
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["code"] == "invalid"
    if "q" in params and "colour" not in params and "limit" not in params:
        resp = await client.get("/api/v1/search", params={"q": params["q"]},
                                headers=a.headers)
        assert resp.status in (200, 400)


async def test_search_box_refuses_empty_queries(client, deps):
    a = await make_user(deps, "a")
    for q in ("", " ", "x" * 101):
        resp = await client.get("/api/v1/search", params={"q": q}, headers=a.headers)
        assert resp.status == 400


async def test_filters_sender_type_dates_conversation(client, deps, candidates):
    a, b, c = [await make_user(deps, n) for n in "abc"]
    ab = await direct(deps, a, b)
    ac = await direct(deps, a, c)
    await say(deps, a, ab, "report from a")
    await say(deps, b, ab, "report from b")
    await say(deps, c, ac, "report from c")
    assert texts(await find(client, a, "report", sender_id=b.user_id)) == ["report from b"]
    assert texts(await find(client, a, "report", conversation_id=ac)) == ["report from c"]
    assert texts(await find(client, a, "report", type="image,video")) == []
    assert len((await find(client, a, "report", type="text"))["results"]) == 3
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert texts(await find(client, a, "report", after=future)) == []
    assert len((await find(client, a, "report", after=past, before=future))["results"]) == 3


@pytest.mark.parametrize("window", [5000, 4])
async def test_pagination_has_no_duplicates_or_gaps(client, deps, monkeypatch, window,
                                                    candidates):
    # PostgreSQL walks a window of the newest entries, then the GIN index:
    # a small window makes every page cross from one to the other.
    monkeypatch.setattr(search, "PG_WINDOW", window)
    monkeypatch.setattr(search, "PG_WINDOW_AND", window)
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    sent = [(await say(deps, a, cid, f"page {i} 分页"))["id"] for i in range(23)]
    seen, cursor = [], None
    while True:
        params = {"limit": "5"} | ({"cursor": cursor} if cursor else {})
        out = await find(client, b, "分页", **params)
        seen += [r["message"]["id"] for r in out["results"]]
        # A message sent while paging is newer than the cursor: never inside the walk.
        if len(seen) == 5:
            await say(deps, a, cid, "late 分页")
        cursor = out["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(sent))


@pytest.mark.parametrize("window", [5000, 4])
async def test_older_visible_matches_behind_many_invisible_ones(client, deps, monkeypatch,
                                                                window, candidates):
    # PostgreSQL takes candidates from the index before the visibility rule:
    # a run of newer matches the reader may not see (a cleared chat) is more
    # than one batch of candidates, and the older visible ones still come.
    monkeypatch.setattr(search, "PG_WINDOW", window)
    monkeypatch.setattr(search, "PG_WINDOW_AND", window)
    monkeypatch.setattr(search, "PG_SLACK", 2)
    a, b, c = [await make_user(deps, n) for n in "abc"]
    ac = await direct(deps, a, c)
    kept = [(await say(deps, c, ac, f"kept {i} 苹果 pie"))["id"] for i in range(3)]
    ab = await direct(deps, a, b)
    cleared = [await say(deps, b, ab, f"cleared {i} 苹果 pie") for i in range(12)]
    await Membership.filter(conversation_id=ab, user_id=a.user_id).update(
        visible_from_seq=cleared[-1]["seq"])
    for q in ("苹果", "苹果 pie"):
        out = await find(client, a, q, limit="2")
        assert [r["message"]["id"] for r in out["results"]] == kept[:0:-1]
        rest = await find(client, a, q, limit="2", cursor=out["next_cursor"])
        assert [r["message"]["id"] for r in rest["results"]] == kept[:1]
        assert rest["next_cursor"] is None
    assert len((await find(client, b, "苹果", limit="50"))["results"]) == 12


def test_walk_may_fill_only_where_the_statistics_say_the_terms_are_common():
    from app.services.search_index import TokenStats

    stats = TokenStats({"的": 0.2, "明天": 0.05, "meeting": 0.05, "meetings": 0.01,
                        "天": 0.1}, floor=0.001)
    terms = search.parse_terms
    assert search.walk_may_fill(terms("的"), {}, None, 100, 29)  # never analysed: walk
    assert search.walk_may_fill(terms("的"), {}, stats, 200, 29)
    assert not search.walk_may_fill(terms("的"), {}, stats, 100, 29)
    assert not search.walk_may_fill(terms("鲸"), {}, stats, 20_000, 29)  # unlisted
    # An AND is no more common than its rarest term; a phrase than its rarest bigram.
    assert not search.walk_may_fill(terms("明天 鲸"), {}, stats, 20_000, 29)
    assert search.walk_may_fill(terms("明天 的"), {}, stats, 2_000, 29)
    assert not search.walk_may_fill(terms("明天鲸"), {}, stats, 20_000, 29)
    # A word stands for the words it is a prefix of; unexpanded, it may be any.
    meet = terms("meet")
    assert search.walk_may_fill(meet, {meet[0]: ["meeting", "meetings"]}, stats, 500, 29)
    assert not search.walk_may_fill(meet, {meet[0]: ["meetings"]}, stats, 500, 29)
    assert search.walk_may_fill(meet, {meet[0]: None}, stats, 29, 29)

    # Counted on the reader's share of the entries.
    assert search.walk_may_fill(terms("的"), {}, stats, 1_000, 29, share=0.15)
    assert not search.walk_may_fill(terms("的"), {}, stats, 1_000, 29, share=0.1)


def test_reader_share_is_their_history_over_everyones_with_a_margin():
    assert search.reader_share(100, 1_000) == 2 * 100 / 1_000
    assert search.reader_share(800, 1_000) == 1.0
    assert search.reader_share(0, 0) == 0.0


def test_conversations_pay_where_the_readers_history_is_small_next_to_the_matches():
    from app.services.search_index import TokenStats

    stats = TokenStats({"天": 0.2, "明天": 0.05, "meeting": 0.05}, floor=0.001)
    terms = search.parse_terms
    # One token: every match is read from the table; 1M × 0.2 × 0.5 = 100,000.
    assert search.conversations_pay(terms("天"), {}, stats, 20_000, 1_000_000)
    assert not search.conversations_pay(terms("天"), {}, stats, 20_001, 1_000_000)
    # Absent from the statistics: the GIN index finds its few matches cheaply.
    assert not search.conversations_pay(terms("鲸"), {}, stats, 200, 1_000_000)
    assert search.conversations_pay(terms("鲸"), {}, stats, 100, 1_000_000)
    # Several: the GIN index decodes postings, cheaper per match than a row.
    assert search.conversations_pay(terms("明天 meeting"), {}, stats, 600, 1_000_000)
    assert not search.conversations_pay(terms("明天 meeting"), {}, stats, 601, 1_000_000)
    assert not search.conversations_pay(terms("天"), {}, None, 1, 1_000_000)  # never analysed


async def test_rare_terms_go_to_the_gin_index_without_walking(client, deps, database_url,
                                                              monkeypatch):
    from tortoise import Tortoise

    from app.services.search_index import PostgresTsvector

    if database_url.startswith("sqlite"):
        pytest.skip("the walk and the GIN pass are PostgreSQL's")
    monkeypatch.setattr(PostgresTsvector, "stats_every", 0.0)
    monkeypatch.setattr(search, "PG_WINDOW", 100)
    walks: list[bool] = []
    real = search._pg_candidates

    async def noted(conn, conversations, terms, prepared, top, floor, k, walking):
        walks.append(walking)
        return await real(conn, conversations, terms, prepared, top, floor, k, walking)

    monkeypatch.setattr(search, "_pg_candidates", noted)
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    rare = [(await say(deps, a, cid, f"{i} 稀有 常见"))["id"] for i in range(3)]
    for i in range(40):
        await say(deps, a, cid, f"{i} 常见")
    await Tortoise.get_connection("default").execute_query('ANALYZE "message_search"')

    out = await find(client, b, "稀有")
    assert [r["message"]["id"] for r in out["results"]] == rare[::-1]
    assert walks == [False]  # 3 in 43 entries: too rare to fill a page in 100
    walks.clear()
    out = await find(client, b, "常见", limit="2")
    assert texts(out) == ["39 常见", "38 常见"]
    assert walks[0] is True


async def small_and_large_histories(deps):
    """a and b share a chat of 3 messages (b sees the last 2); c and d one of
    60. Every message holds 常见 → (a, b, c, the small chat's id)."""
    a, b, c, d = [await make_user(deps, n) for n in "abcd"]
    small = await direct(deps, a, b)
    other = await direct(deps, c, d)
    for i in range(60):
        await say(deps, c, other, f"{i} 常见")
    first = await say(deps, a, small, "first 常见")
    await say(deps, a, small, "second 常见")
    await say(deps, b, small, "third 常见")
    await Membership.filter(conversation_id=small, user_id=b.user_id).update(
        visible_from_seq=first["seq"])
    return a, b, c, small


async def small_histories_find_their_matches(client, a, b, small) -> None:
    """Four searches: b's, b's inside the chat, a's in two pages."""
    assert texts(await find(client, b, "常见")) == ["third 常见", "second 常见"]
    assert texts(await find(client, b, "常见", conversation_id=small)) == [
        "third 常见", "second 常见"]
    out = await find(client, a, "常见", limit="2")
    assert texts(out) == ["third 常见", "second 常见"]
    rest = await find(client, a, "常见", limit="2", cursor=out["next_cursor"])
    assert texts(rest) == ["first 常见"] and rest["next_cursor"] is None


async def test_small_histories_read_their_own_conversations(client, deps, database_url,
                                                             monkeypatch):
    from tortoise import Tortoise

    from app.services.search_index import PostgresTsvector

    if database_url.startswith("sqlite"):
        pytest.skip("the sources of candidates are PostgreSQL's")
    monkeypatch.setattr(PostgresTsvector, "stats_every", 0.0)
    monkeypatch.setattr(search, "READER_SIZES_EVERY", 0.0)
    monkeypatch.setattr(search, "PG_WINDOW", 100)
    used: list[str] = []
    real_mine, real_index = search._pg_conversation_candidates, search._pg_candidates

    async def mine(*args):
        used.append("mine")
        return await real_mine(*args)

    async def index(conn, conversations, terms, prepared, top, floor, k, walking):
        used.append("walk" if walking else "index")
        return await real_index(conn, conversations, terms, prepared, top, floor, k, walking)

    monkeypatch.setattr(search, "_pg_conversation_candidates", mine)
    monkeypatch.setattr(search, "_pg_candidates", index)
    a, b, c, small = await small_and_large_histories(deps)
    await Tortoise.get_connection("default").execute_query('ANALYZE "message_search"')

    # b sees 2 messages, the term is in 63: read b's chat, not the index.
    await small_histories_find_their_matches(client, a, b, small)
    assert used == ["mine"] * 4
    used.clear()
    # c's chat holds nearly every match: c walks the newest entries.
    assert len((await find(client, c, "常见"))["results"]) == 20
    assert used[0] == "walk"


def test_sqlite_reads_a_small_share_of_the_history_from_the_readers_chats():
    # 1,000² × 8.5 = 8.5M against 21 × 1M × 1.0 = 21M: looking up their messages pays.
    assert search.sqlite_reads_own(1_000, 1_000_000, 21)
    assert not search.sqlite_reads_own(1_600, 1_000_000, 21)  # 21.8M: the index's matches
    assert search.sqlite_reads_own(1_600, 1_000_000, 1_000)  # the search box counts more
    assert not search.sqlite_reads_own(2_001, 10**9, 21)  # past the cap, whatever else
    assert not search.sqlite_reads_own(100, 2_000, 21)  # most matches may be theirs
    assert search.sqlite_reads_own(0, 0, 21)  # nothing to read either way


async def test_sqlite_small_histories_read_their_own_chats(client, deps, database_url,
                                                           monkeypatch):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's rule; PostgreSQL's is tested above")
    monkeypatch.setattr(search, "READER_SIZES_EVERY", 0.0)
    owns: list[bool] = []
    real = search._page

    async def noted(*args, **kwargs):
        owns.append(kwargs.get("own", False))
        return await real(*args, **kwargs)

    monkeypatch.setattr(search, "_page", noted)
    a, b, c, small = await small_and_large_histories(deps)

    # b sees 2 of 63 messages: their chat is read, not the index's matches.
    await small_histories_find_their_matches(client, a, b, small)
    assert owns == [True] * 4
    owns.clear()
    # c's chat holds nearly every message: the index's matches, newest first.
    assert len((await find(client, c, "常见"))["results"]) == 20
    assert owns == [False]


async def test_file_names_and_backfill_and_reindex(client, deps):
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    conv = uuid.UUID(cid)
    media = {"id": str(uuid.uuid4()), "kind": "file", "mime": "application/pdf", "size": 3,
             "name": "季度报告 Q3.pdf"}
    # Written straight to the table (as history stored before search existed).
    file_msg = await Message.create(conversation_id=conv, seq=1, sender_id=a.user_id,
                                    type="file", text="", data={"media": media})
    old = await Message.create(conversation_id=conv, seq=2, sender_id=a.user_id,
                               type="text", text="archived 旧闻")
    await convs.Conversation.filter(id=conv).update(last_seq=2)
    assert texts(await find(client, a, "报告")) == []
    assert await search.backfill(batch=1) == 2
    assert await search.backfill() == 0  # nothing left to do
    out = await find(client, a, "报告")
    assert [r["message"]["id"] for r in out["results"]] == [str(file_msg.id)]
    assert out["results"][0]["highlight_field"] == "media.name"
    assert out["results"][0]["highlights"] == [[2, 4]]
    assert texts(await find(client, a, "旧闻")) == ["archived 旧闻"]
    assert texts(await find(client, a, "arch")) == ["archived 旧闻"]  # its words listed
    # An edit of the text re-indexes through the one function.
    await Message.filter(id=old.id).update(text="edited 新闻")
    await search.reindex_message(old.id)
    assert texts(await find(client, a, "旧闻")) == []
    assert texts(await find(client, a, "新闻")) == ["edited 新闻"]
    assert texts(await find(client, a, "edit")) == ["edited 新闻"]


async def test_history_around_seq_rest_and_socket(client, deps, base_url):
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    for i in range(1, 21):
        await say(deps, a, cid, f"m{i}")
    resp = await client.get(f"/api/v1/conversations/{cid}/messages",
                            params={"around_seq": "10", "limit": "6"}, headers=b.headers)
    assert resp.status == 200
    page = await resp.json()
    assert [m["seq"] for m in page["messages"]] == [8, 9, 10, 11, 12, 13]
    assert page["has_more"] and page["has_more_after"]
    resp = await client.get(f"/api/v1/conversations/{cid}/messages",
                            params={"around_seq": "2", "limit": "6"}, headers=b.headers)
    page = await resp.json()
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3, 4, 5]
    assert not page["has_more"] and page["has_more_after"]
    resp = await client.get(f"/api/v1/conversations/{cid}/messages",
                            params={"around_seq": "5", "before_seq": "3"}, headers=b.headers)
    assert resp.status == 400
    sio = await connect(base_url, b.access_token)
    try:
        ack = await call(sio, "history", {"conversation_id": cid, "around_seq": 20, "limit": 4})
        assert ack["ok"] and [m["seq"] for m in ack["messages"]] == [19, 20]
        assert ack["has_more"] and not ack["has_more_after"]
        ack = await call(sio, "search:messages", {"q": "m1", "limit": 2})  # word prefix
        assert ack["ok"] and [r["message"]["text"] for r in ack["results"]] == ["m19", "m18"]
        ack = await call(sio, "search:messages", {"q": "m7"})
        assert [r["message"]["text"] for r in ack["results"]] == ["m7"]
        ack = await call(sio, "search:messages", {"q": "m", "conversation_id": cid, "limit": 3})
        assert [r["message"]["seq"] for r in ack["results"]] == [20, 19, 18]
        assert ack["next_cursor"]
        ack = await call(sio, "search:messages", {"q": " "})
        assert not ack["ok"] and ack["error"]["code"] == "invalid"
        ack = await call(sio, "search:messages", {"q": "x", "bogus": 1})
        assert not ack["ok"] and ack["error"]["code"] == "invalid"
    finally:
        await sio.disconnect()
    resp = await client.get(f"/api/v1/conversations/{cid}/messages",
                            params={"around_seq": "5"}, headers=(await make_user(deps)).headers)
    assert resp.status == 404


async def test_search_box_contacts_by_pinyin_groups_and_chats(client, deps):
    # Usernames of our own: random ones ("u_" + 10 letters and digits) are
    # words too, and one starting with "zs" or "ls" would be a right answer.
    me = await make_user(deps, "me", username=f"x{uuid.uuid4().hex[:12]}")
    zs = await make_user(deps, "张三", username=f"x{uuid.uuid4().hex[:12]}")
    other = await make_user(deps, "Bob", username=f"x{uuid.uuid4().hex[:12]}")
    await make_contacts(deps, me, zs)
    await make_contacts(deps, me, other)
    await contacts.set_remark(deps, me.user_id, other.user_id,
                              contacts.ContactPatch(remark="李四"))
    gid = (await groups.create_group(deps, me.user_id, groups.CreateIn(
        name="张家群 Family", member_ids=[zs.user_id])))["id"]

    async def box(q):
        resp = await client.get("/api/v1/search", params={"q": q}, headers=me.headers)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    for q in ("zhangsan", "zs", "张三", "ZhangSan", "zhang"):
        out = await box(q)
        assert [c["user"]["id"] for c in out["contacts"]] == [zs.user_id], q
    assert [c["user"]["id"] for c in (await box("ls"))["contacts"]] == [other.user_id]
    assert [c["user"]["id"] for c in (await box("bob"))["contacts"]] == [other.user_id]
    assert [g["id"] for g in (await box("family"))["groups"]] == [gid]
    assert [g["id"] for g in (await box("zjq"))["groups"]] == [gid]
    dm = str((await convs.get_or_create_direct(deps, me.user_id, zs.user_id))[0].id)
    await say(deps, zs, dm, "周末去爬山吗")
    await say(deps, me, dm, "爬山好啊")
    await say(deps, zs, gid, "群里也说爬山")
    out = await box("爬山")
    chats = out["conversations_with_matches"]
    assert [(c["conversation"]["id"], c["match_count"]) for c in chats] == [(gid, 1), (dm, 2)]
    assert chats[1]["latest"]["text"] == "爬山好啊"
    assert out["contacts"] == [] and out["groups"] == []


@pytest.mark.parametrize("small", [False, True])
async def test_search_box_counts_the_newest_visible_matches(client, deps, monkeypatch, small):
    # The box counts matches per chat over the newest BOX_SCAN visible ones;
    # with a small scan (and on PostgreSQL small candidate batches and a
    # window the matches cross), a cleared chat's newer matches take no place.
    if small:
        monkeypatch.setattr(search, "BOX_SCAN", 4)
        monkeypatch.setattr(search, "PG_WINDOW", 2)
        monkeypatch.setattr(search, "PG_SLACK", 1)
    a, b, c, d = [await make_user(deps, n) for n in "abcd"]
    ac = await direct(deps, a, c)
    for i in (1, 2):
        await say(deps, c, ac, f"橙子 {i}")
    ab = await direct(deps, a, b)
    for i in (3, 4, 5):
        await say(deps, b, ab, f"橙子 {i}")
    ad = await direct(deps, a, d)
    cleared = [await say(deps, d, ad, f"橙子 gone {i}") for i in range(4)]
    await Membership.filter(conversation_id=ad, user_id=a.user_id).update(
        visible_from_seq=cleared[-1]["seq"])
    await say(deps, b, ab, "橙子 6")
    resp = await client.get("/api/v1/search", params={"q": "橙子"}, headers=a.headers)
    assert resp.status == 200, await resp.text()
    chats = (await resp.json())["conversations_with_matches"]
    got = [(x["conversation"]["id"], x["match_count"], x["more"], x["latest"]["text"])
           for x in chats]
    if small:
        assert got == [(ab, 4, True, "橙子 6"), (ac, 1, True, "橙子 2")]
    else:
        assert got == [(ab, 4, False, "橙子 6"), (ac, 2, False, "橙子 2")]


async def test_search_is_rate_limited_per_user(server, client, deps):
    deps.settings = deps.settings.with_(search_rate_limit="3/60")
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    for _ in range(3):
        assert (await client.get("/api/v1/search/messages", params={"q": "x"},
                                 headers=a.headers)).status == 200
    resp = await client.get("/api/v1/search", params={"q": "x"}, headers=a.headers)
    assert resp.status == 429
    assert (await client.get("/api/v1/search", params={"q": "x"},
                             headers=b.headers)).status == 200


def _pg(query: str, url: str) -> list:
    """One statement on PostgreSQL at `url` (postgres://…), outside the app."""
    import asyncio

    import asyncpg

    async def go():
        con = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1), timeout=10)
        try:
            return await con.fetch(query)
        finally:
            await con.close()

    return asyncio.run(go())


@contextmanager
def _fresh_pg_database(prefix: str):
    """The URL of a new empty database on TEST_DATABASE_URL's server, dropped after."""
    admin = os.environ["TEST_DATABASE_URL"]
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _pg(f'CREATE DATABASE "{name}"', admin)
    try:
        yield f"{admin.rpartition('/')[0]}/{name}"
    finally:
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', admin)


def test_migrate_then_backfill_on_a_fresh_database(tmp_path):
    """The migration creates the index (FTS5 / tsvector + GIN) on a database
    the server never created; the backfill command runs on it."""
    import sqlite3

    sqlite_url = f"sqlite://{tmp_path / 'fresh.db'}"
    for args in (["migrate"], ["search-backfill", "--batch", "10"]):
        proc = run(["-m", "app", *args], env_for(sqlite_url))
    assert "indexed 0 messages for search" in proc.stdout
    con = sqlite3.connect(sqlite_url[len("sqlite://"):])
    sql = con.execute("SELECT sql FROM sqlite_master WHERE name='message_search'")
    assert "fts5" in sql.fetchone()[0].lower()
    con.close()
    if not os.environ.get("TEST_DATABASE_URL"):
        return
    with _fresh_pg_database("parley_search") as url:
        for args in (["migrate"], ["search-backfill", "--batch", "10"]):
            proc = run(["-m", "app", *args], env_for(url))
        assert "indexed 0 messages for search" in proc.stdout
        rows = _pg("SELECT indexdef FROM pg_indexes WHERE tablename = 'message_search'", url)
        assert any("gin" in r[0].lower() for r in rows), rows
        assert _pg("SELECT reloptions FROM pg_class WHERE relname = 'message_search_doc_gin'",
                   url) == [(["fastupdate=on"],)]


def test_upgrades_set_the_gin_pending_list_and_drop_the_foreign_key():
    """0009 turned GIN's pending list off on a database indexed with the
    default; 0011 turns it back on (a merger empties it) and drops the index
    table's foreign key to `messages`."""
    from tests.test_data_keys import MIGRATE_TO

    if not os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("PostgreSQL only (TEST_DATABASE_URL)")
    options = "SELECT reloptions FROM pg_class WHERE relname = 'message_search_doc_gin'"
    keys = ("SELECT conname FROM pg_constraint "
            "WHERE conrelid = 'message_search'::regclass AND contype = 'f'")
    with _fresh_pg_database("parley_gin") as url:
        run(["-c", MIGRATE_TO, url, "models.0008_server_secrets"], env_for(url))
        # 0004 as it was: the index with the default options and the key.
        _pg('ALTER INDEX "message_search_doc_gin" RESET (fastupdate)', url)
        _pg('ALTER TABLE "message_search" ADD CONSTRAINT "message_search_message_id_fkey" '
            'FOREIGN KEY ("message_id") REFERENCES "messages" ("id") ON DELETE CASCADE', url)
        assert _pg(options, url)[0][0] is None
        run(["-c", MIGRATE_TO, url, "models.0010_search_words_pg"], env_for(url))
        assert _pg(options, url)[0][0] == ["fastupdate=off"]
        run(["-m", "app", "migrate"], env_for(url))
        assert _pg(options, url)[0][0] == ["fastupdate=on"]
        assert _pg(keys, url) == []


def test_upgrade_gives_sqlite_its_pending_list(tmp_path):
    """A SQLite database indexed before the pending list (0011): 0012 adds it."""
    import sqlite3

    from tests.test_data_keys import MIGRATE_TO

    path = tmp_path / "old.db"
    url = f"sqlite://{path}"
    run(["-c", MIGRATE_TO, url, "models.0011_search_pending_list"], env_for(url))
    con = sqlite3.connect(path)
    con.execute('DROP TABLE "message_search_pending"')  # 0004 as it was
    con.commit()
    exists = "SELECT COUNT(*) FROM sqlite_master WHERE name = 'message_search_pending'"
    assert con.execute(exists).fetchone() == (0,)
    run(["-m", "app", "migrate"], env_for(url))
    assert con.execute(exists).fetchone() == (1,)
    con.close()


def test_downgrade_moves_pending_entries_into_the_sqlite_index(tmp_path):
    """Undoing 0012 keeps what was pending: those are the messages' only entries."""
    import sqlite3

    from tests.test_data_keys import MIGRATE_TO

    path = tmp_path / "new.db"
    url = f"sqlite://{path}"
    run(["-m", "app", "migrate"], env_for(url))
    con = sqlite3.connect(path)
    con.execute('INSERT INTO "message_search_pending" ("id", "doc") VALUES (7, \'potoroo\')')
    con.commit()
    run(["-c", MIGRATE_TO, url, "models.0011_search_pending_list"], env_for(url))
    assert con.execute("SELECT rowid FROM message_search WHERE message_search MATCH "
                       "'potoroo'").fetchall() == [(7,)]
    assert con.execute("SELECT COUNT(*) FROM sqlite_master "
                       "WHERE name = 'message_search_pending'").fetchone() == (0,)
    con.close()


async def test_backfill_counts_pending_entries_as_indexed(client, deps, database_url):
    # What the writer indexed is indexed, merged or not: the backfill adds no
    # second entry.
    from tortoise import Tortoise

    from app.services.search_index import backend_for

    await deps.extras["search_merger"].close()
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    await say(deps, a, cid, "numbat")
    assert await search.backfill() == 0
    pg = not database_url.startswith("sqlite")
    await backend_for(pg).merge_pending(Tortoise.get_connection("default"))
    assert texts(await find(client, b, "numbat")) == ["numbat"]


def test_upgrade_fills_the_postgres_word_list_from_the_index():
    """An index written before PostgreSQL had a word list (0010): `migrate`
    lists its words, not its CJK tokens, so prefixes expand to them; so does
    `search-backfill`, for words older servers wrote after the migration."""
    from tests.test_data_keys import MIGRATE_TO

    if not os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("PostgreSQL only (TEST_DATABASE_URL)")
    with _fresh_pg_database("parley_words") as url:
        run(["-c", MIGRATE_TO, url, "models.0009_search_gin_fastupdate"], env_for(url))
        # As before the list: entries in the index alone (without the messages
        # they belong to, which the word list does not read).
        _pg('DROP TABLE "message_search_words"', url)
        _pg("INSERT INTO message_search VALUES "
            "(1, gen_random_uuid(), '''quokka'':1 ''明天'':2 ''明'':3'), "
            "(2, gen_random_uuid(), '''zebra'':1 ''quokka'':2')", url)
        listed = 'SELECT "term" FROM "message_search_words" ORDER BY 1'
        run(["-m", "app", "migrate"], env_for(url))
        assert [r[0] for r in _pg(listed, url)] == ["quokka", "zebra"]
        # A word an older server wrote after the migration: the backfill lists it.
        _pg("DELETE FROM \"message_search_words\" WHERE \"term\" = 'zebra'", url)
        run(["-m", "app", "search-backfill"], env_for(url))
        assert [r[0] for r in _pg(listed, url)] == ["quokka", "zebra"]


@pytest.mark.parametrize("settings_overrides", [{"search_index": False}])
async def test_search_index_off_writes_nothing_and_says_so(client, deps, settings_overrides):
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    await say(deps, a, cid, "not indexed")
    resp = await client.get("/api/v1/search/messages", params={"q": "indexed"},
                            headers=a.headers)
    assert resp.status == 503
    resp = await client.get("/api/v1/search", params={"q": "b"}, headers=a.headers)
    body = await resp.json()
    assert resp.status == 200 and body["conversations_with_matches"] == []
    assert [c["user"]["id"] for c in body["contacts"]] == [b.user_id]
    deps.settings = deps.settings.with_(search_index=True)
    assert texts(await find(client, a, "indexed")) == []  # the writer wrote no entry


async def test_word_prefixes_expand_or_fall_back(client, deps):
    # A prefix of at most 64 indexed words is searched as those words; a
    # shorter, broader one as an index prefix query: both find the same.
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    await say(deps, a, cid, " ".join(f"zz{i}" for i in range(70)))
    await say(deps, a, cid, "zz6 only")
    assert texts(await find(client, a, "zz")) == ["zz6 only", texts_70()]
    assert texts(await find(client, a, "zz6")) == ["zz6 only", texts_70()]
    assert texts(await find(client, a, "zz69")) == [texts_70()]
    assert texts(await find(client, a, "zzz")) == []
    assert texts(await find(client, a, "zz6 nothing")) == []


async def test_numbers_are_found_by_prefix_and_kept_out_of_the_word_list(client, deps):
    # Numbers are mostly unique: the word list (a vocabulary) does not hold
    # them, and a term that starts with a digit is asked of the index as a
    # prefix. Words with digits inside still go through the list.
    from tortoise import Tortoise

    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    for text in ("order 20241205 shipped", "2024 plans", "call １３８１２３４５６７８",
                 "3d print", "mp3 file"):
        await say(deps, a, cid, text)
    assert texts(await find(client, b, "2024")) == ["2024 plans", "order 20241205 shipped"]
    assert texts(await find(client, b, "20241205")) == ["order 20241205 shipped"]
    assert texts(await find(client, b, "1381")) == ["call １３８１２３４５６７８"]
    assert texts(await find(client, b, "ord 2024")) == ["order 20241205 shipped"]
    assert texts(await find(client, b, "3")) == ["3d print"]
    assert texts(await find(client, b, "mp")) == ["mp3 file"]
    assert texts(await find(client, b, "2025")) == []
    _n, rows = await Tortoise.get_connection("default").execute_query(
        'SELECT "term" FROM "message_search_words" ORDER BY 1')
    assert [r[0] for r in rows] == ["call", "file", "mp3", "order", "plans", "print",
                                    "shipped"]


async def test_the_pending_list_is_merged_in_the_background(client, deps, database_url):
    # A new message's entries wait in a pending list (GIN's own on PostgreSQL,
    # a table on SQLite), where searches find them, until the merger moves
    # them into the index.
    from tortoise import Tortoise

    from app.services.search_index import PendingListMerger, backend_for

    conn = Tortoise.get_connection("default")
    pg = not database_url.startswith("sqlite")
    if pg:
        await conn.execute_script("CREATE EXTENSION IF NOT EXISTS pgstattuple")

    async def pending() -> int:
        _n, rows = await conn.execute_query(
            "SELECT pending_tuples FROM pgstatginindex('message_search_doc_gin')" if pg
            else 'SELECT COUNT(*) FROM "message_search_pending"')
        return rows[0][0]

    # The server's own merger runs; stopped here so that the list fills.
    await until(lambda: deps.extras["search_merger"].merges > 0, "the server's merger ran")
    await deps.extras["search_merger"].close()
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    await say(deps, a, cid, "quokka 明天")
    assert await pending() > 0
    assert texts(await find(client, b, "明天 quokka")) == ["quokka 明天"]
    if not pg:
        # SQLite's search moved the entry into the index before it looked.
        assert await pending() == 0
        await say(deps, a, cid, "quokka 后天")
        assert await pending() == 1
    merger = PendingListMerger(lambda: Tortoise.get_connection("default"), backend_for(pg))
    merger.start()
    try:
        await until(lambda: merger.merges > 0, "the merger ran")
        assert await pending() == 0
    finally:
        await merger.close()
    assert texts(await find(client, b, "quokka")) == (
        ["quokka 明天"] if pg else ["quokka 后天", "quokka 明天"])


async def test_sqlite_merger_leaves_the_database_alone_while_nothing_is_written(
        deps, database_url):
    # A laptop's idle server: the merger (every 50 ms) asks SQLite nothing
    # until the writer commits something, then merges it.
    import asyncio

    from tortoise import Tortoise

    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's merger knows what its process wrote")
    merger = deps.extras["search_merger"]
    await until(lambda: merger.merges > 0, "the server's merger ran")
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    await say(deps, a, cid, "numbat")
    await until(lambda: merger.merges > 1, "the merger merged the new entry")
    conn = Tortoise.get_connection("default")
    _n, rows = await conn.execute_query('SELECT COUNT(*) FROM "message_search_pending"')
    assert rows[0][0] == 0
    idle = merger.merges
    await asyncio.sleep(0.5)  # ten rounds
    assert merger.merges == idle
    await say(deps, a, cid, "numbat again")
    await until(lambda: merger.merges > idle, "the merger looked again after a write")


async def test_sqlite_merges_its_pending_list_a_bounded_number_at_a_time(
        deps, database_url, monkeypatch):
    # The writer waits while the connection merges: a round moves at most
    # MERGE_ROWS entries, and a search's merge goes on until none are left.
    from tortoise import Tortoise

    from app.services.search_index import SqliteFts5, backend_for

    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's pending list is a table of its own")
    await deps.extras["search_merger"].close()
    monkeypatch.setattr(SqliteFts5, "MERGE_ROWS", 2)
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    for k in range(5):
        await say(deps, a, cid, f"wombat {k}")
    conn = Tortoise.get_connection("default")
    backend = backend_for(False)

    async def counts() -> tuple[int, int]:
        _n, p = await conn.execute_query('SELECT COUNT(*) FROM "message_search_pending"')
        _n, i = await conn.execute_query('SELECT COUNT(*) FROM "message_search"')
        return p[0][0], i[0][0]

    assert await counts() == (5, 0)
    assert await backend.merge_pending(conn) == 2
    assert await counts() == (3, 2)
    await backend.before_search(conn)
    assert await counts() == (0, 5)
    assert await backend.merge_pending(conn) == 0


async def test_a_recall_removes_the_entry_while_it_is_still_pending(client, deps,
                                                                    database_url):
    # Recalled before any merge: the merge that follows must not bring it back.
    from tortoise import Tortoise

    await deps.extras["search_merger"].close()
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    sent = await say(deps, a, cid, "dunnart")
    await messaging.recall(deps, a.user_id, messaging.MessageRef(message_id=sent["id"]))
    if database_url.startswith("sqlite"):
        _n, rows = await Tortoise.get_connection("default").execute_query(
            'SELECT COUNT(*) FROM "message_search_pending"')
        assert rows[0][0] == 0
    assert texts(await find(client, b, "dunnart")) == []


async def test_sqlite_merge_replaces_an_entry_the_index_already_has(client, deps,
                                                                    database_url):
    # A backfill run beside the writer may have indexed a message whose entry
    # is still pending: the merge keeps the writer's and goes on.
    from tortoise import Tortoise

    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's pending list is a table of its own")
    await deps.extras["search_merger"].close()
    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    sent = await say(deps, a, cid, "bilby")
    conn = Tortoise.get_connection("default")
    await conn.execute_query('INSERT INTO "message_search" (rowid, doc) VALUES (?, ?)',
                             [int(sent["id"]), "stale"])
    assert texts(await find(client, b, "bilby")) == ["bilby"]
    _n, rows = await conn.execute_query(
        'SELECT doc FROM "message_search" WHERE rowid = ?', [int(sent["id"])])
    assert [r[0] for r in rows] == ["bilby"]


async def test_one_process_merges_at_a_time_and_the_others_skip_their_round(
        deps, database_url):
    import asyncpg
    from tortoise import Tortoise

    from app.services.search_index import PostgresTsvector, backend_for

    if database_url.startswith("sqlite"):
        pytest.skip("GIN's pending list is PostgreSQL's")
    await deps.extras["search_merger"].close()  # only this test merges
    conn = Tortoise.get_connection("default")
    other = await asyncpg.connect(database_url.replace("postgres://", "postgresql://", 1))
    try:
        async with other.transaction():  # another process, merging
            await other.execute("SELECT pg_advisory_xact_lock($1)", PostgresTsvector.MERGE_LOCK)
            assert await backend_for(True).merge_pending(conn) is None
        assert await backend_for(True).merge_pending(conn) == 0  # nothing was pending
    finally:
        await other.close()


async def test_a_merger_that_may_not_merge_says_so_once_and_keeps_going(
        deps, database_url, caplog):
    # Merging needs the index's owner (as VACUUM does): a server connected as
    # another role logs it once and keeps trying, and nothing else breaks.
    import asyncpg

    from app.services.search_index import PendingListMerger, backend_for

    if database_url.startswith("sqlite"):
        pytest.skip("GIN's pending list is PostgreSQL's")
    role = f"parley_not_owner_{uuid.uuid4().hex[:8]}"
    dsn = database_url.replace("postgres://", "postgresql://", 1)
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    con = await asyncpg.connect(dsn.replace("//postgres@", f"//{role}@", 1))

    class AsRole:  # the merger's one call, on the other role's connection
        async def execute_query(self, sql, values=None):
            rows = await con.fetch(sql)
            return len(rows), rows

    merger = PendingListMerger(AsRole, backend_for(True))
    merger.start()
    try:
        await until(lambda: merger.failures >= 3, "three rounds refused")
        assert merger.merges == 0 and merger.restarts == 0
    finally:
        await merger.close()
        await con.close()
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()
    said = [r.getMessage() for r in caplog.records if "pending list" in r.getMessage()]
    assert len(said) == 1 and "InsufficientPrivilegeError" in said[0], said


def texts_70() -> str:
    return " ".join(f"zz{i}" for i in range(70))


# A real failure at COMMIT, after the index and the word list were written,
# for a message saying "boom".
BOOM_AT_COMMIT = {
    # A deferred foreign key that the message breaks.
    "sqlite": "CREATE TABLE boom_parent (id INTEGER PRIMARY KEY);"
              "CREATE TABLE boom_child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES "
              "boom_parent (id) DEFERRABLE INITIALLY DEFERRED);"
              "CREATE TRIGGER boom AFTER INSERT ON messages WHEN NEW.text LIKE '%boom%' "
              "BEGIN INSERT INTO boom_child (parent) VALUES (1); END;",
    # A deferred constraint trigger that raises.
    "postgres": "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.text LIKE '%boom%' THEN RAISE EXCEPTION 'boom'; END IF; "
                "RETURN NULL; END $$;"
                "CREATE CONSTRAINT TRIGGER boom AFTER INSERT ON messages "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION boom();",
}


async def test_a_word_first_written_by_a_batch_that_did_not_commit_is_listed_later(
        client, deps, database_url):
    # The writer skips words it knows the word list holds; a word of a
    # transaction that rolled back must not count as known.
    from tortoise import Tortoise

    a, b = await make_user(deps, "a"), await make_user(deps, "b")
    cid = await direct(deps, a, b)
    await Tortoise.get_connection("default").execute_script(
        BOOM_AT_COMMIT["sqlite" if database_url.startswith("sqlite") else "postgres"])
    with pytest.raises(Exception):  # noqa: B017 - whichever error the sender is given
        await say(deps, a, cid, "quokka boom")
    await say(deps, a, cid, "quokka fine")
    assert texts(await find(client, b, "quok")) == ["quokka fine"]
    assert texts(await find(client, b, "boom")) == []
