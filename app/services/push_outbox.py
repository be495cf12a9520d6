"""The durable push outbox: the planner that fills it, the worker that empties it.

- The *planner* (one task per process) takes the events the messaging
  services hand over after their commit (app/services/push.py hooks), applies
  the rules (app/services/push_rules.py) and writes what each device is owed
  into `push_outbox`. The send path only appends to a list: its ack never waits.
- The `push_outbox` table holds one row per (device, conversation): a newer
  message updates the row in place (count + 1, newest content), so messages
  that arrive faster than PUSH_COALESCE_SECONDS coalesce into one
  notification ("3 new messages"), and a row that already announced a message
  (message_id) ignores that message if it comes again: one push per message
  and device. A recall turns the row that announced the message into a
  follow-up with the same tag; a read resets it and queues a silent badge row.
- The *worker* (one task per process) claims due rows with a lease
  (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several processes share the
  work; on SQLite the one writer lock serialises them), sends them through the
  PushProvider of the device's kind, and records the answer: sent, device gone
  (the subscription is deleted), retry later (exponential backoff, never
  before Retry-After), or dropped (refused, or older than PUSH_TTL_SECONDS).
  A process that dies mid-send leaves a lease that lapses: the rows are sent
  by whoever claims them next, so a restart loses nothing queued.
- Events the planner still holds in memory when the process dies are not
  lost either: after each batch it records the highest message id planned
  (`push_checkpoint`), and at start-up it re-plans the messages above it (and
  a margin below) that are younger than PUSH_TTL_SECONDS and not recalled.
  Re-planning is idempotent: an outbox row ignores a message at or below the
  one it already announced, so a message already pushed is not pushed again.

Both tasks are supervised like the message writer: a task that dies is
logged and replaced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta

from tortoise import Tortoise

from app.clock import now
from app.logs import Retrying
from app.models.accounts import User
from app.models.messaging import Conversation
from app.models.push import PushSubscription
from app.pushers import Device, PushError, PushMessage
from app.services import push_rules
from app.services.sql import as_datetime, is_postgres
from app.services.workers import Supervised

log = logging.getLogger("parley.push")

CLAIM_BATCH = 500
# Beside sockets, smaller claims: on SQLite each claim, badge count and
# record holds the one connection the senders' writes wait for.
CLAIM_BATCH_SERVING = 64
LEASE_SECONDS = 60
SEND_CONCURRENCY = 8  # pushes in flight at once (and between yields to the sockets)
# While the process serves sockets, pushes get at most this share of its loop.
# The offline members of a busy group all fall due together, once per coalescing
# window: at full share that burst holds the members' live events back;
# stretched out, it costs them nothing noticeable (see Worker._leave_share).
SERVING_SHARE = 0.1
# In a process that serves no sockets nothing waits behind the worker: keep
# more requests in flight so the push service's round trips overlap.
SEND_CONCURRENCY_ALONE = 64
IDLE_POLL = 1.0  # seconds between looks at the outbox when nothing is known to be due
PLANNER_BATCH = 1000
# Start-up re-plans the messages above the checkpoint, and this many ids below
# it: sends hand their events over in roughly, not strictly, id order.
RECOVERY_LOOKBACK_IDS = 1000
RECOVERY_PAGE = 500


def _ts(value: datetime) -> str:
    # One fixed-width text form on SQLite, so text comparison is time order.
    return value.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")


_PARAM = re.compile(r"\$\d+")
_CAST = re.compile(r"::[a-z]+")


async def run_sql(sql: str, params: list, conn=None) -> list:
    """Run a statement written for PostgreSQL ($n placeholders, ::casts) on
    either backend; on SQLite the placeholders must appear in order."""
    conn = conn or Tortoise.get_connection("default")
    if is_postgres(conn):
        # execute_query drops the rows of UPDATE … RETURNING on asyncpg.
        return await conn.execute_query_dict(sql, params)
    values = [_sqlite_value(v) for v in params]
    sql = _CAST.sub("", _PARAM.sub("?", sql)).replace("GREATEST(", "MAX(")
    _n, rows = await conn.execute_query(sql, values)
    return rows


async def run_many(sql: str, rows: list[list], conn=None) -> None:
    """run_sql's statement once per row of parameters, in one transaction and
    one round trip per backend call."""
    if not rows:
        return
    conn = conn or Tortoise.get_connection("default")
    if is_postgres(conn):
        await conn.execute_many(sql, rows)
        return
    sql = _CAST.sub("", _PARAM.sub("?", sql)).replace("GREATEST(", "MAX(")
    await conn.execute_many(sql, [[_sqlite_value(v) for v in row] for row in rows])


async def _for_ids(sql: str, ids: list[str]) -> list:
    """The rows of `sql`, whose `{}` stands for "is one of these ids" (uuids as
    text), in one statement on either backend."""
    conn = Tortoise.get_connection("default")
    if is_postgres(conn):
        return await conn.execute_query_dict(sql.format("= ANY($1::uuid[])"),
                                             [[uuid.UUID(i) for i in ids]])
    _n, rows = await conn.execute_query(sql.format("IN (SELECT value FROM json_each(?))"),
                                        [json.dumps(ids)])
    return rows


async def _with_devices(user_ids: list[str]) -> set[str]:
    """Which of these users have a push device, in one statement."""
    rows = await _for_ids("SELECT DISTINCT user_id FROM push_subscriptions WHERE user_id {}",
                          user_ids)
    return {str(r["user_id"]) for r in rows}


def _sqlite_sql(sql: str) -> str:
    return _CAST.sub("", _PARAM.sub("?", sql)).replace("GREATEST(", "MAX(")


def _sqlite_value(v):
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, datetime):
        return _ts(v)
    if isinstance(v, bool):
        return int(v)
    return v




# --- planner -----------------------------------------------------------------


# The members with a device of several conversations, and their settings: one
# statement per AUDIENCE_CHATS conversations that a batch of events touches.
AUDIENCE = """
SELECT m.conversation_id AS conversation_id, s.id AS sid, s.user_id AS user_id,
       u.push_enabled AS push_enabled, u.push_preview AS push_preview,
       u.dnd_start AS dnd_start, u.dnd_end AS dnd_end, u.timezone AS timezone,
       m.notifications_muted AS notifications_muted,
       m.read_seq AS read_seq, m.visible_from_seq AS visible_from_seq
FROM memberships m
JOIN push_subscriptions s ON s.user_id = m.user_id
JOIN users u ON u.id = m.user_id
WHERE m.conversation_id {} AND m.left_at IS NULL
"""
AUDIENCE_CHATS = 100

UPSERT = """
INSERT INTO push_outbox (subscription_id, user_id, thread, kind, pending, payload, message_id,
    sent_message_id, count, rev, attempts, due_at, expires_at, created_at)
SELECT s, u, $1, 'message', TRUE, p::jsonb, m, 0, n, 0, 0, $2, $3, $2
FROM (SELECT unnest($4::uuid[]) AS s, unnest($5::uuid[]) AS u, unnest($6::text[]) AS p,
             unnest($7::bigint[]) AS m, unnest($8::int[]) AS n) AS v
ON CONFLICT (subscription_id, thread) DO UPDATE SET
    kind = 'message', pending = TRUE, payload = EXCLUDED.payload,
    message_id = EXCLUDED.message_id, count = push_outbox.count + EXCLUDED.count,
    rev = push_outbox.rev + 1, attempts = 0, expires_at = EXCLUDED.expires_at,
    claimed_until = CASE WHEN push_outbox.pending THEN push_outbox.claimed_until END,
    due_at = CASE WHEN push_outbox.pending THEN push_outbox.due_at
                  ELSE GREATEST(push_outbox.due_at, EXCLUDED.due_at) END
WHERE push_outbox.message_id < EXCLUDED.message_id
"""

UPSERT_SQLITE_ROW = """
INSERT INTO push_outbox (subscription_id, user_id, thread, kind, pending, payload, message_id,
    sent_message_id, count, rev, attempts, due_at, expires_at, created_at)
VALUES ($1, $2, $3, 'message', TRUE, $4, $5, 0, $6, 0, 0, $7, $8, $9)
ON CONFLICT (subscription_id, thread) DO UPDATE SET
    kind = 'message', pending = TRUE, payload = excluded.payload,
    message_id = excluded.message_id, count = push_outbox.count + excluded.count,
    rev = push_outbox.rev + 1, attempts = 0, expires_at = excluded.expires_at,
    claimed_until = CASE WHEN push_outbox.pending THEN push_outbox.claimed_until END,
    due_at = CASE WHEN push_outbox.pending THEN push_outbox.due_at
                  ELSE MAX(push_outbox.due_at, excluded.due_at) END
WHERE push_outbox.message_id < excluded.message_id
"""

CHECKPOINT = """
INSERT INTO push_checkpoint (id, message_id, updated_at) VALUES ('planner', $1, $2)
ON CONFLICT (id) DO UPDATE SET
    message_id = GREATEST(push_checkpoint.message_id, EXCLUDED.message_id),
    updated_at = EXCLUDED.updated_at
"""

BADGE_UPSERT = """
INSERT INTO push_outbox (subscription_id, user_id, thread, kind, pending, payload, message_id,
    sent_message_id, count, rev, attempts, due_at, expires_at, created_at)
VALUES ($1, $2, 'badge', 'badge', TRUE, NULL, 0, 0, 0, 0, 0, $3, $4, $5)
ON CONFLICT (subscription_id, thread) DO UPDATE SET
    pending = TRUE, rev = push_outbox.rev + 1, attempts = 0,
    due_at = excluded.due_at, expires_at = excluded.expires_at
"""


class Planner(Supervised):
    """Turns committed events into outbox rows (see the module docstring)."""

    name = "parley-push-planner"

    def __init__(self, deps, worker: Worker | None = None) -> None:
        super().__init__()
        self.deps = deps
        self.worker = worker
        self.queue: list[tuple[str, dict]] = []
        self.max_queue = 100_000
        self.tick = deps.settings.push_planner_interval  # between batches while events come
        self.idle = asyncio.Event()
        self.idle.set()
        self.recovered = False
        self.recovered_messages = 0

    def submit(self, event: tuple[str, dict]) -> None:
        if len(self.queue) >= self.max_queue:
            metrics = self.deps.extras.get("metrics")
            if metrics is not None:
                metrics.push_failed.labels(reason="planner_full").inc()
            return
        self.queue.append(event)
        self.idle.clear()
        self._wakeup.set()
        if not self._closed and (self._task is None or self._task.done()):
            self.start()

    async def drained(self, timeout: float = 10.0) -> None:
        """Wait until every submitted event is in the outbox (tests, shutdown)."""
        async with asyncio.timeout(timeout):
            await self.idle.wait()

    async def _run(self) -> None:
        recovering = Retrying(log, "push planner: start-up recovery")
        while not self.recovered:
            try:
                await self.recover()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away
                recovering.failed(exc)
                if self._closed:
                    return
                await asyncio.sleep(1.0)
        recovering.ok()
        planning = Retrying(log, "push planner: queueing events")
        while True:
            while self.queue:
                batch, self.queue = self.queue[:PLANNER_BATCH], self.queue[PLANNER_BATCH:]
                try:
                    await self.plan(batch)
                except asyncio.CancelledError:
                    self.queue = batch + self.queue
                    raise
                except Exception as exc:  # noqa: BLE001
                    # The database is away: keep the events and try again shortly.
                    planning.failed(exc, f"({len(batch)} events)")
                    self.queue = batch + self.queue
                    if self._closed:
                        return
                    await asyncio.sleep(1.0)
                    continue
                planning.ok()
                if not self.queue:
                    self.idle.set()  # everything submitted is in the outbox
                if not self._closed and len(self.queue) < PLANNER_BATCH:
                    # Let the next events gather: a busy chat's messages then cost one
                    # outbox write per device, not one per message (pushes coalesce
                    # over seconds anyway), and the database stays free for sends.
                    # A full batch already waiting goes at once: events that come
                    # faster than a batch per tick would otherwise pile up without
                    # end (and be dropped at max_queue), and the garbage collector
                    # would walk every held event each time it looks at its older
                    # generations, with the loop stopped meanwhile.
                    await asyncio.sleep(self.tick)
            self.idle.set()
            if self._closed:
                return
            self._wakeup.clear()
            if not self.queue:
                await self._wakeup.wait()

    async def plan(self, events: list[tuple[str, dict]]) -> None:
        queued = 0
        # A read by someone with no device has nothing to clear: no outbox row,
        # no badge. One statement finds the readers who have one.
        readers = {ev["user_id"] for kind, ev in events if kind == "read"}
        with_device = await _with_devices(sorted(readers)) if readers else set()
        # Each chat's events in their order. Chats are independent of each other
        # (an outbox row, a read and a recall belong to one chat; a badge is
        # counted when it is sent), so one chat's read does not split the runs
        # of messages of every other.
        per_chat: dict[str, deque] = {}
        for kind, ev in events:
            if kind == "read" and ev["user_id"] not in with_device:
                continue
            per_chat.setdefault(ev["conversation_id"], deque()).append((kind, ev))
        while per_chat:
            # A round: each chat's next run of messages, planned together (one
            # outbox write per device, counting them all), then the read or
            # recall that ended the run.
            chats: dict[str, list[dict]] = {}
            after = []
            for cid, evs in list(per_chat.items()):
                run = []
                while evs and evs[0][0] == "message":
                    run.append(evs.popleft()[1])
                if run:
                    chats[cid] = run
                if evs:
                    after.append(evs.popleft())
                if not evs:
                    del per_chat[cid]
            queued += await self._chats(chats)
            for kind, ev in after:
                if kind == "recall":
                    queued += await self._recall(ev)
                elif kind == "read":
                    queued += await self._read(ev)
        top = max((ev["message_id"] for kind, ev in events if kind == "message"), default=0)
        if top:
            # After the outbox writes: a crash in between only means start-up
            # re-plans these messages, which the outbox ignores as already known.
            await self._checkpoint(top)
        if queued:
            metrics = self.deps.extras.get("metrics")
            if metrics is not None:
                metrics.push_queued.inc(queued)
            if self.worker is not None:
                self.worker.wake()

    async def _checkpoint(self, message_id: int) -> None:
        await run_sql(CHECKPOINT, [message_id, now()])

    async def recover(self) -> int:
        """Start-up: re-plan the messages the last process may have held in
        memory when it stopped → how many were handed to plan()."""
        state = await run_sql("SELECT message_id FROM push_checkpoint WHERE id = 'planner'", [])
        if not state:
            # A database that never planned (new, or upgraded): start from here.
            top = await run_sql("SELECT MAX(id) AS top FROM messages", [])
            await self._checkpoint(int(top[0]["top"] or 0) if top else 0)
            self.recovered = True
            return 0
        mark = int(state[0]["message_id"])
        oldest = now() - timedelta(seconds=self.deps.settings.push_ttl_seconds)
        after, total = max(0, mark - RECOVERY_LOOKBACK_IDS), 0
        while True:
            rows = await run_sql(
                "SELECT id, conversation_id, sender_id, type, text, data, seq, created_at "
                "FROM messages WHERE id > $1 AND recalled_at IS NULL AND sender_id IS NOT NULL "
                "AND type <> 'system' ORDER BY id LIMIT $2", [after, RECOVERY_PAGE])
            if not rows:
                break
            after = int(rows[-1]["id"])
            events = []
            for r in rows:
                if as_aware(r["created_at"]) < oldest:
                    continue
                data = r["data"]
                data = json.loads(data) if isinstance(data, str) else (data or {})
                # recipients None: the members who could see it and have not read it.
                events.append(("message", {
                    "message_id": int(r["id"]), "conversation_id": str(r["conversation_id"]),
                    "sender_id": str(r["sender_id"]), "recipients": None,
                    "type": r["type"], "text": r["text"] or "", "data": data,
                    "seq": int(r["seq"])}))
            if events:
                await self.plan(events)
                total += len(events)
        self.recovered = True
        self.recovered_messages = total
        if total:
            log.info("push planner: re-planned %d recent messages at start-up", total)
        return total

    def _skipped(self, reason: str, n: int = 1) -> None:
        metrics = self.deps.extras.get("metrics")
        if metrics is not None and n:
            metrics.push_skipped.labels(reason=reason).inc(n)

    async def _chats(self, chats: dict[str, list[dict]]) -> int:
        """The new messages of several conversations → outbox rows. Their
        audiences are read a slice of conversations at a time: a busy server's
        batch touches hundreds of chats, most with no device to notify."""
        queued = 0
        cids = list(chats)
        for at in range(0, len(cids), AUDIENCE_CHATS):
            part = cids[at:at + AUDIENCE_CHATS]
            found: dict[str, list] = {cid: [] for cid in part}
            for r in await _for_ids(AUDIENCE, part):
                found[str(r["conversation_id"])].append(r)
            for cid in part:
                queued += await self._messages(chats[cid], found[cid])
        return queued

    async def _messages(self, evs: list[dict], found: list) -> int:
        """New messages of one conversation, and its members with a device
        (`found`: AUDIENCE's rows) → outbox rows of the devices to notify."""
        if not found:  # nobody in the chat has a device
            return 0
        evs.sort(key=lambda e: e["message_id"])
        cid = evs[0]["conversation_id"]
        if any(ev["recipients"] is None for ev in evs):
            # Re-planned at start-up: whoever could see the message and has not read it.
            for ev in evs:
                if ev["recipients"] is None:
                    ev["recipients"] = tuple({
                        str(r["user_id"]) for r in found
                        if int(r["visible_from_seq"] or 0) < ev["seq"]
                        and int(r["read_seq"] or 0) < ev["seq"]})
        # Whom each message notifies; the newest of them per person, and how many.
        unseen = push_rules.notifying(evs)
        if not unseen:
            return 0
        subs = [(r["sid"], str(r["user_id"])) for r in found if str(r["user_id"]) in unseen]
        if not subs:
            return 0
        people = {str(r["user_id"]): r for r in found}
        users = sorted(people.keys() & unseen.keys())
        settings = self.deps.settings
        foreground = self.deps.extras.get("foreground")
        fg = await foreground.in_foreground(users) if foreground is not None else set()
        senders = list({ev["sender_id"] for ev in evs})
        names = {str(i): n for i, n in await User.filter(id__in=senders)
                 .values_list("id", "display_name")}
        conv = await Conversation.get_or_none(id=cid).values("type", "title")
        if conv is None:
            return 0
        at = now()
        notify: dict[str, tuple[str, int, int]] = {}  # user → (payload, message id, count)
        muted = {u: bool(people[u]["notifications_muted"]) for u in users}
        payloads: dict[tuple, str] = {}  # the same JSON for everyone who sees the same
        mentioning = [ev for ev in evs
                      if ev["data"] and (ev["data"].get("mention_all") or ev["data"].get("mentions"))]
        for u in users:
            person = people[u]
            latest, count = unseen[u]
            mentions = [ev for ev in mentioning if ev["sender_id"] != u
                        and u in ev["recipients"] and push_rules.is_mentioned(u, ev["data"])]
            if muted[u] and mentions:
                # A muted chat announces only what mentions them.
                latest, count = mentions[-1], len(mentions)
            r = push_rules.Recipient(
                user_id=u, push_enabled=person["push_enabled"], preview=person["push_preview"],
                dnd_start=person["dnd_start"], dnd_end=person["dnd_end"],
                timezone=person["timezone"], muted=muted[u], foreground=u in fg,
                mentioned=bool(mentions))
            reason = push_rules.skip_reason(r, at)
            if reason is not None:
                self._skipped(reason)
                continue
            key = (latest["message_id"], r.preview,
                   bool(mentions) and push_rules.is_mentioned(u, latest["data"]))
            payload = payloads.get(key)
            if payload is None:
                # Text is stored, and so can leave the server, only for `full` previews.
                payload = payloads[key] = json.dumps({
                    "preview": r.preview, "sender": names.get(latest["sender_id"], ""),
                    "title": conv["title"], "group": conv["type"] == "group",
                    "type": latest["type"],
                    "text": latest["text"] if r.preview == "full" else "",
                    "mentioned": key[2], "seq": latest["seq"]})
            notify[u] = (payload, latest["message_id"], count)
        rows = [(s, u, *notify[str(u)]) for s, u in subs if str(u) in notify]
        if not rows:
            return 0
        due = at
        expires = at + timedelta(seconds=settings.push_ttl_seconds)
        conn = Tortoise.get_connection("default")
        if is_postgres(conn):
            await conn.execute_query(UPSERT, [
                cid, due, expires, [r[0] for r in rows], [r[1] for r in rows],
                [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows]])
        else:
            due_s, expires_s = _ts(due), _ts(expires)
            await conn.execute_many(_sqlite_sql(UPSERT_SQLITE_ROW), [
                [str(s), str(u), cid, payload, mid, n, due_s, expires_s, due_s]
                for s, u, payload, mid, n in rows])
        return len(rows)

    async def _recall(self, ev: dict) -> int:
        at = now()
        rows = await run_sql(
            "UPDATE push_outbox SET kind = 'recall', pending = TRUE, due_at = $1, "
            "rev = rev + 1, attempts = 0, expires_at = $2 "
            "WHERE thread = $3 AND message_id = $4 RETURNING id, payload",
            [at, at + timedelta(seconds=self.deps.settings.push_ttl_seconds),
             ev["conversation_id"], ev["message_id"]])
        for r in rows:
            payload = r["payload"]
            payload = json.loads(payload) if isinstance(payload, str) else dict(payload or {})
            if payload.get("text"):
                # The recalled text must not linger in the outbox either.
                payload["text"] = ""
                await run_sql("UPDATE push_outbox SET payload = $1 WHERE id = $2",
                              [json.dumps(payload), r["id"]])
        return len(rows)

    async def _read(self, ev: dict) -> int:
        at = now()
        # Read: nothing of this chat is news any more; and the badge may have dropped.
        await run_sql(
            "UPDATE push_outbox SET count = 0, pending = CASE WHEN kind = 'message' "
            "THEN FALSE ELSE pending END WHERE user_id = $1::uuid AND thread = $2",
            [uuid.UUID(ev["user_id"]), ev["conversation_id"]])
        subs = await PushSubscription.filter(user_id=ev["user_id"], badge__gt=0
                                             ).values_list("id", flat=True)
        expires = at + timedelta(seconds=self.deps.settings.push_ttl_seconds)
        for s in subs:
            await run_sql(BADGE_UPSERT, [s, uuid.UUID(ev["user_id"]), at, expires, at])
        return len(subs)


# --- worker ------------------------------------------------------------------


CLAIM_PG = """
UPDATE push_outbox SET claimed_until = $1
WHERE id IN (SELECT id FROM push_outbox
             WHERE pending AND due_at <= $2 AND (claimed_until IS NULL OR claimed_until < $2)
             ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING id, subscription_id, user_id, thread, kind, payload, message_id, count, rev,
          attempts, expires_at
"""

CLAIM_SQLITE = """
UPDATE push_outbox SET claimed_until = $1
WHERE id IN (SELECT id FROM push_outbox
             WHERE pending AND due_at <= $2 AND (claimed_until IS NULL OR claimed_until < $3)
             ORDER BY due_at LIMIT $4)
RETURNING id, subscription_id, user_id, thread, kind, payload, message_id, count, rev,
          attempts, expires_at
"""

# Approximate unread of the chats that are not muted: messages after the read
# mark (system lines included), for many users in one statement.
BADGES = """
SELECT m.user_id AS user_id, SUM(GREATEST(c.last_seq - m.read_seq, 0)) AS unread
FROM memberships m JOIN conversations c ON c.id = m.conversation_id
WHERE m.user_id IN ({ids}) AND m.left_at IS NULL AND NOT m.notifications_muted
GROUP BY m.user_id
"""


class Worker(Supervised):
    name = "parley-push-worker"

    def __init__(self, deps, providers: dict) -> None:
        super().__init__()
        self.deps = deps
        self.providers = providers
        self.sent = 0
        self._depth_at = 0.0

    @property
    def metrics(self):
        return self.deps.extras.get("metrics")

    async def _run(self) -> None:
        outage = Retrying(log, "push worker: reading the outbox")
        while not self._closed:
            self._wakeup.clear()
            try:
                n = await self.run_once()
                idle_for = await self._idle_for() if n == 0 and not self._closed else None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away
                outage.failed(exc)
                await self._sleep(2.0)
                continue
            outage.ok()
            if idle_for is not None:
                await self._sleep(idle_for)

    async def _idle_for(self) -> float:
        rows = await run_sql("SELECT MIN(due_at) AS due FROM push_outbox "
                             "WHERE pending AND claimed_until IS NULL", [])
        due = as_datetime(rows[0]["due"]) if rows and rows[0]["due"] is not None else None
        if due is None:
            return IDLE_POLL
        if due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        return max(0.01, min(IDLE_POLL, (due - now()).total_seconds()))

    async def _update_depth(self) -> None:
        metrics = self.metrics
        if metrics is None or time.monotonic() - self._depth_at < 5:
            return
        self._depth_at = time.monotonic()
        rows = await run_sql("SELECT COUNT(*) AS n FROM push_outbox WHERE pending", [])
        metrics.push_outbox_depth.set(rows[0]["n"] if rows else 0)

    async def claim(self, limit: int = CLAIM_BATCH) -> list:
        at = now()
        lease = at + timedelta(seconds=LEASE_SECONDS)
        conn = Tortoise.get_connection("default")
        if is_postgres(conn):
            return await run_sql(CLAIM_PG, [lease, at, limit], conn)
        return await run_sql(CLAIM_SQLITE, [lease, at, at, limit], conn)

    async def run_once(self) -> int:
        """Claim one batch of due rows and deliver it; the number of rows claimed."""
        serving = self.deps.extras.get("sockets_connected") or (lambda: 0)
        began = time.process_time()
        await self._update_depth()
        rows = await self.claim(CLAIM_BATCH_SERVING if serving() else CLAIM_BATCH)
        if not rows:
            return 0
        subs = {str(s["id"]): s for s in await PushSubscription.filter(
            id__in=list({r["subscription_id"] for r in rows})).values(
            "id", "kind", "address", "p256dh", "auth", "environment", "badge")}
        badges = await self._badges({str(r["user_id"]) for r in rows})
        outcomes: list = []
        if not serving():
            gate = asyncio.Semaphore(SEND_CONCURRENCY_ALONE)

            async def gated(r):
                async with gate:
                    return await self._deliver(_with_badge(r, subs),
                                               subs.get(str(r["subscription_id"])), badges)

            outcomes = list(await asyncio.gather(*(gated(r) for r in rows)))
        else:
            for start in range(0, len(rows), SEND_CONCURRENCY):
                chunk = rows[start:start + SEND_CONCURRENCY]
                outcomes += await asyncio.gather(*(
                    self._deliver(_with_badge(r, subs), subs.get(str(r["subscription_id"])),
                                  badges) for r in chunk))
                began = await self._leave_share(serving, began)
        await self._record(outcomes)
        await self._leave_share(serving, began)
        return len(rows)

    @staticmethod
    async def _leave_share(serving, began: float) -> float:
        """Beside sockets, pause for the rest of the share of what was just done.
        Measured in the process's CPU time: it includes the sockets' own work
        over the same span (the busier they are, the longer pushes wait) and,
        on SQLite, the database thread's; waiting on a distant push service
        costs nothing and must not slow delivery down."""
        if serving():
            await asyncio.sleep((time.process_time() - began) * (1 / SERVING_SHARE - 1))
        return time.process_time()

    async def _badges(self, users: set[str]) -> dict[str, int]:
        if not users:
            return {}
        conn = Tortoise.get_connection("default")
        pg = is_postgres(conn)
        ids = list(users)
        if pg:
            sql = BADGES.format(ids="SELECT unnest($1::uuid[])")
            params = [[uuid.UUID(u) for u in ids]]
        else:
            sql = BADGES.format(ids=", ".join("?" * len(ids))).replace("GREATEST(", "MAX(")
            params = ids
        _n, rows = await conn.execute_query(sql, params)
        return {str(r["user_id"]): int(r["unread"] or 0) for r in rows}

    def _message(self, row, badge: int) -> PushMessage | None:
        ttl = max(0, int((as_aware(row["expires_at"]) - now()).total_seconds()))
        tag = row["thread"]
        if row["kind"] == "badge":
            return PushMessage(kind="badge", tag="badge", badge=badge, ttl=ttl)
        p = row["payload"]
        p = json.loads(p) if isinstance(p, str) else dict(p or {})
        data = {"conversation_id": tag, "message_id": str(row["message_id"]),
                "seq": str(p.get("seq", "")), "url": f"/#/chats/{tag}"}
        if row["kind"] == "recall":
            note = push_rules.recalled_notification(
                p.get("preview", "none"), sender=p.get("sender", ""),
                chat_title=p.get("title", ""), is_group=p.get("group", False))
        else:
            note = push_rules.notification(
                p.get("preview", "none"), sender=p.get("sender", ""),
                chat_title=p.get("title", ""), is_group=p.get("group", False),
                message_type=p.get("type", "text"), text=p.get("text", ""),
                count=max(1, int(row["count"])), mentioned=p.get("mentioned", False))
        return PushMessage(kind=row["kind"], tag=tag, badge=badge, ttl=ttl,
                           title=note["title"], body=note["body"], data=data)

    async def _deliver(self, row, sub, badges) -> tuple:
        """→ (row, outcome, detail): sent | skipped | gone | retry | dropped."""
        if sub is None:
            return row, "dropped", "no_subscription"
        if as_aware(row["expires_at"]) <= now():
            return row, "dropped", "expired"
        badge = badges.get(str(row["user_id"]), 0)
        if row["kind"] == "badge" and not push_rules.should_send_badge(badge, sub["badge"]):
            return row, "skipped", badge
        provider = self.providers.get(sub["kind"])
        if provider is None:
            return row, "dropped", "no_provider"
        msg = self._message(row, badge)
        device = Device(id=str(sub["id"]), kind=sub["kind"], address=sub["address"],
                        p256dh=sub["p256dh"], auth=sub["auth"],
                        environment=sub["environment"])
        try:
            await provider.send(device, msg)
        except PushError as exc:
            if exc.gone:
                return row, "gone", exc.reason
            if exc.transient:
                return row, "retry", exc
            return row, "dropped", exc.reason
        except Exception as exc:  # noqa: BLE001 - a provider bug must not stop the worker
            log.exception("push provider %s failed", sub["kind"])
            return row, "retry", PushError("error", transient=True, detail=type(exc).__name__)
        return row, "sent", badge

    async def _record(self, outcomes) -> None:
        at = now()
        window = self.deps.settings.push_coalesce_seconds
        metrics = self.metrics
        done, badges, gone, retry, drop = [], [], [], [], []
        for row, outcome, detail in outcomes:
            if outcome in ("sent", "skipped"):
                # Sent: the next notification of this chat waits for the window; a
                # newer message that came in meanwhile (rev moved) stays pending.
                done.append([row["rev"], at, at + timedelta(seconds=window), row["id"]])
                if detail != row["_badge"]:
                    badges.append([int(detail), _uuid(row["subscription_id"])])
                if outcome == "sent" and metrics is not None:
                    metrics.push_sent.labels(kind=row["kind"]).inc()
                self.sent += outcome == "sent"
            elif outcome == "gone":
                gone.append([_uuid(row["subscription_id"])])
                if metrics is not None:
                    metrics.push_failed.labels(reason="gone").inc()
                    metrics.push_subscriptions_removed.labels(reason="gone").inc()
            elif outcome == "retry":
                exc: PushError = detail
                attempts = int(row["attempts"]) + 1
                delay = push_rules.backoff(attempts, exc.retry_after)
                if at + timedelta(seconds=delay) >= as_aware(row["expires_at"]):
                    drop.append((row["id"], "expired"))
                    continue
                retry.append([attempts, at + timedelta(seconds=delay), row["id"]])
                if metrics is not None:
                    metrics.push_retried.inc()
                    metrics.push_failed.labels(reason=exc.reason).inc()
            else:
                drop.append((row["id"], str(detail)))
        await run_many(
            "UPDATE push_outbox SET pending = CASE WHEN rev = $1 THEN FALSE ELSE TRUE END, "
            "sent_at = $2, sent_message_id = message_id, attempts = 0, claimed_until = NULL, "
            "due_at = $3 WHERE id = $4", done)
        await run_many("UPDATE push_subscriptions SET badge = $1 WHERE id = $2::uuid", badges)
        await run_many("DELETE FROM push_subscriptions WHERE id = $1::uuid", gone)
        await run_many("UPDATE push_outbox SET attempts = $1, due_at = $2, claimed_until = NULL "
                       "WHERE id = $3", retry)
        for rid, reason in drop:
            await self._drop(rid, reason)

    async def _drop(self, rid, reason: str) -> None:
        await run_sql("UPDATE push_outbox SET pending = FALSE, claimed_until = NULL "
                      "WHERE id = $1", [rid])
        metrics = self.metrics
        if metrics is not None:
            metrics.push_failed.labels(reason=reason[:32]).inc()


def _with_badge(row, subs) -> dict:
    """The claimed row, with the badge its device was last sent."""
    sub = subs.get(str(row["subscription_id"]))
    row = dict(row)
    row["_badge"] = sub["badge"] if sub is not None else None
    return row


def as_aware(value) -> datetime:
    value = as_datetime(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


async def start_runtime(deps, providers: dict, *, run_worker: bool = True) -> None:
    """The factory's start-up: the planner always (events must reach the
    outbox), the worker unless PUSH_WORKERS is off in this process."""
    worker = Worker(deps, providers) if run_worker else None
    planner = Planner(deps, worker)
    deps.extras["push_worker"] = worker
    deps.extras["push_planner"] = planner
    planner.start()
    if worker is not None:
        worker.start()


async def stop_runtime(deps, timeout: float = 5.0) -> None:
    """Shutdown: queue what the planner holds, then stop the worker (claimed
    rows it could not finish are sent by the next process to claim them)."""
    planner = deps.extras.pop("push_planner", None)
    worker = deps.extras.pop("push_worker", None)
    if planner is not None:
        await planner.close(timeout)
    if worker is not None:
        await worker.close(timeout)
