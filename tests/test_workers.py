"""app/services/workers.py: the supervised background loop."""

from __future__ import annotations

import asyncio

from app.services.workers import Supervised
from tests.factories import until


class Ticker(Supervised):
    """Counts its rounds; sleeps `every` seconds between them."""

    name = "ticker"

    def __init__(self, every: float) -> None:
        super().__init__()
        self.every = every
        self.rounds = 0

    async def _run(self) -> None:
        while not self._closed:
            self.rounds += 1
            await asyncio.sleep(0)  # a round's work yields to the loop
            await self._sleep(self.every)


async def test_a_wake_up_ends_one_sleep_not_every_one_after_it():
    ticker = Ticker(every=3600)
    ticker.start()
    try:
        await until(lambda: ticker.rounds == 1, "the first round ran")
        ticker.wake()
        await until(lambda: ticker.rounds >= 2, "the wake-up ended the sleep")
        await asyncio.sleep(0.1)
        assert ticker.rounds == 2  # asleep again, not spinning
    finally:
        await ticker.close()
    assert ticker._task.done()


async def test_a_wake_up_during_a_round_is_not_lost():
    ticker = Ticker(every=3600)
    ticker.start()
    try:
        await until(lambda: ticker.rounds == 1, "the first round ran")
        ticker.wake()
        ticker.wake()  # twice before the loop runs: one more round, not two
        await until(lambda: ticker.rounds >= 2, "woken")
        await asyncio.sleep(0.1)
        assert ticker.rounds == 2
    finally:
        await ticker.close()


async def test_a_loop_that_dies_is_started_again():
    class Dies(Ticker):
        async def _run(self) -> None:
            self.rounds += 1
            if self.rounds == 1:
                raise RuntimeError("boom")
            await self._sleep(self.every)

    worker = Dies(every=3600)
    worker.start()
    try:
        await until(lambda: worker.rounds == 2, "restarted")
        assert worker.restarts == 1
    finally:
        await worker.close()
