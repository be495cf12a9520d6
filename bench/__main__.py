"""scripts/bench — benchmark runner.

    python -m bench [--quick] [--targets l0,l1,p] [--scenarios s1,s2,s3] [...]

Runs every (target, scenario) pair on a fresh server process pinned to one core, the
generator pinned to another, writes bench-results/<timestamp>.json and latest.json and
prints a table with ratios against L1 and L0 from the same invocation.  Exit status:
0 = everything that ran completed with 0 lost; 1 = something lost, a target failed to
start or a scenario crashed; 2 = bad usage.
"""

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
import traceback
from importlib.metadata import version

from .scenarios import SCENARIOS, Config, NotApplicable
from .targets import ALL_TARGETS, DEFAULT_TARGETS, PEER_DIR, ROOT, RunEnv, kill_all

DEFAULT_SCENARIOS = ("s1", "s2", "s3", "s4", "s5", "flood", "s6")
# CI smoke run (a few minutes): L1 (the ratio base) and Parley; L0/P only in full runs or on request
QUICK_TARGETS = ("l1", "parley-sqlite", "parley-pg", "parley-redis2")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small scale, a few minutes (CI)")
    p.add_argument("--targets", default=None,
                   help=f"comma list of {', '.join(ALL_TARGETS)} (default "
                        f"{','.join(DEFAULT_TARGETS)}; --quick: {','.join(QUICK_TARGETS)})")
    p.add_argument("--scenarios", default=None,
                   help=f"comma list of {', '.join(SCENARIOS)} (default all)")
    p.add_argument("--pairs", type=int, help="S1 sender→receiver pairs (100; quick 50)")
    p.add_argument("--idle", type=int, help="S3 idle connections (10000; quick 1000)")
    p.add_argument("--group-size", type=int, help="S2 group members (500; quick 100)")
    p.add_argument("--step-seconds", type=float, help="duration of one rate step (5; quick 1)")
    p.add_argument("--history-messages", type=int,
                   help="S4 seeded messages (1,000,000; quick 50,000)")
    p.add_argument("--storm-clients", type=int, help="S5 clients (5000; quick 500)")
    p.add_argument("--storm-during", type=int,
                   help="S5 messages per conversation sent during the storm (1); 0: the "
                        "storm's database statements are the reconnects' alone")
    p.add_argument("--search-messages", type=int,
                   help="S6 seeded messages (1,000,000; quick 20,000)")
    p.add_argument("--search-conversations", type=int,
                   help="S6 conversations (2,000; quick 100)")
    p.add_argument("--search-member-of", type=int,
                   help="S6 conversations the searching user is in (200; quick 20)")
    p.add_argument("--cpu-rate", type=float,
                   help="offered msg/s of the cpu scenarios (200)")
    p.add_argument("--media-mb", type=int,
                   help="media scenarios: MiB per uploaded object (32; quick 16)")
    p.add_argument("--media-rounds", type=int,
                   help="media scenarios: uploads and downloads measured (9; quick 5)")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                   help="py-spy the Parley server in S1 near its limit (default: on, quick off)")
    p.add_argument("--delivered", action="store_true",
                   help="Parley clients ack what they receive with message:delivered "
                        "(batched per second, as the web client does)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run every (target, scenario) N times, alternating the order "
                        "(A B … B A …); values are medians, ratios also per round")
    p.add_argument("--reference", default=None,
                   help="git revision the *-ref targets run (default: main before the "
                        "richer messages and encryption at rest, bench/targets.py REFERENCE)")
    p.add_argument("--p99-ms", type=float, default=50.0, help="latency bound (%(default)s)")
    p.add_argument("--server-cpu", type=int, default=0, help="core for the server (%(default)s)")
    p.add_argument("--gen-cpu", type=int, default=1, help="core for the generator (%(default)s)")
    p.add_argument("--out", default=str(ROOT / "bench-results"), help="results directory")
    a = p.parse_args(argv)
    a.scenarios_given = a.scenarios is not None
    if a.targets is None:
        a.targets = ",".join(QUICK_TARGETS if a.quick else DEFAULT_TARGETS)
    a.targets = [t for t in a.targets.split(",") if t]
    a.scenarios = [s for s in (a.scenarios or ",".join(DEFAULT_SCENARIOS)).split(",") if s]
    bad = [t for t in a.targets if t not in ALL_TARGETS] + \
          [s for s in a.scenarios if s not in SCENARIOS]
    if bad:
        p.error(f"unknown target/scenario: {', '.join(bad)}")
    return a


def make_config(a) -> Config:
    cfg = Config.quick_config() if a.quick else Config()
    for attr, val in (("pairs", a.pairs), ("idle_conns", a.idle), ("group_size", a.group_size),
                      ("step_s", a.step_seconds), ("history_messages", a.history_messages),
                      ("storm_clients", a.storm_clients), ("profile", a.profile),
                      ("storm_during", a.storm_during),
                      ("search_messages", a.search_messages),
                      ("search_conversations", a.search_conversations),
                      ("search_member_of", a.search_member_of), ("cpu_rate", a.cpu_rate),
                      ("media_mb", a.media_mb), ("media_rounds", a.media_rounds)):
        if val is not None:
            setattr(cfg, attr, val)
    cfg.p99_ms = a.p99_ms
    cfg.group_senders = min(cfg.group_senders, cfg.group_size)
    cfg.storm_feeders = max(1, min(cfg.storm_feeders, cfg.storm_clients))
    cfg.profile_dir = os.path.join(a.out, "profiles")
    return cfg


def pin_and_raise_limits(a) -> dict:
    """Generator on its own core; server core handed to the targets. Raise RLIMIT_NOFILE
    (10,000 idle clients = 10,000 fds here plus as many in the server)."""
    cores = sorted(os.sched_getaffinity(0))
    info = {"cores_available": len(cores)}
    if len(cores) >= 2 and a.gen_cpu in cores and a.server_cpu in cores \
            and a.gen_cpu != a.server_cpu:
        os.sched_setaffinity(0, {a.gen_cpu})
        info.update(server_cpu=a.server_cpu, gen_cpu=a.gen_cpu)
    else:
        info.update(server_cpu=None, gen_cpu=None, note="not pinned: need 2 distinct cores")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    info["nofile"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return info


def machine_info() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    vers = {"python": platform.python_version()}
    for pkg in ("aiohttp", "python-socketio", "python-engineio", "msgspec", "tortoise-orm",
                "asyncpg", "redis"):
        try:
            vers[pkg] = version(pkg)
        except Exception:
            vers[pkg] = None
    try:
        vers["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True,
                                      timeout=10).stdout.strip()
        with open(PEER_DIR / "node_modules" / "socket.io" / "package.json") as f:
            vers["socket.io (npm)"] = json.load(f)["version"]
    except (OSError, subprocess.SubprocessError, KeyError, ValueError):
        pass
    return {"cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release(), "versions": vers}


async def settle_disk() -> float:
    """Flush what earlier scenarios wrote before the next one starts.

    Seeding S4 writes hundreds of MB (1M rows) that the kernel may still be
    writing back while the next scenario runs, whose commits wait for fsync;
    `sync` waits until it is on disk. Returns the
    seconds it took (in the JSON as `disk_settle_s`)."""
    t0 = time.monotonic()
    await asyncio.to_thread(os.sync)
    return round(time.monotonic() - t0, 2)


async def run_all(a, cfg: Config, env: RunEnv) -> dict:
    results: dict = {}
    targets = {key: ALL_TARGETS[key]() for key in a.targets}
    ready: dict = {}

    async def prepare(key, target):
        # all targets prepare at once (migrations, npm): they are independent
        try:
            await target.prepare(env)
            ready[key] = None
        except Exception as exc:
            ready[key] = exc

    runnable = {}
    for key, target in targets.items():
        results[key] = {"title": target.title}
        reason = target.available()
        if reason:
            log(f"== {key}: skipped — {reason}")
            results[key]["skipped"] = reason
        else:
            runnable[key] = target
    await asyncio.gather(*(prepare(k, t) for k, t in runnable.items()))

    async def run_one(key, target, sid) -> dict:
        name, fn = SCENARIOS[sid]
        log(f"== {key} {name}")
        settled = await settle_disk()
        t0 = time.monotonic()
        target.scenario = sid  # a target may configure its server per scenario
        try:
            await target.start(env)
            res = await fn(target, env, cfg, log)
        except NotApplicable as exc:
            res = {"skipped": str(exc)}
            log(f"    skipped: {exc}")
        except Exception as exc:
            res = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"    ERROR: {exc}")
            traceback.print_exc()
        finally:
            target.stop()
        if isinstance(res, dict):
            res["elapsed_s"] = round(time.monotonic() - t0, 1)
            res["disk_settle_s"] = settled
        return res

    def wanted(key, target, sid) -> bool:
        tres = results[key]
        if sid not in target.scenarios:
            tres[sid] = {"skipped": f"{SCENARIOS[sid][0]} not defined for {key}"}
            return False
        qs = getattr(target, "quick_scenarios", None)
        if a.quick and qs is not None and sid not in qs and not a.scenarios_given:
            tres[sid] = {"skipped": f"not in --quick for {key} (run it with --scenarios)"}
            return False
        return True

    for key in list(runnable):
        results[key]["title"] = runnable[key].title  # prepare may have named a revision
        if ready[key] is not None:
            log(f"== {key}: prepare failed: {ready[key]}")
            results[key]["error"] = f"prepare failed: {ready[key]}"
            del runnable[key]
    if a.repeat <= 1:
        for key, target in runnable.items():
            for sid in a.scenarios:
                if wanted(key, target, sid):
                    results[key][sid] = await run_one(key, target, sid)
        return results
    # --repeat N: scenario by scenario, the targets (and in each round the scenarios)
    # alternate direction, so A and B run next to each other and in both orders.
    pairs = [(sid, key) for sid in a.scenarios for key, t in runnable.items()
             if wanted(key, t, sid)]
    runs: dict = {}
    for r in range(a.repeat):
        order = pairs if r % 2 == 0 else pairs[::-1]
        for sid, key in order:
            log(f"-- round {r + 1}/{a.repeat}")
            runs.setdefault((key, sid), []).append(await run_one(key, runnable[key], sid))
    for (key, sid), rs in runs.items():
        results[key][sid] = merge_runs(rs)
    return results


def merge_runs(rs: list) -> dict:
    """Repeated runs of one (target, scenario): the run with the median value stands for
    them (its fields, e.g. the latency at the limit), every run stays under "runs" and
    "values"."""
    ok = [r for r in rs if isinstance(r, dict) and r.get("value") is not None]
    if not ok:
        return {**rs[-1], "runs": rs}
    ok.sort(key=lambda r: r["value"])
    mid = ok[(len(ok) - 1) // 2]
    return {**mid, "value": statistics.median(r["value"] for r in ok),
            "values": [r.get("value") if isinstance(r, dict) else None for r in rs],
            "runs": rs}


# Ratios worth reading, each measured in one invocation: (name, A, B, metric) where A and
# B are (target suffix or "", scenario); "" means the same target.
SAME_TARGET = (
    ("delivered receipts: S1 with / without", "s1-delivered", "s1", "value"),
    ("delivered receipts: CPU per message with / without", "cpu-delivered", "cpu", "value"),
    ("read as they arrive: CPU per message with / without", "cpu-read", "cpu", "value"),
    ("encrypted media: upload MB/s enc / plain", "media", "media-plain", "upload_MBps"),
    ("encrypted media: download MB/s enc / plain", "media", "media-plain", "download_MBps"),
    ("encrypted media: upload CPU per MB enc / plain", "media", "media-plain",
     "upload_cpu_ms_per_MB"),
    ("encrypted media: download CPU per MB enc / plain", "media", "media-plain",
     "download_cpu_ms_per_MB"),
)
AGAINST_REFERENCE = (
    ("S1 this tree / reference", "s1", "value"),
    ("S1 with receipts this tree / reference", "s1-delivered", "value"),
    ("sign-ins/s this tree / reference", "login", "value"),
    ("sign-in CPU this tree / reference", "login", "cpu_ms_per_login"),
    ("CPU per message this tree / reference", "cpu", "value"),
    ("CPU per message, read as they arrive, this tree / reference", "cpu-read", "value"),
    ("media upload MB/s this tree / reference", "media", "upload_MBps"),
    ("media upload CPU per MB this tree / reference", "media", "upload_cpu_ms_per_MB"),
)


def _metric(r, metric):
    return r.get(metric) if isinstance(r, dict) else None


def _median_metric(r, metric):
    """The metric's median over the runs (--repeat), else its one value."""
    vals = [_metric(x, metric) for x in (r or {}).get("runs") or [r]]
    vals = [v for v in vals if v]
    return statistics.median(vals) if vals else None


def comparisons(results) -> list[dict]:
    """Each comparison: the ratio of the medians and, with --repeat, the median of the
    ratios of runs made next to each other (round by round), which cancels slow drifts
    of the machine's load."""
    out = []

    def add(name, key_a, sid_a, key_b, sid_b, metric):
        ra, rb = results.get(key_a, {}).get(sid_a), results.get(key_b, {}).get(sid_b)
        va, vb = _median_metric(ra, metric), _median_metric(rb, metric)
        if not va or not vb:
            return
        row = {"comparison": name, "a": f"{key_a} {sid_a}", "b": f"{key_b} {sid_b}",
               "metric": metric, "a_value": va, "b_value": vb, "ratio": round(va / vb, 3)}
        runs_a, runs_b = ra.get("runs"), rb.get("runs")
        if runs_a and runs_b and len(runs_a) == len(runs_b):
            per = [_metric(x, metric) / _metric(y, metric) for x, y in zip(runs_a, runs_b,
                                                                           strict=True)
                   if _metric(x, metric) and _metric(y, metric)]
            if per:
                row["ratio_per_round"] = [round(x, 3) for x in per]
                row["median_ratio"] = round(statistics.median(per), 3)
        out.append(row)

    for key in results:
        for name, sid_a, sid_b, metric in SAME_TARGET:
            add(name, key, sid_a, key, sid_b, metric)
        if key + "-ref" in results:
            for name, sid, metric in AGAINST_REFERENCE:
                add(name, key, sid, key + "-ref", sid, metric)
    return out


def print_comparisons(rows) -> None:
    if not rows:
        return
    print("\nratios (same invocation):")
    table = [("comparison", "A", "B", "A value", "B value", "ratio", "median ratio/round")]
    def num(v):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"

    table += [(r["comparison"], r["a"], r["b"], num(r["a_value"]), num(r["b_value"]),
               f"{r['ratio']:.3f}",
               str(r.get("median_ratio", "")) + (f" {r['ratio_per_round']}"
                                                 if "ratio_per_round" in r else ""))
              for r in rows]
    widths = [max(len(str(t[i])) for t in table) for i in range(len(table[0]))]
    for t in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(t, widths, strict=True)).rstrip())


def total_lost(results) -> tuple[int, list[str]]:
    """Sum of lost/unacked over every step of every scenario, plus failures."""
    lost, problems = 0, []
    for key, tres in results.items():
        if "error" in tres:
            problems.append(f"{key}: {tres['error']}")
        for sid, merged in tres.items():
            if not isinstance(merged, dict):
                continue
            for r in merged.get("runs") or [merged]:  # --repeat: every run counts
                if not isinstance(r, dict):
                    continue
                if "error" in r:
                    problems.append(f"{key} {sid}: {r['error']}")
                for step in r.get("steps", []):
                    lost += step["lost"] + step["unacked"]
                if "steps" not in r and "lost" in r:
                    lost += r["lost"]
    return lost, problems


def _ratio(v, base):
    return f"{v / base:.2f}x" if v and base else "-"


def print_table(results, scenarios) -> None:
    rows = [("scenario", "target", "value", "unit", "p99 ms", "gen CPU%", "srv CPU%",
             "other CPU%", "vs L1", "vs L1-gc", "vs L0")]
    for sid in scenarios:
        base = {k: (results.get(k, {}).get(sid) or {}).get("value") for k in ("l0", "l1", "l1-gc")}
        for key, tres in results.items():
            r = tres.get(sid)
            if r is None and "skipped" in tres:
                r = {"skipped": tres["skipped"]}
            if not isinstance(r, dict):
                continue
            if "value" not in r:
                rows.append((sid, key, "-", (r.get("skipped") or r.get("error") or "?")[:60]))
                continue
            at = r.get("at_max") or {}
            p99 = (at.get("latency") or {}).get("p99_ms", "")
            gen = at.get("gen_cpu_pct", r.get("gen_cpu_pct_idle", ""))
            srv = at.get("server_cpu_pct", r.get("idle_cpu_pct", ""))
            unit = {"s1": "msg/s", "s2": "group msg/s", "s3": "KB/conn", "s4": "ms p99/page",
                    "s5": "s catch-up", "flood": "ms victim ack p99",
                    "s6": "ms p99 worst class", "s6-trgm": "× p99 trgm/ours",
                    "s1-noindex": "msg/s",
                    "s1-delivered": "msg/s", "cpu": "µs CPU/msg", "cpu-delivered": "µs CPU/msg", "cpu-read": "µs CPU/msg",
                    "cpu-noindex": "µs CPU/msg",
                    "login": "sign-ins/s", "media": "MB/s down", "media-plain": "MB/s down",
                    }.get(sid, "")
            v = r["value"]
            other = at.get("other_cpu_pct", "")
            if v is None:
                rows.append((sid, key, "none passed", unit))
                continue
            if sid in ("s4", "s5", "flood", "s6", "s6-trgm"):
                p99 = (r.get("socketio") or {}).get("p99_ms", "") if sid == "s4" else ""
                if sid == "flood":  # the victims' ack p99 without the flooder, for the ratio
                    p99 = f"alone {r.get('victim_ack_p99_ms_alone')}"
                srv = r.get("server_cpu_pct", r.get("server_cpu_pct_storm", ""))
                rows.append((sid, key, f"{v:.2f}", unit, str(p99), str(r.get("gen_cpu_pct", "")),
                             str(srv), str(r.get("other_cpu_pct", ""))))
                continue
            rows.append((sid, key, f"{v:,.0f}" if sid != "s3" else f"{v:.1f}", unit,
                         str(p99), str(gen), str(srv) + (" idle" if sid == "s3" else ""),
                         str(other), _ratio(v, base["l1"]), _ratio(v, base["l1-gc"]),
                         _ratio(v, base["l0"])))
    rows = [r + ("",) * (len(rows[0]) - len(r)) for r in rows]  # short rows: blank ratios
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = make_config(a)
    if a.delivered:
        from .parley import ParleyClient

        ParleyClient.send_delivered = True
    if a.reference:
        from .parley import _Reference

        _Reference.reference = a.reference
    pin = pin_and_raise_limits(a)
    env = RunEnv(server_cpu=pin.get("server_cpu"))
    # SIGTERM → normal unwinding so every `finally` (and atexit) stops the servers
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.time()
    log(f"bench: targets={a.targets} scenarios={a.scenarios} quick={a.quick} pin={pin}")
    try:
        results = asyncio.run(run_all(a, cfg, env))
    except KeyboardInterrupt:
        kill_all()
        log("bench: interrupted")
        return 130
    finally:
        from .parley import (
            broker_placement,
            drop_pg_databases,
            pg_placement,
            restore_broker,
            restore_postgres,
        )

        kill_all()
        drop_pg_databases()
        restore_postgres()
        restore_broker()
        pin.update(pg_placement)
        pin.update(broker_placement)
    lost, problems = total_lost(results)
    ratios = comparisons(results)
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "quick": a.quick,
        "delivered_receipts": a.delivered,
        "repeat": a.repeat,
        "config": cfg.__dict__,
        "machine": {**machine_info(), **pin},
        "results": results,
        "comparisons": ratios,
        "total_lost": lost,
        "problems": problems,
        "ok": lost == 0 and not problems,
    }
    os.makedirs(a.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    path = os.path.join(a.out, f"{stamp}{'-quick' if a.quick else ''}.json")
    for p in (path, os.path.join(a.out, "latest.json")):
        with open(p, "w") as f:
            json.dump(doc, f, indent=1)
    print()
    print_table(results, a.scenarios)
    print_comparisons(ratios)
    print(f"\nresults: {path}  total lost: {lost}  elapsed: {doc['elapsed_s']}s")
    for pr in problems:
        print(f"problem: {pr}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
