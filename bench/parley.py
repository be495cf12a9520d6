"""Parley targets: the real server (``python -m app serve``) on SQLite, PostgreSQL, and
two processes on PostgreSQL + Redis.

* ``ParleyProtocol`` — the ``/chat`` Socket.IO adaptor: ``auth={"token": …}``,
  ``message:send`` {conversation_id, client_msg_id "<src>-<step>-<n>", type "text",
  text "<src> <step> <n> <ts> <pad>"}, receives ``message:new`` and parses the four
  numbers back out of ``text``.  Acks carrying ``"ok":false`` are counted as ``nacked``,
  those refusing the send as ``busy`` also as ``refused`` (not lost: the sender was told).
  ``ParleyClient.call(event, data)`` does request/ack round trips (``sync``, ``history``).
* Databases: a migrated *template* is made once per run (``prepare``); every scenario
  gets a fresh copy (SQLite: file copy; PostgreSQL: ``CREATE DATABASE … TEMPLATE``),
  dropped after the scenario.  ``provision`` seeds accounts, sessions, contacts and
  conversations straight into the database (``bench/parley_seed.py``, own process) and
  issues access tokens for the sessions — no REST, no argon2.
"""

import asyncio
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec

from .eio_client import PAD, SocketIOClient, SocketIOProtocol
from .parley_seed import pair_key
from .targets import REFERENCE, ROOT, Target, _kill_tree, free_port
from .ws import frame

SECRET_KEY = "parley-bench-" + "k" * 48  # fixed: tokens are minted by the seeding step
PG_ADMIN = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q", "-v",
            "ON_ERROR_STOP=1", "-c"]
PG_URL = "postgres://postgres@127.0.0.1:5432/{}"


class ParleyMsg(msgspec.Struct):
    conversation_id: str
    seq: int
    text: str


_new_msg = msgspec.json.Decoder(tuple[str, ParleyMsg]).decode
# A conforming client syncs when a seq is skipped (docs/protocol.md); message:new can
# arrive out of seq order under concurrency, so wait this long for the missing one first.
GAP_GRACE_S = 0.5
# Delivered receipts (`--delivered`): like the web client, one `message:delivered` per
# conversation per this many seconds, for the highest seq received.
DELIVERED_BATCH_S = 2.0


class ParleyClient(SocketIOClient):
    """SocketIOClient for /chat: message:new → Recorder; acks → pending sends or calls."""

    send_delivered = False  # scripts/bench --delivered
    send_read = False  # the cpu-read scenario: every message read as it arrives

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.calls: dict[int, asyncio.Future] = {}
        self.seqs: dict[str, set[int]] | None = None  # S5: every seq seen per conversation
        self.last_seq: dict[str, int] = {}
        self.hw: dict[str, int] = {}  # highest seq with every seq up to it seen
        self.above: dict[str, set[int]] = {}  # seen seqs above hw (a gap below them)
        self._gap_check = False
        self._syncing = False
        self._sync_again = False
        self._undelivered: dict[str, int] = {}

    def note_delivered(self, cid: str, seq: int) -> None:
        if seq > self._undelivered.get(cid, 0):
            if not self._undelivered:
                asyncio.get_running_loop().call_later(DELIVERED_BATCH_S, self._flush_delivered)
            self._undelivered[cid] = seq

    def mark_read(self, cid: str, seq: int) -> None:
        """`message:read` up to `seq`, as the web client sends it for each
        message that arrives in the chat it has open."""
        self.ack_id = aid = self.ack_id + 1
        self.calls[aid] = asyncio.get_running_loop().create_future()  # ack ignored
        ns = self.proto.namespace.encode()
        self.send(b"42" + ns + b",%d" % aid + msgspec.json.encode(
            ["message:read", {"conversation_id": cid, "seq": seq}]))

    def _flush_delivered(self) -> None:
        batch, self._undelivered = self._undelivered, {}
        if self.closed:
            return
        ns = self.proto.namespace.encode()
        for cid, seq in batch.items():
            self.ack_id = aid = self.ack_id + 1
            self.calls[aid] = asyncio.get_running_loop().create_future()  # ack ignored
            self.send(b"42" + ns + b",%d" % aid + msgspec.json.encode(
                ["message:delivered", {"conversation_id": cid, "up_to_seq": seq}]))

    def send_msg(self, tmpl: bytes, step: int, n: int, ts: int) -> None:
        self.ack_id = aid = self.ack_id + 1
        self.pending[aid] = ts
        self.transport.write(frame(tmpl % (aid, step, n, step, n, ts)))

    def on_text(self, p: bytes) -> None:
        if p[:2] not in (b"42", b"43"):
            super().on_text(p)  # pings, connect, errors, disconnect
            return
        body = p[2:]
        if body[:1] == b"/":
            body = body[body.index(b",") + 1 :]
        if p[1] == 0x32:  # EVENT
            if not body.startswith(b'["message:new"'):
                if body.startswith(b'["resync"'):  # live feed had a gap: protocol says sync
                    self.rec.resyncs += 1
                    self.start_sync()
                return  # presence, conversation:updated, read marks …
            try:
                _, m = _new_msg(body)
                src, s, n, ts, _rest = m.text.split(" ", 4)
                got = (int(src), int(s), int(n), int(ts))
            except (msgspec.DecodeError, ValueError):
                self.rec.undecodable += 1
                return
            if m.seq < self.last_seq.get(m.conversation_id, 0):
                self.rec.out_of_order += 1
            self.note_seq(m.conversation_id, m.seq)
            if self.send_delivered:
                self.note_delivered(m.conversation_id, m.seq)
            if self.send_read and not self.closed:
                self.mark_read(m.conversation_id, m.seq)
            if got[0] != self.idx:  # sync may return my own: not a delivery
                self.rec.on_msg(self.idx, *got)
            return
        i = body.index(b"[")  # ACK <id>[…]
        aid = int(body[:i])
        fut = self.calls.pop(aid, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(body[i:])
            return
        if body[i : i + 12] == b'[{"ok":false':
            self.rec.nacked += 1
            if b'"code":"busy"' in body[i : i + 60]:
                self.rec.refused += 1
            if self.rec.first_nack is None:
                self.rec.first_nack = body[i : i + 200].decode(errors="replace")
        else:  # my own message: its seq is mine too (no echo), so no false gap later
            j = body.find(b'"conversation_id":"')
            k = body.find(b'"seq":', j)
            if j > 0 and k > 0:
                self.note_seq(body[j + 19 : j + 55].decode(),
                              int(body[k + 6 : body.index(b",", k)]))
        self.rec.on_ack(self.pending, aid)

    def note_seq(self, cid: str, seq: int) -> None:
        if seq > self.last_seq.get(cid, 0):
            self.last_seq[cid] = seq
        if self.seqs is not None:
            self.seqs.setdefault(cid, set()).add(seq)
        hw = self.hw.get(cid, 0)
        if seq == hw + 1:
            above = self.above.get(cid)
            hw += 1
            while above and hw + 1 in above:
                hw += 1
                above.discard(hw)
            self.hw[cid] = hw
        elif seq > hw + 1:
            self.above.setdefault(cid, set()).add(seq)
            if not self._gap_check:  # a seq is missing: sync if it is still missing soon
                self._gap_check = True
                asyncio.get_running_loop().call_later(GAP_GRACE_S, self._check_gaps)

    def _check_gaps(self) -> None:
        self._gap_check = False
        if any(self.above.values()) and not self.closed:
            self.rec.gap_syncs += 1
            self.start_sync()

    def start_sync(self) -> None:
        """What a conforming client does on `resync` or a seq gap: `sync` with its cursors
        (one at a time per client; messages found count as deliveries, `recovered`)."""
        if self._syncing:
            self._sync_again = True
            return
        self._syncing = True
        asyncio.ensure_future(self._sync_loop())

    async def _sync_loop(self) -> None:
        try:
            for _ in range(50):
                self._sync_again = False
                if self.closed:
                    return
                r = await self.call("sync", {"cursors": dict(self.hw), "limit": 200})
                for c in r.get("conversations", ()):
                    for m in c.get("messages", ()):
                        try:
                            src, s, n, ts, _rest = m["text"].split(" ", 4)
                            got = (int(src), int(s), int(n), int(ts))
                        except (KeyError, ValueError):
                            continue
                        self.note_seq(c["id"], m["seq"])
                        if got[0] == self.idx:
                            continue
                        before = self.rec.received
                        self.rec.on_msg(self.idx, *got)
                        self.rec.recovered += self.rec.received - before
                    if c.get("has_more"):
                        self._sync_again = True
                if not self._sync_again:
                    return
        except Exception:  # noqa: BLE001 - counted; the step then shows what is missing
            self.rec.sync_errors += 1
        finally:
            self._syncing = False

    async def call(self, event: str, data, timeout: float = 15.0):
        """Emit with an ack id and return the decoded first ack argument."""
        self.ack_id = aid = self.ack_id + 1
        fut = asyncio.get_running_loop().create_future()
        self.calls[aid] = fut
        ns = self.proto.namespace.encode()
        self.send(b"42" + ns + b",%d" % aid + msgspec.json.encode([event, data]))
        try:
            async with asyncio.timeout(timeout):
                body = await fut
        finally:
            self.calls.pop(aid, None)
        return msgspec.json.decode(body)[0]


class ParleyProtocol(SocketIOProtocol):
    client_class = ParleyClient

    def __init__(self) -> None:
        super().__init__(namespace="/chat", send_event="message:send",
                         recv_event="message:new", name="parley")
        self.tokens: dict[str, str] = {}
        self.user_ids: dict[str, str] = {}
        self.convs: dict[str, str] = {}  # pair_key(a, b) or group name → conversation id

    def auth(self, user, group):
        return {"token": self.tokens[user]}

    def conv_for(self, src_user: str, to: str) -> str:
        return self.convs[to] if to in self.convs else self.convs[pair_key(src_user, to)]

    def data_template(self, src_idx, src_user, to) -> bytes:
        # five slots, filled by ParleyClient.send_msg: step, n (client_msg_id), step, n, ts
        return (b'{"conversation_id":"%s","client_msg_id":"%d-%%d-%%d","type":"text",'
                b'"text":"%d %%d %%d %%d %s"}'
                % (self.conv_for(src_user, to).encode(), src_idx, src_idx, PAD.encode()))


# -- targets ---------------------------------------------------------------------------
def _psql(sql: str, timeout: float = 60) -> None:
    subprocess.run([*PG_ADMIN, sql], check=True, capture_output=True, timeout=timeout)


def _pg_available() -> str | None:
    if not shutil.which("psql"):
        return "psql not found"
    try:
        _psql("SELECT 1", timeout=10)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"PostgreSQL at 127.0.0.1:5432 not reachable ({type(exc).__name__})"
    return None


# -- PostgreSQL placement ----------------------------------------------------------------
# Left alone, the kernel wakes a PostgreSQL backend on the core of whoever woke it
# (wake-affine): the writer's backend then runs on the *server* core and takes CPU from the
# pinned app, so "Parley on one core" would silently be "Parley and its database on one
# core" — in production the database is another machine. While Parley targets run, the
# local PostgreSQL server's processes are restricted to the other cores (the postmaster
# too: backends forked later inherit it); the original masks are restored afterwards.
# Their CPU still counts as server CPU (ParleyPgTarget.pids).
_pg_saved_affinity: dict[int, set[int]] = {}
pg_placement: dict = {}


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _postgres_tree() -> list[int]:
    """The local PostgreSQL postmaster and its children (needs /proc and a local server)."""
    out = subprocess.run([*PG_ADMIN[:-1], "-At", "-c",
                          "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    master = _ppid(int(out.split()[0]))
    tree = [master]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if _ppid(int(entry)) == master:
                    tree.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return tree


def _restrict(ids, cores: set[int], saved: dict[int, set[int]], required=None) -> int:
    """Give each process or thread of `ids` only `cores`, remembering its own mask in
    `saved` for the restore; returns how many moved. One that ended since the listing
    needs no place (unless it is `required`)."""
    moved = 0
    for i in ids:
        try:
            old = os.sched_getaffinity(i)
            os.sched_setaffinity(i, cores)
        except ProcessLookupError:
            if i == required:
                raise
            continue
        saved[i] = old
        moved += 1
    return moved


def keep_postgres_off(server_cpu: int | None) -> dict:
    """Restrict the local PostgreSQL server to every core but ``server_cpu`` (once per run)."""
    if pg_placement or server_cpu is None:
        return pg_placement
    try:
        tree = _postgres_tree()
        cores = os.sched_getaffinity(tree[0]) - {server_cpu}
        if not cores:
            raise OSError("no core left besides the server's")
        # A backend may end meanwhile (psql's own, a closing client's); the postmaster not.
        moved = _restrict(tree, cores, _pg_saved_affinity, required=tree[0])
        # Already restricted the same way: another bench run is moving it; give it
        # back to every core afterwards rather than keep that run's restriction.
        everywhere = set(range(os.cpu_count() or 1))
        for pid, old in _pg_saved_affinity.items():
            if old == cores:
                _pg_saved_affinity[pid] = everywhere
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
        restore_postgres()
        pg_placement.update(postgres_cpus=None,
                            note=f"PostgreSQL not moved off the server core ({exc!r})")
    else:
        pg_placement.update(postgres_cpus=sorted(cores), postgres_processes=moved)
    return pg_placement


def restore_postgres() -> None:
    """Give the PostgreSQL processes back their original cores (children forked meanwhile
    get the postmaster's)."""
    if not _pg_saved_affinity:
        return
    master = next(iter(_pg_saved_affinity))
    original = _pg_saved_affinity[master]
    pids = set(_pg_saved_affinity)
    try:
        pids.update(_postgres_tree())
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        pass
    for pid in pids:
        try:
            os.sched_setaffinity(pid, _pg_saved_affinity.get(pid, original))
        except OSError:
            pass  # gone
    _pg_saved_affinity.clear()


atexit.register(restore_postgres)


# -- RabbitMQ placement ------------------------------------------------------------------
# The machine's RabbitMQ broker is, like PostgreSQL, another machine in production and
# neither pinned nor counted for parley-rabbit*: left on every core, its scheduler threads
# run on the server core and take CPU from the pinned app processes. While those targets
# run, every thread of the broker's Erlang VM (beam.smp) is kept off the server core.
_broker_saved_affinity: dict[int, set[int]] = {}
broker_placement: dict = {}


def _broker_threads() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True,
                         timeout=10).stdout.split()
    return [int(t) for pid in out for t in os.listdir(f"/proc/{pid}/task")]


def keep_broker_off(server_cpu: int | None) -> dict:
    if broker_placement or server_cpu is None:
        return broker_placement
    try:
        threads = _broker_threads()
        if not threads:
            raise OSError("no beam.smp process (is the broker on this machine?)")
        # The VM binds each scheduler thread to one core (+stbt): the server core's
        # goes to the others too.
        cores = set(range(os.cpu_count() or 1)) - {server_cpu}
        if not cores:
            raise OSError("no core left besides the server's")
        moved = _restrict(threads, cores, _broker_saved_affinity)
        broker_placement.update(broker_cpus=sorted(cores), broker_threads=moved)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        restore_broker()
        broker_placement.update(broker_cpus=None,
                                broker_note=f"RabbitMQ not moved off the server core ({exc!r})")
    return broker_placement


def restore_broker() -> None:
    for tid, cores in _broker_saved_affinity.items():
        try:
            os.sched_setaffinity(tid, cores)
        except OSError:
            pass  # gone
    _broker_saved_affinity.clear()


atexit.register(restore_broker)


_pg_databases: set[str] = set()


def drop_pg_databases() -> None:
    for name in list(_pg_databases):
        try:
            _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except (subprocess.SubprocessError, OSError):
            pass
        _pg_databases.discard(name)


class ParleyTarget(Target):
    """One ``python -m app serve`` on a fresh SQLite database."""

    key = "parley-sqlite"
    title = "Parley (python -m app serve), SQLite"
    scenarios = ("s1", "s2", "s3", "s4", "s5", "flood", "s2half", "s2push", "s2plan",
                 "pushworker", "s6", "s6-trgm", "s1-noindex", "cpu", "cpu-noindex", "s1-delivered",
                 "cpu-delivered", "cpu-read", "login", "media", "media-plain")
    echo_to_sender = False  # the sender gets its message in the ack, not as message:new
    n_procs = 1
    start_rates = {"s1": 500.0}
    # --quick (CI) must lose nothing: search from well below the limit (2 steps)
    quick_start_rates = {"s1": 150.0, "s2": 20.0}
    quick_scenarios: tuple[str, ...] | None = None  # None: all of `scenarios`
    tree = ROOT  # the source tree whose `python -m app` runs (reference targets: another)
    event_loop = "uvloop"  # EVENT_LOOP of the server (the *-asyncio targets: asyncio)
    cache = "true"  # CACHE of the server (the *-nocache targets: false)
    root: Path = ROOT  # the tree whose app is served and seeded

    def __init__(self) -> None:
        super().__init__()
        self.protocol = ParleyProtocol()
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.home: dict[str, int] = {}
        self.db_url: str | None = None
        self.tmp = None
        self.seed_seconds: dict = {}

    # -- database ---------------------------------------------------------------------
    def _env(self, db_url: str) -> dict:
        env = {"DATABASE_URL": db_url, "SECRET_KEY": SECRET_KEY, "LOG_LEVEL": "WARNING",
               "SEND_RATE_LIMIT": "1000000/1", "LOGIN_RATE_LIMIT": "1000000/1",
               # One bench client stands for many users' traffic: no per-connection caps…
               "SOCKET_EVENT_RATE": "1000000/1", "SOCKET_MAX_INFLIGHT": "100000",
               "REDIS_URL": "", "MEDIA_ROOT": os.path.join(self.tmp.name, "media"),
               "SEARCH_RATE_LIMIT": "1000000/1", "EVENT_LOOP": self.event_loop,
               "CACHE": self.cache}
        if getattr(self, "scenario", None) == "s2plan":
            # Pushes are planned into the outbox but sent by no process: the cost the
            # send path pays for push when delivery runs in other processes.
            env["PUSH_WORKERS"] = "false"
        if getattr(self, "scenario", None) in ("s1-noindex", "cpu-noindex"):
            env["SEARCH_INDEX"] = "false"  # what the index costs the send path
        if getattr(self, "scenario", None) == "flood":
            # …except in the flood scenario, which measures the shipped limits.
            del env["SOCKET_EVENT_RATE"], env["SOCKET_MAX_INFLIGHT"]
        if getattr(self, "scenario", None) in ("login", "media", "media-plain"):
            # One generator signs up, signs in and uploads for many people.
            env.update(REGISTER_RATE_LIMIT="1000000/1", REGISTER_GLOBAL_RATE_LIMIT="1000000/1",
                       UPLOAD_RATE_LIMIT="1000000/1", UPLOAD_BYTES_PER_DAY=str(1 << 40),
                       MEDIA_QUOTA_BYTES="0")
        if getattr(self, "scenario", None) == "media-plain":
            env["MEDIA_ENCRYPTION"] = "false"
        return env

    async def _run(self, argv, env, timeout=300.0, stdin: bytes | None = None) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=self.tree, env={**os.environ, "PYTHONPATH": str(self.tree), **env},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(stdin)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"{argv[2:4]} timed out after {timeout:.0f}s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:4])} failed ({proc.returncode}): "
                               f"{err.decode(errors='replace')[-800:]}")
        return out

    async def _migrate(self, db_url: str) -> None:
        await self._run([sys.executable, "-m", "app", "migrate"], self._env(db_url), 120)

    async def prepare(self, env) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="parley-bench-")
        self.template = os.path.join(self.tmp.name, "template.db")
        await self._migrate(f"sqlite://{self.template}")

    def new_database(self, n: int) -> str:
        path = os.path.join(self.tmp.name, f"bench{n}.db")
        shutil.copyfile(self.template, path)
        return f"sqlite://{path}"

    def drop_database(self) -> None:
        if self.db_url and self.db_url.startswith("sqlite://"):
            base = self.db_url[len("sqlite://") :]
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(base + suffix)
                except FileNotFoundError:
                    pass
        self.db_url = None

    # -- processes ----------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.procs[0].pid

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    @property
    def app_pids(self) -> list[int]:
        """Only our own processes (S3 memory: database backends are not per-connection)."""
        return [p.pid for p in self.procs]

    def port_for(self, idx: int, user: str) -> int:
        return self.home.get(user) or self.ports[idx % len(self.ports)]

    def _server_env(self) -> dict:
        return self._env(self.db_url)

    async def start(self, env) -> str:
        self._starts = getattr(self, "_starts", 0) + 1
        self.db_url = self.new_database(self._starts)
        self.home = {}
        self.ports = [free_port() for _ in range(self.n_procs)]
        self.port = self.ports[0]
        extra = self._server_env()
        for i, port in enumerate(self.ports):
            argv = [sys.executable, "-m", "app", "serve", "--host", env.host, "--port", str(port)]
            if env.server_cpu is not None and shutil.which("taskset"):
                argv = ["taskset", "-c", str(env.server_cpu), *argv]
            self.procs.append(self._spawn(argv, env.log_dir / f"{self.key}-{i}.log", extra,
                                          cwd=self.tree))
        deadline = time.monotonic() + env.start_timeout
        for i, port in enumerate(self.ports):
            await self._wait_port(env, self.procs[i], port, deadline)
        return f"http://{env.host}:{self.port}"

    async def _wait_port(self, env, proc, port, deadline) -> None:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.key} exited with {proc.returncode}; see "
                                   f"{env.log_dir}/{self.key}-*.log")
            try:
                _, w = await asyncio.open_connection(env.host, port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.key} did not listen on {port} within {env.start_timeout:.0f}s")

    def stop(self) -> None:
        for p in self.procs:
            _kill_tree(p)
        self.procs = []
        self.drop_database()

    # -- seeding ------------------------------------------------------------------------
    async def provision(self, env, specs, pairs=(), groups=None, messages=None,
                        push=None) -> None:
        """Seed users for every spec, a direct conversation per pair (contacts both ways),
        the groups (creator = first member, everyone its contact), optional history."""
        users = [u for u, _ in specs]
        groups = dict(groups or {})
        spec = {"database_url": self.db_url, "secret_key": SECRET_KEY, "token_ttl": 7200,
                "users": users, "pairs": [list(p) for p in pairs], "groups": groups,
                "messages": messages or {}, "push": push}
        out = json.loads(await self._run([sys.executable, "-m", "bench.parley_seed"], {},
                                         600, json.dumps(spec).encode()))
        self.protocol.tokens = out["tokens"]
        self.protocol.user_ids = out["users"]
        self.protocol.convs = out["convs"]
        self.seed_seconds = out["seconds"]
        self.assign_homes(users, pairs)

    def assign_homes(self, users, pairs) -> None:
        if len(self.ports) < 2:
            return
        # senders on the first process, receivers on the second; the rest alternate
        for a, b in pairs:
            self.home.setdefault(a, self.ports[0])
            self.home.setdefault(b, self.ports[1])
        for i, u in enumerate(users):
            self.home.setdefault(u, self.ports[i % len(self.ports)])


class ParleyPgTarget(ParleyTarget):
    key = "parley-pg"
    title = "Parley (python -m app serve), PostgreSQL"
    quick_scenarios = ("s1", "s4", "s5", "flood")  # the database-bound ones (and the flood)

    def available(self):
        return _pg_available()

    async def prepare(self, env) -> None:
        keep_postgres_off(env.server_cpu)
        self.tmp = tempfile.TemporaryDirectory(prefix="parley-bench-")
        self.prefix = f"parley_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template = f"{self.prefix}_{self.key.replace('-', '_')}_tmpl"
        _pg_databases.add(self.template)
        _psql(f'CREATE DATABASE "{self.template}"')
        await self._migrate(PG_URL.format(self.template))

    def new_database(self, n: int) -> str:
        name = f"{self.prefix}_{n}"
        _pg_databases.add(name)
        _psql(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return PG_URL.format(name)

    def drop_database(self) -> None:
        if self.db_url:
            name = self.db_url.rsplit("/", 1)[1]
            try:
                _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except (subprocess.SubprocessError, OSError):
                pass
            _pg_databases.discard(name)
        self.db_url = None


    @property
    def pids(self) -> list[int]:
        """The app process(es) plus the PostgreSQL backends serving our database: the
        database works for Parley, so its CPU is the server's too (it may exceed 100 %:
        backends are not pinned).  Refreshed at most every 2 s (one psql call)."""
        now = time.monotonic()
        if self.db_url and now - getattr(self, "_pg_pids_at", 0) > 2:
            self._pg_pids_at = now
            name = self.db_url.rsplit("/", 1)[1]
            try:
                out = subprocess.run(
                    [*PG_ADMIN[:-1], "-At", "-c", "SELECT pid FROM pg_stat_activity "
                     f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"],
                    capture_output=True, text=True, timeout=5, check=True).stdout
                self._pg_pids = [int(x) for x in out.split()]
            except (subprocess.SubprocessError, OSError, ValueError):
                self._pg_pids = []
        return [p.pid for p in self.procs] + list(getattr(self, "_pg_pids", []))


class ParleyRedis2Target(ParleyPgTarget):
    """Two Parley processes on one PostgreSQL database and a private Redis (own
    redis-server on a free port, fresh per scenario).  Both app processes *and* that
    redis-server are pinned to the server core; CPU and RSS are the sum of the three.
    Pairs: sender on process 0, receiver on process 1; other clients alternate."""

    key = "parley-redis2"
    title = "Parley x2 processes, PostgreSQL + Redis"
    n_procs = 2
    start_rates = {"s1": 250.0}
    quick_start_rates = {"s1": 100.0, "s2": 10.0}
    quick_scenarios = ("s1", "s5")  # sends and reconnects across processes, nothing more

    def available(self):
        if not shutil.which("redis-server"):
            return "redis-server not found"
        return _pg_available()

    def _server_env(self) -> dict:
        return {**self._env(self.db_url), "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0"}

    async def start(self, env) -> str:
        self.redis_port = free_port()
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
                "--save", "", "--appendonly", "no"]
        if env.server_cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(env.server_cpu), *argv]
        self.redis = self._spawn(argv, env.log_dir / f"{self.key}-redis.log")
        await self._wait_port(env, self.redis, self.redis_port, time.monotonic() + 10)
        url = await super().start(env)
        self.procs.append(self.redis)  # CPU/RSS accounting: the app processes + redis
        return url

    @property
    def pid(self) -> int:
        return self.procs[0].pid

    def stop(self) -> None:
        super().stop()
        self.redis = None


class ParleyRabbit2Target(ParleyRedis2Target):
    """parley-redis2 with RabbitMQ as the message queue (MESSAGE_QUEUE_URL=amqp://…):
    the machine's broker at 127.0.0.1:5672 (BENCH_AMQP_URL), an exchange of its own
    per scenario. Presence and rate limits stay on the private Redis. The broker is
    shared with the machine, so it is neither counted in the server's CPU nor let on
    the server core (keep_broker_off; redis-server is both, in parley-redis2): say
    so next to its numbers."""

    key = "parley-rabbit2"
    title = "Parley x2 processes, PostgreSQL + RabbitMQ (+ Redis for presence)"

    def available(self):
        url = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
        host, _, port = url.split("@")[-1].split("/")[0].partition(":")
        import socket

        try:
            socket.create_connection((host, int(port or 5672)), 2).close()
        except OSError as exc:
            return f"RabbitMQ at {host}:{port} not reachable ({type(exc).__name__})"
        return super().available()

    async def prepare(self, env) -> None:
        keep_broker_off(env.server_cpu)
        await super().prepare(env)

    def _server_env(self) -> dict:
        return {**super()._server_env(),
                "MESSAGE_QUEUE_URL": os.environ.get("BENCH_AMQP_URL",
                                                    "amqp://guest:guest@127.0.0.1:5672/"),
                "MESSAGE_QUEUE_CHANNEL": f"parley-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"}


class ParleyRedis1Target(ParleyRedis2Target):
    """One process on the Redis queue: the base line of the "cpu" scenario."""

    key = "parley-redis1"
    title = "Parley x1 process, PostgreSQL + Redis"
    n_procs = 1


class ParleyRedis4Target(ParleyRedis2Target):
    key = "parley-redis4"
    title = "Parley x4 processes, PostgreSQL + Redis"
    n_procs = 4


class ParleyRabbit4Target(ParleyRabbit2Target):
    key = "parley-rabbit4"
    title = "Parley x4 processes, PostgreSQL + RabbitMQ"
    n_procs = 4




class _Reference:
    """The same target on another revision of Parley (`git archive <ref>` into a
    temporary directory; its own migrations and seeding), for ratios between two trees
    measured in one invocation."""

    reference = REFERENCE
    scenarios = ("s1", "s2", "s3", "s5", "cpu", "cpu-read", "login", "s1-noindex", "cpu-noindex", "s6",
                 "media")

    async def prepare(self, env) -> None:
        self._ref_dir = tempfile.TemporaryDirectory(prefix="parley-bench-ref-")
        tree = os.path.join(self._ref_dir.name, "tree")

        def export() -> None:
            os.mkdir(tree)
            archive = subprocess.run(["git", "archive", self.reference], cwd=ROOT, check=True,
                                     capture_output=True, timeout=120).stdout
            subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True, timeout=120)
            commit = subprocess.run(["git", "rev-parse", "--short", self.reference], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip()
            self.title = f"{self.title} at {commit}"

        await asyncio.to_thread(export)
        self.tree = tree
        await super().prepare(env)


class ParleyBaseTarget(ParleyTarget):
    """ParleyTarget served from another tree (BENCH_BASE_TREE, e.g. `git archive main`
    unpacked): before/after ratios of one change from the same invocation."""

    key = "parley-base"
    title = "Parley (python -m app serve), SQLite, BENCH_BASE_TREE"

    def __init__(self) -> None:
        super().__init__()
        base = os.environ.get("BENCH_BASE_TREE", "")
        self.tree = Path(base).resolve() if base else ROOT

    def available(self) -> str | None:
        base = os.environ.get("BENCH_BASE_TREE", "")
        if not base or not (Path(base) / "app" / "__main__.py").is_file():
            return "set BENCH_BASE_TREE to a Parley tree (with app/ and bench/)"
        return super().available()


def _variant(base, suffix: str, what: str, *mixins, **attrs):
    """``base`` with other server settings (or another tree: the `_Reference`
    mixin), under the key ``<base key>-<suffix>``: run both in one invocation to
    see what one setting is worth."""
    return type(f"{base.__name__}_{suffix}", (*mixins, base),
                {"key": f"{base.key}-{suffix}", "title": f"{base.title}, {what}", **attrs})


# EVENT_LOOP=asyncio and CACHE=false next to the defaults (uvloop, cache on).
VARIANT_TARGETS = tuple(
    _variant(base, suffix, what, **attrs)
    for base in (ParleyTarget, ParleyPgTarget, ParleyRedis2Target)
    for suffix, what, attrs in (("asyncio", "asyncio event loop", {"event_loop": "asyncio"}),
                                ("nocache", "no read cache", {"cache": "false"})))

# parley-sqlite-ref, parley-pg-ref, parley-redis1-ref, parley-redis2-ref,
# parley-redis4-ref, parley-rabbit2-ref, parley-rabbit4-ref.
REFERENCE_TARGETS = tuple(
    _variant(base, "ref", "reference tree (--reference)", _Reference)
    for base in (ParleyTarget, ParleyPgTarget, ParleyRedis1Target, ParleyRedis2Target,
                 ParleyRedis4Target, ParleyRabbit2Target, ParleyRabbit4Target))

PARLEY_TARGETS = (ParleyTarget, ParleyBaseTarget, ParleyPgTarget, ParleyRedis2Target,
                  ParleyRabbit2Target, ParleyRedis1Target, ParleyRedis4Target,
                  ParleyRabbit4Target, *VARIANT_TARGETS, *REFERENCE_TARGETS)
