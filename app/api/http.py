"""HTTP plumbing shared by every REST handler: JSON in and out, auth, errors, logs.

Domain errors become HTTP responses here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from typing import TypeVar

import msgspec
from aiohttp import http_exceptions, web

from app import netaddr
from app.db import is_database_error
from app.deps import Deps
from app.errors import DomainError, Invalid, NotFound, Stalled, TooLarge
from app.logs import Timer, log_request
from app.metrics import METRICS_KEY
from app.services import accounts
from app.storage import RangeStream, StorageError
from app.validation import HAS_NUL, convert_query, decode

T = TypeVar("T")
log = logging.getLogger("parley.http")

DEPS_KEY = web.AppKey("deps", Deps)
USER_ID_KEY = web.RequestKey("user_id", str)
REQUEST_ID_KEY = web.RequestKey("request_id", str)
DEFAULT_BODY_CAP = 64 * 1024

_encoder = msgspec.json.Encoder()


def deps_of(request: web.Request) -> Deps:
    return request.app[DEPS_KEY]


async def body_read(request: web.Request, read: Awaitable[T]) -> T:
    """One read of the request body. A body that stops arriving for
    HTTP_STALL_TIMEOUT seconds ends the request (408) rather than holding its
    connection and handler for as long as the client likes."""
    try:
        async with asyncio.timeout(deps_of(request).settings.http_stall_timeout):
            return await read
    except TimeoutError:
        raise Stalled() from None


async def send_chunk(request: web.Request, resp: web.StreamResponse, chunk: bytes) -> None:
    """One piece of a streamed response. A client that takes nothing for
    HTTP_STALL_TIMEOUT seconds is cut off, and the file or object it held open
    with it."""
    try:
        async with asyncio.timeout(deps_of(request).settings.http_stall_timeout):
            await resp.write(chunk)
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("the client took nothing for too long") from None


def json_response(data, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(
        body=_encoder.encode(data), status=status, content_type="application/json",
        headers=headers,
    )


def error_response(status: int, code: str, message: str, details=None, headers=None):
    body = {"code": code, "message": message}
    if details:
        body["details"] = details
    return json_response({"error": body}, status=status, headers=headers)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(request: web.Request, struct_type: type[T], cap: int = DEFAULT_BODY_CAP) -> T:
    """Read at most `cap` bytes of JSON body and decode it into `struct_type`.

    Only `application/json` (or `application/*+json`) is accepted when a body is
    sent: `text/plain` would let any web page post here with a plain HTML form.
    """
    if request.content_length is not None and request.content_length > cap:
        raise TooLarge(f"Body over {cap} bytes.", details={"limit": cap})
    if request.can_read_body and not _is_json(request.content_type):
        raise Invalid("Send JSON (Content-Type: application/json).")
    # StreamReader.read(n) returns what has arrived so far, not n bytes: loop to EOF.
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await body_read(request, request.content.read(cap + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            raise TooLarge(f"Body over {cap} bytes.", details={"limit": cap})
    body = b"".join(chunks)
    if not body.strip():
        body = b"{}"
    return decode(struct_type, body)


def query(request: web.Request, struct_type: type[T]) -> T:
    return convert_query(struct_type, request.query)


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def client_ip(request: web.Request) -> str:
    """The client's address: the TCP peer, or what TRUSTED_PROXIES report (app/netaddr.py)."""
    trusted = netaddr.parse_networks(deps_of(request).settings.trusted_proxies)
    return netaddr.of_request(request, trusted)


def client_of(request: web.Request) -> accounts.Client:
    return accounts.Client(ip=client_ip(request),
                           device=request.headers.get("User-Agent", "")[:200])


async def auth_of(request: web.Request) -> accounts.Auth:
    auth = await accounts.authenticate(deps_of(request), bearer_token(request))
    request[USER_ID_KEY] = auth.user_id
    return auth


async def send_stream(request: web.Request, resp: web.StreamResponse,
                      stream: RangeStream | None) -> web.StreamResponse:
    """Send `resp` with `stream` (None: no body) and close the stream. The
    caller opens the stream first, before the status line goes out, so a store
    that cannot open it (down, unreachable) is still answered 503, not a 200
    whose body breaks off."""
    try:
        await resp.prepare(request)
        if stream is not None:
            async for chunk in stream:
                await send_chunk(request, resp, chunk)
        await resp.write_eof()
        return resp
    finally:
        if stream is not None:
            await stream.aclose()


def _route_template(request: web.Request) -> str | None:
    info = request.match_info.route.resource
    return info.canonical if info is not None else None


def _internal(request_id: str) -> web.Response:
    """A bug on our side: logged with its traceback, answered without it."""
    log.exception("unhandled error", extra={"fields": {"request_id": request_id}})
    return error_response(500, "internal", "Something went wrong on our side.")


def _unavailable(request: web.Request, request_id: str, exc: Exception) -> web.Response | None:
    """The database or the media storage failed (down, unreachable, its disk
    full): not a bug, and the client may retry. None for anything else."""
    if isinstance(exc, StorageError):
        if type(exc) is not StorageError:  # a subclass names a key or a range: no outage
            return None
        what = "media storage"
    elif is_database_error(exc):
        what = "database"
    else:
        return None
    metrics = request.app.get(METRICS_KEY)
    if metrics is not None:
        metrics.http_unavailable.labels(what.replace(" ", "_")).inc()
    log.warning("request failed: the %s is unavailable (%s: %s)", what,
                type(exc).__name__, str(exc)[:200],
                extra={"fields": {"request_id": request_id}})
    return error_response(503, "unavailable", f"The {what} is unavailable; retry shortly.")


@web.middleware
async def error_and_log_middleware(request: web.Request, handler):
    timer = Timer()
    request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex
    request[REQUEST_ID_KEY] = request_id
    try:
        # No id, name or search term holds a NUL, and PostgreSQL cannot even
        # compare text with one: refused here for every route at once (both are
        # decoded). In the path it names nothing: 404, like any malformed id.
        if "\x00" in request.path:
            raise NotFound()
        if "\x00" in request.query_string:
            raise Invalid(HAS_NUL)
        response = await handler(request)
    except DomainError as exc:
        response = json_response({"error": exc.to_dict()}, status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {
            404: "not_found", 405: "method_not_allowed", 413: "too_large", 401: "unauthorized",
            403: "forbidden",
        }.get(exc.status, "invalid")
        response = error_response(exc.status, code, exc.reason)
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    except ConnectionResetError:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            response = _internal(request_id)  # another connection's (storage's, say)
        else:
            # The client hung up, or was cut off, mid-request: nothing can reach
            # it, and aiohttp's attempt to send this response fails quietly.
            log.info("client gone mid-request", extra={"fields": {"request_id": request_id}})
            response = web.Response(status=499, reason="Client Closed Request")
    except http_exceptions.HttpProcessingError as exc:
        # Raised while a handler parses the request itself, e.g. the headers of a
        # multipart part (a NUL or a bare CR in a file name): the client's fault.
        reason = str(getattr(exc, "message", "") or "").splitlines()[0][:200]
        response = error_response(400, "invalid", f"Malformed request: {reason or 'bad syntax'}.")
    except Exception as exc:
        response = _unavailable(request, request_id, exc) or _internal(request_id)
    response.headers["X-Request-Id"] = request_id
    route, duration_ms = _route_template(request), timer.ms()
    metrics = request.app.get(METRICS_KEY)
    if metrics is not None:
        metrics.http_request(request.method, route, response.status, duration_ms / 1000)
    log_request(
        request_id=request_id,
        user_id=request.get(USER_ID_KEY),
        method=request.method,
        route=route or request.path,
        status=response.status,
        duration_ms=duration_ms,
    )
    return response

