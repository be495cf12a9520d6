"""Latency/loss bookkeeping and /proc readers.

Timestamps are ``time.monotonic_ns() // 1000`` (µs).  CLOCK_MONOTONIC is system-wide
on Linux, so a timestamp written into a payload by one process can be compared with
the clock in another generator process.
"""

import os
import time


def now_us() -> int:
    return time.monotonic_ns() // 1000


class Recorder:
    """Counts deliveries of the current step; shared by every client of a scenario.

    A *stream* is (sender index, receiving client index).  Each message carries the
    step id ``s`` and a per-sender sequence number ``n`` (0, 1, 2 … within a step), so
    duplicates and reordering are detected per stream with a bitmap, and stragglers
    from an earlier step are counted as ``late`` instead of polluting this one.
    """

    def __init__(self, track_last: bool = False) -> None:
        self.track_last = track_last
        self.step = -1
        self.new_step()

    def new_step(self) -> None:
        self.step += 1
        self.lat: list[int] = []  # delivery latency µs (receive time - scheduled send time)
        self.ack_lat: list[int] = []
        self.received = 0  # unique deliveries of this step
        self.dup = 0
        self.reordered = 0
        self.late = 0  # deliveries belonging to an earlier step
        self.stray_acks = 0  # acks for nothing pending (earlier step or duplicated)
        self.undecodable = 0
        self.disconnects = 0
        self.nacked = 0  # acks that said {"ok": false} (Parley: error code in first_nack)
        # Of those, sends the server turned away as "busy" (its overload guard):
        # the sender was told, so they fail the step but are not lost messages.
        self.refused = 0
        self.first_nack = None
        self.resyncs = 0  # Parley `resync` events received (live feed had a gap)
        self.gap_syncs = 0  # syncs started because a message:new skipped a seq
        self.recovered = 0  # deliveries that arrived through `sync`, not live
        self.sync_errors = 0
        self.out_of_order = 0  # message:new with a seq below one already seen
        self._streams: dict[int, list] = {}
        # S2: latency of the *last* recipient of each message (src, n) → max latency µs
        self.last: dict[int, int] | None = {} if self.track_last else None

    def on_msg(self, dst: int, src: int, s: int, n: int, ts: int) -> None:
        if s != self.step:
            self.late += 1
            return
        lat = time.monotonic_ns() // 1000 - ts
        self.lat.append(lat)
        last = self.last
        if last is not None:
            k = (src << 32) | n
            if lat > last.get(k, -1):
                last[k] = lat
        key = (src << 20) | dst
        st = self._streams.get(key)
        if st is None:
            st = self._streams[key] = [-1, bytearray(256)]
        seen = st[1]
        if n >= len(seen):
            seen.extend(bytes(max(n + 1 - len(seen), len(seen))))
        if seen[n]:
            self.dup += 1
            return
        seen[n] = 1
        self.received += 1
        if n < st[0]:
            self.reordered += 1
        else:
            st[0] = n

    def on_ack(self, pending: dict, ack_id: int) -> None:
        ts = pending.pop(ack_id, None)
        if ts is None:
            self.stray_acks += 1
        else:
            self.ack_lat.append(time.monotonic_ns() // 1000 - ts)


def percentiles(values: list[int]) -> dict:
    """p50/p99/p99.9/max in milliseconds (values are µs)."""
    if not values:
        return {"p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None, "count": 0}
    v = sorted(values)
    n = len(v)

    def q(p: float) -> float:
        return round(v[min(n - 1, int(p * n))] / 1000, 3)

    return {"p50_ms": q(0.50), "p99_ms": q(0.99), "p999_ms": q(0.999),
            "max_ms": round(v[-1] / 1000, 3), "count": n}


# -- /proc -------------------------------------------------------------------------------
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid) -> float:
    """utime+stime of the whole process (all threads), in seconds; a list of pids: sum."""
    if isinstance(pid, (list, tuple)):
        return sum(proc_cpu_seconds(p) for p in pid)
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # the command name may contain spaces: fields start after the closing parenthesis
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _as_list(pid) -> list:
    if not pid:
        return []
    return list(pid) if isinstance(pid, (list, tuple)) else [pid]


def _cpu_or_none(pid) -> float | None:
    try:
        return proc_cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None


def proc_switches(pid) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of the whole process (every
    thread: /proc/<pid>/task/*/status), (0, 0) when it is gone. Involuntary
    ones are preemptions: another process on the core was woken and ran first.
    A list of pids: summed."""
    if isinstance(pid, (list, tuple)):
        both = [proc_switches(p) for p in pid]
        return sum(v for v, _ in both), sum(i for _, i in both)
    vol = invol = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol += int(line.split()[1])
        except OSError:
            continue
    return vol, invol


def proc_rss_kb(pid) -> int:
    if isinstance(pid, (list, tuple)):
        return sum(proc_rss_kb(p) for p in pid)
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def system_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine (all cores) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return (sum(v[:8]) - idle) / _CLK_TCK


class CpuMeter:
    """CPU% (of one core) of a server pid and of this generator process over a window,
    plus ``other_cpu_pct``: what everything else on the machine used meanwhile (other
    jobs on a shared box distort results — a high value flags a suspect measurement)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.g0 = time.process_time()
        # per pid, so a process that comes or goes mid-window (a database backend)
        # never makes the sum jump
        self.s0 = {p: _cpu_or_none(p) for p in _as_list(pid)}
        self.sys0 = system_busy_seconds()

    def read(self) -> dict:
        wall = max(1e-6, time.monotonic() - self.t0)
        gen = time.process_time() - self.g0
        srv = 0.0
        out = {"gen_cpu_pct": round(100 * gen / wall, 1)}
        if self.pid:
            seen = 0
            for p, c0 in self.s0.items():
                c1 = _cpu_or_none(p)
                if c0 is not None and c1 is not None:
                    srv += c1 - c0
                    seen += 1
            out["server_cpu_pct"] = round(100 * srv / wall, 1) if seen else None
        other = system_busy_seconds() - self.sys0 - gen - srv
        out["other_cpu_pct"] = round(max(0.0, 100 * other / wall), 1)
        return out
