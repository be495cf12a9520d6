"""A lean HTTP/1.1 client for the push worker: keep-alive connections pooled
per origin, on a bare asyncio protocol, answers parsed by httptools (llhttp).

A push is one small POST whose answer matters only for its status, a few
headers and, on errors, the start of its body. A general client (cookie jar,
redirects, tracing hooks, per-request timeout objects and multidicts) costs
more CPU per push than the encryption does; this one does only what a push
needs, and is shared by every push to the same service. The request head is
written directly: its values are made by the providers and checked for line
breaks, so a header can never be split into two.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from urllib.parse import quote, urlsplit

import httptools

MAX_BODY = 4096  # bytes of an answer kept (error details); the rest is read and dropped
IDLE_SECONDS = 30.0  # an idle connection is not reused after this (servers close them)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")  # control characters: never in a request head
_TARGET_SAFE = "/?#[]@!$&'()*+,;=:%-._~"  # what a request target keeps as it is


class HttpError(Exception):
    """No answer: the connection failed, broke or timed out (`timeout`), or the
    request cannot be made at all (`permanent`: trying again cannot help)."""

    def __init__(self, detail: str, *, timeout: bool = False, permanent: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.timeout = timeout
        self.permanent = permanent


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.idle_since = 0.0
        self.answered = False  # any byte of the current answer arrived
        self.keep_alive = False
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._head_done = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"protocol error: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the request

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self._head_done and self.waiter is not None:
            # An answer without a length ends with the connection.
            self._complete()
            return
        self._fail(HttpError(f"connection lost: {type(exc).__name__ if exc else 'closed'}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        if len(self._body) < MAX_BODY:
            self._body += body[: MAX_BODY - len(self._body)]

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:  # 1xx: the real answer follows
            self._headers, self._head_done = {}, False
            return
        self.keep_alive = self.parser.should_keep_alive()
        self._complete()

    def _complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        self._head_done = False
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self.parser.get_status_code(), self._headers,
                                       bytes(self._body)))

    def _fail(self, exc: HttpError) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    # used by the pool
    def start(self, request: bytes) -> asyncio.Future:
        self.answered = self.keep_alive = self._head_done = False
        self._headers, self._body = {}, bytearray()
        self.waiter = self.loop.create_future()
        self.transport.write(request)
        return self.waiter

    def reusable(self) -> bool:
        return self.keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Origin:
    """The connections to one scheme://host:port."""

    def __init__(self, scheme: str, host: str, port: int, limit: int) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(limit)
        name = f"[{host}]" if ":" in host else host  # an IPv6 literal
        self.host_header = name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"


class Pool:
    """Keep-alive HTTP/1.1 connections per origin, at most `limit` each."""

    def __init__(self, *, limit: int = 128, connect_timeout: float = 5.0,
                 timeout: float = 15.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._ssl = ssl_context
        self._origins: dict[str, Origin] = {}
        self.connections_made = 0

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def origin(self, url: str) -> tuple[Origin, str]:
        """→ the url's origin and its request target (path?query)."""
        base, sep, rest = url.partition("://")
        host_part, slash, path = rest.partition("/")
        key = f"{base}://{host_part}"
        target = ("/" + path if slash else "/").partition("#")[0]
        if not target.isascii():
            target = quote(target, safe=_TARGET_SAFE)  # UTF-8, percent-encoded
        origin = self._origins.get(key)
        if origin is None:
            try:
                parts = urlsplit(url)
                port = parts.port or (443 if parts.scheme == "https" else 80)
                host = (parts.hostname or "").encode("idna").decode("ascii")
            except (ValueError, UnicodeError):
                raise HttpError(f"not an http(s) URL: {url[:80]}", permanent=True) from None
            if parts.scheme not in ("http", "https") or not host:
                raise HttpError(f"not an http(s) URL: {url[:80]}", permanent=True)
            origin = self._origins[key] = Origin(parts.scheme, host, port, self.limit)
        return origin, target

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _t, conn = await loop.create_connection(
                    lambda: _Connection(loop), origin.host, origin.port, ssl=tls,
                    server_hostname=origin.host if tls else None)
        except TimeoutError:
            raise HttpError("connect timeout", timeout=True) from None
        except (OSError, ssl.SSLError) as exc:
            raise HttpError(f"connect: {type(exc).__name__}") from None
        self.connections_made += 1
        return conn

    async def post(self, url: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        """POST `body` with `headers` (Host and Content-Length are added)."""
        origin, target = self.origin(url)
        lines = [f"POST {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
        for name, value in headers:
            lines.append(f"{name}: {value}\r\n")
        if _UNSAFE.search("".join([target, *(n + v for n, v in headers)])) \
                or " " in target:
            raise HttpError("bad request: control character in the request head",
                            permanent=True)
        text = "".join(lines)
        try:
            request = (text + f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body
        except UnicodeEncodeError:
            raise HttpError("bad request: a header is not latin-1", permanent=True) from None
        async with origin.slots:
            loop = asyncio.get_running_loop()
            now = loop.time()
            conn = None
            while origin.idle:
                candidate = origin.idle.pop()
                if not candidate.closed and now - candidate.idle_since < IDLE_SECONDS:
                    conn = candidate
                    break
                candidate.close()
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin)
            try:
                resp = await self._exchange(conn, request, loop)
            except HttpError as exc:
                if not reused or conn.answered or exc.timeout:
                    raise
                # A kept-alive connection the server had closed meanwhile, before
                # any byte of an answer: the request never reached it. Once again
                # on a fresh connection.
                conn = await self._connect(origin)
                resp = await self._exchange(conn, request, loop)
            if conn.reusable():
                conn.idle_since = loop.time()
                origin.idle.append(conn)
            else:
                conn.close()
            return resp

    async def _exchange(self, conn: _Connection, request: bytes, loop) -> Response:
        waiter = conn.start(request)
        timer = loop.call_later(self.timeout, _expire, conn, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            conn.close()
            raise
        finally:
            timer.cancel()

    async def close(self) -> None:
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop().close()
        self._origins.clear()


def _expire(conn: _Connection, waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(HttpError("timeout", timeout=True))
    conn.close()
