"""Seed the S6 (search) history: generated mixed Chinese/English messages, indexed.

    python -m bench.search_seed < spec.json > out.json

spec::

    {"database_url": "...", "messages": 1000000, "seed": 42,
     "convs": {conversation id: [member user ids]}}

Messages are spread over the conversations (a few busy ones, a long tail), senders
drawn from each conversation's members, timestamps increasing. The search index
entries are built by the app's own code (app.services.search_index), written
after the messages so the index's share of the database can be measured:
``index_bytes`` (SQLite: pages the FTS5 tables added; PostgreSQL:
pg_total_relation_size of message_search, GIN index included).
"""

import asyncio
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

# Everyday vocabulary: words of a chat about work, plans and family.
ZH_WORDS = (
    "我们 你们 他们 今天 明天 昨天 晚上 早上 中午 时间 项目 会议 开会 同事 老板 客户 方案 "
    "文件 报告 数据 问题 解决 需要 可以 没有 已经 还是 因为 所以 但是 如果 然后 现在 一下 "
    "一起 吃饭 喝茶 咖啡 周末 休息 电影 朋友 家里 孩子 学校 老师 作业 考试 周一 周五 下班 "
    "上班 地铁 出差 北京 上海 深圳 广州 杭州 机场 酒店 天气 下雨 太阳 冷 热 好 的 了 吗 吧 "
    "呢 啊 是 不 在 有 这 那 个 就 也 都 要 会 说 去 来 看 想 知道 觉得 谢谢 不好意思 "
    "没问题 收到 辛苦 加油 哈哈 生日 快乐 红包 发票 合同 预算 进度 测试 上线 版本 需求 设计 "
    "代码 服务器 数据库 手机 电脑 快递 外卖 医院 妈妈 爸爸 宝宝 猫 狗 公园 跑步 健身 旅游"
).split()
EN_WORDS = (
    "the a to and of in is it you that for on we this with be are have meeting project "
    "tomorrow today tonight report deadline review release budget client server database "
    "deploy test build please thanks ok sure great lunch dinner coffee weekend flight hotel "
    "call later check update draft design issue ticket merge branch fix bug feature team "
    "monday friday morning afternoon office home kids school birthday party movie game "
    "price invoice contract shipping order payment account password login error timeout"
).split()


def zipf_pick(rnd: random.Random, words: list[str]) -> str:
    # Earlier words are more frequent (rank-1/k-ish), like real text.
    k = int(len(words) * (rnd.random() ** 2.2))
    return words[min(k, len(words) - 1)]


def make_text(rnd: random.Random) -> str:
    if rnd.random() < 0.6:  # mostly Chinese, sometimes an English word or a number
        parts = []
        for _ in range(rnd.randint(2, 12)):
            r = rnd.random()
            if r < 0.1:
                parts.append(" " + zipf_pick(rnd, EN_WORDS) + " ")
            elif r < 0.14:
                parts.append(str(rnd.randint(1, 300)))
            else:
                parts.append(zipf_pick(rnd, ZH_WORDS))
        text = "".join(parts).strip()
        return text + rnd.choice(("", "", "。", "！", "？", "～", " 😀"))
    words = [zipf_pick(rnd, EN_WORDS) for _ in range(rnd.randint(3, 16))]
    if rnd.random() < 0.2:
        words.insert(rnd.randint(0, len(words)), zipf_pick(rnd, ZH_WORDS))
    words[0] = words[0].capitalize()
    return " ".join(words) + rnd.choice(("", ".", "!", "?", " :)"))


def plan(spec: dict):
    """(conversation id, sender id, text, created_at) for every message, in time order."""
    rnd = random.Random(spec.get("seed", 42))
    convs = list(spec["convs"].items())
    weights = [1.0 / (1 + (i % 50)) for i in range(len(convs))]  # busy chats and a long tail
    n = int(spec["messages"])
    start = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=365) / max(n, 1)
    picks = rnd.choices(range(len(convs)), weights=weights, k=n)
    for i, ci in enumerate(picks):
        cid, members = convs[ci]
        yield cid, rnd.choice(members), make_text(rnd), start + step * i


async def seed(spec: dict) -> dict:
    from app.services.search_index import (
        PostgresTsvector,
        SqliteFts5,
        item_tokens,
        sqlite_index,
        tsvector_literal,
    )
    from app.services.search_text import listed_words

    t0 = time.monotonic()
    url = spec["database_url"]
    seqs: dict[str, int] = {}
    rows = []
    for cid, sender, text, at in plan(spec):
        seqs[cid] = seqs.get(cid, 0) + 1
        rows.append((cid, seqs[cid], sender, text, at))
    out = {"messages": len(rows), "generate_s": round(time.monotonic() - t0, 2)}
    chunk = 20_000
    if url.startswith("sqlite"):
        import sqlite3

        db = sqlite3.connect(url.split("://", 1)[1].split("?", 1)[0], timeout=60)
        try:
            db.execute("PRAGMA synchronous=OFF")
            first = (db.execute('SELECT COALESCE(MAX("id"), 0) FROM "messages"').fetchone()[0]
                     + 1)
            with db:
                db.executemany(
                    'INSERT INTO "messages" ("id","seq","type","text","created_at",'
                    '"conversation_id","sender_id") VALUES (?,?,?,?,?,?,?)',
                    ((first + i, seq, "text", text, str(at), cid, sender)
                     for i, (cid, seq, sender, text, at) in enumerate(rows)))
                for cid, last in seqs.items():
                    db.execute('UPDATE "conversations" SET "last_seq"=? WHERE "id"=?',
                               (last, cid))
            out["messages_s"] = round(time.monotonic() - t0, 2)
            pages0 = db.execute("PRAGMA page_count").fetchone()[0]
            known: set[str] = set()  # one transaction: what it wrote, it holds
            with db:
                for k in range(0, len(rows), chunk):
                    toks = [item_tokens("text", r[3], None) for r in rows[k:k + chunk]]
                    known |= sqlite_index(db, [(first + k + j, t) for j, t in enumerate(toks)],
                                          known, into=SqliteFts5.INSERT_DOC)
            db.execute("INSERT INTO message_search(message_search) VALUES ('optimize')")
            db.commit()
            pages1 = db.execute("PRAGMA page_count").fetchone()[0]
            page = db.execute("PRAGMA page_size").fetchone()[0]
            out["index_bytes"] = (pages1 - pages0) * page
            out["messages_bytes"] = pages0 * page
            db.execute("ANALYZE")
        finally:
            db.close()
    else:
        import asyncpg

        pg = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
        try:
            first = await pg.fetchval('SELECT COALESCE(MAX("id"), 0) + 1 FROM "messages"')
            for k in range(0, len(rows), chunk):
                part = rows[k:k + chunk]
                await pg.copy_records_to_table(
                    "messages", columns=["id", "seq", "type", "text", "created_at",
                                         "conversation_id", "sender_id"],
                    records=[(first + k + j, seq, "text", text, at, uuid.UUID(cid),
                              uuid.UUID(sender))
                             for j, (cid, seq, sender, text, at) in enumerate(part)])
            await pg.execute("SELECT setval(pg_get_serial_sequence('messages', 'id'), $1)",
                             first + len(rows))
            await pg.executemany('UPDATE "conversations" SET "last_seq"=$1 WHERE "id"=$2',
                                 [(last, uuid.UUID(cid)) for cid, last in seqs.items()])
            out["messages_s"] = round(time.monotonic() - t0, 2)
            words: set[str] = set()
            for k in range(0, len(rows), chunk):
                part = rows[k:k + chunk]
                toks = [item_tokens("text", r[3], None) for r in part]
                words |= set().union(*map(listed_words, toks))
                await pg.execute(
                    'INSERT INTO "message_search" ("message_id", "conversation_id", "doc") '
                    "SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[]::tsvector[])",
                    [first + k + j for j in range(len(part))],
                    [uuid.UUID(r[0]) for r in part],
                    [tsvector_literal(t) for t in toks])
            await pg.execute(PostgresTsvector.INSERT_WORDS, sorted(words))
            await pg.execute("VACUUM ANALYZE")
            out["index_bytes"] = await pg.fetchval(
                "SELECT pg_total_relation_size('message_search')")
            out["messages_bytes"] = await pg.fetchval(
                "SELECT pg_total_relation_size('messages')")
        finally:
            await pg.close()
    out["seconds"] = round(time.monotonic() - t0, 2)
    out["index_bytes_per_message"] = round(out["index_bytes"] / max(1, len(rows)), 1)
    return out


def main() -> None:
    spec = json.load(sys.stdin)
    json.dump(asyncio.run(seed(spec)), sys.stdout)


if __name__ == "__main__":
    main()
