"""Scenarios.  Each takes (target, env, cfg), starts a *fresh* server process (so memory
and queues left by one scenario never leak into the next), and returns a result dict.

Load is open-loop: messages are scheduled at a constant rate from the start of the
step, and the payload carries the *scheduled* send time, so a server (or generator)
falling behind shows up as latency instead of silently lowering the offered rate.
"""

import asyncio
import gc
import time
from dataclasses import dataclass

from .eio_client import close_all, open_many
from .stats import CpuMeter, Recorder, now_us, percentiles, proc_rss_kb

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

    @classmethod
    def quick_config(cls) -> "Config":
        return cls(quick=True, noise_retries=0, quiet_wait_s=1.0, pairs=50, idle_conns=1000, group_size=100, group_senders=2,
                   step_s=1.0, s1_start_rate=2000.0, s2_start_rate=20.0, max_steps=5,
                   tolerance=0.5, idle_measure_s=2.0, settle_s=0.5)


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
    lost = expected - rec.received
    lat = percentiles(rec.lat)
    ack = percentiles(rec.ack_lat)
    ok = lost == 0 and unacked == 0 and lat["p99_ms"] is not None and lat["p99_ms"] <= p99_ms
    return {
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
        log(f"    {rate:>10.0f}/s  p50={r['latency']['p50_ms']} p99={r['latency']['p99_ms']}ms "
            f"lost={r['lost']} unacked={r['unacked']} gen={r['gen_cpu_pct']}% "
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


def _templates(target, clients, routes):
    """routes: [(sender index, destination name)] → [(client, pre-encoded template)]."""
    proto = target.protocol
    return [(clients[i], proto.template(i, clients[i].user, to)) for i, to in routes]


async def _connect(target, env, cfg, specs, rec):
    await target.provision(env, specs)
    clients, errors = await open_many(target.protocol, env.host, target.port, specs, rec,
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
    clients = await _connect(target, env, cfg, specs, rec)
    try:
        senders = _templates(target, clients, [(i, f"u{n + i}") for i in range(n)])
        # warm-up (not reported): JIT/caches/allocators of the server settle
        await run_step(senders, 1, min(cfg.s1_start_rate, 1000), 0.5, rec, target.pid, 1e9)
        await wait_quiet(cfg.quiet_wait_s)
        res = await search_rate(senders, 1, cfg, rec, target.pid, cfg.s1_start_rate, log)
    finally:
        await close_all(clients)
    return {"metric": f"msg/s at p99<={cfg.p99_ms:g}ms, 0 lost", "value": res["max_rate"],
            "pairs": n, **res}


# -- S2 group fan-out -----------------------------------------------------------------------
async def s2_group(target, env, cfg: Config, log) -> dict:
    """One group of G members (all in room "g"); a few members send to the group, every
    member (the sender included) receives each message.  Rate is messages/s sent; the
    server delivers rate×G frames/s."""
    g = cfg.group_size
    specs = [(f"m{i}", "g") for i in range(g)]
    rec = Recorder()
    clients = await _connect(target, env, cfg, specs, rec)
    try:
        senders = _templates(target, clients, [(i, "g") for i in range(cfg.group_senders)])
        await run_step(senders, g, cfg.s2_start_rate, 0.5, rec, target.pid, 1e9)
        await wait_quiet(cfg.quiet_wait_s)
        res = await search_rate(senders, g, cfg, rec, target.pid, cfg.s2_start_rate, log)
    finally:
        await close_all(clients)
    value = res["max_rate"]
    return {"metric": f"group msg/s at p99<={cfg.p99_ms:g}ms, 0 lost", "value": value,
            "deliveries_per_s": value * g if value else None, "group_size": g, **res}


# -- S3 idle connections --------------------------------------------------------------------
async def s3_idle(target, env, cfg: Config, log) -> dict:
    """K idle connected clients: server RSS per connection and idle CPU%."""
    k = cfg.idle_conns
    pid = target.pid
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
        meter = CpuMeter(pid)
        await asyncio.sleep(cfg.idle_measure_s)
        cpu = meter.read()
        alive = sum(1 for c in clients if not c.closed)
    finally:
        await close_all(clients)
    kb = (rss1 - rss0) / k
    log(f"    {k} conns in {connect_s:.1f}s, {kb:.1f} KB/conn, idle cpu "
        f"{cpu.get('server_cpu_pct')}%, alive {alive}/{k}")
    return {"metric": "KB/conn (RSS delta / K)", "value": round(kb, 2), "conns": k,
            "rss_before_kb": rss0, "rss_after_kb": rss1, "connect_s": round(connect_s, 2),
            "idle_cpu_pct": cpu.get("server_cpu_pct"), "idle_measure_s": cfg.idle_measure_s,
            "gen_cpu_pct_idle": cpu["gen_cpu_pct"], "alive_at_end": alive,
            "lost": k - alive}  # a dropped idle connection counts as lost


# -- Parley-only, pending -------------------------------------------------------------------
async def s4_history(target, env, cfg, log) -> dict:
    """History page latency on a 1M-message conversation: needs storage → Parley-only."""
    raise NotApplicable("S4 is Parley-only, pending (needs message storage)")


async def s5_reconnect_storm(target, env, cfg, log) -> dict:
    """Reconnect storm with missed-message catch-up: needs sessions/sync → Parley-only."""
    raise NotApplicable("S5 is Parley-only, pending (needs resume/sync semantics)")


SCENARIOS = {
    "s1": ("S1 one-to-one", s1_one_to_one),
    "s2": ("S2 group fan-out", s2_group),
    "s3": ("S3 idle connections", s3_idle),
    "s4": ("S4 history page", s4_history),
    "s5": ("S5 reconnect storm", s5_reconnect_storm),
}
