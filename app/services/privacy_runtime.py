"""The data protection jobs every process runs (started and stopped by create_app):
due account erasures and data exports."""

from __future__ import annotations

import asyncio
import contextlib

from app.deps import Deps

_TASKS = "privacy_tasks"


async def start(deps: Deps) -> None:
    from app.services import erasure, export

    deps.extras["export_wakeup"] = asyncio.Event()
    deps.extras[_TASKS] = [asyncio.create_task(erasure.erasure_forever(deps)),
                           asyncio.create_task(export.export_forever(deps))]


async def stop(deps: Deps) -> None:
    for task in deps.extras.pop(_TASKS, []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
