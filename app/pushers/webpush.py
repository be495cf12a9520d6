"""Web Push (RFC 8030) with pywebpush: payloads encrypted aes128gcm (RFC 8291),
requests signed with VAPID (RFC 8292, `Authorization: vapid t=…,k=…`)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher

from app.pushers import Device, PushError, PushMessage, classify_status

log = logging.getLogger("parley.push")

TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)
# A signed VAPID header is reused for this long per push service (the JWT
# lives twice as long): one ES256 signature per service, not per push.
VAPID_REUSE = 6 * 3600
VAPID_LIFETIME = 12 * 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def generate_private_key() -> str:
    """A fresh P-256 key as base64url of its 32 raw bytes (VAPID_PRIVATE_KEY's format)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


def local_private_key(var_dir: Path) -> str:
    """The key persisted under var/ (made on first use), like the secret key."""
    path = var_dir / "vapid_private_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        var_dir.mkdir(parents=True, exist_ok=True)
        key = generate_private_key()
        path.write_text(key)
        path.chmod(0o600)
        return key


def load_vapid(private_key: str) -> Vapid02:
    """VAPID_PRIVATE_KEY: base64url raw key or DER, or a PEM block."""
    text = private_key.strip()
    if text.startswith("-----BEGIN"):
        return Vapid02.from_pem(text.encode())
    return Vapid02.from_string(text)


class WebPushProvider:
    kind = "webpush"

    def __init__(self, private_key: str, subject: str) -> None:
        self.vapid = load_vapid(private_key)
        self.subject = subject
        raw = self.vapid.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        self.public_key = b64url(raw)  # what PushManager.subscribe takes
        self._headers: dict[str, tuple[float, dict]] = {}
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings, var_dir: Path | None = None) -> WebPushProvider:
        key = settings.vapid_private_key
        if not key:
            from app.config import VAR_DIR

            key = local_private_key(var_dir or VAR_DIR)
        return cls(key, settings.vapid_subject)

    def _vapid_headers(self, endpoint: str) -> dict:
        # scheme://host[:port]: endpoints were checked to be plain http(s) URLs.
        aud = "/".join(endpoint.split("/", 3)[:3])
        now = time.time()
        hit = self._headers.get(aud)
        if hit is None or hit[0] < now:
            headers = self.vapid.sign({"aud": aud, "sub": self.subject,
                                       "exp": int(now) + VAPID_LIFETIME})
            hit = self._headers[aud] = (now + VAPID_REUSE, headers)
        return dict(hit[1])

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=256))
        return self._session

    async def send(self, device: Device, msg: PushMessage) -> None:
        headers = self._vapid_headers(device.address)
        # Topic (RFC 8030 §5.4): a pending push with the same topic is replaced,
        # at most 32 base64url characters: the conversation id without dashes.
        headers["Topic"] = msg.tag.replace("-", "")[:32]
        headers["Urgency"] = "normal" if msg.kind == "badge" else "high"
        pusher = WebPusher({"endpoint": device.address,
                            "keys": {"p256dh": device.p256dh, "auth": device.auth}},
                           aiohttp_session=self._client())
        data = json.dumps(msg.web_payload(), separators=(",", ":")).encode()
        try:
            resp = await pusher.send_async(data, headers, ttl=max(0, msg.ttl),
                                           content_encoding="aes128gcm",
                                           timeout=TIMEOUT)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise PushError("outage", transient=True, detail=type(exc).__name__) from None
        except TimeoutError:
            raise PushError("timeout", transient=True) from None
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise PushError("outage", transient=True, detail=type(exc).__name__) from None
        if resp.status in (200, 201, 202):
            return
        raise classify_status(resp.status, resp.headers.get("Retry-After"),
                              detail=f"HTTP {resp.status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
