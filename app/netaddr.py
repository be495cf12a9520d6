"""The client address of a request, for per-address limits and the session list.

The TCP peer is the client unless it is one of the operator's proxies
(`TRUSTED_PROXIES`). Only then are `X-Forwarded-For` / `Forwarded` (RFC 7239)
read, from the right: each trusted proxy appends the address it saw, so the
rightmost address that is not itself a trusted proxy is the client. Everything
to its left was written by that client and is ignored, which is what makes
spoofing pointless. A hop a trusted proxy reported as unparseable ("unknown",
an obfuscated `_name`) ends the walk at that proxy: its clients share one
address rather than borrowing one they wrote themselves.

When both headers arrive, `X-Forwarded-For` wins: it is what nginx, HAProxy and
most balancers append to, and the bundled nginx always sends it, so a
`Forwarded` header a client adds is never believed behind it. A proxy that
writes only `Forwarded` must drop an incoming `X-Forwarded-For`.

Pure functions over strings: REST (`of_request`) and the Socket.IO connect
(`of_environ`) both end in `client_address`.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IP = IPv4Address | IPv6Address
Networks = tuple[IPv4Network | IPv6Network, ...]

# Beyond any real chain of proxies; a longer header is a client padding it.
MAX_HOPS = 64


@functools.lru_cache(maxsize=16)
def parse_networks(text: str) -> Networks:
    """`TRUSTED_PROXIES`: comma-separated CIDRs or single addresses (ValueError if bad)."""
    nets = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"TRUSTED_PROXIES: {part!r} is not an address or CIDR "
                "(e.g. 127.0.0.1/32, 10.0.0.0/8, ::1)") from None
    return tuple(nets)


def parse_ip(text: str | None) -> IP | None:
    """One address as proxies write it: bare, `v4:port`, `[v6]`, `[v6]:port`,
    optionally quoted. IPv4-mapped IPv6 becomes IPv4. None when it is not one."""
    if not text:
        return None
    s = text.strip().strip('"').strip()
    if not s or len(s) > 64:
        return None
    if s.startswith("["):
        end = s.find("]")
        port = s[end + 1:]
        if end < 0 or (port and not (port[:1] == ":" and port[1:].isdigit())):
            return None
        s = s[1:end]
    elif s.count(":") == 1:  # IPv4 with a port (an IPv6 address has at least two colons)
        s, _, port = s.partition(":")
        if not port.isdigit():
            return None
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, current, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            current.append(ch)  # kept: the parts are split again, then parsed
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def forwarded_for(header: str) -> list[str | None]:
    """The `for=` value of each element of an RFC 7239 `Forwarded` header, in
    order; None for an element without one."""
    out: list[str | None] = []
    for element in _split_outside_quotes(header, ","):
        if not element.strip():
            continue
        value = None
        for pair in _split_outside_quotes(element, ";"):
            name, eq, v = pair.partition("=")
            if eq and name.strip().lower() == "for":
                value = v.strip()
        out.append(value)
    return out


def is_trusted(ip: IP, trusted: Networks) -> bool:
    return any(ip in net for net in trusted)


def client_address(peer: str | None, x_forwarded_for: str | None, forwarded: str | None,
                   trusted: Networks) -> str:
    """The address to count a request against (see the module docstring)."""
    ip = parse_ip(peer)
    if ip is None:
        return peer or ""  # e.g. a Unix socket: nothing to parse, nothing to trust
    if not trusted or not is_trusted(ip, trusted):
        return str(ip)
    if x_forwarded_for and x_forwarded_for.strip():
        hops: list[str | None] = x_forwarded_for.split(",")
    elif forwarded and forwarded.strip():
        hops = forwarded_for(forwarded)
    else:
        hops = []
    for raw in reversed(hops[-MAX_HOPS:]):
        hop = parse_ip(raw)
        if hop is None:
            break
        ip = hop
        if not is_trusted(hop, trusted):
            break
    return str(ip)


def _joined(values: list[str]) -> str | None:
    return ",".join(values) if values else None


def of_request(request, trusted: Networks) -> str:
    """`client_address` of an aiohttp request (repeated headers count as one list)."""
    headers = request.headers
    return client_address(request.remote, _joined(headers.getall("X-Forwarded-For", [])),
                          _joined(headers.getall("Forwarded", [])), trusted)


def of_environ(environ: Mapping, trusted: Networks) -> str:
    """`client_address` of an Engine.IO environ (the Socket.IO connect).
    The peer is the aiohttp request's while the environ holds one (long-polling),
    else REMOTE_ADDR: app/realtime/engine.py puts the same peer there, as a
    WebSocket's environ lets go of its request (the driver's own REMOTE_ADDR is
    a placeholder)."""
    request = environ.get("aiohttp.request")
    peer = request.remote if request is not None else environ.get("REMOTE_ADDR")
    return client_address(peer, environ.get("HTTP_X_FORWARDED_FOR"),
                          environ.get("HTTP_FORWARDED"), trusted)
