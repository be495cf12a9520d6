"""`python -m app rotate-keys` and `python -m app erase-due`, outside the server."""

from __future__ import annotations

import sys
import time

from app.config import Settings


async def rotate_keys(settings: Settings, *, batch: int = 500) -> int:
    from app import crypto
    from app.db import init_db
    from app.services import dataprot

    ring = crypto.ring_for(settings.data_keys)
    ctx = await init_db(settings.database_url)
    last = 0.0

    def progress(what: str, done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 1 or done >= total:
            last = now
            print(f"rotate-keys: {what} {done}/{total}", file=sys.stderr, flush=True)

    try:
        result = await dataprot.rotate(ring, batch=batch, progress=progress,
                                       media=_media_rotation(settings, ring, progress))
    finally:
        await ctx.close_connections()
    print(f"rotate-keys: {result['accounts']} accounts and {result['media']} media files "
          f"re-encrypted with key {ring.current.kid!r}", flush=True)
    if result["media_left"]:
        print(f"rotate-keys: {result['media_left']} media files could not be re-encrypted "
              "(see the log); run again", flush=True)
        return 1
    if result["retired"]:
        print("rotate-keys: no data needs key(s) "
              f"{', '.join(result['retired'])} any more; they may be removed from DATA_KEYS",
              flush=True)
    return 0


def _media_rotation(settings: Settings, ring, progress):
    async def run() -> tuple[int, int]:
        from app.services.media import build_storage

        rotate = getattr(build_storage(settings), "rotate_all", None)
        if rotate is None:
            return 0, 0
        return await rotate(ring, progress=progress)

    return run


async def erase_due(settings: Settings) -> int:
    from app.db import init_db
    from app.deps import Deps
    from app.server import activate_data_keys
    from app.services import erasure
    from app.services.media import build_storage

    ctx = await init_db(settings.database_url)
    deps = Deps(settings=settings)
    deps.extras["storage"] = storage = build_storage(settings)
    try:
        await activate_data_keys(settings)
        erased = await erasure.erase_due(deps)
    finally:
        await storage.aclose()
        await ctx.close_connections()
    print(f"erased {erased} account{'s' if erased != 1 else ''}", flush=True)
    return 0
