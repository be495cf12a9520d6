"""Real worker processes, a pausable TCP proxy, a private redis-server, clients
that keep what they were acked and what they hold, and the exactly-once checker.

Used by tests/test_cluster.py. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import socketio

from app.config import ROOT
from app.services import conversations as convs
from tests.factories import make_contacts
from tests.ports import free_port, free_run

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")

# The marks of every suite that runs real worker processes.
CLUSTER_MARKS = [
    pytest.mark.skipif(
        not (TEST_DATABASE_URL.startswith("postgres") and TEST_REDIS_URL),
        reason="cluster tests need TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL"),
    pytest.mark.timeout(120),
]

API = "/api/v1"

SECRET = "cluster-test-secret-" + "x" * 40


# --- PostgreSQL ----------------------------------------------------------------------


def _dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


async def admin_execute(admin_url: str, sql: str, *args) -> None:
    """One statement on its own connection to the server of `admin_url`."""
    conn = await asyncpg.connect(_dsn(admin_url), timeout=10)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def create_database(admin_url: str) -> str:
    name = f"parley_cluster_{uuid.uuid4().hex[:10]}"
    await admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    return admin_url.rpartition("/")[0] + "/" + name


async def drop_database(admin_url: str, url: str) -> None:
    name = url.rpartition("/")[2]
    await admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def database_refusing(url: str):
    """The database at `url` refuses new connections and has lost its open ones
    (superusers included, unlike a CONNECTION LIMIT), until the block ends."""
    name = url.rpartition("/")[2]
    await admin_execute(TEST_DATABASE_URL, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        await admin_execute(TEST_DATABASE_URL, "SELECT pg_terminate_backend(pid) "
                            "FROM pg_stat_activity WHERE datname = $1", name)
        yield
    finally:
        await admin_execute(TEST_DATABASE_URL,
                            f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def via(url: str, port: int) -> str:
    """The same database URL, reached through 127.0.0.1:port."""
    scheme, rest = url.split("://", 1)
    creds, _, hostpart = rest.rpartition("@")
    path = hostpart.split("/", 1)[1]
    return f"{scheme}://{creds + '@' if creds else ''}127.0.0.1:{port}/{path}"


# --- worker processes ----------------------------------------------------------------


class Worker:
    """`python -m app serve` in its own process group, log in a file."""

    def __init__(self, name: str, env: dict, log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port",
             str(self.port)],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.url + "/healthz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy in {timeout}s: {self.tail()}")

    async def metric(self, name: str) -> float:
        async with aiohttp.ClientSession() as http, http.get(self.url + "/metrics") as r:
            text = await r.text()
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while await self.metric("parley_redis_subscribed") != 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} never subscribed to Redis: {self.tail()}")
            await asyncio.sleep(0.05)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


# Limits only the tests about limits meet. Servers that share the machine's Redis
# count per-address limits there across test runs (all from 127.0.0.1), so an
# hour-long sign-up window would refuse the next run's users.
GENEROUS_LIMITS = {
    "SEND_RATE_LIMIT": "100000/1", "SOCKET_EVENT_RATE": "1000000/1",
    "LOGIN_RATE_LIMIT": "1000/60", "REGISTER_RATE_LIMIT": "100000/60",
    "REGISTER_GLOBAL_RATE_LIMIT": "100000/60",
}


def worker_env(database_url: str, redis_url: str, tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_", "REDIS_", "SMTP_", "TEST_"))}
    env.update(
        DATABASE_URL=database_url, REDIS_URL=redis_url, SECRET_KEY=SECRET,
        MEDIA_ROOT=str(tmp / "media"), LOG_LEVEL="WARNING",
        PRESENCE_GRACE_SECONDS="0.3", PYTHONUNBUFFERED="1", **GENEROUS_LIMITS,
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


# --- a TCP proxy the test can cut ----------------------------------------------------


class TcpProxy:
    """127.0.0.1:port → target. `cut()` drops every connection and refuses new ones
    (the database is "unreachable"); `restore()` listens again on the same port.
    `freeze()` keeps every connection open and accepts new ones but passes no
    byte either way (the database, or the network to it, stopped answering
    without refusing); `thaw()` lets what was held through."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.flowing = asyncio.Event()
        self.flowing.set()

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader, writer) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers.update((writer, up_w))

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        tasks = {asyncio.create_task(pipe(reader, up_w)), asyncio.create_task(pipe(up_r, writer))}
        self.pipes |= tasks
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # The loop is closing under a held connection: asyncio would log a
            # cancelled connection handler as an error.
            for t in tasks:
                t.cancel()
        finally:
            self.pipes -= tasks
            self.writers.difference_update((writer, up_w))

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for w in list(self.writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        for t in list(self.pipes):
            t.cancel()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()


# --- a private redis-server ----------------------------------------------------------


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def start(self) -> None:
        self.spawn()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# --- clients -------------------------------------------------------------------------


class Device:
    """One socket of one user: everything it received, and a way to wait for it."""

    def __init__(self, user, url: str) -> None:
        self.user = user
        self.url = url
        self.events: list[tuple[str, object]] = []
        self.cond = asyncio.Condition()
        self.sio: socketio.AsyncClient | None = None
        self.gone = asyncio.Event()

    async def connect(self, url: str | None = None) -> Device:
        self.url = url or self.url
        sio = socketio.AsyncClient(reconnection=False)

        async def catch_all(event, *args):
            async with self.cond:
                self.events.append((event, args[0] if args else None))
                self.cond.notify_all()

        async def on_disconnect(*_):
            self.gone.set()

        sio.on("*", catch_all, namespace="/chat")
        sio.on("disconnect", on_disconnect, namespace="/chat")
        self.gone = asyncio.Event()
        await sio.connect(self.url, namespaces=["/chat"], auth={"token": self.user.access_token},
                          transports=["websocket"], wait_timeout=10)
        self.sio = sio
        return self

    async def call(self, event: str, data=None, timeout: float = 10.0):
        """The ack, or raises ConnectionError as soon as the socket is gone."""
        if self.sio is None or not self.sio.connected:
            raise ConnectionError("not connected")
        call = asyncio.ensure_future(self.sio.call(event, data, namespace="/chat",
                                                   timeout=timeout))
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            done, _ = await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if call in done:
            return call.result()
        call.cancel()
        raise ConnectionError("socket closed before the ack")

    def of(self, name: str, where=None) -> list:
        return [d for n, d in self.events if n == name and (where is None or where(d))]

    async def wait_for(self, name: str, where=None, count: int = 1, timeout: float = 5.0):
        async with self.cond:
            await asyncio.wait_for(
                self.cond.wait_for(lambda: len(self.of(name, where)) >= count), timeout)
        return self.of(name, where)

    async def close(self) -> None:
        if self.sio is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sio.disconnect(), 5)


def text(cid: str, body: str, cmid: str | None = None) -> dict:
    return {"conversation_id": cid, "client_msg_id": cmid or uuid.uuid4().hex,
            "type": "text", "text": body}


async def sync_from(device: Device, cid: str, cursor: int, max_pages: int = 100) -> list[dict]:
    """Every message after `cursor`, page by page (what a reconnecting client does)."""
    out: list[dict] = []
    for _ in range(max_pages):
        ack = await device.call("sync", {"cursors": {cid: cursor}, "limit": 200})
        assert ack["ok"], ack
        convs = [c for c in ack["conversations"] if c["id"] == cid]
        if not convs or not convs[0]["messages"]:
            return out
        out += convs[0]["messages"]
        cursor = convs[0]["messages"][-1]["seq"]
        if not convs[0]["has_more"]:
            return out
    raise AssertionError("sync did not finish")


class Holder:
    """What one member's client holds for a conversation: live events merged with
    sync from the highest contiguous seq, keyed by seq as a real client would."""

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.by_seq: dict[int, dict] = {}
        self.conflicts: list[tuple[dict, dict]] = []

    def add(self, msg: dict) -> None:
        if msg.get("conversation_id") != self.cid:
            return
        old = self.by_seq.get(msg["seq"])
        if old is not None and old["id"] != msg["id"]:
            self.conflicts.append((old, msg))
        self.by_seq[msg["seq"]] = msg

    def add_live(self, devices: list[Device]) -> None:
        for d in devices:
            for m in d.of("message:new"):
                self.add(m)

    def cursor(self) -> int:
        n = 0
        while n + 1 in self.by_seq:
            n += 1
        return n

    async def catch_up(self, device: Device) -> None:
        for m in await sync_from(device, self.cid, self.cursor()):
            self.add(m)


def check_exactly_once(acked: dict[str, dict], holder: Holder, who: str) -> None:
    """Every acked message is held exactly once, at the seq it was acked with,
    and the conversation reads 1..N in order with one message per client_msg_id."""
    assert not holder.conflicts, f"{who}: two messages at one seq: {holder.conflicts[:2]}"
    seqs = sorted(holder.by_seq)
    assert seqs == list(range(1, len(seqs) + 1)), f"{who}: seq gaps {seqs[:5]}…{seqs[-5:]}"
    ids = [holder.by_seq[s]["id"] for s in seqs]
    assert len(ids) == len(set(ids)), f"{who}: a message id at two seqs"
    keys = [(holder.by_seq[s]["sender_id"], holder.by_seq[s]["client_msg_id"]) for s in seqs
            if holder.by_seq[s]["client_msg_id"]]
    assert len(keys) == len(set(keys)), f"{who}: a client_msg_id stored twice"
    for cmid, msg in acked.items():
        held = holder.by_seq.get(msg["seq"])
        assert held is not None and held["id"] == msg["id"] and held["client_msg_id"] == cmid, (
            f"{who}: acked message {cmid} (seq {msg['seq']}) missing or different: {held}")


# --- scripts/cluster as a whole ------------------------------------------------------


class ClusterScript:
    """`scripts/cluster --workers n` (workers + nginx) in its own process group."""

    def __init__(self, n: int, env: dict, tmp: Path, args: tuple[str, ...] = ()) -> None:
        self.front = free_port()
        self.base = free_run(n)
        self.env = env
        self.tmp = tmp
        self.log_path = tmp / "cluster.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [str(ROOT / "scripts" / "cluster"), "--workers", str(n), "--port", str(self.front),
             "--base-port", str(self.base), "--run-dir", str(tmp / "run"), *args],
            cwd=ROOT, env=env, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.workers = [self._view(f"cw{i}", self.base + i) for i in range(n)]
        self.nginx = self._view("nginx", self.front)

    def _view(self, name: str, port: int) -> Worker:
        """A Worker handle on one port of the cluster (health, metrics)."""
        w = Worker(name, self.env, self.tmp)
        w.port, w.url, w.proc, w.log_path = port, f"http://127.0.0.1:{port}", self.proc, \
            self.log_path
        return w

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            return -9
        finally:
            self.log.close()

    def tail(self) -> str:
        return self.log_path.read_bytes()[-3000:].decode(errors="replace")


def has_nginx() -> bool:
    return bool(shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"))


# --- REST on a worker ----------------------------------------------------------------


async def rest(worker: Worker, method: str, path: str, user, body=None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.request(
            method, worker.url + API + path, json=body, headers=user.headers) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else {})


async def direct_chat(deps, a, b) -> str:
    await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return str(conv.id)
