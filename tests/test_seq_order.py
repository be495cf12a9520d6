"""SeqOrder: a process releases each conversation's messages in seq order, holding
a message after a gap until the ones before it arrive or its hold ends."""

from __future__ import annotations

import asyncio

import pytest

from app.realtime.seq_order import SeqOrder

pytestmark = pytest.mark.timeout(10)


class Sink:
    """What the manager would deliver: offered items it got back, and releases."""

    def __init__(self, hold: float = 30.0, memory: float = 30.0) -> None:
        self.out: list = []
        self.order = SeqOrder(lambda items, _timed_out: self.out.extend(items), hold=hold,
                              memory=memory)

    def offer(self, conversation: str, seq: int, item=None) -> list:
        got = self.order.offer(conversation, seq, seq if item is None else item)
        self.out.extend(got)
        return got

    async def wait_for(self, n: int, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.out) < n:
            assert asyncio.get_running_loop().time() < deadline, self.out
            await asyncio.sleep(0.01)


async def test_in_order_messages_pass_at_once():
    s = Sink()
    for seq in (5, 6, 7, 8):
        assert s.offer("c", seq) == [seq]
    assert s.order.held == 0


async def test_a_message_after_a_gap_waits_for_the_ones_before_it():
    s = Sink()
    s.offer("c", 1)
    assert s.offer("c", 3) == []
    assert s.offer("c", 4) == []
    assert s.offer("c", 2) == [2, 3, 4]
    assert s.out == [1, 2, 3, 4]
    assert (s.order.held, s.order.timeouts) == (2, 0)
    assert not s.order._timers  # no hold left behind
    assert s.offer("c", 5) == [5]


async def test_only_the_contiguous_run_is_released_the_rest_waits_on():
    s = Sink(hold=0.05)
    s.offer("c", 1)
    s.offer("c", 3)
    s.offer("c", 5)
    assert s.offer("c", 2) == [2, 3]
    await s.wait_for(4)  # 4 never comes: 5 goes when its hold ends
    assert s.out == [1, 2, 3, 5]
    assert s.order.timeouts == 1
    # The missing one, late: delivered, not dropped; the next one flows on.
    assert s.offer("c", 4) == [4]
    assert s.offer("c", 6) == [6]


async def test_held_messages_go_in_seq_order_when_the_hold_ends():
    s = Sink(hold=0.05)
    s.offer("c", 10)
    for seq in (14, 12, 13):
        s.offer("c", seq)
    await s.wait_for(4)
    assert s.out == [10, 12, 13, 14]
    assert s.offer("c", 15) == [15]


async def test_every_view_of_a_seq_is_delivered():
    s = Sink()
    s.offer("c", 1, "1a")
    assert s.offer("c", 1, "1b") == ["1b"]  # another view of a released seq
    s.offer("c", 3, "3a")
    s.offer("c", 3, "3b")  # both views of a held seq wait together
    assert s.offer("c", 2, "2a") == ["2a", "3a", "3b"]


async def test_conversations_are_ordered_apart():
    s = Sink()
    s.offer("a", 1)
    s.offer("b", 7)
    assert s.offer("a", 3) == []
    assert s.offer("b", 8) == [8]  # a's gap holds nothing of b's
    assert s.offer("a", 2) == [2, 3]


async def test_a_conversation_quiet_for_longer_than_memory_starts_afresh():
    s = Sink(memory=0.05)
    s.offer("c", 1)
    await asyncio.sleep(0.1)
    # A member back after a long time: the messages of their absence never come here.
    assert s.offer("c", 40) == [40]
    assert s.offer("c", 41) == [41]
    await asyncio.sleep(0.1)
    s.offer("d", 1)  # any offer after `memory` sweeps what went quiet
    assert "c" not in s.order._last


async def test_flush_releases_everything_held_and_forgets():
    s = Sink()
    s.offer("a", 1)
    s.offer("a", 4)
    s.offer("a", 3)
    s.offer("b", 1)
    s.offer("b", 9)
    s.order.flush()
    assert s.out == [1, 1, 3, 4, 9]
    assert not s.order._held and not s.order._timers and not s.order._last
    assert s.order.timeouts == 0
    assert s.offer("a", 2) == [2]  # nothing remembered: passes
