"""Secrets every server process must share, kept in the database.

Without SECRET_KEY in the environment a process generates one (var/secret_key).
Processes of one checkout share that file; processes of several checkouts or
machines do not, and each would refuse the others' tokens. The generated
VAPID key (var/vapid_private_key) is the same: browsers' push subscriptions
are bound to one process's key. So when the database is one many processes
can share (PostgreSQL), the first process to start stores its keys there and
every process uses the stored ones. SQLite is local to one machine and one
checkout: the files are shared already.
"""

from __future__ import annotations

from tortoise.exceptions import IntegrityError

from app.models.server import ServerSecret

SECRET_KEY_NAME = "secret_key"
VAPID_KEY_NAME = "vapid_private_key"


async def shared_secret(name: str, candidate: str) -> str:
    """The stored secret `name`; stores `candidate` first if there is none (the
    first process to ask wins, later ones get its value)."""
    found = await ServerSecret.get_or_none(name=name)
    if found is not None:
        return found.value
    try:
        await ServerSecret.create(name=name, value=candidate)
    except IntegrityError:
        pass  # another process stored its own in between: use that one
    return (await ServerSecret.get(name=name)).value


def shares_database(database_url: str) -> bool:
    return not database_url.startswith("sqlite")
