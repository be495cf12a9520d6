"""Targets: servers under test, each started as a pinned subprocess by the runner.

To plug in a new server, subclass ``Target`` and provide:

* ``key`` / ``title``           — short id used on the command line and in results,
* ``command(port)``             — argv that serves HTTP+WebSocket on 127.0.0.1:port,
* ``protocol``                  — a client adaptor from ``bench.eio_client``
                                  (``SocketIOProtocol`` subclass for Socket.IO servers),
* ``scenarios``                 — which scenario ids make sense for it,
* optionally ``available()``    — reason string when it cannot run here (→ skipped),
* optionally ``prepare(env)``   — one-time setup (install deps, migrate a database),
* optionally ``provision(env, specs)`` — create the accounts / rooms / conversations the
  scenario's users need (called after start, before clients connect; ``specs`` is the
  list of ``(user, group)`` the scenario will connect as).  The references need nothing.

``start``/``stop``/``pid`` are generic: the process runs in its own session so the
whole tree can be killed, pinned with ``taskset -c <server_cpu>``, and is considered
up when its TCP port accepts connections.
"""

import asyncio
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .eio_client import RawJsonProtocol, SocketIOProtocol

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = Path(__file__).resolve().parent / "peer"

# What the "-ref" targets run: main before encryption at rest and the richer messages
# were merged (6a25f80, sign-in merged). The merge of the richer messages alone (c353fba)
# does not start (an import cycle the next merge resolved), so the reference is the main
# before both: `parley-pg` against `parley-pg-ref` is today's tree against that one.
REFERENCE = "6a25f80"

_live: set[subprocess.Popen] = set()


def _kill_tree(proc: subprocess.Popen, grace: float = 3.0) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(grace)
    _live.discard(proc)


@atexit.register
def kill_all() -> None:
    """Last line of defence: no server outlives the runner (exceptions, Ctrl-C, SIGTERM)."""
    for proc in list(_live):
        _kill_tree(proc, grace=1.0)


@dataclass
class RunEnv:
    host: str = "127.0.0.1"
    server_cpu: int | None = 0  # None: no pinning (fewer than 2 cores)
    log_dir: Path = field(default_factory=lambda: ROOT / "bench-results" / "logs")
    start_timeout: float = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Target:
    key = "?"
    title = "?"
    protocol = None
    scenarios: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    # -- to implement -------------------------------------------------------------------
    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def available(self) -> str | None:
        return None

    async def prepare(self, env: RunEnv) -> None:
        pass

    async def provision(self, env: RunEnv, specs: list[tuple[str, str | None]],
                        **links) -> None:
        """``links`` (Parley): ``pairs=[(a, b)]`` direct conversations, ``groups={name:
        [members]}``, ``messages={conversation: (count, sender)}`` pre-seeded history."""

    # -- generic ------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        """Every process whose CPU/RSS counts as "the server" (one for most targets)."""
        return [self.proc.pid]

    def port_for(self, idx: int, user: str) -> int:
        """Which server port client ``idx`` connects to (multi-process targets)."""
        return self.port

    async def start(self, env: RunEnv) -> str:
        """Start the server; return its base URL once the port accepts connections."""
        self.port = free_port()
        argv = self.command(self.port)
        if env.server_cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(env.server_cpu), *argv]  # taskset execs: same pid
        self.proc = self._spawn(argv, env.log_dir / f"{self.key}.log")
        deadline = time.monotonic() + env.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.key} exited with {self.proc.returncode}; "
                                   f"see {env.log_dir / (self.key + '.log')}")
            try:
                _, w = await asyncio.open_connection(env.host, self.port)
                w.close()
                return f"http://{env.host}:{self.port}"
            except OSError:
                await asyncio.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.key} did not listen within {env.start_timeout:.0f}s")

    @staticmethod
    def _spawn(argv: list[str], log_path: Path, extra_env: dict | None = None,
               cwd: Path = ROOT) -> subprocess.Popen:
        # Popen only forks/execs (fast); own session so the whole tree can be killed
        log_path.parent.mkdir(parents=True, exist_ok=True)
        penv = dict(os.environ, PYTHONPATH=str(cwd), PYTHONUNBUFFERED="1", **(extra_env or {}))
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=penv, start_new_session=True)
        _live.add(proc)
        return proc

    def stop(self) -> None:
        if self.proc is not None:
            _kill_tree(self.proc)
            self.proc = None


class L0Target(Target):
    key = "l0"
    title = "L0 limit: raw aiohttp WebSocket relay"
    protocol = RawJsonProtocol()
    scenarios = ("s1", "s2", "s3")

    def command(self, port):
        return [sys.executable, "-m", "bench.refs.l0_aiohttp", str(port)]


class L1Target(Target):
    key = "l1"
    title = "L1 bare: stock python-socketio AsyncServer on aiohttp"
    protocol = SocketIOProtocol()
    scenarios = ("s1", "s2", "s3")

    def command(self, port):
        return [sys.executable, "-m", "bench.refs.l1_socketio", str(port)]


class L1GcTarget(L1Target):
    key = "l1-gc"
    title = "L1 with Parley's collector settings (gc.freeze, larger young generation)"

    def command(self, port):
        from app.realtime.engine import GC_THRESHOLDS  # Parley's own: the two stay alike

        return [*super().command(port), "--gc-tuned=" + ",".join(map(str, GC_THRESHOLDS))]


class PeerTarget(Target):
    key = "p"
    title = "P peer: Node socket.io v4 relay"
    protocol = SocketIOProtocol()
    scenarios = ("s1", "s2", "s3")

    def available(self):
        if not shutil.which("node") or not shutil.which("npm"):
            return "node/npm not found: P skipped"
        return None

    async def prepare(self, env):
        if (PEER_DIR / "node_modules" / "socket.io").is_dir():
            return
        proc = await asyncio.create_subprocess_exec(
            "npm", "ci", "--no-audit", "--no-fund", "--silent", cwd=PEER_DIR)
        try:
            async with asyncio.timeout(300):
                rc = await proc.wait()
        except TimeoutError:
            proc.kill()
            raise RuntimeError("npm ci in bench/peer timed out") from None
        if rc != 0:
            raise RuntimeError(f"npm ci in bench/peer failed ({rc})")

    def command(self, port):
        return ["node", str(PEER_DIR / "server.js"), str(port)]


def _all_targets() -> dict:
    from .parley import PARLEY_TARGETS

    return {t.key: t for t in (L0Target, L1Target, L1GcTarget, PeerTarget, *PARLEY_TARGETS)}


ALL_TARGETS = _all_targets()
DEFAULT_TARGETS = ("l0", "l1", "l1-gc", "p", "parley-sqlite", "parley-pg", "parley-redis2")
