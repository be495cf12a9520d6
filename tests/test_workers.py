"""app/services/workers.py: the supervised background loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.services.workers import Supervised
from tests.factories import until


class Ticker(Supervised):
    """Counts its rounds and sleeps an hour between them; a round waits for
    `hold` when it is given."""

    name = "ticker"

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        super().__init__()
        self.hold = hold
        self.rounds = 0

    async def _run(self) -> None:
        while not self._closed:
            self.rounds += 1
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(0)  # the round's work yields to the loop
            await self._sleep(3600)


@contextlib.asynccontextmanager
async def running(worker: Supervised):
    worker.start()
    try:
        yield worker
    finally:
        await worker.close()
    assert worker._task.done()


async def rounds_once_settled(ticker: Ticker) -> int:
    await asyncio.sleep(0.1)
    return ticker.rounds


async def test_a_wake_up_ends_one_sleep_not_every_one_after_it():
    async with running(Ticker()) as ticker:
        await until(lambda: ticker.rounds == 1, "the first round ran")
        ticker.wake()
        ticker.wake()  # twice while asleep: one more round, not two
        await until(lambda: ticker.rounds >= 2, "the wake-up ended the sleep")
        assert await rounds_once_settled(ticker) == 2  # asleep again, not spinning


async def test_a_wake_up_during_a_round_ends_the_next_sleep():
    hold = asyncio.Event()
    async with running(Ticker(hold)) as ticker:
        await until(lambda: ticker.rounds == 1, "the first round started")
        ticker.wake()  # while the round works
        hold.set()
        await until(lambda: ticker.rounds >= 2, "the wake-up was kept for the sleep")
        assert await rounds_once_settled(ticker) == 2


class EndsInItsFirstRound(Ticker):
    """Its first round ends the loop: by raising `error`, or, without one, by
    returning (a bug: a loop should only end when closed)."""

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.error = error

    async def _run(self) -> None:
        self.rounds += 1
        if self.rounds == 1:
            if self.error is not None:
                raise self.error
            return
        await self._sleep(3600)


async def test_a_loop_that_dies_is_started_again():
    async with running(EndsInItsFirstRound(RuntimeError("boom"))) as worker:
        await until(lambda: worker.rounds == 2, "restarted")
        assert worker.restarts == 1


async def test_a_loop_that_returns_is_logged_as_returned_and_started_again(caplog):
    async with running(EndsInItsFirstRound()) as worker:
        await until(lambda: worker.rounds == 2, "restarted")
        assert worker.restarts == 1
    assert "ticker died (returned)" in caplog.text


async def test_a_start_that_comes_before_a_dead_loops_supervisor_still_counts_its_death(caplog):
    async with running(EndsInItsFirstRound(RuntimeError("boom"))) as worker:
        dead = worker._task
        # The task is done, its done callback queued and not yet run.
        while not dead.done():  # noqa: ASYNC110 - each turn, not an event's later one
            await asyncio.sleep(0)
        worker.start()  # in this very step, as submit() would
        assert worker.restarts == 1
        assert worker._task is not dead
        await until(lambda: worker.rounds == 2, "the fresh loop ran")
        await asyncio.sleep(0)  # the dead task's own callback runs and changes nothing
        assert worker.restarts == 1
    assert "ticker died (RuntimeError)" in caplog.text


async def test_a_periodic_job_that_fails_is_logged_and_runs_again_on_time(caplog):
    from app.services.workers import Periodic

    rounds = []

    async def job():
        rounds.append(len(rounds))
        if len(rounds) <= 3:
            raise RuntimeError("the database went away")

    caplog.set_level(logging.INFO, "parley.workers")
    async with running(Periodic("test job", job, 0.05)) as worker:
        await until(lambda: len(rounds) >= 5, "rounds after the failed ones")
        assert worker.restarts == 0  # the loop went on; it did not die
    said = [(r.levelname, r.getMessage(), bool(r.exc_info)) for r in caplog.records]
    # Three failures in a row are one outage: told once, with its traceback.
    assert said[0] == ("ERROR", "test job failed (RuntimeError); retrying", True), said
    assert "the database went away" in caplog.text
    assert said[1][:1] == ("INFO",) and said[1][1].startswith("test job works again after "), said
    assert said[1][1].endswith("(3 failed attempts)") and len(said) == 2, said


async def test_a_periodic_job_runs_at_once_when_woken_and_can_wait_its_first_interval():
    from app.services.workers import Periodic

    rounds = []

    async def job():
        rounds.append(1)

    async with running(Periodic("test job", job, 3600, delay_first=True)) as worker:
        await asyncio.sleep(0.1)
        assert rounds == []  # waits its first hour
        worker.wake()
        await until(lambda: len(rounds) == 1, "woken")
        worker.wake()
        await until(lambda: len(rounds) == 2, "woken again")
        await asyncio.sleep(0.1)
        assert len(rounds) == 2
