"""The database statements one task sends. app/db.py's StatementCounter counts
the whole process's, the background workers' included (and on SQLite it counts
on aiosqlite's thread, where no task is known), so a count taken around an
await can include a worker's poll that happened meanwhile. This counts the
statements the current task hands to Tortoise's database client itself (ORM
queries and raw SQL alike); what goes straight to an asyncpg connection, as
the message writer's statements do, is not counted."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from tortoise import Tortoise

# The client methods every statement goes through (ORM queries included).
_METHODS = ("execute_query", "execute_query_dict", "execute_insert", "execute_many",
            "execute_script")


class Tally:
    def __init__(self, task: asyncio.Task | None) -> None:
        self.task = task
        self.sent = 0


@contextlib.contextmanager
def statements_of_this_task():
    """`with statements_of_this_task() as tally: await …` → `tally.sent`: the
    statements the current task sent in the block (not those of tasks it starts)."""
    tally = Tally(asyncio.current_task())
    cls = type(Tortoise.get_connection("default"))
    saved = {name: cls.__dict__.get(name) for name in _METHODS}

    def counted(name):
        real = getattr(cls, name)

        @functools.wraps(real)
        async def method(self, *args, **kwargs):
            if asyncio.current_task() is tally.task:
                tally.sent += 1
            return await real(self, *args, **kwargs)

        return method

    for name in _METHODS:
        setattr(cls, name, counted(name))
    try:
        yield tally
    finally:
        for name, method in saved.items():
            if method is None:
                delattr(cls, name)
            else:
                setattr(cls, name, method)
