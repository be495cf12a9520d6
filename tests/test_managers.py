"""LocalManager, the manager of a server on its own: a conversation's
`message:new` events reach clients in seq order, whatever order the services
emit them in (a group's system line can be emitted just after a later message
that went through the writer). Real aiohttp + Socket.IO server, real clients."""

from __future__ import annotations

import pytest

from tests.queue_helpers import Node, Started, chat_message, seqs

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def server():
    """server(**options) → a started single-process node; its clients close with it."""
    started = Started()

    async def make(**options) -> Node:
        return await started.node(Node(None, **options))

    make.client = started.client  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        await started.close()


async def test_a_message_emitted_after_a_later_one_still_reaches_clients_first(server):
    node = await server(order_hold=30.0)  # however slow this machine, 2 comes within it
    bob = await server.client("bob", node)
    await chat_message(node, "u:bob", 1)
    await chat_message(node, "u:bob", 3)  # seq 2 (a system line) is still being emitted
    await chat_message(node, "u:bob", 4, conversation="c2")  # another chat: not held
    await bob.wait_for(lambda: 4 in seqs(bob))
    await chat_message(node, "u:bob", 2)
    await bob.wait_for(lambda: len(seqs(bob)) == 4)
    assert seqs(bob) == [1, 4, 2, 3]
    assert (node.manager.order.held, node.manager.order.timeouts) == (1, 0)
    assert node.metrics.queue_order_held._value.get() == 1


async def test_a_seq_that_is_never_emitted_holds_the_next_one_no_longer_than_the_hold(server):
    node = await server(order_hold=0.1)
    bob = await server.client("bob", node)
    for seq in (1, 3):
        await chat_message(node, "u:bob", seq)
    await bob.wait_for(lambda: seqs(bob) == [1, 3], 5)
    assert node.manager.order.timeouts == 1
    assert node.metrics.queue_order_timeouts._value.get() == 1


async def test_without_a_hold_events_go_out_as_emitted(server):
    node = await server()
    bob = await server.client("bob", node)
    for seq in (1, 3, 2):
        await chat_message(node, "u:bob", seq)
    await bob.wait_for(lambda: seqs(bob) == [1, 3, 2])
    assert node.manager.order is None


async def test_closing_releases_what_is_held(server):
    node = await server(order_hold=30.0)
    bob = await server.client("bob", node)
    for seq in (1, 3):
        await chat_message(node, "u:bob", seq)
    await bob.wait_for(lambda: seqs(bob) == [1])
    await node.manager.close()
    await bob.wait_for(lambda: seqs(bob) == [1, 3])
