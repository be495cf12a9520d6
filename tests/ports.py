"""Ports for the servers the tests start.

Picked from below the kernel's ephemeral range (20000 up to the low end of
`ip_local_port_range`). A port from that range, free when picked, can be taken
by any outgoing connection on the machine before the server that was meant to
have it binds: a subprocess starting up, a worker restarted by its supervisor,
a module's server restarted on the port its provider knows. Outgoing
connections never get a port below the range.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def free_run(n: int) -> int:
    """The first of n consecutive ports, each free now."""
    low = _ephemeral_low()
    for _ in range(200):
        base = random.randrange(20000, low - n)
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {n} free consecutive ports in 20000–{low}")


def free_port() -> int:
    """A port free now, for a server started on it soon or restarted on it."""
    return free_run(1)
