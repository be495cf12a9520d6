"""The data protection jobs every process runs (started and stopped by create_app):
due account erasures and data exports."""

from __future__ import annotations

import asyncio

from app.deps import Deps

_WORKERS = "privacy_workers"


async def start(deps: Deps) -> None:
    from app.services import erasure, export

    exporter = deps.extras["export_worker"] = export.export_worker(deps)
    workers = deps.extras[_WORKERS] = [erasure.erasure_worker(deps), exporter]
    for worker in workers:
        worker.start()


async def stop(deps: Deps) -> None:
    deps.extras.pop("export_worker", None)
    # Together: each may let its round finish, and shutdown waits for the longest only.
    await asyncio.gather(*(worker.close() for worker in deps.extras.pop(_WORKERS, [])))
