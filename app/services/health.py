import asyncio

from tortoise import Tortoise

from app.deps import Deps


async def readiness(deps: Deps) -> dict[str, str]:
    checks = {"database": "ok"}
    try:
        await asyncio.wait_for(Tortoise.get_connection("default").execute_query("SELECT 1"), 3)
    except Exception as exc:  # any failure means "not ready", with the reason
        checks["database"] = f"error: {type(exc).__name__}"
    if deps.redis is not None:
        try:
            await asyncio.wait_for(deps.redis.ping(), 3)
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    return checks
