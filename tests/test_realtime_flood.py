"""One connection flooding events must not delay anyone else
(app/realtime/limits.py, AsyncServer._handle_event in app/realtime/engine.py).

A raw WebSocket client sends 100 events every 10 ms (`typing` and
`message:send`, alternating, all valid) for 3 s while another user sends
messages one after the other and /healthz is polled. The other user's ack p99
stays under 100 ms, /healthz keeps answering, and the flooder is throttled
(`rate_limited` acks with `retry_after`) or disconnected, never served more
than its budget.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter

import aiohttp
import pytest

from app.config import Settings
from app.realtime.limits import FLOOD_HOLD, ConnectionLimits
from tests.factories import call, connect, make_contacts, make_user

EIO_WS = "/socket.io/?EIO=4&transport=websocket"
FLOOD_SECONDS = 3.0
DEFAULTS = Settings()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


async def direct_chat(deps, a, b) -> str:
    from app.services import conversations as convs

    await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return str(conv.id)


class Flooder:
    """A raw Socket.IO client that writes event frames as fast as asked and
    counts the acks it gets back by outcome."""

    def __init__(self) -> None:
        self.acks: Counter = Counter()
        self.retry_after: set = set()
        self.sent = 0
        self.disconnected = False
        self.kicked = False
        self.connections = 0
        self.readers: list = []

    async def open(self, session, base_url: str, token: str) -> None:
        self.session, self.base_url, self.token = session, base_url, token
        self.connections += 1
        self.ws = ws = await session.ws_connect(base_url + EIO_WS)
        assert (await ws.receive_str(timeout=5))[0] == "0"
        await ws.send_str("40/chat," + json.dumps({"token": token}))
        while not (await ws.receive_str(timeout=5)).startswith("40/chat,"):
            pass
        self.readers.append(asyncio.ensure_future(self._read(ws)))

    async def _read(self, ws) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.data
            if data == "2":
                await ws.send_str("3")
            elif data.startswith("43/chat,"):
                body = data[len("43/chat,"):]
                ack = json.loads(body[body.index("["):])[0]
                if ack["ok"]:
                    self.acks["ok"] += 1
                else:
                    self.acks[ack["error"]["code"]] += 1
                    if "details" in ack["error"]:
                        self.retry_after.add(ack["error"]["details"].get("retry_after"))
            elif data.startswith("41/chat"):
                self.kicked = True  # the server's namespace DISCONNECT
        self.disconnected = True

    async def flood(self, cid: str, seconds: float) -> None:
        """Until `seconds` have passed; a persistent flooder: it reconnects when dropped."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            if self.ws.closed:
                await self.open(self.session, self.base_url, self.token)
            try:
                for _ in range(100):
                    n = self.sent = self.sent + 1
                    if n % 2:
                        body = ["typing", {"conversation_id": cid, "state": "typing"}]
                    else:
                        body = ["message:send", {"conversation_id": cid,
                                                 "client_msg_id": f"flood-{n}", "text": "x"}]
                    await self.ws.send_str(f"42/chat,{n}" + json.dumps(body))
            except (ConnectionError, RuntimeError):
                break
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait(self.readers, timeout=5)


async def _victim(base_url, token, cid, stop: asyncio.Event) -> list[float]:
    """Sends one message after the other until `stop`; returns ack latencies (s)."""
    sio = await connect(base_url, token)
    latencies = []
    n = 0
    try:
        while not stop.is_set():
            n += 1
            started = time.perf_counter()
            try:
                ack = await call(sio, "message:send", {"conversation_id": cid,
                                                       "client_msg_id": f"victim-{n}",
                                                       "text": f"hello {n}"}, timeout=20)
                assert ack["ok"], ack
            except TimeoutError:
                pass  # counted below as the full wait
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
    finally:
        await sio.disconnect()
    return latencies


async def _health(session, base_url, stop: asyncio.Event) -> list[float]:
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(base_url + "/healthz",
                               timeout=aiohttp.ClientTimeout(total=20)) as r:
            assert r.status == 200
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.1)
    return latencies


@pytest.fixture
def settings_overrides(request):
    # The shipped limits (conftest raises the rate for every other test).
    return {"socket_event_rate": DEFAULTS.socket_event_rate,
            "socket_max_inflight": DEFAULTS.socket_max_inflight,
            "socket_flood_disconnect": getattr(request, "param", DEFAULTS.socket_flood_disconnect)}


# Dropped: after 20 refusals (the shipped 100 take ~5 s of flooding: longer than the
# test), held unread for FLOOD_HOLD, then disconnected.
# Alone on the machine (`serial`): its bound is the victims' latency, which other
# tests running at the same time would add to.
@pytest.mark.serial
@pytest.mark.parametrize("settings_overrides", [20, 0],
                         ids=["flooder-dropped", "flooder-kept"], indirect=True)
async def test_a_flooding_socket_does_not_delay_other_users(deps, base_url, settings,
                                                             settings_overrides):
    flooder, victim, peer = [await make_user(deps, n) for n in ("flooder", "victim", "peer")]
    flood_cid = await direct_chat(deps, flooder, peer)
    victim_cid = await direct_chat(deps, victim, peer)
    f = Flooder()
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        await f.open(session, base_url, flooder.access_token)
        flooding = asyncio.ensure_future(f.flood(flood_cid, FLOOD_SECONDS))
        await asyncio.sleep(0.1)  # the flood is on before the victim starts
        victim_task = asyncio.ensure_future(_victim(base_url, victim.access_token,
                                                    victim_cid, stop))
        health_task = asyncio.ensure_future(_health(session, base_url, stop))
        await flooding
        stop.set()
        acks = await victim_task
        health = await health_task
        await asyncio.sleep(0.2)  # the last acks of the flooder
        if settings.socket_flood_disconnect:  # held unread, then told to go
            for _ in range(int((FLOOD_HOLD + 5) / 0.1)):
                if f.kicked and f.disconnected:
                    break
                await asyncio.sleep(0.1)
        await f.close()

    limits = ConnectionLimits.from_settings(settings)
    assert len(acks) >= 20, f"the victim got only {len(acks)} acks in {FLOOD_SECONDS} s of flood"
    victim_p99 = p99(acks)
    print(f"victim acks={len(acks)} p99={victim_p99 * 1000:.1f} ms; healthz max="
          f"{max(health) * 1000:.1f} ms; flooder sent={f.sent} acks={dict(f.acks)} "
          f"connections={f.connections}")
    assert victim_p99 < 0.100, f"victim ack p99 {victim_p99 * 1000:.0f} ms"
    assert health and max(health) < 1.0, f"/healthz took up to {max(health):.2f} s"
    # Throttled or dropped; never served beyond its budget.
    assert f.acks["rate_limited"] > 0 or f.disconnected
    # Its user's budget, however often it reconnected.
    budget = limits.burst + limits.per_second * (FLOOD_SECONDS + 1) + limits.max_inflight
    assert f.acks["ok"] <= budget
    if f.acks["rate_limited"]:
        assert f.retry_after and all(isinstance(s, int) and s >= 1 for s in f.retry_after)
    if settings.socket_flood_disconnect:
        assert f.kicked and f.disconnected and f.connections == 1
    else:
        assert f.connections == 1
        # Kept connected: refused all along, and most of its flood never even read.
        assert f.acks["rate_limited"] >= limits.per_second * (FLOOD_SECONDS - 1)
        assert f.acks["ok"] + f.acks["rate_limited"] < f.sent / 10


async def test_a_burst_is_served_in_turn_never_more_than_max_inflight_at_once(
        deps, base_url, settings, monkeypatch):
    """Over SOCKET_MAX_INFLIGHT the socket is simply not read: a burst is served
    in turn, nothing refused, and at no time more events running than the limit."""
    from app.realtime.chat import EVENTS

    running = 0
    most = 0

    async def slow(deps, conn, payload):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        return {"ok": True, "n": payload["n"]}

    monkeypatch.setitem(EVENTS, "test:slow", slow)
    user = await make_user(deps)
    sio = await connect(base_url, user.access_token)
    try:
        acks = await asyncio.gather(*(call(sio, "test:slow", {"n": i}) for i in range(40)))
    finally:
        await sio.disconnect()
    assert [a["n"] for a in acks if a["ok"]] == list(range(40))
    assert most == settings.socket_max_inflight


@pytest.mark.parametrize("settings_overrides", [10], indirect=True)
async def test_repeated_namespace_connects_spend_the_same_budget(deps, base_url, settings,
                                                                  settings_overrides):
    """Each CONNECT authenticates (a database read): repeating it on one connection is
    refused beyond the bucket, and a connection that keeps at it is dropped."""
    user = await make_user(deps)
    limits = ConnectionLimits.from_settings(settings)
    accepted = refused = 0
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(base_url + EIO_WS)
        assert (await ws.receive_str(timeout=5))[0] == "0"
        hello = "40/chat," + json.dumps({"token": user.access_token})
        for _ in range(400):
            await ws.send_str(hello)
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            if msg.data.startswith("40/chat,"):
                accepted += 1
            elif msg.data.startswith("44/chat,") and "rate_limited" in msg.data:
                refused += 1
        assert ws.closed
    assert accepted <= limits.burst + settings.socket_flood_disconnect + 2
    assert refused >= 1
