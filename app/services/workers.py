"""Background loops the factory starts (push planner and worker, the search
index's merger, account erasure, data exports, the orphan media sweep): each is
restarted if it dies while not closed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app.logs import Retrying

log = logging.getLogger("parley.workers")


class Supervised:
    """A background loop that is restarted if it ever dies while not closed."""

    name = "worker"

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None
        self._closed = False
        self._wakeup = asyncio.Event()
        self.restarts = 0

    def start(self) -> None:
        task = self._task
        if task is not None and task.done():
            # It ended, but its done callback has not run yet (a start() can
            # come first in the loop's queue): settle it now, so its end is
            # logged and counted before a fresh task takes its place.
            self._supervise(task)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)
            self._task.add_done_callback(self._supervise)

    def _supervise(self, task: asyncio.Task) -> None:
        """The task's done callback, or start()'s when it comes first; the later
        call finds a fresh task in its place and does nothing."""
        if task is not self._task or self._closed:
            return
        if task.cancelled():
            exc, how = None, "cancelled"
        else:
            exc = task.exception()
            how = "returned" if exc is None else type(exc).__name__
        log.error("%s died (%s); starting a fresh one", self.name, how, exc_info=exc)
        self.restarts += 1
        self._task = None
        self.start()

    def wake(self) -> None:
        self._wakeup.set()

    async def close(self, timeout: float = 5.0) -> None:
        self._closed = True
        self._wakeup.set()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait([task], timeout=timeout)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _sleep(self, seconds: float) -> None:
        """Until `seconds` pass or `wake()` is called. A wake-up is used up here
        (unless closing), so the next sleep sleeps again; one that comes while
        the loop works still ends the next sleep at once."""
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        else:
            if not self._closed:
                self._wakeup.clear()

    async def _run(self) -> None:
        raise NotImplementedError


class Periodic(Supervised):
    """`job` every `interval` seconds, and at once when woken. A round that fails
    is logged (`Retrying`) and the next one comes on time; `delay_first` makes the first
    round wait an interval too (a job with nothing to do at start-up)."""

    def __init__(self, name: str, job: Callable[[], Awaitable[object]], interval: float,
                 *, delay_first: bool = False) -> None:
        super().__init__()
        self.name = name
        self._job = job
        self.interval = interval
        self._delay_first = delay_first

    async def _run(self) -> None:
        if self._delay_first:
            await self._sleep(self.interval)
        outage = Retrying(log, self.name, level=logging.ERROR)
        while not self._closed:
            try:
                await self._job()
            except Exception as exc:  # noqa: BLE001 - the next round comes on time
                outage.failed(exc)
            else:
                outage.ok()
            await self._sleep(self.interval)
