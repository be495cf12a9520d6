"""Web Push (RFC 8030): payloads encrypted aes128gcm (RFC 8291 on RFC 8188),
requests signed with VAPID (RFC 8292, `Authorization: vapid t=…,k=…`) by
py_vapid (pywebpush's), and posted by the push worker's lean HTTP/1.1 client
(app/pushers/http1.py) on kept-alive connections.

The encryption is RFC 8291's few steps written directly on `cryptography`'s
ECDH and AES-GCM and the standard library's HMAC-SHA-256: the general
http_ece code path (several HKDF objects and key serialisations per push)
cost more CPU than the key agreement itself. The tests decrypt every push
with http_ece, an independent implementation. Every push gets a fresh
ephemeral ECDH key and salt, as RFC 8291 requires; what is reused is only
what does not depend on the message: the subscription's public key parsed
once, and the signed VAPID header per push service.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from py_vapid import Vapid02

from app.pushers import Device, PushError, PushMessage, classify_status
from app.pushers.http1 import HttpError, Pool

log = logging.getLogger("parley.push")

CONNECT_TIMEOUT = 5.0
TIMEOUT = 15.0
# Parsed subscription keys kept (a P-256 point each): enough for every device
# a worker meets between restarts in most deployments; beyond it, oldest out.
KEY_CACHE = 50_000
RECORD_SIZE = 4096  # RFC 8188 rs: one record holds the whole payload (RFC 8291 §4)
_X962 = serialization.Encoding.X962
_POINT = serialization.PublicFormat.UncompressedPoint
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
        self._headers: dict[str, tuple[float, str]] = {}
        self._keys: dict[tuple[str, str], tuple[ec.EllipticCurvePublicKey, bytes]] = {}
        self._pool = Pool(connect_timeout=CONNECT_TIMEOUT, timeout=TIMEOUT)

    @classmethod
    def from_settings(cls, settings, var_dir: Path | None = None) -> WebPushProvider:
        key = settings.vapid_private_key
        if not key:
            from app.config import VAR_DIR

            key = local_private_key(var_dir or VAR_DIR)
        return cls(key, settings.vapid_subject)

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

    def _receiver(self, device: Device) -> tuple[ec.EllipticCurvePublicKey, bytes, bytes]:
        """The subscription's public key (parsed and raw) and auth secret, decoded once."""
        key = (device.p256dh, device.auth)
        hit = self._keys.get(key)
        if hit is None:
            try:
                point = base64.urlsafe_b64decode(device.p256dh + "=" * (-len(device.p256dh) % 4))
                auth = base64.urlsafe_b64decode(device.auth + "=" * (-len(device.auth) % 4))
                public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            except (ValueError, binascii.Error):
                raise PushError("rejected", detail="invalid subscription keys") from None
            if len(self._keys) >= KEY_CACHE:
                self._keys.pop(next(iter(self._keys)))
            hit = self._keys[key] = (public, point, auth)
        return hit

    def encrypt(self, device: Device, data: bytes) -> bytes:
        """RFC 8291 aes128gcm with a fresh ephemeral key and salt for each push."""
        public, ua_point, auth = self._receiver(device)
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        as_point = ephemeral.public_key().public_bytes(_X962, _POINT)
        secret = ephemeral.exchange(ec.ECDH(), public)
        # §3.3: IKM = HKDF(salt=auth_secret, ikm=ECDH secret,
        # info="WebPush: info" 0x00 ua_public as_public, L=32); one HMAC block each.
        prk_key = hmac.digest(auth, secret, "sha256")
        ikm = hmac.digest(prk_key, b"WebPush: info\x00" + ua_point + as_point + b"\x01",
                          "sha256")
        # RFC 8188 §2.2: the content-encryption key and nonce from a random salt.
        salt = os.urandom(16)
        prk = hmac.digest(salt, ikm, "sha256")
        cek = hmac.digest(prk, b"Content-Encoding: aes128gcm\x00\x01", "sha256")[:16]
        nonce = hmac.digest(prk, b"Content-Encoding: nonce\x00\x01", "sha256")[:12]
        # One record, its padding delimiter 0x02 marks it the last (RFC 8188 §2).
        record = AESGCM(cek).encrypt(nonce, data + b"\x02", None)
        rs = max(RECORD_SIZE, len(record) + 1)  # larger than the record (RFC 8291 §4)
        # Header: salt, rs, idlen, keyid = the ephemeral public key (RFC 8291 §4).
        return salt + rs.to_bytes(4, "big") + bytes((len(as_point),)) + as_point + record

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
