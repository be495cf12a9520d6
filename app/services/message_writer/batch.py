"""What both backends of the message writer share: the queued item, its
answer, the plan of a batch (dedupe, seqs) and the judging of its sends."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from app.services import member_cache

# judge(item, facts) raises to refuse a send; facts is the row of
# sql.WRITER_FACTS_* (mid None: the sender is no active member). It runs inside
# the writer's transaction, so it is a plain function: it cannot await, so it
# cannot touch the database (on SQLite that would wait for the writer forever).
# On SQLite it runs on the connection's thread: it reads only its arguments.
Judge = Callable[["NewMessage", Mapping], None]


@dataclass

class NewMessage:
    conversation_id: uuid.UUID
    sender_id: uuid.UUID | None
    client_msg_id: str | None
    type: str
    text: str
    created_at: datetime
    reply_to_id: int | None = None
    data: dict | None = None
    # The sender's membership: its read_seq moves to the new message.
    membership_id: int | None = None
    # Users mentioned (None stands for @all); stored as message_mentions rows.
    mentions: list = field(default_factory=list)
    # Check the send in the batch's transaction (see Judge). A judged send's
    # membership_id comes from the facts.
    judge: Judge | None = None
    # Give the stored message a Turn in its conversation's emit order.
    ordered: bool = False
    # Search index tokens (search_index.item_tokens), computed before the
    # transaction so it holds its locks no longer for them.
    search_tokens: list | None = field(default=None, repr=False, compare=False)
    # Derived once (the writer needs them several times per item).
    cid_text: str = field(init=False, repr=False, compare=False)
    sender_text: str | None = field(init=False, repr=False, compare=False)
    dedupe_key: tuple[str, str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.cid_text = str(self.conversation_id)
        self.sender_text = str(self.sender_id) if self.sender_id else None
        self.dedupe_key = _dedupe_key(self)


@dataclass
class Written:
    id: int
    seq: int
    new: bool  # False: the (sender, client_msg_id) was already stored
    # New judged sends: who receives it (user ids), as of the moment it got its seq.
    recipients: tuple[str, ...] | None = None
    # New `ordered` sends: emit through it (Turn.wait, emit, Turn.release).
    turn: Turn | None = None  # noqa: F821 - message_writer.Turn


class UnknownConversation(Exception):
    pass


def _dedupe_key(m: NewMessage) -> tuple[str, str] | None:
    return (str(m.sender_id), m.client_msg_id) if m.sender_id and m.client_msg_id else None


def needs_facts(items) -> list[int]:
    """Items the facts statement is run for: judged or deduplicated ones."""
    return [i for i, it in enumerate(items) if it.judge is not None or it.dedupe_key]


def read_facts(items, rows) -> tuple[dict, dict]:
    """Rows of the facts statement → (existing messages by dedupe key, facts by item)."""
    existing = {}
    facts = {}
    for row in rows:
        i = row["i"]
        if row["dup_id"] is not None:
            existing[items[i].dedupe_key] = (row["dup_id"], row["dup_seq"])
        facts[i] = row
    return existing, facts


def refused_sends(items, existing: dict, facts: dict) -> dict:
    """{item index: exception} for the judged sends their Judge refuses. A repeat of a
    stored message is not judged: it gets the original, as it would have anyway."""
    rejected = {}
    for i, item in enumerate(items):
        if item.judge is None or (item.dedupe_key and item.dedupe_key in existing):
            continue
        row = facts[i]
        try:
            item.judge(item, row)
        except Exception as exc:  # noqa: BLE001 - that caller's answer
            rejected[i] = exc
            continue
        item.membership_id = row["mid"]
    return rejected


def group_versions(items, existing, rejected, facts) -> dict:
    """Group conversations of judged new sends → their member-list version."""
    out = {}
    for i, item in enumerate(items):
        if item.judge is None or i in rejected or (item.dedupe_key and
                                                   item.dedupe_key in existing):
            continue
        row = facts[i]
        if row["type"] == "group":
            out[item.conversation_id] = member_cache.as_version(row["members_version"])
    return out


def cached_members(versions: dict) -> tuple[dict, list]:
    """(lists cached at exactly these versions, conversations to read in the transaction)."""
    have = {}
    load = []
    for cid, version in versions.items():
        ids = member_cache.get(cid, version)
        if ids is None:
            load.append(cid)
        else:
            have[cid] = ids
    return have, load


def recipients_of(items, facts, seqs, versions, have, loaded) -> dict:
    """{item index: recipients} for the judged sends stored now. Groups: the list
    read in this transaction, or the one cached at exactly the version read under
    the conversation's lock."""
    for cid, ids in loaded.items():
        member_cache.put(cid, versions[cid], ids)
    have = {**have, **loaded}
    out = {}
    for i in seqs:
        item = items[i]
        if item.judge is None:
            continue
        row = facts[i]
        if row["type"] == "group":
            out[i] = have[item.conversation_id]
        elif row["peer_id"] is not None:  # a direct chat: the two of us
            out[i] = (item.sender_text, str(row["peer_id"]))
        else:
            out[i] = (item.sender_text,)
    return out


class Plan:
    """Which items become new messages, and the answers for the others.

    results[i]: None (new), ("existing", (id, seq)), ("same_as", index of the
    first item with that client_msg_id in this batch) or an exception. `counts`
    and `newest` per conversation are what the seq UPDATE needs."""

    __slots__ = ("results", "fresh", "counts", "newest")

    def __init__(self, items, existing: dict, rejected: dict) -> None:
        results: list = [None] * len(items)
        first_of: dict = {}
        fresh = []
        counts: dict = {}
        newest: dict = {}
        for i, item in enumerate(items):
            key = item.dedupe_key
            if key:
                if key in existing:
                    results[i] = ("existing", existing[key])
                    continue
                if key in first_of:
                    results[i] = ("same_as", first_of[key])
                    continue
            if i in rejected:
                results[i] = rejected[i]
                continue
            if key:
                first_of[key] = i
            fresh.append(i)
            cid = item.conversation_id
            counts[cid] = counts.get(cid, 0) + 1
            at = newest.get(cid)
            if at is None or item.created_at > at:
                newest[cid] = item.created_at
        self.results, self.fresh, self.counts, self.newest = results, fresh, counts, newest

    def assign(self, items, last_seqs: dict) -> dict:
        """Seqs of the new items, from each conversation's last_seq after this
        batch's increment; items of an unknown conversation fail."""
        seqs = {}
        results = self.results
        next_by_conv = {cid: last_seqs[cid] - n + 1 for cid, n in self.counts.items()
                        if cid in last_seqs}
        for i in self.fresh:
            cid = items[i].conversation_id
            nxt = next_by_conv.get(cid)
            if nxt is None:
                results[i] = UnknownConversation(str(cid))
                continue
            seqs[i] = nxt
            next_by_conv[cid] = nxt + 1
        return seqs


def finish(results, seqs, ids, recipients) -> list:
    out = []
    for i, r in enumerate(results):
        if isinstance(r, Exception):
            out.append(r)
        elif r is None:
            out.append(Written(id=ids[i], seq=seqs[i], new=True, recipients=recipients.get(i)))
        elif r[0] == "existing":
            out.append(Written(id=r[1][0], seq=r[1][1], new=False))
        else:  # same client_msg_id twice in one batch: the first one wins
            first = r[1]
            out.append(Written(id=ids[first], seq=seqs[first], new=False))
    return out
