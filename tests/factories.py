"""Build state through the real services and connect real clients."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import socketio

from app.services import accounts

_counter = itertools.count(1)


@dataclass
class Person:
    user_id: str
    username: str
    email: str
    password: str
    access_token: str
    refresh_token: str
    display_name: str
    sockets: list = field(default_factory=list)

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.access_token}"}


async def make_user(deps, name: str | None = None, **extra) -> Person:
    n = next(_counter)
    name = name or f"user{n}"
    email = extra.pop("email", f"{name.lower()}{n}@example.org")
    password = extra.pop("password", "correct horse battery")
    data = accounts.RegisterIn(
        email=email, password=password, display_name=name, **extra
    )
    result = await accounts.register(deps, data, accounts.Client(ip="127.0.0.1", device="test"))
    return Person(
        user_id=result["user"]["id"],
        username=result["user"]["username"],
        email=result["user"]["email"],
        password=password,
        access_token=result["access_token"],
        refresh_token=result["refresh_token"],
        display_name=name,
    )


class EventLog:
    """Collects every server→client event of one socket, with await helpers."""

    def __init__(self) -> None:
        self.items: list[tuple[str, object]] = []
        self._cond = asyncio.Condition()

    async def add(self, name, data) -> None:
        async with self._cond:
            self.items.append((name, data))
            self._cond.notify_all()

    def of(self, name: str) -> list:
        return [d for n, d in self.items if n == name]

    async def wait_for(self, name: str, count: int = 1, timeout: float = 5.0,
                       where=None) -> list:
        def matching():
            return [d for d in self.of(name) if where is None or where(d)]

        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(lambda: len(matching()) >= count), timeout)
            return matching()


async def connect(base_url: str, token: str, *, transports=("websocket",)) -> socketio.AsyncClient:
    """A real python-socketio client on /chat; `client.log` records what it receives."""
    sio = socketio.AsyncClient(reconnection=False)
    log = EventLog()

    async def catch_all(event, *args):
        await log.add(event, args[0] if args else None)

    sio.on("*", catch_all, namespace="/chat")
    sio.log = log  # type: ignore[attr-defined]
    await sio.connect(base_url, namespaces=["/chat"], auth={"token": token},
                      transports=list(transports), wait_timeout=5)
    return sio


async def call(sio: socketio.AsyncClient, event: str, data=None, timeout: float = 10.0):
    return await sio.call(event, data, namespace="/chat", timeout=timeout)


async def make_contacts(deps, a: Person, b: Person) -> None:
    """Make a and b mutual contacts through the real services (request, then accept)."""
    from app.services import contacts

    out = await contacts.send_request(deps, a.user_id, contacts.RequestIn(user_id=b.user_id))
    if out["request"]["status"] == "pending":
        await contacts.accept(deps, b.user_id, out["request"]["id"])


async def until(predicate, what: str, timeout: float = 20.0, step=None) -> None:
    """Wait for `predicate()` to hold (calling `step()` between looks, if given):
    background work (a supervisor's restart, a grace timer) runs when the loop gets
    to it, later on a loaded machine."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        if step is not None:
            await step()
        await asyncio.sleep(0.01)
