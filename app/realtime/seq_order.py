"""One process's `message:new` events of each conversation, released in seq order.

With several processes nothing else orders a conversation's events: a message
sent through process A reaches B through the queue a few milliseconds after it
was committed, and by then B may have emitted a later message of the same
conversation that was sent through B itself (or arrived sooner from C). Its
clients would see a seq gap and then the missing message; the web client, as
docs/protocol.md tells every client, runs `sync` at a gap, so in a busy group
each member's device syncs exactly when the server is busiest.

A gap seen here almost always means the missing message is on its way: seqs
are gapless, a seq is taken only after the one before it committed, and every
process that holds a socket of a conversation's members is sent every message
of it (the sending process sees its own through `emit`). So a message that
comes after a gap waits for the ones before it, at most `hold` seconds; then
whatever is held goes out in seq order, as it would have without this, and
clients fill the rest with `sync` as before.

What a process remembers of a conversation is its highest released seq, for
`memory` seconds after the conversation's last event: a conversation quiet for
longer starts afresh (a member who left and came back much later is not made
to wait for the messages of the time they were away). Events of one seq
arriving as several emits (recipients with different views) all pass.

Pure bookkeeping: no I/O. The manager delivers what `offer` returns, and what
`release` is called with when a hold ends, with whether it timed out
(app/realtime/managers.py).

One process needs it less but not never: the message writer emits its sends in
seq order, but a group's system line (a rename, a member added) is written and
emitted by its own service, and a send committed just after it can be emitted
first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

HOLD = 0.1  # seconds a message after a gap waits for the ones before it (MESSAGE_ORDER_HOLD)
MEMORY = 30.0  # seconds a quiet conversation's last seq is kept


class SeqOrder:
    def __init__(self, release: Callable[[list, bool], None], hold: float = HOLD,
                 memory: float = MEMORY) -> None:
        self._release = release
        self.hold = hold
        self.memory = memory
        self._last: dict[str, list] = {}  # conversation → [highest released seq, last seen]
        self._held: dict[str, dict[int, list]] = {}  # conversation → seq → items
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._next_sweep = 0.0
        # Counted for tests and benchmarks: items held for a gap, and holds
        # that ended by timeout rather than by the missing message arriving.
        self.held = 0
        self.timeouts = 0

    def offer(self, conversation: str, seq: int, item) -> list:
        """The items to deliver now, in order: `item` and any it unblocks, or
        nothing when `item` must wait for an earlier seq."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        entry = self._last.get(conversation)
        if entry is None or (now - entry[1] > self.memory and conversation not in self._held):
            self._last[conversation] = [seq, now]
            return [item]
        entry[1] = now
        last = entry[0]
        if seq > last + 1:
            held = self._held.get(conversation)
            if held is None:
                held = self._held[conversation] = {}
                self._timers[conversation] = asyncio.get_running_loop().call_later(
                    self.hold, self._expire, conversation)
            held.setdefault(seq, []).append(item)
            self.held += 1
            return []
        if seq <= last:
            return [item]  # another view of a released seq, or one that came too late
        entry[0] = seq
        held = self._held.get(conversation)
        if held is None:
            return [item]
        out = [item]
        nxt = seq + 1
        while nxt in held:
            out += held.pop(nxt)
            entry[0] = nxt
            nxt += 1
        if not held:
            self._forget_hold(conversation)
        return out

    def flush(self) -> None:
        """Release everything held and forget every conversation (the clients
        are told to resync, or the process is closing)."""
        for conversation in list(self._held):
            self._expire(conversation, timed_out=False)
        self._last.clear()

    def _expire(self, conversation: str, timed_out: bool = True) -> None:
        held = self._held.get(conversation)
        self._forget_hold(conversation)
        if not held:
            return
        if timed_out:
            self.timeouts += 1
        seqs = sorted(held)
        entry = self._last.get(conversation)
        if entry is not None:
            entry[0] = max(entry[0], seqs[-1])
        self._release([item for s in seqs for item in held[s]], timed_out)

    def _forget_hold(self, conversation: str) -> None:
        self._held.pop(conversation, None)
        timer = self._timers.pop(conversation, None)
        if timer is not None:
            timer.cancel()

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.memory
        stale = now - self.memory
        self._last = {c: e for c, e in self._last.items() if e[1] >= stale or c in self._held}


def conversation_seq(obj, conversation: str = "conversation_id",
                     seq: str = "seq") -> tuple[str, int] | None:
    """(conversation, seq) of a message:new payload or emit record, if it has both."""
    if not isinstance(obj, dict):
        return None
    c, q = obj.get(conversation), obj.get(seq)
    if isinstance(c, str) and type(q) is int:
        return c, q
    return None
