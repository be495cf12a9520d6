"""Scenarios.  Each takes (target, env, cfg), starts a *fresh* server process (so memory
and queues left by one scenario never leak into the next), and returns a result dict.

Load is open-loop: messages are scheduled at a constant rate from the start of the
step, and the payload carries the *scheduled* send time, so a server (or generator)
falling behind shows up as latency instead of silently lowering the offered rate.
"""

import asyncio
import gc
import json
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .eio_client import PAD, close_all, open_client, open_many
from .stats import (
    CpuMeter,
    Recorder,
    _cpu_or_none,
    now_us,
    percentiles,
    proc_rss_kb,
    proc_switches,
)

TICK_US = 1000
NOISE_PCT = 25.0  # CPU% used by *other* processes above which a step is "noisy"


class NotApplicable(Exception):
    """Scenario does not exist for this target (yet)."""


@dataclass
class Config:
    quick: bool = False
    pairs: int = 100
    idle_conns: int = 10_000
    group_size: int = 500
    group_senders: int = 5
    p99_ms: float = 50.0
    step_s: float = 5.0
    s1_start_rate: float = 1000.0
    cpu_rate: float = 200.0  # "cpu" scenario: fixed offered rate (msg/s)
    cpu_seconds: float = 10.0  # "cpu" scenario: length of the measured step
    cpu_idle_seconds: float = 5.0  # "cpu" scenario: idle measurement before it
    s2_start_rate: float = 10.0
    max_rate: float = 400_000.0
    max_steps: int = 14
    tolerance: float = 0.08  # stop bisecting when (fail - pass) / pass <= tolerance
    # ≥ one Engine.IO ping interval (25 s in python-engineio and Node), so server pings
    # are part of "idle"; a 10 s window right after connecting would contain none.
    idle_measure_s: float = 30.0
    settle_s: float = 2.0
    connect_concurrency: int = 200
    noise_retries: int = 6  # re-runs of failing steps spoilt by other jobs (per search)
    quiet_wait_s: float = 20.0  # max wait for a quiet machine before a re-run
    # S4 history (Parley): seeded messages, concurrent closed-loop clients, duration
    history_messages: int = 1_000_000
    history_clients: int = 8
    history_s: float = 5.0
    history_rest: int = 200  # sequential REST GETs after the Socket.IO loop
    # S5 reconnect storm (Parley): clients, feeder users (stay connected and send),
    # messages per conversation before / while away / during the storm, back-off jitter
    storm_clients: int = 5000
    storm_feeders: int = 50
    storm_before: int = 1
    storm_away: int = 2
    storm_during: int = 1
    storm_jitter_s: float = 3.0
    storm_limit_s: float = 60.0
    profile: bool = True  # py-spy the Parley server in S1 near its limit
    # Flood (Parley): victim pairs, their total constant rate (msg/s), seconds per phase
    flood_pairs: int = 20
    flood_victim_rate: float = 200.0
    flood_s: float = 5.0
    profile_dir: str = ""
    # S6 search: generated history, the searching user in some of the conversations
    search_messages: int = 1_000_000
    search_conversations: int = 2000
    search_member_of: int = 200
    search_clients: int = 8
    search_s: float = 5.0  # closed loop per query class
    # Sign-in (login): accounts, closed-loop clients, seconds
    login_users: int = 20
    login_concurrency: int = 4
    login_s: float = 6.0
    # Media (media, media-plain): object size in MiB, rounds (after one warm-up)
    media_mb: int = 32
    media_rounds: int = 9

    @classmethod
    def quick_config(cls) -> "Config":
        return cls(quick=True, noise_retries=0, quiet_wait_s=1.0, pairs=50, idle_conns=1000,
                   group_size=100, group_senders=2,
                   step_s=1.0, s1_start_rate=2000.0, s2_start_rate=20.0, max_steps=2,
                   tolerance=0.5, idle_measure_s=1.0, settle_s=0.3,
                   history_messages=50_000, history_clients=4, history_s=1.0, history_rest=30,
                   storm_clients=500, storm_feeders=10, storm_jitter_s=1.5, storm_limit_s=30.0,
                   profile=False, flood_pairs=10, flood_victim_rate=100.0, flood_s=3.0,
                   search_messages=20_000, search_conversations=100, search_member_of=20,
                   search_clients=4, search_s=1.0, login_users=8, login_s=3.0,
                   media_mb=16, media_rounds=5)


# -- one constant-rate step ------------------------------------------------------------------
async def run_step(senders, fanout: int, rate: float, duration: float, rec: Recorder,
                   pid: int, p99_ms: float) -> dict:
    """Send ``rate*duration`` messages round-robin over ``senders`` [(client, template)],
    then drain: wait until every message reached all ``fanout`` recipients and was acked
    (bounded).  Returns counts, latency percentiles and CPU of server and generator."""
    rec.new_step()
    gc.collect()
    gc.disable()  # a gen-2 pass over 100k+ live objects stalls the sender for milliseconds
    try:
        return await _run_step(senders, fanout, rate, duration, rec, pid, p99_ms)
    finally:
        gc.enable()


async def _run_step(senders, fanout, rate, duration, rec, pid, p99_ms) -> dict:
    step = rec.step
    for c, _ in senders:
        c.pending.clear()
    seq = [0] * len(senders)
    total = max(1, int(rate * duration))
    interval = 1e6 / rate
    nsend = len(senders)
    meter = CpuMeter(pid)
    t0 = now_us()
    sent = 0
    max_lag = 0
    next_tick = t0 + TICK_US
    hard_stop = t0 + int((duration + 5) * 1e6)  # bound even if the generator stalls
    while sent < total:
        now = now_us()
        if now > hard_stop:
            break
        due = min(total, int((now - t0) / interval) + 1)
        if due > sent:
            max_lag = max(max_lag, now - (t0 + int(sent * interval)))
        while sent < due:
            i = sent % nsend
            client, tmpl = senders[i]
            n = seq[i]
            seq[i] = n + 1
            client.send_msg(tmpl, step, n, t0 + int(sent * interval))
            sent += 1
        # ~1 ms tick: sends are batched per tick instead of spinning on sleep(0) between
        # messages (which burnt generator CPU at high rates).  The payload carries the
        # *scheduled* send time, so the tick adds ≤ ~1 ms to latency, never hides a backlog.
        # (Tried: sleeping the rest of the tick *blocking* to coalesce epoll wake-ups —
        # less generator CPU but burstier load and worse, noisier latency. Not used.)
        await asyncio.sleep(max(0, next_tick - now_us()) / 1e6)
        next_tick = max(next_tick + TICK_US, now_us())
    send_wall = (now_us() - t0) / 1e6
    load_cpu = meter.read()

    expected = sent * fanout
    drain_deadline = time.monotonic() + max(5.0, 2 * duration)
    while time.monotonic() < drain_deadline:
        if rec.received >= expected and not any(c.pending for c, _ in senders):
            break
        await asyncio.sleep(0.01)
    unacked = sum(len(c.pending) for c, _ in senders)
    # A send refused as busy was never accepted: its deliveries are not owed.
    lost = expected - rec.received - rec.refused * fanout
    lat = percentiles(rec.lat)
    ack = percentiles(rec.ack_lat)
    ok = (lost == 0 and unacked == 0 and not rec.refused
          and lat["p99_ms"] is not None and lat["p99_ms"] <= p99_ms)
    extra = {}
    if rec.nacked:
        extra.update(nacked=rec.nacked, refused=rec.refused, first_nack=rec.first_nack)
    for k in ("resyncs", "gap_syncs", "recovered", "sync_errors", "out_of_order"):
        if getattr(rec, k, 0):
            extra[k] = getattr(rec, k)
    if rec.last is not None:
        extra["last_recipient_latency"] = percentiles(list(rec.last.values()))
    return {
        **extra,
        "offered_rate": round(rate, 1),
        "achieved_send_rate": round(sent / max(send_wall, 1e-6), 1),
        "sent": sent,
        "expected_deliveries": expected,
        "delivered": rec.received,
        "lost": lost,
        "unacked": unacked,
        "duplicated": rec.dup,
        "reordered": rec.reordered,
        "late_from_earlier_step": rec.late,
        "disconnects": rec.disconnects,
        "latency": lat,
        "ack_latency": ack,
        "max_schedule_lag_ms": round(max_lag / 1000, 3),
        **load_cpu,  # gen_cpu_pct / server_cpu_pct during the sending phase
        "pass": ok,
    }


async def _wait_server_idle(pid: int, limit_s: float = 20.0) -> None:
    """After an overloaded step the server may still chew on a backlog; wait (bounded)
    until it is idle so the next step starts from a quiet server."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        m = CpuMeter(pid)
        await asyncio.sleep(0.3)
        if (m.read().get("server_cpu_pct") or 0) < 15:
            return


async def wait_quiet(limit_s: float, threshold: float = NOISE_PCT) -> float:
    """Wait (bounded) until the rest of the machine uses < threshold % CPU; returns the
    last reading.  On a shared box other jobs otherwise steal the pinned cores."""
    deadline = time.monotonic() + limit_s
    other = 0.0
    while time.monotonic() < deadline:
        m = CpuMeter(None)
        await asyncio.sleep(0.5)
        other = m.read()["other_cpu_pct"]
        if other < threshold:
            break
    return other


async def search_rate(senders, fanout, cfg: Config, rec, pid, start_rate, log) -> dict:
    """Doubling, then bisection: highest offered rate with p99 ≤ cfg.p99_ms, 0 lost.

    A failing step during which other processes used ≥ NOISE_PCT % CPU is re-run (after
    waiting for a quieter machine, bounded) up to ``cfg.noise_retries`` times in total;
    the discarded attempt stays in ``steps`` with ``"retried": true``."""
    steps = []
    best = None  # highest passing rate
    fail = None  # lowest failing rate
    rate = start_rate
    retries = 0
    for _ in range(cfg.max_steps + cfg.noise_retries):
        r = await run_step(senders, fanout, rate, cfg.step_s, rec, pid, cfg.p99_ms)
        steps.append(r)
        noisy = (r.get("other_cpu_pct") or 0) >= NOISE_PCT
        lastp = (r.get("last_recipient_latency") or {}).get("p99_ms")
        log(f"    {rate:>10.0f}/s  p50={r['latency']['p50_ms']} p99={r['latency']['p99_ms']}ms "
            + (f"last-recipient p99={lastp}ms " if lastp is not None else "") +
            f"lost={r['lost']} unacked={r['unacked']} gen={r['gen_cpu_pct']}% "
            + "".join(f"{k}={r[k]} " for k in ("resyncs", "gap_syncs", "recovered",
                                               "out_of_order", "nacked", "refused") if r.get(k)) +
            f"srv={r.get('server_cpu_pct')}% other={r.get('other_cpu_pct')}% "
            f"{'PASS' if r['pass'] else 'fail'}{' (noisy)' if noisy else ''}")
        if not r["pass"] and noisy and retries < cfg.noise_retries:
            retries += 1
            r["retried"] = True
            await _wait_server_idle(pid)
            await wait_quiet(cfg.quiet_wait_s)
            continue
        if len([s for s in steps if not s.get("retried")]) > cfg.max_steps:
            break
        if r["pass"]:
            best = rate if best is None else max(best, rate)
        else:
            fail = rate if fail is None else min(fail, rate)
            await _wait_server_idle(pid)
        if fail is None:
            rate *= 2
            if rate > cfg.max_rate:
                break
        elif best is None:
            rate /= 2
            if rate < 1:
                break
        else:
            if (fail - best) / best <= cfg.tolerance:
                break
            rate = (best + fail) / 2
    best_step = max((s for s in steps if s["pass"]), key=lambda s: s["offered_rate"], default=None)
    return {"max_rate": best, "first_fail_rate": fail, "at_max": best_step, "steps": steps}


def _start_rate(target, cfg, sid: str, default: float) -> float:
    """Targets may start the search elsewhere (``start_rates`` / ``quick_start_rates``):
    Parley's quick run stays below its limit (CI: complete, lose nothing)."""
    rates = getattr(target, "quick_start_rates" if cfg.quick else "start_rates", None) or {}
    return rates.get(sid, default)


def _templates(target, clients, routes):
    """routes: [(sender index, destination name)] → [(client, pre-encoded template)]."""
    proto = target.protocol
    return [(clients[i], proto.template(i, clients[i].user, to)) for i, to in routes]


async def _connect(target, env, cfg, specs, rec, **links):
    await target.provision(env, specs, **links)
    clients, errors = await open_many(target.protocol, env.host, target.port_for, specs, rec,
                                      concurrency=cfg.connect_concurrency)
    if errors:
        await close_all(clients)
        raise RuntimeError(f"{len(errors)} of {len(specs)} clients failed to connect, "
                           f"first: {errors[0]}")
    return clients


# -- S1 one-to-one --------------------------------------------------------------------------
async def s1_one_to_one(target, env, cfg: Config, log) -> dict:
    """N pairs, sender i → receiver i, every message acked."""
    n = cfg.pairs
    specs = [(f"u{i}", None) for i in range(2 * n)]
    rec = Recorder()
    clients = await _connect(target, env, cfg, specs, rec,
                             pairs=[(f"u{i}", f"u{n + i}") for i in range(n)])
    prof = None
    try:
        senders = _templates(target, clients, [(i, f"u{n + i}") for i in range(n)])
        # warm-up (not reported): JIT/caches/allocators of the server settle
        await run_step(senders, 1, min(_start_rate(target, cfg, "s1", cfg.s1_start_rate), 1000),
                       0.5, rec, target.pids, 1e9)
        await wait_quiet(cfg.quiet_wait_s)
        start = _start_rate(target, cfg, "s1", cfg.s1_start_rate)
        res = await search_rate(senders, 1, cfg, rec, target.pids, start, log)
        if cfg.profile and hasattr(target, "protocol") and target.key.startswith("parley"):
            prof = await profile_step(target, senders, rec, cfg, res, log)
    finally:
        await close_all(clients)
    out = {"metric": f"msg/s at p99<={cfg.p99_ms:g}ms, 0 lost", "value": res["max_rate"],
           "pairs": n, **res}
    if prof:
        out["profile"] = prof
    return out


# -- py-spy profile of the server near its S1 limit --------------------------------------
def _pyspy() -> str | None:
    here = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


# Leaf frames that are a thread *waiting* although py-spy samples them as active:
# aiosqlite's worker blocked in queue.get (its real work shows as child frames).
IDLE_LEAVES = ("_connection_worker_thread (aiosqlite/core.py:59)",)


def summarize_folded(path: str, top: int = 25) -> dict:
    """py-spy ``-f raw`` (folded stacks "f1;f2;… count") → top frames by inclusive and
    self share of the samples (line numbers dropped, each function once per stack)."""
    incl: Counter = Counter()
    selfc: Counter = Counter()
    total = idle_samples = 0
    with open(path) as f:
        for line in f:
            stack, _, cnt = line.rstrip("\n").rpartition(" ")
            if not stack or not cnt.isdigit():
                continue
            c = int(cnt)
            leaf = stack.rsplit(";", 1)[-1]
            if any(leaf.startswith(idle) for idle in IDLE_LEAVES):
                idle_samples += c
                continue
            total += c
            frames = []
            for fr in stack.split(";"):
                name = fr.split(" (", 1)[0]
                loc = fr.split(" (", 1)[1].rstrip(")") if " (" in fr else ""
                mod = loc.rsplit(":", 1)[0]
                for cut in ("site-packages/", "/work/main/", "lib/python3.11/"):
                    if cut in mod:
                        mod = mod.split(cut, 1)[1]
                frames.append(f"{name} ({mod})")
            for fr in set(frames):
                incl[fr] += c
            if frames:
                selfc[frames[-1]] += c
    pct = (lambda v: round(100 * v / total, 1)) if total else (lambda v: 0)
    return {"samples": total, "idle_samples_dropped": idle_samples,
            "inclusive": [(k, pct(v)) for k, v in incl.most_common(top)],
            "self": [(k, pct(v)) for k, v in selfc.most_common(top)]}


async def profile_step(target, senders, rec, cfg, res, log) -> dict | None:
    """One extra step at ~90 % of the found limit while py-spy samples the (first)
    server process for 5 s at 500 Hz; the folded stacks go to bench-results/profiles/."""
    exe = _pyspy()
    if not exe:
        return {"skipped": "py-spy not found"}
    rate = 0.9 * (res["max_rate"] or cfg.s1_start_rate / 2)
    out_dir = Path(cfg.profile_dir or "bench-results/profiles")
    out_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the step
    path = out_dir / f"{target.key}-s1-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    argv = [exe, "record", "-p", str(target.pids[0]), "-f", "raw", "-r", "500", "-d", "5",
            "-o", str(path)]
    await _wait_server_idle(target.pids)
    # Popen only forks/execs; polled below without blocking the loop
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: ASYNC220
    try:
        await asyncio.sleep(0.5)
        step = await run_step(senders, 1, rate, 6.0, rec, target.pids, 1e9)
        for _ in range(100):  # ≤ 10 s for py-spy to finish writing
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
    if not path.exists():
        return {"skipped": f"py-spy wrote nothing: {proc.stderr.read().decode()[-300:]}"}
    summary = summarize_folded(str(path))
    log(f"    profile at {rate:.0f}/s ({summary['samples']} samples) → {path}")
    for name, p in summary["inclusive"][:12]:
        log(f"      {p:5.1f}%  {name}")
    return {"rate": round(rate), "file": str(path), "server_cpu_pct": step.get("server_cpu_pct"),
            "latency": step["latency"], "lost": step["lost"], **summary}


# -- S2 group fan-out -----------------------------------------------------------------------
async def s2_group(target, env, cfg: Config, log) -> dict:
    """One group of G members (all in room "g"); a few members send to the group, every
    member (the sender included) receives each message.  Rate is messages/s sent; the
    server delivers rate×G frames/s."""
    g = cfg.group_size
    specs = [(f"m{i}", "g") for i in range(g)]
    rec = Recorder(track_last=True)
    clients = await _connect(target, env, cfg, specs, rec, groups={"g": [u for u, _ in specs]})
    # Parley spares the sending socket the echo (it gets the message in its ack)
    fan = g if getattr(target, "echo_to_sender", True) else g - 1
    try:
        senders = _templates(target, clients, [(i, "g") for i in range(cfg.group_senders)])
        await run_step(senders, fan, cfg.s2_start_rate, 0.5, rec, target.pids, 1e9)
        await wait_quiet(cfg.quiet_wait_s)
        res = await search_rate(senders, fan, cfg, rec, target.pids,
                                _start_rate(target, cfg, "s2", cfg.s2_start_rate), log)
    finally:
        await close_all(clients)
    value = res["max_rate"]
    at20 = next((st for st in res["steps"] if st["offered_rate"] == 20.0 and not st.get("retried")),
                None)
    return {"metric": f"group msg/s at p99<={cfg.p99_ms:g}ms, 0 lost", "value": value,
            "deliveries_per_s": value * fan if value else None, "group_size": g,
            "recipients_per_msg": fan,
            "at_20_per_s": None if at20 is None else {
                "deliveries_per_s": 20 * fan, "p99_ms": at20["latency"]["p99_ms"],
                "last_recipient_p99_ms": (at20.get("last_recipient_latency") or {}).get("p99_ms"),
                "lost": at20["lost"], "server_cpu_pct": at20.get("server_cpu_pct")},
            **res}


# -- S2 with push: half the group offline --------------------------------------------------
class PushSink:
    """A push service stand-in on 127.0.0.1 that accepts every push (201) without
    decrypting it: the benchmark measures Parley's side."""

    def __init__(self) -> None:
        self.count = 0
        self.first = self.last = 0.0
        self.runner = None
        self.url = ""

    async def start(self, host: str) -> None:
        from aiohttp import web

        async def push(request):
            await request.read()
            t = time.monotonic()
            if not self.count:
                self.first = t
            self.count += 1
            self.last = t
            return web.Response(status=201)

        app = web.Application()
        app.router.add_post("/push/{name}", push)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{port}/push"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _browser_keys() -> dict:
    import base64
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {"p256dh": b64(pub), "auth": b64(os.urandom(16))}


async def _s2_half(target, env, cfg: Config, log, subscribed: bool) -> dict:
    """S2 with the second half of the group offline; `subscribed`: each of them has
    a Web Push device (a local sink), so every message also goes through the push
    planner and outbox. Compare s2push with s2half from the same invocation."""
    _needs_parley(target, "push")
    g = cfg.group_size
    members = [f"m{i}" for i in range(g)]
    online, offline = members[: g - g // 2], members[g - g // 2:]
    sink = PushSink()
    await sink.start(env.host)
    rec = Recorder(track_last=True)
    push = {"endpoint": sink.url, "users": offline, **_browser_keys()} if subscribed else None
    await target.provision(env, [(u, "g") for u in members], groups={"g": members}, push=push)
    clients, errors = await open_many(target.protocol, env.host, target.port_for,
                                      [(u, "g") for u in online], rec,
                                      concurrency=cfg.connect_concurrency)
    if errors:
        await close_all(clients)
        await sink.close()
        raise RuntimeError(f"{len(errors)} clients failed to connect, first: {errors[0]}")
    fan = len(online) - 1
    try:
        senders = _templates(target, clients, [(i, "g") for i in range(cfg.group_senders)])
        await run_step(senders, fan, cfg.s2_start_rate, 0.5, rec, target.pids, 1e9)
        await wait_quiet(cfg.quiet_wait_s)
        res = await search_rate(senders, fan, cfg, rec, target.pids,
                                _start_rate(target, cfg, "s2", cfg.s2_start_rate), log)
        await asyncio.sleep(1.0)
    finally:
        await close_all(clients)
        await sink.close()
    return {"metric": f"group msg/s at p99<={cfg.p99_ms:g}ms, 0 lost, {len(offline)} of {g} "
                      f"offline{' and subscribed' if subscribed else ''}",
            "value": res["max_rate"], "group_size": g, "offline": len(offline),
            "pushes_received": sink.count, **res}


async def s2_half(target, env, cfg: Config, log) -> dict:
    return await _s2_half(target, env, cfg, log, subscribed=False)


async def s2_push(target, env, cfg: Config, log) -> dict:
    return await _s2_half(target, env, cfg, log, subscribed=True)


async def s2_plan(target, env, cfg: Config, log) -> dict:
    """s2push with PUSH_WORKERS=false in the server: planning only, no delivery."""
    return await _s2_half(target, env, cfg, log, subscribed=True)


async def push_worker(target, env, cfg: Config, log) -> dict:
    """The outbox worker alone: N due pushes (one per device) are seeded into the
    outbox; the server's worker encrypts, signs and posts them to a local sink."""
    _needs_parley(target, "push")
    n = 2000 if cfg.quick else 10_000
    sink = PushSink()
    await sink.start(env.host)
    users = [f"d{i}" for i in range(n)]
    try:
        t0 = time.monotonic()
        # From before seeding: the worker may start on the first rows seeded, and all
        # the server's CPU until the last push counts (it is idle while seeding).
        whole = CpuMeter(target.pids)
        await target.provision(env, [(u, "g") for u in users],
                               push={"endpoint": sink.url, "users": users, "outbox": True,
                                     **_browser_keys()})
        cpu = CpuMeter(target.pids)
        deadline = time.monotonic() + 120
        while sink.count < n and time.monotonic() < deadline:  # noqa: ASYNC110 - a poll
            await asyncio.sleep(0.05)
        cpu_pct = cpu.read().get("server_cpu_pct")
        whole_read = whole.read()
        cpu_s = (whole_read.get("server_cpu_pct") or 0) / 100 * (time.monotonic() - whole.t0)
    finally:
        await sink.close()
    span = (sink.last - sink.first) or 1e-9
    per_cpu = round(sink.count / cpu_s) if cpu_s > 0 else None
    log(f"  push worker: {sink.count}/{n} pushes in {span:.2f}s (first after "
        f"{sink.first - t0:.2f}s incl. seeding), server CPU {cpu_s:.2f}s: {per_cpu} pushes "
        f"per CPU-second")
    return {"metric": "pushes/s from outbox to a local sink (one process)",
            "value": round(sink.count / span, 1) if sink.count > 1 else 0,
            "pushes": sink.count, "expected": n, "lost": n - sink.count,
            "server_cpu_pct": cpu_pct, "server_cpu_s": round(cpu_s, 2),
            "pushes_per_cpu_s": per_cpu, "other_cpu_pct": whole_read.get("other_cpu_pct")}


# -- S3 idle connections --------------------------------------------------------------------
async def s3_idle(target, env, cfg: Config, log) -> dict:
    """K idle connected clients: server RSS per connection and idle CPU%."""
    k = cfg.idle_conns
    pid = getattr(target, "app_pids", None) or target.pids
    await asyncio.sleep(cfg.settle_s)
    rss0 = proc_rss_kb(pid)
    rec = Recorder()
    t0 = time.monotonic()
    specs = [(f"i{i}", None) for i in range(k)]
    clients = await _connect(target, env, cfg, specs, rec)
    connect_s = time.monotonic() - t0
    try:
        await asyncio.sleep(cfg.settle_s)
        rss1 = proc_rss_kb(pid)
        waits0 = proc_switches(pid)[0]
        meter = CpuMeter(pid)
        await asyncio.sleep(cfg.idle_measure_s)
        cpu = meter.read()
        # Voluntary switches: a thread of the server going to sleep with nothing to
        # do, so each is one wake-up; what idle CPU is spent on besides the pings.
        wakeups = (proc_switches(pid)[0] - waits0) / cfg.idle_measure_s
        alive = sum(1 for c in clients if not c.closed)
    finally:
        await close_all(clients)
    kb = (rss1 - rss0) / k
    log(f"    {k} conns in {connect_s:.1f}s, {kb:.1f} KB/conn, idle cpu "
        f"{cpu.get('server_cpu_pct')}%, {wakeups:.0f} wake-ups/s, alive {alive}/{k}")
    return {"metric": "KB/conn (RSS delta / K)", "value": round(kb, 2), "conns": k,
            "rss_before_kb": rss0, "rss_after_kb": rss1, "connect_s": round(connect_s, 2),
            "idle_cpu_pct": cpu.get("server_cpu_pct"), "idle_measure_s": cfg.idle_measure_s,
            "idle_wakeups_per_s": round(wakeups, 1), "gen_cpu_pct_idle": cpu["gen_cpu_pct"],
            "alive_at_end": alive,
            "lost": k - alive}  # a dropped idle connection counts as lost


# -- Parley-only ---------------------------------------------------------------------------
def _needs_parley(target, what: str) -> None:
    if not hasattr(target.protocol, "convs"):
        raise NotApplicable(f"{what} is Parley-only (needs message storage)")


async def s4_history(target, env, cfg, log) -> dict:
    """History pages on a conversation seeded with M messages: ``history`` {conversation_id,
    before_seq: random, limit: 50} in a closed loop from C concurrent clients for T s,
    then a few sequential REST ``GET …/messages?before_seq=&limit=50``.  A page that is
    not ok or has the wrong number of messages counts as lost."""
    _needs_parley(target, "S4")
    m, c = cfg.history_messages, cfg.history_clients
    specs = [(f"h{i}", None) for i in range(c)]
    rec = Recorder()
    t0 = time.monotonic()
    clients = await _connect(target, env, cfg, specs, rec,
                             groups={"hist": [u for u, _ in specs]}, messages={"hist": (m, "h0")})
    seed_s = round(time.monotonic() - t0, 2)
    cid = target.protocol.convs["hist"]
    bad: list[str] = []
    rnd = random.Random(42)

    async def page(client) -> int:
        before = rnd.randint(2, m + 1)
        t = now_us()
        r = await client.call("history", {"conversation_id": cid, "before_seq": before,
                                          "limit": 50})
        lat = now_us() - t
        want = min(50, before - 1)
        if not r.get("ok") or len(r["messages"]) != want or \
                r["messages"][-1]["seq"] != before - 1:
            bad.append(str(r)[:200])
        return lat

    try:
        for cl in clients:  # warm-up, not reported
            for _ in range(5):
                await page(cl)
        # one client, one page at a time: the latency of an unloaded server
        single: list[int] = []
        end1 = time.monotonic() + min(2.0, cfg.history_s / 2)
        for _ in range(100_000):
            if time.monotonic() >= end1:
                break
            single.append(await page(clients[0]))
        lats: list[int] = []
        meter = CpuMeter(target.pids)
        end = time.monotonic() + cfg.history_s

        async def loop(cl):
            for _ in range(1_000_000):
                if time.monotonic() >= end:
                    return
                lats.append(await page(cl))

        await asyncio.gather(*(loop(cl) for cl in clients))
        cpu = meter.read()
        wall = cfg.history_s
    finally:
        await close_all(clients)
    sio = percentiles(lats)
    rest = await _rest_history(env, target, cid, m, cfg.history_rest, rnd, bad)
    one = percentiles(single)
    log(f"    {m:,} msgs seeded in {seed_s}s; 1 client: p50={one['p50_ms']} p99={one['p99_ms']}ms"
        f"; {c} clients: p50={sio['p50_ms']} "
        f"p99={sio['p99_ms']}ms ({len(lats) / wall:.0f} pages/s, {c} clients, srv "
        f"{cpu.get('server_cpu_pct')}%); REST p50={rest['p50_ms']} p99={rest['p99_ms']}ms; "
        f"bad pages {len(bad)}")
    return {"metric": "history page p99 ms (Socket.IO, closed loop)", "value": sio["p99_ms"],
            "messages": m, "clients": c, "seed_s": seed_s, "seed_detail": target.seed_seconds,
            "socketio": sio, "socketio_1_client": one, "pages_per_s": round(len(lats) / wall, 1), **cpu,
            "rest_sequential": rest, "target_p99_ms": 10.0,
            "pass": sio["p99_ms"] is not None and sio["p99_ms"] <= 10.0,
            "lost": len(bad), "first_bad": bad[:3]}


async def _rest_history(env, target, cid, m, count, rnd, bad) -> dict:
    import aiohttp

    token = target.protocol.tokens["h0"]
    url = f"http://{env.host}:{target.port}/api/v1/conversations/{cid}/messages"
    lats = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(count):
            before = rnd.randint(2, m + 1)
            t = now_us()
            async with http.get(url, params={"before_seq": before, "limit": 50},
                                timeout=aiohttp.ClientTimeout(total=10)) as resp:
                body = await resp.json()
            lats.append(now_us() - t)
            if resp.status != 200 or len(body.get("messages", ())) != min(50, before - 1):
                bad.append(f"REST {resp.status} {str(body)[:150]}")
    return percentiles(lats)


async def db_statements(target, env) -> int | None:
    """parley_db_statements_total summed over the target's processes (None: not
    exposed)."""
    import aiohttp

    total = 0
    try:
        async with aiohttp.ClientSession() as http:
            for port in getattr(target, "ports", None) or [target.port]:
                async with http.get(f"http://{env.host}:{port}/metrics",
                                    timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    body = await resp.text()
                line = next((ln for ln in body.splitlines()
                             if ln.startswith("parley_db_statements_total ")), None)
                if line is None:
                    return None
                total += int(float(line.split()[1]))
    except (OSError, aiohttp.ClientError, TimeoutError):
        return None
    return total


async def s5_reconnect_storm(target, env, cfg, log) -> dict:
    """N clients, each in a direct conversation with one of F *feeder* users (feeders stay
    connected and do all the sending, acked).  Traffic while connected; then every client
    disconnects at once; feeders send ``storm_away`` more per conversation; clients come
    back after a uniform 0–J s back-off (while feeders send ``storm_during`` more) and
    call ``sync`` with the last seq they hold (repeating while ``has_more``).  Reported:
    time from the first reconnect until every client holds every seq 1..last of its
    conversation; lost = seqs missing after that (bounded by ``storm_limit_s``)."""
    _needs_parley(target, "S5")
    n, nf = cfg.storm_clients, cfg.storm_feeders
    feeders = [(f"f{i}", None) for i in range(nf)]
    users = [(f"c{i}", None) for i in range(n)]
    pairs = [(f"f{i % nf}", f"c{i}") for i in range(n)]
    rec = Recorder()
    proto = target.protocol
    t0 = time.monotonic()
    await target.provision(env, feeders + users, pairs=pairs)
    seed_s = time.monotonic() - t0
    fcl, errors = await open_many(proto, env.host, target.port_for, feeders, rec,
                                  concurrency=cfg.connect_concurrency)
    ccl, errors2 = await open_many(proto, env.host, target.port_for, users, rec,
                                   concurrency=cfg.connect_concurrency)
    errors += errors2
    if errors:
        await close_all(fcl + ccl)
        raise RuntimeError(f"{len(errors)} clients failed to connect, first: {errors[0]}")
    conv = [proto.conv_for(f, c) for f, c in pairs]
    final = [0] * n  # highest acked seq per conversation
    nack: list[str] = []
    for cl in ccl:
        cl.seqs = {}
    sem = asyncio.Semaphore(64)

    async def send(i: int, phase: str, k: int) -> None:
        f = fcl[i % nf]
        t = time.monotonic()
        async with sem:
            try:
                r = await f.call("message:send", {
                    "conversation_id": conv[i], "client_msg_id": f"s5-{phase}-{i}-{k}",
                    "type": "text",
                    "text": f"{i % nf} 9{phase == 'b' and 1 or 2} {k} {now_us()} {PAD}"},
                    timeout=30)
            except TimeoutError:
                r = {"ok": False, "error": f"no ack in 30 s (phase {phase}, waited "
                                           f"{time.monotonic() - t:.1f}s incl. queue)"}
        if r.get("ok"):
            final[i] = max(final[i], r["message"]["seq"])
        else:
            nack.append(str(r)[:200])

    async def send_all(phase: str, per_conv: int, spread_s: float = 0.0) -> float:
        ts = time.monotonic()
        jobs = []
        for k in range(per_conv):
            for i in range(n):
                if spread_s:
                    jobs.append(_later(rnd.uniform(0, spread_s), send(i, phase, k)))
                else:
                    jobs.append(send(i, phase, k))
        await asyncio.gather(*jobs)
        return time.monotonic() - ts

    rnd = random.Random(7)
    caught_up = time.monotonic()
    try:
        before_s = await send_all("b", cfg.storm_before)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(  # noqa: ASYNC110 - polling, bounded
                cl.last_seq.get(conv[i], 0) < final[i] for i, cl in enumerate(ccl)):
            await asyncio.sleep(0.05)
        live_missing = sum(1 for i, cl in enumerate(ccl) if cl.last_seq.get(conv[i], 0) < final[i])
        # -- everyone drops at once
        for cl in ccl:
            cl.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(not cl.closed for cl in ccl):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        # Statements per send, to take the storm's own sends out of its count; the
        # offline updates of the clients that just left (after the presence grace)
        # are mostly counted here too.
        st_away0 = await db_statements(target, env)
        away_s = await send_all("a", cfg.storm_away)
        st_storm0 = await db_statements(target, env)
        # -- reconnect storm
        storm0 = time.monotonic()
        done_at = [None] * n
        fails: list[str] = []
        syncs = [0]

        async def come_back(i: int) -> None:
            old = ccl[i]
            await asyncio.sleep(rnd.uniform(0, cfg.storm_jitter_s))
            for attempt in range(5):
                try:
                    cl = await open_client(proto, env.host, target.port_for(i, old.user), i,
                                           old.user, None, rec, 15.0)
                    break
                except (OSError, TimeoutError, ConnectionError) as exc:
                    if attempt == 4:
                        fails.append(f"{old.user}: {type(exc).__name__}: {exc}")
                        return
                    await asyncio.sleep(0.5 * 2 ** attempt * rnd.random())
            cl.seqs, cl.last_seq, cl.hw, cl.above = old.seqs, old.last_seq, old.hw, old.above
            ccl[i] = cl
            cid = conv[i]
            for _ in range(1000):  # pages of 200
                r = await cl.call("sync", {"cursors": {cid: cl.hw.get(cid, 0)}, "limit": 200},
                                  timeout=30)
                syncs[0] += 1
                if not r.get("ok"):
                    fails.append(f"{old.user}: sync {str(r)[:150]}")
                    return
                more = False
                for c in r["conversations"]:
                    for msg in c["messages"]:
                        cl.note_seq(c["id"], msg["seq"])
                    more |= bool(c.get("has_more"))
                if not more:
                    break
            # live messages (storm_during) keep arriving: done when every seq is here
            while time.monotonic() - storm0 < cfg.storm_limit_s:
                if final_known.is_set() and len(cl.seqs.get(cid, ())) >= final[i]:
                    done_at[i] = time.monotonic()
                    return
                await asyncio.sleep(0.05)

        final_known = asyncio.Event()

        async def during() -> float:
            took = await send_all("d", cfg.storm_during, spread_s=cfg.storm_jitter_s)
            final_known.set()
            return took

        meter = CpuMeter(target.pids)
        res = await asyncio.gather(during(), *(come_back(i) for i in range(n)))
        cpu = meter.read()
        during_s = res[0]
        caught_up = time.monotonic()
        st_storm1 = await db_statements(target, env)
    finally:
        await close_all(fcl + ccl)
    missing = 0
    for i, cl in enumerate(ccl):
        have = (cl.seqs or {}).get(conv[i], set())
        missing += sum(1 for q in range(1, final[i] + 1) if q not in have)
    done = [d - storm0 for d in done_at if d is not None]
    total = n * (cfg.storm_before + cfg.storm_away + cfg.storm_during)
    value = round(max(done), 2) if len(done) == n else None
    stmts = None
    if None not in (st_away0, st_storm0, st_storm1):
        per_send = (st_storm0 - st_away0) / (n * cfg.storm_away)
        storm_stmts = st_storm1 - st_storm0
        stmts = {"storm_total": storm_stmts, "per_client_raw": round(storm_stmts / n, 2),
                 "sends_during": n * cfg.storm_during,
                 "per_send_away": round(per_send, 2),
                 "per_reconnect": round((storm_stmts - per_send * n * cfg.storm_during) / n,
                                        2)}
        log(f"    database statements: {stmts['per_reconnect']} per reconnecting client "
            f"({storm_stmts} in the storm, {stmts['per_send_away']} per send before it)")
    log(f"    {n} clients/{nf} feeders, seeded in {seed_s:.1f}s; sent {total} "
        f"(before {before_s:.1f}s, away {away_s:.1f}s, during {during_s:.1f}s); "
        f"all caught up in {value}s after the storm began ({len(done)}/{n} done, "
        f"{syncs[0]} sync calls); missing {missing}, nacked {len(nack)}, failed {len(fails)}")
    return {"metric": "s until every client caught up (from first reconnect)", "value": value,
            "clients": n, "feeders": nf, "jitter_s": cfg.storm_jitter_s,
            "messages_sent": total, "send_s": {"before": round(before_s, 2),
                                               "away": round(away_s, 2),
                                               "during": round(during_s, 2)},
            "live_missing_before_storm": live_missing,
            "client_done_s": percentiles([int(d * 1e6) for d in done]),
            "sync_calls": syncs[0], "server_cpu_pct_storm": cpu.get("server_cpu_pct"),
            "db_statements": stmts,
            "storm_wall_s": round(caught_up - storm0, 2), "target_s": 15.0,
            "pass": value is not None and value <= 15.0,
            "lost": missing + len(nack) + len(fails) + (n - len(done)),
            "nacked": nack[:3], "failures": fails[:3], "seed_s": round(seed_s, 2)}


# -- Flood ----------------------------------------------------------------------------------
FLOOD_BURST = 100  # events per burst
FLOOD_EVERY_S = 0.01  # one burst every 10 ms: 10,000 events/s


class Flooder:
    """One signed-in client writing event frames as fast as the attack asks (``typing``
    and ``message:send``, alternating, all valid), counting its acks by outcome, and
    reconnecting whenever the server drops it (a persistent attacker)."""

    def __init__(self, url: str, token: str, cid: str) -> None:
        self.url, self.token, self.cid = url, token, cid
        self.acks: Counter = Counter()
        self.sent = 0
        self.connections = 0
        self.ws = None
        self._readers: list = []

    async def _open(self, session) -> None:
        self.connections += 1
        self.ws = ws = await session.ws_connect(self.url + "/socket.io/?EIO=4&transport=websocket")
        await ws.receive_str(timeout=10)  # Engine.IO OPEN
        await ws.send_str("40/chat," + json.dumps({"token": self.token}))
        while not (await ws.receive_str(timeout=10)).startswith("40/chat,"):
            pass
        self._readers.append(asyncio.ensure_future(self._read(ws)))

    async def _read(self, ws) -> None:
        import aiohttp

        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            d = msg.data
            if d == "2":
                await ws.send_str("3")
            elif d.startswith("43/chat,"):
                if '"ok":true' in d[:40]:
                    self.acks["ok"] += 1
                else:
                    i = d.find('"code":"')
                    self.acks[d[i + 8:d.index('"', i + 8)] if i > 0 else "?"] += 1

    async def run(self, seconds: float) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        typing = json.dumps(["typing", {"conversation_id": self.cid, "state": "typing"}])
        send = json.dumps(["message:send", {"conversation_id": self.cid,
                                            "client_msg_id": "flood-#", "text": "flood"}])
        async with aiohttp.ClientSession() as session:
            end = loop.time() + seconds
            while loop.time() < end:
                try:
                    if self.ws is None or self.ws.closed:
                        await self._open(session)
                    for _ in range(FLOOD_BURST):
                        n = self.sent = self.sent + 1
                        await self.ws.send_str(f"42/chat,{n}" + (send.replace("#", str(n)) if n % 2 else typing))
                except (aiohttp.ClientError, ConnectionError, RuntimeError, TimeoutError):
                    pass  # dropped mid-burst: reconnect at the next one
                await asyncio.sleep(FLOOD_EVERY_S)
            if self.ws is not None:
                await self.ws.close()
            if self._readers:
                await asyncio.wait(self._readers, timeout=2)


async def flood(target, env, cfg, log) -> dict:
    """One flooding connection must not delay other users.  P pairs send at a constant
    total rate (every message acked) for T s alone, then T s more while one more client
    sends 100 events every 10 ms (`typing` / `message:send`, all valid) and reconnects
    whenever it is dropped.  Reported: the victims' ack p99 without and with the flooder,
    and what the flooder got (acks by outcome, connections).  Runs with the shipped
    per-connection limits (the other scenarios raise them)."""
    _needs_parley(target, "Flood")
    n = cfg.flood_pairs
    specs = [(f"v{i}", None) for i in range(2 * n)]
    rec = Recorder()
    # The flooder and its peer are seeded too, but connect on their own (Flooder).
    await target.provision(env, specs + [("flooder", None), ("fpeer", None)],
                           pairs=[(f"v{i}", f"v{n + i}") for i in range(n)]
                           + [("flooder", "fpeer")])
    clients, errors = await open_many(target.protocol, env.host, target.port_for, specs, rec,
                                      concurrency=cfg.connect_concurrency)
    if errors:
        await close_all(clients)
        raise RuntimeError(f"{len(errors)} of {len(specs)} clients failed to connect, "
                           f"first: {errors[0]}")
    proto = target.protocol
    flooder = Flooder(f"http://{env.host}:{target.port}", proto.tokens["flooder"],
                      proto.conv_for("flooder", "fpeer"))
    try:
        senders = _templates(target, clients, [(i, f"v{n + i}") for i in range(n)])
        await run_step(senders, 1, cfg.flood_victim_rate, 0.5, rec, target.pids, 1e9)  # warm-up
        alone = await run_step(senders, 1, cfg.flood_victim_rate, cfg.flood_s, rec,
                               target.pids, 1e9)
        flooding = asyncio.ensure_future(flooder.run(cfg.flood_s + 0.5))
        await asyncio.sleep(0.5)  # the flood is on before the victims' step starts
        flooded = await run_step(senders, 1, cfg.flood_victim_rate, cfg.flood_s, rec,
                                 target.pids, 1e9)
        await flooding
    finally:
        await close_all(clients)
    without = alone["ack_latency"]["p99_ms"]
    with_ = flooded["ack_latency"]["p99_ms"]
    lost = alone["lost"] + alone["unacked"] + flooded["lost"] + flooded["unacked"]
    throttled = flooder.acks.get("rate_limited", 0) > 0 or flooder.connections > 1
    log(f"    victims {n} pairs at {cfg.flood_victim_rate:g} msg/s: ack p99 {without} ms alone, "
        f"{with_} ms with a flooder ({flooder.sent} events, acks {dict(flooder.acks)}, "
        f"{flooder.connections} connections); srv {flooded.get('server_cpu_pct')}%")
    return {"metric": "victim ack p99 ms with one flooding connection", "value": with_,
            "victim_ack_p99_ms_alone": without, "victim_ack_p99_ms_flooded": with_,
            "ratio_flooded_vs_alone": round(with_ / without, 2) if with_ and without else None,
            "pairs": n, "victim_rate": cfg.flood_victim_rate, "seconds": cfg.flood_s,
            "alone": alone, "flooded": flooded,
            "flooder": {"events_sent": flooder.sent, "acks": dict(flooder.acks),
                        "connections": flooder.connections},
            "server_cpu_pct": flooded.get("server_cpu_pct"),
            "gen_cpu_pct": flooded.get("gen_cpu_pct"),
            "other_cpu_pct": flooded.get("other_cpu_pct"),
            "pass": lost == 0 and with_ is not None and with_ <= 100.0 and throttled,
            "lost": lost}


async def _later(delay: float, coro):
    await asyncio.sleep(delay)
    return await coro


# -- S6 search ------------------------------------------------------------------------------
SEARCH_QUERIES = {
    "cjk1": ["好", "的", "会", "天", "猫", "红"],
    "cjk2": ["明天", "项目", "会议", "周末", "数据", "快递"],
    "en_word": ["meeting", "project", "report", "deploy", "coffee", "invoice"],
    "two_terms": ["明天 meeting", "project 时间", "会议 report", "周末 coffee", "代码 bug",
                  "deploy 服务器"],
}
# CJK terms no generated message holds: the worst case for a plan that walks the
# newest messages and filters them.
ABSENT_TERMS = ["鲸", "鲸鱼"]
# Reported beside the issue's four classes, not part of S6's target: terms in
# a few hundred of the million messages (bigrams that the generator makes only
# across a word boundary) or in none. A rare term is where a plan that walks
# the newest messages reads the most for the least.
SEARCH_EXTRA_QUERIES = {"rare": ["题的", "饭没", *ABSENT_TERMS]}
# Also reported, not in the target: common terms searched by people with one
# direct chat each (most of S6's users), C of them at once. Their few hundred
# messages hold few of a common term's many matches in everyone's history.
ONE_CHAT_QUERIES = ["天", "好", "明天", "meeting", "明天 meeting", "会"]


async def _s6_seed(target, env, cfg: Config, log):
    """S6's users and conversations, provisioned through the target, and M messages
    of generated history over them, indexed → (the reader's client specs, the
    seed's report, seconds it took, the reader's conversation ids)."""
    m, k, j, c = (cfg.search_messages, cfg.search_conversations, cfg.search_member_of,
                  cfg.search_clients)
    n_groups = max(1, j // 4)
    n_direct = j - n_groups
    n_other = max(0, k - j)
    specs = [(f"q{i}", None) for i in range(c)]
    pairs = [("q0", f"p{i}") for i in range(n_direct)]
    pairs += [(f"o{i}", f"o{i + 1}") for i in range(0, 2 * n_other, 2)]
    groups = {f"sg{i}": ["q0", *(f"p{(i + d) % max(1, n_direct)}" for d in range(4))]
              for i in range(n_groups)}
    t0 = time.monotonic()
    # Clients q1… are more sockets of the same person: they sign in as q0.
    await target.provision(env, specs, pairs=pairs, groups=groups)
    tokens = target.protocol.tokens
    for i in range(1, c):
        tokens[f"q{i}"] = tokens["q0"]
    ids = target.protocol.user_ids
    convs = {}
    for a, b in pairs:
        key = f"{a}|{b}" if a <= b else f"{b}|{a}"
        convs[target.protocol.convs[key]] = [ids[a], ids[b]]
    for g, members in groups.items():
        convs[target.protocol.convs[g]] = [ids[u] for u in members]
    seeded = json.loads(await target._run(
        [sys.executable, "-m", "bench.search_seed"], {}, 3600,
        json.dumps({"database_url": target.db_url, "messages": m, "seed": 42,
                    "convs": convs}).encode()))
    seed_s = round(time.monotonic() - t0, 2)
    log(f"    {m:,} messages over {len(convs):,} conversations seeded and indexed in "
        f"{seed_s}s; index {seeded['index_bytes_per_message']} B/message")
    mine = [cid for cid, members in convs.items() if ids["q0"] in members]
    return specs, seeded, seed_s, mine


async def s6_search(target, env, cfg: Config, log) -> dict:
    """Message search on generated mixed Chinese/English history: M messages over K
    conversations, the searching user a member of J of them (direct chats and groups);
    C clients of that user run ``search:messages`` {q, limit: 20} in a closed loop,
    one query class at a time (1-char CJK, 2-char CJK, an English word, two terms),
    then rare terms (SEARCH_EXTRA_QUERIES), then common terms searched by C users
    with one direct chat each (ONE_CHAT_QUERIES); the last two are not in the
    target. Reports p99 per class, index bytes per message (seeded through the
    app's own tokenizer), and how many searches failed (lost)."""
    _needs_parley(target, "S6")
    c = cfg.search_clients
    specs, seeded, seed_s, _mine = await _s6_seed(target, env, cfg, log)
    rec = Recorder()
    clients, errors = await open_many(target.protocol, env.host, target.port_for, specs, rec,
                                      concurrency=cfg.connect_concurrency)
    if errors:
        await close_all(clients)
        raise RuntimeError(f"{len(errors)} of {c} clients failed to connect: {errors[0]}")
    bad: list[str] = []
    classes: dict = {}
    try:
        async def one(client, q) -> int:
            t = now_us()
            r = await client.call("search:messages", {"q": q, "limit": 20})
            lat = now_us() - t
            if not r.get("ok"):
                bad.append(f"{q}: {str(r)[:150]}")
            else:
                found[q] = max(found.get(q, 0), len(r["results"]))
            return lat

        found: dict = {}
        for cl in clients:  # warm-up, not reported
            for qs in SEARCH_QUERIES.values():
                await one(cl, qs[0])
        async def run_class(name, queries, clients) -> None:
            lats: list[int] = []
            meter = CpuMeter(target.pids)
            end = time.monotonic() + cfg.search_s

            async def loop(i, cl):
                n = i
                while time.monotonic() < end:
                    lats.append(await one(cl, queries[n % len(queries)]))
                    n += 1

            await asyncio.gather(*(loop(i, cl) for i, cl in enumerate(clients)))
            cpu = meter.read()
            classes[name] = {**percentiles(lats), "per_s": round(len(lats) / cfg.search_s, 1),
                             **cpu}
            log(f"    {name}: p50={classes[name]['p50_ms']} p99={classes[name]['p99_ms']}ms "
                f"({classes[name]['per_s']}/s, {len(clients)} clients, "
                f"srv {cpu.get('server_cpu_pct')}%)")

        for name, queries in {**SEARCH_QUERIES, **SEARCH_EXTRA_QUERIES}.items():
            await run_class(name, queries, clients)
        others = [(f"o{2 * i}", None) for i in range(c)
                  if f"o{2 * i}" in target.protocol.tokens]
        if others:
            await close_all(clients)
            clients, errors = await open_many(target.protocol, env.host, target.port_for,
                                              others, rec, concurrency=cfg.connect_concurrency)
            if errors:
                raise RuntimeError(f"{len(errors)} one-chat clients failed to connect: "
                                   f"{errors[0]}")
            await run_class("one_chat", ONE_CHAT_QUERIES, clients)
    finally:
        await close_all(clients)
    worst = max(((classes[k]["p99_ms"] or 0) for k in SEARCH_QUERIES if k in classes),
                default=None)
    empty = sorted(q for qs in SEARCH_QUERIES.values() for q in qs if not found.get(q))
    return {"metric": "search p99 ms, worst query class", "value": worst,
            "messages": cfg.search_messages, "conversations": cfg.search_conversations,
            "member_of": cfg.search_member_of, "clients": c,
            "seed_s": seed_s, "seed": seeded, "classes": classes, "target_p99_ms": 50.0,
            "pass": worst is not None and worst <= 50.0, "queries_without_results": empty,
            "index_bytes_per_message": seeded["index_bytes_per_message"],
            "lost": len(bad), "first_bad": bad[:3]}


async def s1_no_index(target, env, cfg: Config, log) -> dict:
    """S1 on a server started with SEARCH_INDEX=false: the reference for what
    maintaining the search index costs the send path (compare with S1)."""
    return await s1_one_to_one(target, env, cfg, log)


async def cpu_no_index(target, env, cfg: Config, log) -> dict:
    """The "cpu" scenario on a server started with SEARCH_INDEX=false: what the
    search index costs per message in server CPU (compare with "cpu")."""
    return await cpu_per_message(target, env, cfg, log)


# -- S6's index design against pg_trgm ------------------------------------------------------
class _PgClient:
    """asyncpg behind the one method of Tortoise's client that
    SearchBackend.prepare calls."""

    def __init__(self, conn) -> None:
        self.conn = conn

    async def execute_query(self, sql: str, params: list):
        rows = await self.conn.fetch(sql, *params)
        return len(rows), rows


# Beyond S6's classes: terms no message holds (pg_trgm has no trigram to look up
# in a one- or two-character term).
TRGM_EXTRA_QUERIES = {"absent": [*ABSENT_TERMS, "zebra"]}


def _plan_outline(plan_json) -> str:
    """EXPLAIN (FORMAT JSON) → its nodes, outermost first, with the index each
    scan used: "Limit > Index Scan (messages_pkey)"."""
    plan = (json.loads(plan_json) if isinstance(plan_json, str) else plan_json)[0]["Plan"]
    out = []
    stack = [plan]
    while stack:
        node = stack.pop(0)
        name = node["Node Type"]
        if node.get("Index Name"):
            name += f" ({node['Index Name']})"
        out.append(name)
        stack.extend(node.get("Plans") or [])
    return " > ".join(out)


def _like_literal(term: str) -> str:
    """One query term as a quoted `LIKE '%…%'` pattern (literal, not a parameter,
    for the reason PostgresTsvector.match_sql gives)."""
    esc = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "'%" + esc.replace("'", "''") + "%'"


async def s6_trgm(target, env, cfg: Config, log) -> dict:
    """S6's history and queries at the database, two index designs side by side:
    the shipped one (a tsvector of Latin words, CJK characters and CJK bigrams,
    GIN) and the pg_trgm GIN index on the lower-cased text that the issue
    suggested (queried with LIKE '%term%' per term). Each query is one statement,
    the reader's newest 20 matches in their conversations, from C concurrent
    connections in a closed loop, one class at a time, each design in turn;
    visibility rules and the server are left out of both. Reports p50/p99 per
    class and design, the trigram index's size and build time."""
    _needs_parley(target, "S6")
    if not target.db_url.startswith("postgres"):
        raise NotApplicable("pg_trgm is PostgreSQL's")
    import asyncpg

    from app.services.search_index import PostgresTsvector, nothing_matches, tsquery_sql
    from app.services.search_text import parse_query

    _specs, seeded, seed_s, mine = await _s6_seed(target, env, cfg, log)
    url = target.db_url.replace("postgres://", "postgresql://", 1)
    mine_uuids = [uuid.UUID(c) for c in mine]
    conns = [await asyncpg.connect(url) for _ in range(cfg.search_clients)]
    try:
        admin = conns[0]
        t0 = time.monotonic()
        await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        await admin.execute("SET maintenance_work_mem = '512MB'")
        await admin.execute('CREATE INDEX "bench_messages_trgm" ON "messages" '
                            'USING GIN (lower("text") gin_trgm_ops)')
        await admin.execute('ANALYZE "messages"')
        build_s = round(time.monotonic() - t0, 2)
        trgm_bytes = await admin.fetchval("SELECT pg_relation_size('bench_messages_trgm')")
        per_msg = round(trgm_bytes / max(1, cfg.search_messages), 1)
        # The shipped index is a table of documents and its GIN index; the GIN
        # index alone is what compares with pg_trgm's.
        gin_per_msg = round(await admin.fetchval(
            "SELECT pg_relation_size('message_search_doc_gin')")
            / max(1, cfg.search_messages), 1)
        log(f"    pg_trgm GIN built in {build_s}s: {per_msg} B/message (the shipped "
            f"index: {seeded['index_bytes_per_message']}, its GIN index {gin_per_msg})")
        backend = PostgresTsvector()

        async def shipped_sql(q: str) -> str:
            terms = parse_query(q)
            prepared = await backend.prepare(_PgClient(admin), terms)
            match = ("false" if nothing_matches(prepared)  # as the app: no statement
                     else f'"doc" @@ {tsquery_sql(terms, prepared)}')
            return ('SELECT "message_id" FROM "message_search" '
                    f'WHERE "conversation_id" = ANY($1::uuid[]) AND {match} '
                    'ORDER BY "message_id" DESC LIMIT 20')

        def trgm_sql(q: str) -> str:
            likes = " AND ".join(f'lower("text") LIKE {_like_literal(t)}'
                                 for t in q.lower().split())
            return ('SELECT "id" FROM "messages" WHERE "conversation_id" = ANY($1::uuid[]) '
                    f'AND {likes} ORDER BY "id" DESC LIMIT 20')

        queries_by_class = {**SEARCH_QUERIES, **TRGM_EXTRA_QUERIES}
        every = [q for qs in queries_by_class.values() for q in qs]
        designs = {"shipped": {q: await shipped_sql(q) for q in every},
                   "trgm": {q: trgm_sql(q) for q in every}}
        plans = {d: {q: _plan_outline(await admin.fetchval(
                     "EXPLAIN (FORMAT JSON) " + sql, mine_uuids)) for q, sql in sqls.items()}
                 for d, sqls in designs.items()}
        classes: dict = {}
        found: dict = {}
        for name, queries in queries_by_class.items():
            for design, sqls in designs.items():
                lats: list[int] = []
                end = time.monotonic() + cfg.search_s

                async def loop(i, conn, queries=queries, sqls=sqls, end=end, lats=lats,
                               design=design):
                    n = i
                    while time.monotonic() < end:
                        q = queries[n % len(queries)]
                        t = now_us()
                        rows = await conn.fetch(sqls[q], mine_uuids)
                        lats.append(now_us() - t)
                        found[(design, q)] = len(rows)
                        n += 1

                await asyncio.gather(*(loop(i, c) for i, c in enumerate(conns)))
                classes.setdefault(name, {})[design] = {
                    **percentiles(lats), "per_s": round(len(lats) / cfg.search_s, 1)}
                r = classes[name][design]
                log(f"    {name} {design}: p50={r['p50_ms']} p99={r['p99_ms']}ms "
                    f"({r['per_s']}/s, {len(conns)} connections); plans: "
                    + "; ".join(sorted({plans[design][q] for q in queries})))
        # The two designs match differently (a trigram is found inside a word, a word
        # of the shipped index only at a word's start), so the counts are a sanity
        # check that both found something, not an equality.
        empty = sorted(f"{d}:{q}" for (d, q), n in found.items() if not n)
    finally:
        for c in conns:
            await c.close()
    ratios = {name: round(v["trgm"]["p99_ms"] / v["shipped"]["p99_ms"], 2)
              for name, v in classes.items()
              if v["trgm"]["p99_ms"] and v["shipped"]["p99_ms"]}
    worst = {d: max(v[d]["p99_ms"] or 0 for v in classes.values())
             for d in ("shipped", "trgm")}
    return {"metric": "p99 ms worst class, pg_trgm / shipped", "value":
            round(worst["trgm"] / worst["shipped"], 2) if worst["shipped"] else None,
            "worst_p99_ms": worst, "p99_ratio_trgm_over_shipped": ratios,
            "classes": classes, "plans": plans, "seed_s": seed_s, "trgm_build_s": build_s,
            "index_bytes_per_message": {"shipped": seeded["index_bytes_per_message"],
                                        "shipped_gin": gin_per_msg, "trgm": per_msg},
            "queries_without_results": empty, "lost": 0}


# -- CPU per delivered message: S1 pairs at a fixed rate, spread over the processes ------
async def cpu_per_message(target, env, cfg: Config, log) -> dict:
    """S1's one-to-one traffic at one fixed rate (cfg.cpu_rate, well below every
    target's limit), every sender on another process than its receiver whenever
    there are several (sender i on process i mod n, receiver on i+1 mod n). Reports
    the server's CPU time per delivered message over the whole step (sending and
    draining): with targeted routing it should not grow with the process count."""
    n = cfg.pairs
    specs = [(f"u{i}", None) for i in range(2 * n)]
    rec = Recorder()
    await target.provision(env, specs, pairs=[(f"u{i}", f"u{n + i}") for i in range(n)])
    ports = getattr(target, "ports", None) or []
    if len(ports) > 1:
        for i in range(n):
            target.home[f"u{i}"] = ports[i % len(ports)]
            target.home[f"u{n + i}"] = ports[(i + 1) % len(ports)]
    clients, errors = await open_many(target.protocol, env.host, target.port_for, specs, rec,
                                      concurrency=cfg.connect_concurrency)
    if errors:
        await close_all(clients)
        raise RuntimeError(f"{len(errors)} of {len(specs)} clients failed to connect")
    try:
        senders = _templates(target, clients, [(i, f"u{n + i}") for i in range(n)])
        await run_step(senders, 1, cfg.cpu_rate, 1.0, rec, target.pids, 1e9)  # warm-up
        await wait_quiet(cfg.quiet_wait_s)
        app_pids = list(getattr(target, "app_pids", target.pids))
        # Idle cost first (clients connected, nothing sent), to tell the cost of a
        # message from what the processes burn anyway.
        idle0 = {p: _cpu_or_none(p) for p in app_pids}
        t_idle = time.monotonic()
        await asyncio.sleep(cfg.cpu_idle_seconds)
        idle_s = time.monotonic() - t_idle
        idle = [((_cpu_or_none(p) or 0) - (c or 0)) / idle_s for p, c in idle0.items()]
        app = CpuMeter(app_pids)
        every = CpuMeter(target.pids)
        each0 = {p: _cpu_or_none(p) for p in app_pids}
        sw0 = [proc_switches(p) for p in app_pids]
        res = await run_step(senders, 1, cfg.cpu_rate, cfg.cpu_seconds, rec, target.pids, 1e9)
        a, e = app.read(), every.read()
        sw = [tuple(x - y for x, y in zip(proc_switches(p), s0, strict=True))
              for p, s0 in zip(app_pids, sw0, strict=True)]
        wall = time.monotonic() - app.t0
        used = [(_cpu_or_none(p) or 0) - (c or 0) for p, c in each0.items()]
        each = [round(1e6 * u / max(1, res["delivered"]), 1) for u in used]
        # CPU above idle, per message: what one more message costs.
        marginal = round(1e6 * sum(max(0.0, u - i * wall) for u, i in zip(used, idle, strict=True))
                         / max(1, res["delivered"]), 1)
    finally:
        await close_all(clients)
    delivered = max(1, res["delivered"])
    per = {k: round(1e6 * (v["server_cpu_pct"] or 0) / 100 * wall / delivered, 1)
           for k, v in (("app", a), ("all", e))}
    # Context switches of the app processes per delivered message: voluntary ones
    # are waits (the loop had nothing to do), involuntary ones preemptions.
    switches = [round(sum(x[i] for x in sw) / delivered, 2) for i in (0, 1)]
    log(f"    {cfg.cpu_rate:.0f}/s for {cfg.cpu_seconds:.0f}s over {len(ports) or 1} process(es): "
        f"{per['app']} µs CPU per delivered message (app{' + redis' if 'redis' in target.key else ''}),"
        f" {per['all']} µs with the database; per process {each}; above idle {marginal} µs "
        f"(idle {[round(100 * i, 1) for i in idle]} % CPU); context switches per message "
        f"{switches[0]} waits, {switches[1]} preemptions; lost={res['lost']} "
        f"other={e['other_cpu_pct']}%")
    return {"metric": "µs server CPU per delivered message (app processes)",
            "value": per["app"], "with_database_us": per["all"], "processes": len(ports) or 1,
            "per_process_us": each, "above_idle_us": marginal,
            "switches_per_message": {"voluntary": switches[0], "involuntary": switches[1]},
            "idle_cpu_pct": [round(100 * i, 2) for i in idle], "rate": cfg.cpu_rate, "lost": res["lost"], "other_cpu_pct": e["other_cpu_pct"],
            "step": res}


# -- receipts on: S1 and the CPU per message with delivered or read receipts -------------
async def _with_receipts(fn, target, env, cfg, log, kind: str = "delivered") -> dict:
    """Run ``fn`` with the receiving clients answering what they get: with
    ``message:delivered`` (batched per conversation, as the web client does), or
    for ``kind`` "read" with ``message:read`` for each message as it arrives."""
    client = getattr(getattr(target, "protocol", None), "client_class", None)
    attr = f"send_{kind}"
    if client is None or not hasattr(client, attr):
        raise NotApplicable(f"{kind} receipts are a Parley event")
    before = getattr(client, attr)
    setattr(client, attr, True)
    try:
        out = await fn(target, env, cfg, log)
    finally:
        setattr(client, attr, before)
    out[f"{kind}_receipts"] = True
    return out


async def _with_delivered(fn, target, env, cfg, log) -> dict:
    return await _with_receipts(fn, target, env, cfg, log, "delivered")


async def s1_delivered(target, env, cfg: Config, log) -> dict:
    """S1 with delivered receipts on (compare with S1 on the same target)."""
    return await _with_delivered(s1_one_to_one, target, env, cfg, log)


async def cpu_delivered(target, env, cfg: Config, log) -> dict:
    """The "cpu" scenario with delivered receipts on."""
    return await _with_delivered(cpu_per_message, target, env, cfg, log)


async def cpu_read(target, env, cfg: Config, log) -> dict:
    """The "cpu" scenario with every message marked read as it arrives."""
    return await _with_receipts(cpu_per_message, target, env, cfg, log, "read")


# -- sign-in and media throughput over REST (Parley) ---------------------------------------
BENCH_PASSWORD = "correct horse battery staple"


async def _register(http, base: str, name: str) -> dict:
    async with http.post(f"{base}/api/v1/auth/register", json={
            "email": f"{name}@bench.example.org", "password": BENCH_PASSWORD,
            "display_name": name}) as r:
        body = await r.json()
        if r.status != 201:
            raise RuntimeError(f"register {name}: {r.status} {body}")
        return body


async def login(target, env, cfg: Config, log) -> dict:
    """Sign-in by email and password (`POST /api/v1/auth/login`): ``cfg.login_users``
    accounts registered over REST, then ``cfg.login_concurrency`` clients in a closed
    loop for ``cfg.login_s`` seconds. Reports sign-ins/s and the server's CPU time
    per sign-in (password hashing dominates both)."""
    _needs_parley(target, "login")
    import aiohttp

    base = f"http://{env.host}:{target.port}"
    tag = uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession() as http:
        emails = []
        for i in range(cfg.login_users):
            await _register(http, base, f"login{i}-{tag}")
            emails.append(f"login{i}-{tag}@bench.example.org")
        failed = 0

        async def one(email: str) -> None:
            nonlocal failed
            async with http.post(f"{base}/api/v1/auth/login", json={
                    "login": email, "password": BENCH_PASSWORD}) as r:
                await r.read()
                failed += r.status != 200

        for email in emails[: cfg.login_concurrency]:  # warm-up
            await one(email)
        await wait_quiet(cfg.quiet_wait_s)
        done = 0
        meter = CpuMeter(target.pids)
        stop = time.monotonic() + cfg.login_s

        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while time.monotonic() < stop:
                await one(emails[i % len(emails)])
                done += 1
                i += cfg.login_concurrency

        await asyncio.gather(*(worker(k) for k in range(cfg.login_concurrency)))
        cpu = meter.read()
    wall = time.monotonic() - meter.t0
    rate = done / wall
    srv_s = (cpu.get("server_cpu_pct") or 0) / 100 * wall
    out = {"metric": "sign-ins/s (closed loop)", "value": round(rate, 2), "logins": done,
           "lost": failed, "concurrency": cfg.login_concurrency,
           "cpu_ms_per_login": round(1000 * srv_s / max(1, done), 2), **cpu}
    log(f"    {rate:.1f} sign-ins/s, {out['cpu_ms_per_login']} ms server CPU each, "
        f"failed={failed} other={cpu.get('other_cpu_pct')}%")
    return out


async def media(target, env, cfg: Config, log) -> dict:
    """Media throughput: one account uploads an object of ``cfg.media_mb`` MiB
    (multipart `POST /api/v1/media`) and downloads it whole (`GET …/content`),
    ``cfg.media_rounds`` times. Reports MB/s (median over rounds) and the server's
    CPU time per MB for each direction; ``media-plain`` is the same on a server with
    MEDIA_ENCRYPTION=false."""
    _needs_parley(target, "media")
    import aiohttp

    base = f"http://{env.host}:{target.port}"
    size = cfg.media_mb << 20
    blob = random.Random(7).randbytes(size)
    mb = size / 1e6
    up, down, up_cpu, down_cpu = [], [], [], []
    bad = 0
    async with aiohttp.ClientSession() as http:
        user = await _register(http, base, f"media-{uuid.uuid4().hex[:6]}")
        headers = {"Authorization": f"Bearer {user['access_token']}"}
        await wait_quiet(cfg.quiet_wait_s)
        for _ in range(cfg.media_rounds + 1):  # the first round warms up
            form = aiohttp.FormData()
            form.add_field("file", blob, filename="bench.bin",
                           content_type="application/octet-stream")
            c0, t0 = _cpu_sum(target.pids), time.perf_counter()
            async with http.post(f"{base}/api/v1/media", data=form, headers=headers) as r:
                body = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"upload: {r.status} {body}")
            t1, c1 = time.perf_counter(), _cpu_sum(target.pids)
            got = 0
            async with http.get(f"{base}/api/v1/media/{body['media']['id']}/content",
                                headers=headers) as r:
                async for chunk in r.content.iter_chunked(1 << 20):
                    got += len(chunk)
                bad += r.status != 200 or got != size
            t2, c2 = time.perf_counter(), _cpu_sum(target.pids)
            up.append(t1 - t0)
            down.append(t2 - t1)
            up_cpu.append(c1 - c0)
            down_cpu.append(c2 - c1)
    up, down, up_cpu, down_cpu = (x[1:] for x in (up, down, up_cpu, down_cpu))

    def med(xs):
        return sorted(xs)[len(xs) // 2]

    out = {"metric": "MB/s download (median)", "value": round(mb / med(down), 1),
           "download_MBps": round(mb / med(down), 1), "upload_MBps": round(mb / med(up), 1),
           # summed over the rounds: /proc counts CPU time in 10 ms ticks
           "download_cpu_ms_per_MB": round(1000 * sum(down_cpu) / (mb * len(down)), 3),
           "upload_cpu_ms_per_MB": round(1000 * sum(up_cpu) / (mb * len(up)), 3),
           "object_MiB": cfg.media_mb, "rounds": cfg.media_rounds, "lost": bad,
           "encrypted": target.scenario != "media-plain",
           "upload_s": [round(x, 4) for x in up], "download_s": [round(x, 4) for x in down]}
    log(f"    {'encrypted' if out['encrypted'] else 'plain'}: upload {out['upload_MBps']} MB/s "
        f"({out['upload_cpu_ms_per_MB']} ms CPU/MB), download {out['download_MBps']} MB/s "
        f"({out['download_cpu_ms_per_MB']} ms CPU/MB), bad={bad}")
    return out


def _cpu_sum(pids) -> float:
    return sum(_cpu_or_none(p) or 0.0 for p in pids)


SCENARIOS = {
    "s1": ("S1 one-to-one", s1_one_to_one),
    "s2": ("S2 group fan-out", s2_group),
    "s3": ("S3 idle connections", s3_idle),
    "s4": ("S4 history page", s4_history),
    "s5": ("S5 reconnect storm", s5_reconnect_storm),
    "flood": ("Flood", flood),
    "cpu": ("CPU per delivered message", cpu_per_message),
    "cpu-noindex": ("CPU per delivered message, no search index", cpu_no_index),
    "s2half": ("S2, half the group offline", s2_half),
    "s2push": ("S2, half the group offline and subscribed to push", s2_push),
    "s2plan": ("S2, half offline and subscribed, pushes queued but not sent here", s2_plan),
    "pushworker": ("Push worker to a local sink", push_worker),
    "s6": ("S6 search", s6_search),
    "s6-trgm": ("S6's queries at the database: the shipped index against pg_trgm", s6_trgm),
    "s1-noindex": ("S1 one-to-one without the search index", s1_no_index),
    "s1-delivered": ("S1 one-to-one with delivered receipts", s1_delivered),
    "cpu-delivered": ("CPU per delivered message, with delivered receipts", cpu_delivered),
    "cpu-read": ("CPU per delivered message, each message read as it arrives", cpu_read),
    "login": ("Sign-in by email and password", login),
    "media": ("Media upload and download", media),
    "media-plain": ("Media upload and download, MEDIA_ENCRYPTION=false", media),
}
