"""Firebase Cloud Messaging, HTTP v1 API.

Authentication is OAuth 2.0 with a service account (RFC 7523 JWT bearer): an
RS256 assertion signed with the account's key is exchanged at its token_uri
for an access token, which is cached until shortly before it expires. Sends
go through the push worker's kept-alive HTTP/1.1 client (app/pushers/http1.py).
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import jwt

from app.pushers import Device, PushError, PushMessage, classify_status, retry_after
from app.pushers.http1 import HttpError, Pool

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)
EARLY = 60  # renew the access token this many seconds before it expires
GONE_CODES = {"UNREGISTERED"}


class FcmProvider:
    kind = "fcm"

    def __init__(self, credentials: dict, endpoint: str, token_endpoint: str = "") -> None:
        for key in ("client_email", "private_key", "project_id"):
            if not credentials.get(key):
                raise ValueError(f"FCM_CREDENTIALS_FILE lacks {key!r}")
        self.creds = credentials
        self.endpoint = endpoint.rstrip("/")
        self.token_uri = token_endpoint or credentials.get(
            "token_uri", "https://oauth2.googleapis.com/token")
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None  # the token exchange only
        self._pool = Pool(connect_timeout=5.0, timeout=15.0)  # the sends, kept alive
        self.token_exchanges = 0

    @classmethod
    def from_settings(cls, settings) -> FcmProvider:
        with open(settings.fcm_credentials_file, encoding="utf-8") as f:
            creds = json.load(f)
        return cls(creds, settings.fcm_endpoint, settings.fcm_token_endpoint)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        return self._session

    def _assertion(self) -> str:
        now = int(time.time())
        claims = {"iss": self.creds["client_email"], "scope": SCOPE, "aud": self.token_uri,
                  "iat": now, "exp": now + 3600}
        headers = {"kid": self.creds["private_key_id"]} if self.creds.get("private_key_id") \
            else None
        return jwt.encode(claims, self.creds["private_key"], algorithm="RS256", headers=headers)

    async def access_token(self, *, renew: bool = False) -> str:
        async with self._lock:
            if not renew and self._token is not None and self._token[1] > time.time():
                return self._token[0]
            try:
                async with self._client().post(
                        self.token_uri, data={"grant_type": GRANT,
                                              "assertion": self._assertion()}) as resp:
                    body = await resp.read()
                    status, header = resp.status, resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise PushError("outage", transient=True, detail=f"token: {type(exc).__name__}"
                                ) from None
            if status != 200:
                err = classify_status(status, header, detail=f"token exchange HTTP {status}")
                if not err.transient:
                    err = PushError("auth", detail=f"token exchange HTTP {status}")
                raise err
            data = json.loads(body)
            self.token_exchanges += 1
            ttl = float(data.get("expires_in", 3600))
            self._token = (data["access_token"], time.time() + max(0.0, ttl - EARLY))
            return self._token[0]

    def message(self, device: Device, msg: PushMessage) -> dict:
        data = {k: str(v) for k, v in msg.data.items()}
        data.update(type=msg.kind, tag=msg.tag, badge=str(msg.badge))
        if msg.kind == "badge":
            # A data message: the app updates its badge without showing anything.
            return {"token": device.address, "data": data,
                    "android": {"priority": "normal", "ttl": f"{msg.ttl}s"}}
        return {
            "token": device.address,
            "notification": {"title": msg.title, "body": msg.body},
            "data": data,
            "android": {"priority": "high", "ttl": f"{msg.ttl}s", "collapse_key": msg.tag,
                        "notification": {"tag": msg.tag, "notification_count": msg.badge}},
            "apns": {"headers": {"apns-collapse-id": msg.tag},
                     "payload": {"aps": {"badge": msg.badge}}},
        }

    async def send(self, device: Device, msg: PushMessage) -> None:
        url = f"{self.endpoint}/v1/projects/{self.creds['project_id']}/messages:send"
        body = json.dumps({"message": self.message(device, msg)}).encode()
        for attempt in (0, 1):
            token = await self.access_token(renew=attempt == 1)
            try:
                resp = await self._pool.post(url, [
                    ("Authorization", f"Bearer {token}"),
                    ("Content-Type", "application/json; charset=UTF-8")], body)
            except HttpError as exc:
                if exc.permanent:
                    raise PushError("rejected", detail=exc.detail) from None
                raise PushError("timeout" if exc.timeout else "outage", transient=True,
                                detail=exc.detail) from None
            status, text, header = resp.status, resp.body, resp.headers.get("retry-after")
            if status == 200:
                return
            if status == 401 and attempt == 0:
                continue  # the token was revoked early: renew it once
            break
        code = _error_code(text)
        if code in GONE_CODES:
            raise PushError("gone", gone=True, detail=code)
        if status == 429:
            raise PushError("throttled", transient=True, retry_after=retry_after(header),
                            detail=code)
        if status == 404:  # not the device (that is UNREGISTERED): the project or URL
            raise PushError("rejected", detail=code or "HTTP 404")
        raise classify_status(status, header, detail=code or f"HTTP {status}")

    async def close(self) -> None:
        await self._pool.close()
        if self._session is not None:
            await self._session.close()


def _error_code(body: bytes) -> str:
    """FCM's errorCode from google.rpc.Status details (UNREGISTERED, …)."""
    try:
        error = json.loads(body or b"{}").get("error") or {}
    except ValueError:
        return ""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status") or "")
