"""The message search index: one backend per database, behind one interface.

Both built-in backends index the same "document" per message (search_text:
words, CJK unigrams and CJK bigrams at consecutive positions), so one query
rule holds everywhere: a word term is a prefix token, a CJK term of one or two
characters is one token, a longer one a phrase of bigrams.

- SQLite: an FTS5 table (`message_search`, rowid = message id) over the
  space-separated document, tokenised by unicode61 (each token is already
  normalised; unicode61 only splits at the spaces).
- PostgreSQL: a table `message_search(message_id, conversation_id, doc
  tsvector)` with a GIN index on `doc`. The tsvector is built here as a literal
  with positions, so the text-search parser, dictionaries and locale never see
  the text; phrase (`<->`) and prefix (`:*`) queries come from the same terms.

Both keep a word list (`message_search_words`: every indexed word, not CJK
and not numbers: search_text.listed), written in the same transaction as the
index. A word prefix is expanded through
it into the words it stands for, so the index is asked for exact words: an
index prefix query gathers every posting of every word it covers before the
first row (FTS5), or before intersecting with the other terms (GIN).

Why tokens rather than substring indexes (FTS5 trigram, pg_trgm): trigram
indexes cannot serve one- and two-character queries, which are the common case
in Chinese (a name, "好", "明天"), and match Latin text inside words; a
second structure for short CJK queries would double the writes. Unigrams and
bigrams serve CJK substrings of every length and words serve Latin prefixes
from one index (measurements: docs/benchmarks.md, scenario S6).

An external engine (OpenSearch, Meilisearch) would implement SearchBackend:
index/remove the same entries and answer `search`/`counts` for a set of
visible windows (see docs/deployment.md).

Writes: the message writer indexes new messages in its own transaction (see
`sqlite_index` / the PostgreSQL write statement); recall and anything that
changes a message's text call `reindex_message`. On both databases new
entries go to a pending list that `PendingListMerger` merges into the index in
the background: GIN's own on PostgreSQL (`PostgresTsvector.SCHEMA` says why),
a plain table on SQLite (`SqliteFts5.SCHEMA`). What is pending is searchable:
PostgreSQL reads its pending list, and a search on SQLite merges the list
first (`before_search`).
"""

from __future__ import annotations

import logging
import time
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

from tortoise.transactions import in_transaction

from app.logs import Retrying
from app.services.search_text import Term, document_tokens, listed, listed_words
from app.services.workers import Supervised

log = logging.getLogger("parley.search")

SEARCHABLE_TYPES = ("text", "image", "video", "file")


def message_texts(mtype: str, text: str, data) -> tuple[str, ...]:
    """What of a message is searchable: its text or caption, and the file name
    of a file message. System lines and recalled messages are not indexed."""
    if mtype not in SEARCHABLE_TYPES:
        return ()
    out = [text or ""]
    if mtype == "file" and isinstance(data, dict):
        media = data.get("media")
        if isinstance(media, dict) and isinstance(media.get("name"), str):
            out.append(media["name"])
    return tuple(t for t in out if t)


# SQLite: the writer's entries until PendingListMerger moves them into the
# index (SqliteFts5.SCHEMA); id = the message's id.
PENDING_SCHEMA_SQLITE = ('CREATE TABLE IF NOT EXISTS "message_search_pending" '
                         '("id" INTEGER PRIMARY KEY, "doc" TEXT NOT NULL);')


def fts_document(tokens: list[str]) -> str:
    return " ".join(tokens)


# PostgreSQL caps tsvector positions at 16383; later tokens share the last one.
_PG_MAX_POS = 16383


def _pg_quote(token: str) -> str:
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector_literal(tokens: list[str]) -> str:
    # Built on the server's core for every message sent: most tokens occur
    # once in a message, so that case takes the short way.
    positions: dict[str, list[int]] = {}
    for pos, tok in enumerate(tokens, start=1):
        p = positions.get(tok)
        if p is None:
            positions[tok] = [pos]
        else:
            p.append(pos)
    out = []
    for t, p in positions.items():
        if len(p) == 1:
            out.append(f"{_pg_quote(t)}:{min(p[0], _PG_MAX_POS)}")
        else:
            kept = sorted({min(x, _PG_MAX_POS) for x in p})[:256]
            out.append(f"{_pg_quote(t)}:{','.join(map(str, kept))}")
    return " ".join(out)


def tsquery_sql(terms: list[Term], words: dict | None = None) -> str:
    """The terms as an SQL tsquery literal (tokens hold only letters, digits
    and CJK; quotes are doubled anyway)."""
    return "'" + tsquery_literal(terms, words).replace("'", "''") + "'::tsquery"


def tsquery_literal(terms: list[Term], words: dict | None = None) -> str:
    """`words`: as for fts5_query."""
    parts = []
    for t in terms:
        toks = t.tokens()
        known = (words or {}).get(t)
        if t.prefix and known is not None:
            parts.append("(" + " | ".join(_pg_quote(w) for w in known) + ")")
        elif t.prefix:
            parts.append(f"{_pg_quote(toks[0])}:*")
        elif len(toks) == 1:
            parts.append(_pg_quote(toks[0]))
        else:
            parts.append("(" + " <-> ".join(_pg_quote(x) for x in toks) + ")")
    return " & ".join(parts)


def _fts5_quote(token: str) -> str:
    return '"' + token.replace('"', '""') + '"'


def fts5_query(terms: list[Term], words: dict | None = None) -> str:
    """`words`: for word terms, the indexed words they are a prefix of (from
    the word list), or None where there were too many to list."""
    parts = []
    for t in terms:
        known = (words or {}).get(t)
        if t.prefix and known is not None:
            # Exact words stream newest first; a prefix query gathers its whole
            # doclist before the first row.
            parts.append("(" + " OR ".join(_fts5_quote(w) for w in known) + ")")
            continue
        phrase = '"' + " ".join(x.replace('"', '""') for x in t.tokens()) + '"'
        parts.append(phrase + ("*" if t.prefix else ""))
    return " AND ".join(parts)


WORD_EXPANSION = 64  # a prefix of more indexed words is queried as a prefix


@dataclass
class Filters:
    conversation_id: str | None = None
    sender_id: str | None = None
    types: tuple[str, ...] = ()
    after: datetime | None = None
    before: datetime | None = None
    below_id: int | None = None  # pagination: messages older than this id
    above_id: int | None = None  # only messages newer than this id
    ids: tuple[int, ...] = ()  # only these index entries (PostgreSQL's candidates)


class SearchBackend(ABC):
    """The index behind message search. Visibility is the caller's SQL
    (windows of the reader's memberships); a backend only adds its match."""

    name: str

    @abstractmethod
    async def ensure_schema(self, conn) -> None: ...

    @abstractmethod
    async def replace(self, conn, entries: list[tuple[int, str, list[str]]]) -> None:
        """(message id, conversation id, tokens): index or re-index; empty
        tokens remove the message from the index."""

    # Up to WORD_EXPANSION + 1 words of the word list from $1 up to $2.
    WORD_RANGE: str
    # Words into the list, $1 / ? each; present ones are skipped.
    INSERT_WORD: str

    async def prepare(self, conn, terms: list[Term]) -> dict:
        """For each word (prefix) term, the indexed words it is a prefix of, or
        None where there are more than WORD_EXPANSION (then the index's own
        prefix query is cheaper than that many words), or where the word list
        does not hold such words (search_text.listed)."""
        out = {}
        for t in terms:
            if not t.prefix:
                continue
            word = t.tokens()[0]
            if not listed(word):
                out[t] = None
                continue
            _n, rows = await conn.execute_query(
                self.WORD_RANGE, [word, word + "\U0010ffff", WORD_EXPANSION + 1])
            found = [r[0] for r in rows]
            out[t] = found if len(found) <= WORD_EXPANSION else None
        return out

    async def add_words(self, conn, tokens: list[str]) -> None:
        for w in sorted(listed_words(tokens)):
            await conn.execute_query(self.INSERT_WORD, [w])

    # How often PendingListMerger merges this backend's pending list.
    merge_every: float

    def pending_written(self) -> int | None:
        """How many times this process has added to the pending list, for the
        merger to skip the rounds with nothing new; None: not known here (the
        merger looks every round). A backend that counts also has MERGE_ROWS, and
        its merge_pending returns the entries it moved, at most that many."""
        return None

    @abstractmethod
    async def merge_pending(self, conn) -> int | None:
        """Merge (part of) the pending list into the index → how many entries or
        pages it moved, or None when another process was merging."""

    @abstractmethod
    async def before_search(self, conn) -> None:
        """Make every committed entry visible to the search that follows."""

    @abstractmethod
    def match_sql(self, terms: list[Term], p, prepared=None) -> tuple[str, str]:
        """(FROM item joined to `m`, WHERE condition) for the terms; `p(value)`
        adds a parameter and returns its placeholder."""

    # The message id as the index knows it: ordering and paging on it lets the
    # index hand out matches newest first and stop at the page's end.
    id_column: str

    @abstractmethod
    async def size_bytes(self, conn) -> int: ...


class SqliteFts5(SearchBackend):
    name = "sqlite-fts5"
    id_column = "s.rowid"

    # message_search_words: every indexed word (not CJK), so a word prefix is
    # expanded into the words it stands for with one B-tree range read.
    # message_search_pending: the writer's entries, which PendingListMerger
    # moves into the FTS5 table many at a time. FTS5 writes a segment, its
    # structure record and its averages at every commit, several pages each
    # time whatever the number of rows: for the writer's small transactions
    # that cost several times what the message itself does, where a row in a
    # plain table costs one page shared with the rows before it.
    SCHEMA = ("CREATE VIRTUAL TABLE IF NOT EXISTS \"message_search\" USING fts5("
              "doc, tokenize = 'unicode61 remove_diacritics 0');"
              'CREATE TABLE IF NOT EXISTS "message_search_words" ("term" TEXT PRIMARY KEY) '
              "WITHOUT ROWID;" + PENDING_SCHEMA_SQLITE)

    # The writer's (sqlite_index) and the reindexer's (replace) statements.
    INSERT_DOC = 'INSERT INTO "message_search" (rowid, doc) VALUES (?, ?)'
    INSERT_PENDING = 'INSERT INTO "message_search_pending" ("id", "doc") VALUES (?, ?)'
    INSERT_WORD = 'INSERT OR IGNORE INTO "message_search_words" ("term") VALUES (?)'
    WORD_RANGE = ('SELECT "term" FROM "message_search_words" WHERE "term" >= ?1 '
                  'AND "term" < ?2 ORDER BY "term" LIMIT ?3')

    async def ensure_schema(self, conn) -> None:
        await conn.execute_script(self.SCHEMA)

    async def replace(self, conn, entries) -> None:
        for mid, _cid, tokens in entries:
            await conn.execute_query('DELETE FROM "message_search" WHERE rowid = ?', [mid])
            await conn.execute_query(
                'DELETE FROM "message_search_pending" WHERE "id" = ?', [mid])
            if tokens:
                await conn.execute_query(self.INSERT_DOC, [mid, fts_document(tokens)])
                await self.add_words(conn, tokens)

    # Often and a few hundred at a time: the writer waits while the
    # connection merges (a few microseconds an entry, and FTS5's own segment
    # merges now and then), and a send that arrives during a long merge
    # waits all of it.
    merge_every = 0.05
    MERGE_ROWS = 500

    def pending_written(self) -> int | None:
        # Every process that writes runs a merger, and a search merges what is
        # pending before it looks, so a round may skip what other processes wrote.
        return _sqlite_pending_writes

    async def merge_pending(self, conn) -> int:
        # The MERGE_ROWS-th pending id, else the last one.
        _n, rows = await conn.execute_query(
            'SELECT COALESCE((SELECT "id" FROM "message_search_pending" ORDER BY "id" '
            'LIMIT 1 OFFSET ?), (SELECT MAX("id") FROM "message_search_pending"))',
            [self.MERGE_ROWS - 1])
        if rows[0][0] is None:
            return 0
        bound = int(rows[0][0])
        # One transaction on the shared connection (Tortoise's lock keeps the
        # writer out until it ends). The writer only ever adds ids above the
        # bound: a message's id is allocated when its batch writes it.
        async with in_transaction(conn.connection_name) as tx:
            await tx.execute_query(
                # OR REPLACE: an entry the index already holds for the message
                # (a backfill that ran beside the writer) must not stop the merge.
                'INSERT OR REPLACE INTO "message_search" (rowid, doc) SELECT "id", "doc" '
                'FROM "message_search_pending" WHERE "id" <= ?', [bound])
            n, _rows = await tx.execute_query(
                'DELETE FROM "message_search_pending" WHERE "id" <= ?', [bound])
        return n

    async def before_search(self, conn) -> None:
        # A message is searchable once acked: its entry may still be pending.
        while await self.merge_pending(conn) >= self.MERGE_ROWS:
            pass

    def match_sql(self, terms, p, prepared=None) -> tuple[str, str]:
        if nothing_matches(prepared):
            return 'JOIN "message_search" s ON s.rowid = m."id"', "0 = 1"
        return ('JOIN "message_search" s ON s.rowid = m."id"',
                f's."message_search" MATCH {p(fts5_query(terms, prepared))}')

    async def size_bytes(self, conn) -> int:
        try:
            _n, rows = await conn.execute_query(
                "SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'message_search%'")
            return int(rows[0][0] or 0)
        except Exception:  # noqa: BLE001 - SQLite built without dbstat
            return 0


class PostgresTsvector(SearchBackend):
    name = "postgres-gin"
    id_column = 's."message_id"'

    # GIN's pending list (fastupdate, the default) with a merger: an insert
    # only appends the message's entries to the list, and PendingListMerger
    # merges them into the index once a second, many postings of a word at a
    # time and outside every sender's transaction. Without the list each
    # insert updates every word's posting tree at once, which makes a
    # message's WAL several times larger, and every ack waits for that flush
    # (docs/benchmarks.md, "GIN's pending list, merged aside"); with
    # the list and nobody merging it, the insert that finds it full (4 MB)
    # merges it inside the writer's transaction and the sends behind it wait.
    # Searches read what is still pending (at most a second's worth).
    # No foreign key to `messages`: messages are never deleted, a search joins
    # its candidates to `messages` anyway, and the key's check locked every
    # new message row a second time.
    # The word list's collation is "C" so that a prefix is one range of the
    # primary key whatever the database's locale.
    WORDS_SCHEMA = ('CREATE TABLE IF NOT EXISTS "message_search_words" '
                    '("term" TEXT COLLATE "C" PRIMARY KEY);')
    SCHEMA = (
        'CREATE TABLE IF NOT EXISTS "message_search" ('
        '"message_id" BIGINT PRIMARY KEY, '
        '"conversation_id" UUID NOT NULL, "doc" TSVECTOR NOT NULL);'
        'CREATE INDEX IF NOT EXISTS "message_search_doc_gin" ON "message_search" '
        'USING GIN ("doc") WITH (fastupdate = on);'
    ) + WORDS_SCHEMA
    INSERT_WORD = ('INSERT INTO "message_search_words" ("term") VALUES ($1) '
                   'ON CONFLICT DO NOTHING')
    # Several at once, in the order given (callers sort them: two transactions
    # inserting the same new words in opposite orders would wait on each other).
    INSERT_WORDS = ('INSERT INTO "message_search_words" ("term") '
                    'SELECT unnest($1::text[]) ON CONFLICT DO NOTHING')
    WORD_RANGE = ('SELECT "term" FROM "message_search_words" WHERE "term" >= $1 '
                  'AND "term" < $2 ORDER BY "term" LIMIT $3')

    async def ensure_schema(self, conn) -> None:
        await conn.execute_script(self.SCHEMA)

    async def replace(self, conn, entries) -> None:
        for mid, cid, tokens in entries:
            if tokens:
                await conn.execute_query(
                    'INSERT INTO "message_search" ("message_id", "conversation_id", "doc") '
                    'VALUES ($1, $2::uuid, $3::tsvector) ON CONFLICT ("message_id") '
                    'DO UPDATE SET "doc" = EXCLUDED."doc"',
                    [mid, str(cid), tsvector_literal(tokens)])
                await self.add_words(conn, tokens)
            else:
                await conn.execute_query(
                    'DELETE FROM "message_search" WHERE "message_id" = $1', [mid])

    def match_sql(self, terms, p, prepared=None) -> tuple[str, str]:
        # The query goes in as a literal, not a parameter: a prepared statement
        # run a few times gets a generic plan, which cannot know that "的"
        # matches every tenth message and "bug" a few, and walks the wrong index.
        if nothing_matches(prepared):
            return 'JOIN "message_search" s ON s."message_id" = m."id"', "0 = 1"
        return ('JOIN "message_search" s ON s."message_id" = m."id"',
                f's."doc" @@ {tsquery_sql(terms, prepared)}')

    # One merger at a time across the processes sharing the database: the
    # others skip their round rather than queue behind it. A transaction lock,
    # so it goes with the statement.
    MERGE_LOCK = 7283061420555
    MERGE_PENDING = ("SELECT gin_clean_pending_list('message_search_doc_gin') "
                     f"WHERE pg_try_advisory_xact_lock({MERGE_LOCK})")

    merge_every = 1.0  # what a search reads unmerged is at most this long's

    async def before_search(self, conn) -> None:
        pass  # a GIN index scan reads the pending list too

    async def merge_pending(self, conn) -> int | None:
        """Merge GIN's pending list into the index → the pages it emptied, or
        None when another process was merging."""
        _n, rows = await conn.execute_query(self.MERGE_PENDING)
        return int(rows[0][0]) if rows else None

    async def fill_words(self, conn) -> None:
        """Put every word of the index into the word list (a database indexed
        before the list existed). Reads the index once (ts_stat) and takes no
        lock writers wait for."""
        _n, rows = await conn.execute_query(
            "SELECT word FROM ts_stat('SELECT doc FROM message_search')")
        await conn.execute_query(self.INSERT_WORDS,
                                 [sorted(listed_words([r[0] for r in rows]))])

    async def size_bytes(self, conn) -> int:
        _n, rows = await conn.execute_query(
            "SELECT pg_total_relation_size('message_search')")
        return int(rows[0][0] or 0)

    # ANALYZE's most common elements of `doc` and their frequencies (for a
    # tsvector the frequencies end with the lowest and highest of them).
    STATS = ("SELECT most_common_elems::text::text[], most_common_elem_freqs "
             "FROM pg_stats WHERE schemaname = current_schema() "
             "AND tablename = 'message_search' AND attname = 'doc'")
    # They change only when the table is analysed, so a process reads them
    # at most this often.
    stats_every = 60.0

    async def token_stats(self, conn) -> TokenStats | None:
        """How common the index's tokens are, as of the last ANALYZE; None
        before the table was first analysed."""
        now = time.monotonic()
        cached = _token_stats.get(conn)
        if cached is not None and now - cached[0] < self.stats_every:
            return cached[1]
        _n, rows = await conn.execute_query(self.STATS)
        stats = token_stats_from(rows[0][0], rows[0][1]) if rows else None
        _token_stats[conn] = (now, stats)
        return stats


@dataclass(frozen=True)
class TokenStats:
    """The share of index entries holding each common token; a token not
    listed is rarer than `floor`, the least common one listed."""

    freqs: dict[str, float]
    floor: float

    def frequency(self, token: str) -> float:
        return self.freqs.get(token, self.floor)


def token_stats_from(elems, freqs) -> TokenStats | None:
    if not elems or not freqs or len(freqs) < len(elems):
        return None
    listed_freqs = [float(f) for f in freqs[:len(elems)]]
    floor = float(freqs[len(elems)]) if len(freqs) > len(elems) else min(listed_freqs)
    return TokenStats(dict(zip(elems, listed_freqs, strict=True)), floor)


# Per database client: (when read, its TokenStats or None). Weak, as
# _known_words.
_token_stats: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class PendingListMerger(Supervised):
    """Merges the index's pending list in the background (PostgresTsvector.SCHEMA
    and SqliteFts5.SCHEMA say why). Every process runs one."""

    name = "parley-search-merger"

    def __init__(self, connection, backend: SearchBackend) -> None:
        super().__init__()
        self._connection = connection  # () -> the database client
        self._backend = backend
        self.merges = 0
        self.failures = 0

    async def _run(self) -> None:
        backend = self._backend
        outage = Retrying(log, "search index: merging the pending list")
        merged_up_to = None  # the first round looks: entries may be left from before
        while not self._closed:
            await self._sleep(backend.merge_every)
            if self._closed:
                return
            written = backend.pending_written()
            if written is not None and written == merged_up_to:
                continue  # nothing added since the pending list was last found empty
            try:
                moved = await backend.merge_pending(self._connection())
                if moved is not None:
                    self.merges += 1
                if written is not None:
                    # Only a backend that counts its writes (SQLite) gets here; a
                    # round that moved a full batch left more: look again.
                    merged_up_to = written if moved < backend.MERGE_ROWS else None
                outage.ok()
            except Exception as exc:  # noqa: BLE001 - the database is away; next round
                merged_up_to = None
                self.failures += 1
                outage.failed(exc)


def nothing_matches(prepared: dict | None) -> bool:
    """A word that no indexed word starts with: nothing can match."""
    return bool(prepared) and any(v == [] for v in prepared.values())


def backend_for(pg: bool) -> SearchBackend:
    return _PG if pg else _SQLITE


# Batches this process's SQLite writer has committed (`pending_committed`;
# SqliteFts5.pending_written).
_sqlite_pending_writes = 0
_SQLITE = SqliteFts5()
_PG = PostgresTsvector()


# --- the message writer's part (inside its transaction) -----------------------


def item_tokens(mtype: str, text: str, data) -> list[str]:
    return document_tokens(*message_texts(mtype, text, data))


# How many words the writer remembers as already in the word list, per
# database; past it, it forgets them all and re-learns the common ones.
KNOWN_WORDS_MAX = 50_000

# Per database (the writer's connection on SQLite, the client on PostgreSQL):
# the words its word list is known to hold. Weak, so a closed database's set
# goes with it.
_known_words: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def known_words(owner) -> set[str]:
    return _known_words.setdefault(owner, set())


def new_words(token_lists, known: set[str]) -> set[str]:
    """The words of these documents' tokens that `known` does not hold. Most
    words of a message are common ones, and looking each one up again in the
    list's B-tree cost the writer more than a third of what indexing the
    message does."""
    return set().union(*(listed_words(toks) for toks in token_lists if toks)) - known


def sqlite_index(db, entries: list[tuple[int, list[str]]], known: set[str],
                 into: str = SqliteFts5.INSERT_PENDING) -> set[str]:
    """Index new messages (into the pending list) on the writer's sqlite3
    connection, inside its open transaction (synchronous: it runs on the
    connection's thread) → the words it added to the word list. `known`: words
    the list already holds; the writer adds the returned words to it once the
    transaction has committed (`remember_words`). `into`: a bulk load of
    history (scripts/bench's seed) writes straight into the index
    (SqliteFts5.INSERT_DOC)."""
    rows = [(mid, fts_document(toks)) for mid, toks in entries if toks]
    if not rows:
        return set()
    db.executemany(into, rows)
    words = new_words((toks for _mid, toks in entries), known)
    if words:
        db.executemany(SqliteFts5.INSERT_WORD, [(w,) for w in words])
    return words


def pending_committed() -> None:
    """After the COMMIT of a writer batch that may have added to SQLite's pending
    list: the merger's next round looks."""
    global _sqlite_pending_writes
    _sqlite_pending_writes += 1


def remember_words(known: set[str], words: set[str]) -> None:
    """After the COMMIT that wrote `words` into the word list (nothing deletes
    a word from it, so a remembered word stays true)."""
    if len(known) + len(words) > KNOWN_WORDS_MAX:
        known.clear()
    known.update(words)
