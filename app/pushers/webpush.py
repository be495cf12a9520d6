"""Web Push (RFC 8030) with pywebpush: payloads encrypted aes128gcm (RFC 8291)
by `WebPusher.encode` (http_ece underneath), requests signed with VAPID
(RFC 8292, `Authorization: vapid t=…,k=…`) by py_vapid, and posted by the push
worker's lean HTTP/1.1 client (app/pushers/http1.py) on kept-alive connections.

pywebpush's own sending path is not used: it makes each request through
aiohttp or requests, where the worker's client keeps connections to each push
service open and only parses the answers. Every push gets
a fresh ephemeral ECDH key and salt from `encode`, as RFC 8291 requires; what
is reused is only what does not depend on the message, the signed VAPID header
per push service.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from http_ece import ECEException
from py_vapid import Vapid02
from pywebpush import WebPusher, WebPushException

from app.config import VAR_DIR, local_secret_file
from app.pushers import Device, PushError, PushMessage, classify_status
from app.pushers.http1 import HttpError, Pool

log = logging.getLogger("parley.push")

CONNECT_TIMEOUT = 5.0
TIMEOUT = 15.0
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


def local_private_key(settings, var_dir: Path | None = None) -> str:
    """The generated key, persisted in VAPID_PRIVATE_KEY_FILE or var/ (made on
    first use), like the secret key."""
    path = (Path(settings.vapid_private_key_file) if settings.vapid_private_key_file
            else (var_dir or VAR_DIR) / "vapid_private_key")
    return local_secret_file(path, generate_private_key)


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
        self._headers: dict[str, tuple[float, str]] = {}
        self._pool = Pool(connect_timeout=CONNECT_TIMEOUT, timeout=TIMEOUT)

    @classmethod
    def from_settings(cls, settings, var_dir: Path | None = None) -> WebPushProvider:
        return cls(settings.vapid_private_key or local_private_key(settings, var_dir),
                   settings.vapid_subject)

    def _vapid_authorization(self, endpoint: str) -> str:
        # scheme://host[:port]: endpoints were checked to be plain http(s) URLs.
        aud = "/".join(endpoint.split("/", 3)[:3])
        now = time.time()
        hit = self._headers.get(aud)
        if hit is None or hit[0] < now:
            headers = self.vapid.sign({"aud": aud, "sub": self.subject,
                                       "exp": int(now) + VAPID_LIFETIME})
            hit = self._headers[aud] = (now + VAPID_REUSE, headers["Authorization"])
        return hit[1]

    def encrypt(self, device: Device, data: bytes) -> bytes:
        """The aes128gcm body (RFC 8188 header and records) for the device."""
        try:
            pusher = WebPusher({"endpoint": device.address,
                                "keys": {"p256dh": device.p256dh, "auth": device.auth}})
            return pusher.encode(data, content_encoding="aes128gcm")["body"]
        except (ValueError, IndexError, WebPushException, ECEException):
            # Keys that are empty, no base64url or no P-256 point (WebPusher
            # reads an empty p256dh with an IndexError): no retry can help.
            raise PushError("rejected", detail="invalid subscription keys") from None

    async def send(self, device: Device, msg: PushMessage) -> None:
        body = self.encrypt(device, json.dumps(msg.web_payload(),
                                               separators=(",", ":")).encode())
        headers = [
            ("Authorization", self._vapid_authorization(device.address)),
            ("TTL", str(max(0, msg.ttl))),
            # Topic (RFC 8030 §5.4): a pending push with the same topic is replaced,
            # at most 32 base64url characters: the conversation id without dashes.
            ("Topic", msg.tag.replace("-", "")[:32]),
            ("Urgency", "normal" if msg.kind == "badge" else "high"),
            ("Content-Encoding", "aes128gcm"),
            ("Content-Type", "application/octet-stream"),
        ]
        try:
            resp = await self._pool.post(device.address, headers, body)
        except HttpError as exc:
            if exc.permanent:
                raise PushError("rejected", detail=exc.detail) from None
            if exc.timeout:
                raise PushError("timeout", transient=True) from None
            raise PushError("outage", transient=True, detail=exc.detail) from None
        if resp.status in (200, 201, 202):
            return
        raise classify_status(resp.status, resp.headers.get("retry-after"),
                              detail=f"HTTP {resp.status}")

    async def close(self) -> None:
        await self._pool.close()
