"""Sign-in test kit: the real OpenID Connect provider (npm oidc-provider, run by
node), a browser-like driver for its login and consent pages, and local
stand-ins for Google, Apple, GitHub and WeChat that answer as those services
document (and check what we send them)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_SCRIPT = ROOT / "tests" / "oidc" / "provider.mjs"
WEB_SECRET = "parley-web-secret-" + "x" * 24


# Fixtures of the modules that sign in through a provider (imported there).

@pytest.fixture(scope="module")
def parley_port():
    """One port for the module: the redirect URI registered at the provider
    names it, and each test restarts the server there."""
    return free_port()


@pytest.fixture
async def server(app, parley_port):
    """The app on `parley_port`, with empty tables. If it cannot listen there it
    is closed again (its cleanup run, its database context released), so one
    busy port fails one test, not every later one of the worker."""
    from aiohttp.test_utils import TestServer

    from tests.conftest import _truncate_all

    srv = TestServer(app, host="127.0.0.1", port=parley_port)
    try:
        await srv.start_server()
        await _truncate_all()
        yield srv
    finally:
        await srv.close()


class OidcProvider:
    """`node tests/oidc/provider.mjs` on a free port, with the given clients."""

    def __init__(self, clients: list[dict]) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.clients = clients
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "OIDC_CLIENTS": json.dumps(self.clients)}
        self.proc = subprocess.Popen(["node", str(PROVIDER_SCRIPT), str(self.port)], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.monotonic() + 20
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return
            if self.proc.poll() is not None:
                break
        err = self.proc.stderr.read() if self.proc.poll() is not None else ""
        self.stop()
        raise RuntimeError(f"oidc-provider did not start: {line!r} {err[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


def browser() -> aiohttp.ClientSession:
    """A cookie-keeping client that, like a browser, keeps cookies of IP hosts."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


async def drive(session: aiohttp.ClientSession, url: str, stop_at: str, *, login: str = "alice",
                abort: bool = False, max_steps: int = 20) -> str:
    """Follow redirects and fill in oidc-provider's development login and consent
    pages, until a redirect to a URL starting with `stop_at`; returns that URL."""
    method, data = "GET", None
    for _ in range(max_steps):
        async with session.request(method, url, data=data, allow_redirects=False) as resp:
            body = await resp.text()
            if resp.status in (301, 302, 303, 307, 308):
                url = urljoin(url, resp.headers["Location"])
                method, data = "GET", None
                if url.startswith(stop_at):
                    return url
                continue
            assert resp.status == 200, (resp.status, body[:500])
        if abort:
            found = re.search(r'href="([^"]*abort[^"]*)"', body)
            assert found, body[:1000]
            url, method, data = urljoin(url, html.unescape(found.group(1))), "GET", None
            continue
        form = _FORM.search(body)
        assert form, body[:1000]
        action = urljoin(url, html.unescape(form.group(1)))
        fields = dict(_HIDDEN.findall(form.group(2)))
        if fields.get("prompt") == "login":
            fields.update(login=login, password="any")
        url, method, data = action, "POST", fields
    raise AssertionError("the provider never redirected back")


def fragment_of(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).fragment).items()}


def query_of(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# --- stand-ins for the presets -----------------------------------------------------------


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@dataclass
class Grant:
    redirect_uri: str
    challenge: str | None
    nonce: str | None
    subject: str
    used: bool = False


@dataclass
class StandIn:
    """One local service answering like Google, Apple, GitHub or WeChat.

    The authorize endpoint approves at once (the person said yes) for
    `self.next_subject`, and records what it was asked; tokens, users and
    errors follow each service's documentation.
    """

    kind: str
    client_id: str = "parley-client"
    client_secret: str = "parley-client-secret"
    next_subject: str = "person-1"
    name: str = "Wang Fang"
    picture: str = ""
    apple_key: ECKey | None = None  # the public half checks Apple client secrets
    apple_team: str = "TEAM123456"
    apple_key_id: str = "KEY1234567"
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, {"kid": "k1"}))
    grants: dict = field(default_factory=dict)
    authorize_requests: list = field(default_factory=list)
    token_requests: list = field(default_factory=list)
    extra_clients: dict = field(default_factory=dict)  # WeChat: further appid → secret
    base: str = ""
    runner: web.AppRunner | None = None
    down: bool = False

    # -- lifecycle
    async def start(self) -> StandIn:
        app = web.Application()
        app.router.add_get("/authorize", self.authorize)
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_post("/token", self.token)
        app.router.add_get("/avatar.png", self.avatar)
        # GitHub
        app.router.add_get("/login/oauth/authorize", self.authorize)
        app.router.add_post("/login/oauth/access_token", self.github_token)
        app.router.add_get("/api/user", self.github_user)
        app.router.add_get("/api/user/emails", self.github_emails)
        # WeChat
        app.router.add_get("/connect/qrconnect", self.authorize)
        app.router.add_get("/sns/oauth2/access_token", self.wechat_token)
        app.router.add_get("/sns/userinfo", self.wechat_userinfo)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- configuration for Parley
    def config(self) -> dict:
        if self.kind == "github":
            return {"client_id": self.client_id, "client_secret": self.client_secret,
                    "authorize_url": f"{self.base}/login/oauth/authorize",
                    "token_url": f"{self.base}/login/oauth/access_token",
                    "api_url": f"{self.base}/api"}
        if self.kind == "wechat":
            return {"appid": self.client_id, "secret": self.client_secret,
                    "authorize_url": f"{self.base}/connect/qrconnect",
                    "token_url": f"{self.base}/sns/oauth2/access_token",
                    "userinfo_url": f"{self.base}/sns/userinfo"}
        conf = {"client_id": self.client_id, "issuer": self.base}
        if self.kind == "apple":
            conf.update(team_id=self.apple_team, key_id=self.apple_key_id,
                        private_key=self.apple_key.as_pem(private=True).decode())
        else:
            conf["client_secret"] = self.client_secret
        return conf

    # -- tokens we mint as the provider
    def id_token(self, **claims) -> str:
        now = int(time.time())
        body = {"iss": self.base, "aud": self.client_id, "sub": self.next_subject,
                "iat": now, "exp": now + 600, "name": self.name, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode({"alg": "RS256", "kid": "k1"}, body, self.key)

    # -- handlers
    async def discovery(self, request):
        if self.down:
            raise web.HTTPServiceUnavailable()
        return web.json_response({
            "issuer": self.base, "authorization_endpoint": f"{self.base}/authorize",
            "token_endpoint": f"{self.base}/token", "jwks_uri": f"{self.base}/jwks",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"]})

    async def jwks(self, request):
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    async def avatar(self, request):
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (300, 200), (0, 128, 0)).save(buf, format="PNG")
        return web.Response(body=buf.getvalue(), content_type="image/png")

    async def authorize(self, request):
        q = dict(request.query)
        self.authorize_requests.append(q)
        client = q.get("appid") if self.kind == "wechat" else q.get("client_id")
        if client != self.client_id:
            return web.Response(status=400, text="unknown client")
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(q["redirect_uri"], q.get("code_challenge"), q.get("nonce"),
                                  self.next_subject)
        sep = "&" if "?" in q["redirect_uri"] else "?"
        raise web.HTTPFound(f"{q['redirect_uri']}{sep}code={code}&state={q.get('state', '')}")

    def _take_grant(self, code, redirect_uri, verifier) -> Grant | None:
        grant = self.grants.get(code)
        if grant is None or grant.used or grant.redirect_uri != redirect_uri:
            return None
        if grant.challenge is not None and (not verifier or _s256(verifier) != grant.challenge):
            return None
        grant.used = True
        return grant

    def _check_apple_secret(self, secret: str) -> bool:
        try:
            tok = jwt.decode(secret, self.apple_key, algorithms=["ES256"])
        except Exception:
            return False
        c = tok.claims
        return (tok.header.get("kid") == self.apple_key_id and c.get("iss") == self.apple_team
                and c.get("sub") == self.client_id and c.get("aud") == "https://appleid.apple.com"
                and c.get("exp", 0) > time.time())

    async def token(self, request):
        """Google and Apple: client_secret_post; Apple's secret is an ES256 JWT."""
        form = dict(await request.post())
        self.token_requests.append(form)
        if form.get("client_id") != self.client_id:
            return web.json_response({"error": "invalid_client"}, status=401)
        ok = (self._check_apple_secret(form.get("client_secret", "")) if self.kind == "apple"
              else form.get("client_secret") == self.client_secret)
        if not ok:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "authorization_code":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        grant = self._take_grant(form.get("code"), form.get("redirect_uri"),
                                 form.get("code_verifier"))
        if grant is None:
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response({"access_token": "at-" + secrets.token_hex(8),
                                  "token_type": "Bearer", "expires_in": 3600,
                                  "id_token": self.id_token(sub=grant.subject,
                                                            nonce=grant.nonce,
                                                            picture=self.picture or None)})

    # GitHub: https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
    async def github_token(self, request):
        form = dict(await request.post())
        self.token_requests.append(form)
        if request.headers.get("Accept") != "application/json":
            return web.Response(text="access_token=x&scope=&token_type=bearer",
                                content_type="application/x-www-form-urlencoded")
        # GitHub takes the client credentials in the body or by Basic auth.
        cid, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if cid != self.client_id or secret != self.client_secret:
            return web.json_response({"error": "incorrect_client_credentials",
                                      "error_description": "The client_id and/or client_secret "
                                      "passed are incorrect."})
        grant = self._take_grant(form.get("code"), form.get("redirect_uri"),
                                 form.get("code_verifier"))
        if grant is None:  # GitHub answers 200 with an error body
            return web.json_response({"error": "bad_verification_code",
                                      "error_description": "The code passed is incorrect or "
                                      "expired."})
        return web.json_response({"access_token": f"gho_{grant.subject}",
                                  "scope": "read:user,user:email", "token_type": "bearer"})

    def _github_login(self, request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith(("Bearer gho_", "token gho_")):
            return None
        return auth.split("gho_", 1)[1]

    async def github_user(self, request):
        sub = self._github_login(request)
        if sub is None:
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response({"login": f"gh-{sub}", "id": abs(hash(sub)) % 10**8,
                                  "name": self.name, "email": None,
                                  "avatar_url": self.picture})

    async def github_emails(self, request):
        sub = self._github_login(request)
        if sub is None:
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response([
            {"email": f"{sub}@users.example", "primary": True, "verified": True,
             "visibility": "private"}])

    # WeChat: https://developers.weixin.qq.com/doc/oplatform/Website_App/WeChat_Login/Wechat_Login.html
    async def wechat_token(self, request):
        q = dict(request.query)
        self.token_requests.append(q)
        clients = {self.client_id: self.client_secret, **self.extra_clients}
        if q.get("appid") not in clients or q.get("secret") != clients[q.get("appid")]:
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        grant = self.grants.get(q.get("code", ""))
        if grant is None or grant.used or q.get("grant_type") != "authorization_code":
            return web.json_response({"errcode": 40029, "errmsg": "invalid code"})
        grant.used = True
        return web.json_response({"access_token": f"wx_{grant.subject}", "expires_in": 7200,
                                  "refresh_token": "r", "openid": f"o_{grant.subject}",
                                  "scope": "snsapi_login", "unionid": f"u_{grant.subject}"})

    async def wechat_userinfo(self, request):
        q = dict(request.query)
        token = q.get("access_token", "")
        if not token.startswith("wx_") or q.get("openid") != f"o_{token[3:]}":
            return web.json_response({"errcode": 40003, "errmsg": "invalid openid"})
        sub = token[3:]
        return web.json_response({"openid": f"o_{sub}", "nickname": self.name, "sex": 1,
                                  "province": "", "city": "", "country": "CN",
                                  "headimgurl": self.picture, "privilege": [],
                                  "unionid": f"u_{sub}"})
