"""Local stand-ins for the push services, checking what the real ones check.

- WebPushService: a push service (RFC 8030) that verifies the VAPID JWT
  (RFC 8292: ES256 against the `k` key, `aud` = its own origin, `exp` within
  24 h, `sub` a mailto:/https: contact) and decrypts the aes128gcm payload
  (RFC 8291) with the subscription's private key, like a browser would.
- FcmService: the OAuth token endpoint (verifies the RS256 JWT-bearer
  assertion against the test service account's public key) and the HTTP v1
  send API (bearer token, message shape).
- ApnsService: an HTTP/2 server (hypercorn, cleartext with prior knowledge)
  that verifies the ES256 provider token and the apns-* headers.

Each keeps what it accepted in `received` and can be told to answer the next
requests with an error (`fail_next`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.ports import free_port


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class BrowserKeys:
    """What a browser's PushManager makes for one subscription."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.p256dh = b64url(self.private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
        self.auth_secret = os.urandom(16)
        self.auth = b64url(self.auth_secret)


class _Base:
    def __init__(self) -> None:
        self.received: list[dict] = []
        self.failures: list[tuple[int, dict, bytes]] = []
        self.errors: list[str] = []  # requests refused for bad crypto or shape
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._arrived = asyncio.Condition()

    def fail_next(self, status: int, headers: dict | None = None, body: bytes = b"",
                  times: int = 1) -> None:
        for _ in range(times):
            self.failures.append((status, headers or {}, body))

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _note(self, item: dict) -> None:
        async with self._arrived:
            self.received.append(item)
            self._arrived.notify_all()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.received) >= count),
                                   timeout)
        return self.received

    async def start_app(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = self.port or free_port()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class WebPushService(_Base):
    def __init__(self, vapid_public_key: str) -> None:
        super().__init__()
        self.vapid_public_key = vapid_public_key
        self.keys: dict[str, BrowserKeys] = {}
        self.statuses: list[int] = []
        self.latency = 0.0  # seconds each answer takes, like a push service far away

    def subscription(self, name: str) -> dict:
        """A new subscription as PushSubscription.toJSON() gives it."""
        keys = self.keys[name] = BrowserKeys()
        return {"kind": "webpush", "endpoint": f"{self.origin}/push/{name}",
                "keys": {"p256dh": keys.p256dh, "auth": keys.auth}}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/push/{name}", self.handle)
        await self.start_app(app)

    def _verify_vapid(self, header: str) -> dict:
        scheme, _, rest = header.partition(" ")
        assert scheme.lower() == "vapid", f"scheme {scheme!r}"
        parts = dict(p.split("=", 1) for p in rest.split(","))
        assert parts["k"] == self.vapid_public_key, "k is not the server's VAPID key"
        pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(parts["k"]))
        claims = jwt.decode(parts["t"], pub, algorithms=["ES256"], audience=self.origin,
                            options={"require": ["aud", "exp", "sub"]})
        assert claims["exp"] <= time.time() + 24 * 3600, "exp more than 24 h ahead"
        assert claims["sub"].startswith(("mailto:", "https:")), "sub is no contact"
        return claims

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        if self.latency:
            await asyncio.sleep(self.latency)
        try:
            claims = self._verify_vapid(request.headers.get("Authorization", ""))
            assert request.headers.get("Content-Encoding") == "aes128gcm"
            ttl = int(request.headers["TTL"])
            keys = self.keys[name]
            plain = http_ece.decrypt(body, private_key=keys.private,
                                     auth_secret=keys.auth_secret, version="aes128gcm")
            payload = json.loads(plain)
        except Exception as exc:  # noqa: BLE001 - the test reads why
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return web.Response(status=400, text=str(exc))
        if self.failures:
            status, headers, fbody = self.failures.pop(0)
            self.statuses.append(status)
            return web.Response(status=status, headers=headers, body=fbody)
        self.statuses.append(201)
        await self._note({"name": name, "payload": payload, "ttl": ttl, "claims": claims,
                          "topic": request.headers.get("Topic"),
                          "urgency": request.headers.get("Urgency")})
        return web.Response(status=201)


class FcmService(_Base):
    """Token exchange at /token, sends at /v1/projects/{project}/messages:send."""

    def __init__(self, tmp_path, project: str = "parley-test") -> None:
        super().__init__()
        self.project = project
        self.port = free_port()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = key.public_key()
        self.credentials = {
            "type": "service_account", "project_id": project,
            "private_key_id": "test-key-1",
            "private_key": key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode(),
            "client_email": f"push@{project}.iam.gserviceaccount.com",
            "token_uri": f"{self.origin}/token",
        }
        self.credentials_file = tmp_path / "fcm-service-account.json"
        self.credentials_file.write_text(json.dumps(self.credentials))
        self.tokens: dict[str, float] = {}
        self.exchanges = 0
        self.unregistered: set[str] = set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/token", self.token)
        app.router.add_post(f"/v1/projects/{self.project}/messages:send", self.send)
        await self.start_app(app)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
            assertion = form["assertion"]
            header = jwt.get_unverified_header(assertion)
            assert header["alg"] == "RS256" and header["kid"] == "test-key-1"
            claims = jwt.decode(assertion, self.public_key, algorithms=["RS256"],
                                audience=f"{self.origin}/token",
                                options={"require": ["iss", "aud", "exp", "iat"]})
            assert claims["iss"] == self.credentials["client_email"]
            assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
            assert claims["exp"] - claims["iat"] <= 3600
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"token: {type(exc).__name__}: {exc}")
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.exchanges += 1
        token = b64url(os.urandom(24))
        self.tokens[token] = time.time() + 3600
        return web.json_response({"access_token": token, "expires_in": 3599,
                                  "token_type": "Bearer"})

    async def send(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return web.json_response({"error": {"code": 401, "status": "UNAUTHENTICATED"}},
                                     status=401)
        body = await request.json()
        try:
            msg = body["message"]
            assert set(body) == {"message"}
            assert isinstance(msg["token"], str) and msg["token"]
            assert all(isinstance(v, str) for v in msg["data"].values()), "data values: str"
            if "notification" in msg:
                assert set(msg["notification"]) <= {"title", "body"}
                assert msg["android"]["collapse_key"] == msg["data"]["tag"]
                assert msg["android"]["notification"]["tag"] == msg["data"]["tag"]
            assert msg["android"]["ttl"].endswith("s")
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"send: {type(exc).__name__}: {exc}")
            return web.json_response({"error": {"code": 400, "status": "INVALID_ARGUMENT"}},
                                     status=400)
        if msg["token"] in self.unregistered:
            return web.json_response({"error": {
                "code": 404, "status": "NOT_FOUND", "details": [{
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": "UNREGISTERED"}]}}, status=404)
        if self.failures:
            status, headers, fbody = self.failures.pop(0)
            return web.Response(status=status, headers=headers, body=fbody)
        await self._note(msg)
        return web.json_response({"name": f"projects/{self.project}/messages/1"})


class ApnsService(_Base):
    """HTTP/2 only (hypercorn, h2c prior knowledge): POST /3/device/{token}."""

    def __init__(self, tmp_path, topic: str = "org.parley.app") -> None:
        super().__init__()
        self.topic = topic
        self.team_id = "TEAM123456"
        self.key_id = "KEY1234567"
        key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = key.public_key()
        self.key_file = tmp_path / "AuthKey.p8"
        self.key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self.gone: set[str] = set()
        self.http_versions: list[str] = []
        self._shutdown = asyncio.Event()
        self._task = None

    async def start(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        self.port = free_port()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.errorlog = None
        self._task = asyncio.create_task(serve(self.asgi, config,
                                               shutdown_trigger=self._shutdown.wait))
        for _ in range(100):
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._shutdown.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5)

    async def asgi(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, reply = await self.handle(scope, body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"apns-id", b"00000000-0000-0000-0000-000000000001")]})
        await send({"type": "http.response.body", "body": json.dumps(reply).encode()
                    if reply else b""})

    async def handle(self, scope, body: bytes) -> tuple[int, dict | None]:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.http_versions.append(scope["http_version"])
        path = scope["path"]
        try:
            assert scope["http_version"] == "2", "APNs speaks HTTP/2 only"
            assert scope["method"] == "POST" and path.startswith("/3/device/")
            scheme, _, token = headers["authorization"].partition(" ")
            assert scheme == "bearer"
            header = jwt.get_unverified_header(token)
            assert header["alg"] == "ES256" and header["kid"] == self.key_id
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"],
                                options={"require": ["iss", "iat"]})
            assert claims["iss"] == self.team_id
            assert abs(claims["iat"] - time.time()) < 3600
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"auth: {type(exc).__name__}: {exc}")
            return 403, {"reason": "InvalidProviderToken"}
        try:
            assert headers["apns-topic"] == self.topic, "apns-topic"
            kind = headers["apns-push-type"]
            assert kind in ("alert", "background")
            assert len(headers["apns-collapse-id"]) <= 64
            assert int(headers["apns-expiration"]) > time.time()
            payload = json.loads(body)
            assert len(body) <= 4096
            aps = payload["aps"]
            if kind == "alert":
                assert headers["apns-priority"] == "10"
                assert set(aps["alert"]) == {"title", "body"}
            else:
                assert headers["apns-priority"] == "5" and aps["content-available"] == 1
                assert "alert" not in aps
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"request: {type(exc).__name__}: {exc}")
            return 400, {"reason": "BadRequest"}
        device = path.rsplit("/", 1)[1]
        if device in self.gone:
            return 410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}
        if self.failures:
            status, _h, fbody = self.failures.pop(0)
            return status, json.loads(fbody or b"{}")
        await self._note({"device": device, "headers": headers, "payload": payload})
        return 200, None
