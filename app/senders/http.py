"""One HTTP call to a provider, with failures sorted into SendError reasons."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import aiohttp
from yarl import URL

from app.senders import SendError

TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)


@dataclass
class Reply:
    status: int
    body: bytes

    def json(self) -> dict:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


async def call(method: str, url: str | URL, *, headers: dict[str, str],
               data: bytes | None = None) -> Reply:
    """A connection that could not be made is transient (nothing was sent). A
    timeout or a connection lost mid-request is not: the provider may have
    accepted the message, and SMS APIs are not idempotent, so a retry could
    send (and bill) the code twice."""
    try:
        # A session per code: codes are rare, and nothing is left to close.
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.request(
            method, url, headers=headers, data=data, allow_redirects=False
        ) as resp:
            return Reply(resp.status, await resp.read())
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise SendError("outage", transient=True, detail=type(exc).__name__) from None
    except TimeoutError:
        raise SendError("timeout", detail="no answer in time") from None
    except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
        raise SendError("outage", detail=type(exc).__name__) from None


def http_failure(reply: Reply, detail: str = "") -> SendError:
    """What an HTTP status says when the body says nothing more specific."""
    if reply.status == 429:
        return SendError("throttled", transient=True, detail=detail or "HTTP 429")
    if reply.status >= 500:
        return SendError("outage", transient=True, detail=detail or f"HTTP {reply.status}")
    return SendError("rejected", detail=detail or f"HTTP {reply.status}")
