"""Sign-in with other accounts: generic OpenID Connect providers, and presets for
GitHub, Google, Sign in with Apple and WeChat website login.

Rules decided here (docs/api.md, "Sign in with other accounts"):

- Providers are configuration (OAUTH_PROVIDERS). An identity is the provider's
  stable id for the person (`sub`, GitHub's numeric id, WeChat's unionid or
  openid), never an email address: a first sign-in with an identity makes a new
  account, and an identity is attached to an existing account only by that
  account signing in and linking it. An email that matches is ignored, so a
  provider that does not verify addresses cannot hand over someone's account.
- Browser flow: state, PKCE (S256) and nonce are made per flow and kept
  server-side (OAuthFlow, digests only), tied to the browser by a cookie; each
  flow can complete once, within OAUTH_FLOW_TTL. The callback ends with a
  one-time code in the URL fragment (never sent to a server, so never logged)
  that the page exchanges for tokens.
- id_tokens are checked for signature (the issuer's JWKS), `iss`, `aud`,
  `exp`, and `nonce` when one was sent.
- Every failure is an OAuthFailed with a stable code; nothing is created
  before the provider's answer has been fully checked, and the account with its
  identity is created in one transaction.

The OAuth protocol work is authlib's (AsyncOAuth2Client: authorization URLs,
PKCE, token requests and their client authentication); JOSE is joserfc (the
JOSE library authlib itself uses). WeChat's login is not OAuth 2.0 on the wire
(`appid`/`secret` in the query, errors as 200 + `errcode`), so its two GETs are
plain HTTP requests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx2 as httpx
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError as AuthlibOAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey, KeySet
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.config import Settings
from app.deps import Deps
from app.errors import NotFound, OAuthFailed
from app.models.accounts import OAuthFlow, OAuthIdentity, User
from app.ratelimit import Limit
from app.services import accounts
from app.services.identity import random_username
from app.validation import Payload, clean_name

log = logging.getLogger("parley.oauth")

KINDS = ("oidc", "github", "google", "apple", "wechat")
HTTP_TIMEOUT = 10.0
HANDOFF_TTL = 120  # seconds the page has to exchange its one-time code
METADATA_TTL = 3600
LEEWAY = 60  # clock skew allowed on exp/iat
COOKIE = "parley_oauth"
COOKIE_PATH = "/api/v1/auth/oauth"
MAX_AVATAR_FETCH = 5 * 1024 * 1024

PRESETS: dict[str, dict] = {
    "github": {
        "label": "GitHub", "scope": "read:user user:email",
        "authorize_url": "https://github.com/login/oauth/authorize",
        "token_url": "https://github.com/login/oauth/access_token",
        "api_url": "https://api.github.com",
    },
    "google": {
        "label": "Google", "scope": "openid email profile",
        "issuer": "https://accounts.google.com",
        # Google's id_tokens say either spelling of its issuer.
        "issuer_aliases": ["accounts.google.com"],
        "token_endpoint_auth_method": "client_secret_post",
    },
    "apple": {
        # No name/email scope: with one Apple answers by form POST, which a
        # SameSite=Lax cookie does not follow; the identity is `sub` anyway.
        "label": "Apple", "scope": "", "issuer": "https://appleid.apple.com",
        "token_endpoint_auth_method": "client_secret_post",
    },
    "wechat": {
        "label": "WeChat", "scope": "snsapi_login",
        "authorize_url": "https://open.weixin.qq.com/connect/qrconnect",
        "token_url": "https://api.weixin.qq.com/sns/oauth2/access_token",
        "userinfo_url": "https://api.weixin.qq.com/sns/userinfo",
    },
    "oidc": {"scope": "openid email profile"},
}


# --- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    id: str  # the OAUTH_PROVIDERS key, used in URLs and stored with identities
    kind: str
    label: str
    client_id: str
    client_secret: str = ""
    scope: str = ""
    issuer: str = ""
    issuer_aliases: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()  # further client ids accepted in `aud` (mobile apps)
    authorize_url: str = ""
    token_url: str = ""
    userinfo_url: str = ""
    api_url: str = ""
    token_endpoint_auth_method: str = "client_secret_basic"
    # Apple: the client secret is an ES256 JWT signed with this .p8 key.
    team_id: str = ""
    key_id: str = ""
    private_key: str = field(default="", repr=False)
    # WeChat: the mobile app's own appid/secret (the SDK's codes are for it);
    # its unionid is the same person as on the website.
    app_appid: str = ""
    app_secret: str = field(default="", repr=False)

    @property
    def is_oidc(self) -> bool:
        return self.kind in ("oidc", "google", "apple")


class ConfigError(ValueError):
    pass


def parse_providers(raw: str) -> dict[str, Provider]:
    """OAUTH_PROVIDERS: a JSON object (or a file holding one) keyed by provider id."""
    raw = raw.strip()
    if not raw:
        return {}
    if not raw.startswith("{"):
        try:
            raw = Path(raw).read_text()
        except OSError as exc:
            raise ConfigError(f"OAUTH_PROVIDERS: cannot read {raw!r}: {exc}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"OAUTH_PROVIDERS is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("OAUTH_PROVIDERS must be a JSON object keyed by provider id")
    out = {}
    for pid, conf in data.items():
        if not isinstance(conf, dict) or not pid.replace("-", "").replace("_", "").isalnum() \
                or len(pid) > 64:
            raise ConfigError(f"OAUTH_PROVIDERS[{pid!r}]: an object under a short [a-z0-9_-] id")
        kind = conf.get("type") or (pid if pid in PRESETS and pid != "oidc" else "oidc")
        if kind not in KINDS:
            raise ConfigError(f"OAUTH_PROVIDERS[{pid!r}]: type must be one of {KINDS}")
        merged = {**PRESETS[kind], **conf}
        merged.pop("type", None)
        if kind == "wechat":  # the Open Platform's own names
            merged.setdefault("client_id", merged.pop("appid", ""))
            merged.setdefault("client_secret", merged.pop("secret", ""))
        if kind == "apple" and merged.get("private_key_file"):
            merged["private_key"] = Path(merged.pop("private_key_file")).read_text()
        merged.pop("private_key_file", None)
        merged.setdefault("label", pid)
        if not merged.get("client_id"):
            raise ConfigError(f"OAUTH_PROVIDERS[{pid!r}]: client_id is required")
        if kind in ("oidc", "google", "apple") and not merged.get("issuer"):
            raise ConfigError(f"OAUTH_PROVIDERS[{pid!r}]: issuer is required")
        if kind == "apple" and not (merged.get("team_id") and merged.get("key_id")
                                    and merged.get("private_key")):
            raise ConfigError(f"OAUTH_PROVIDERS[{pid!r}]: Apple needs team_id, key_id and "
                              "private_key or private_key_file (the .p8 key)")
        known = set(Provider.__dataclass_fields__) - {"id", "kind"}
        unknown = set(merged) - known
        if unknown:
            raise ConfigError(f"OAUTH_PROVIDERS[{pid!r}]: unknown keys {sorted(unknown)}")
        for key in ("issuer_aliases", "audiences"):
            merged[key] = tuple(merged.get(key) or ())
        merged["issuer"] = merged.get("issuer", "").rstrip("/")
        out[pid] = Provider(id=pid, kind=kind, **merged)
    return out


_parsed: dict[str, dict[str, Provider]] = {}


def providers(settings: Settings) -> dict[str, Provider]:
    raw = settings.oauth_providers
    if raw not in _parsed:
        _parsed[raw] = parse_providers(raw)
    return _parsed[raw]


def provider(settings: Settings, pid: str) -> Provider:
    found = providers(settings).get(pid)
    if found is None:
        raise OAuthFailed("oauth_unknown_provider", "No such sign-in provider.", status=404)
    return found


def public_providers(settings: Settings) -> list[dict]:
    return [{"id": p.id, "type": p.kind, "name": p.label} for p in providers(settings).values()]


# --- what a provider says about the person -------------------------------------------


@dataclass
class Profile:
    subject: str
    display_name: str = ""
    picture: str = ""
    # Shown, never looked up: a provider may hand out addresses it did not verify.
    email: str = ""


def _unavailable(p: Provider, exc: Exception) -> OAuthFailed:
    log.warning("provider %s unreachable: %s", p.id, type(exc).__name__)
    return OAuthFailed("oauth_provider_unavailable",
                       f"{p.label} cannot be reached right now; try again later.", status=503)


def _provider_error(p: Provider, error: str, description: str = "") -> OAuthFailed:
    log.info("provider %s answered with an error: %s %s", p.id, error, description[:200])
    return OAuthFailed("oauth_provider_error", f"{p.label} refused the sign-in.",
                       details={"error": str(error)[:100]})


async def _get_json(p: Provider, url: str, **kw) -> dict | list:
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            resp = await http.get(url, **kw)
    except httpx.HTTPError as exc:
        raise _unavailable(p, exc) from None
    if resp.status_code >= 500:
        raise _unavailable(p, RuntimeError(f"HTTP {resp.status_code}"))
    try:
        body = resp.json()
    except ValueError:
        raise _provider_error(p, f"http_{resp.status_code}", "not JSON") from None
    if resp.status_code >= 400:
        err = body.get("error") if isinstance(body, dict) else None
        raise _provider_error(p, err or f"http_{resp.status_code}",
                              str(body.get("message", "")) if isinstance(body, dict) else "")
    return body


# Discovery documents and key sets, per issuer: (fetched at, document).
_metadata: dict[str, tuple[float, dict]] = {}
_jwks: dict[str, tuple[float, dict]] = {}


async def metadata(p: Provider) -> dict:
    cached = _metadata.get(p.issuer)
    if cached and time.monotonic() - cached[0] < METADATA_TTL:
        return cached[1]
    doc = await _get_json(p, f"{p.issuer}/.well-known/openid-configuration")
    if not isinstance(doc, dict) or doc.get("issuer", "").rstrip("/") != p.issuer:
        # OpenID Connect Discovery 1.0 §4.3: the document must name the issuer asked for.
        raise _provider_error(p, "issuer_mismatch", "discovery document names another issuer")
    _metadata[p.issuer] = (time.monotonic(), doc)
    return doc


async def _key_set(p: Provider, *, refresh: bool = False) -> KeySet:
    meta = await metadata(p)
    uri = meta.get("jwks_uri")
    if not uri:
        raise _provider_error(p, "no_jwks_uri")
    cached = _jwks.get(uri)
    if refresh or not cached or time.monotonic() - cached[0] >= METADATA_TTL:
        doc = await _get_json(p, uri)
        cached = (time.monotonic(), doc)
        _jwks[uri] = cached
    try:
        return KeySet.import_key_set(cached[1])
    except (JoseError, ValueError, TypeError):
        raise _provider_error(p, "bad_jwks") from None


def _jwks_stale(meta: dict) -> bool:
    cached = _jwks.get(meta.get("jwks_uri", ""))
    return cached is None or time.monotonic() - cached[0] > 60


def _bad_token(code: str, message: str) -> OAuthFailed:
    return OAuthFailed(code, message, status=401)


async def verify_id_token(p: Provider, id_token: str, nonce: str | None) -> dict:
    """The claims of a genuine, current id_token meant for us; OAuthFailed otherwise."""
    meta = await metadata(p)
    algs = [a for a in meta.get("id_token_signing_alg_values_supported") or ["RS256"]
            if a != "none" and not a.startswith("HS")] or ["RS256"]
    try:
        try:
            token = jwt.decode(id_token, await _key_set(p), algorithms=algs)
        except JoseError:
            # The provider may have rotated its keys since we cached them (at most
            # one fetch a minute, whatever tokens come in).
            if not _jwks_stale(meta):
                raise
            token = jwt.decode(id_token, await _key_set(p, refresh=True), algorithms=algs)
    except OAuthFailed:
        raise
    except BadSignatureError:
        raise _bad_token("oauth_bad_id_token", "The id_token's signature is not valid.") from None
    except (JoseError, ValueError, TypeError):
        raise _bad_token("oauth_bad_id_token", "The id_token is malformed or not signed by "
                         "the provider.") from None
    claims = token.claims
    issuers = [p.issuer, *p.issuer_aliases]
    registry = jwt.JWTClaimsRegistry(
        leeway=LEEWAY,
        iss={"essential": True, "values": issuers},
        aud={"essential": True, "values": [p.client_id, *p.audiences]},
        exp={"essential": True},
        sub={"essential": True},
    )
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise _bad_token("oauth_id_token_expired", "The id_token has expired.") from None
    except (InvalidClaimError, MissingClaimError) as exc:
        if exc.claim == "iss":
            raise _bad_token("oauth_wrong_issuer", "The id_token is from another issuer.") \
                from None
        if exc.claim == "aud":
            raise _bad_token("oauth_wrong_audience", "The id_token is meant for another "
                             "client.") from None
        raise _bad_token("oauth_bad_id_token", f"The id_token's {exc.claim!r} is not valid.") \
            from None
    except JoseError:
        raise _bad_token("oauth_bad_id_token", "The id_token's claims are not valid.") from None
    if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
        raise _bad_token("oauth_nonce_mismatch", "The id_token answers another sign-in "
                         "(wrong nonce).")
    azp = claims.get("azp")
    if azp and azp not in (p.client_id, *p.audiences):
        raise _bad_token("oauth_wrong_audience", "The id_token is meant for another client.")
    return claims


def apple_client_secret(p: Provider, now: int | None = None) -> str:
    """Apple's client secret: an ES256 JWT signed with the .p8 key (valid ≤ 6 months)."""
    now = int(time.time()) if now is None else now
    key = ECKey.import_key(p.private_key)
    return jwt.encode({"alg": "ES256", "kid": p.key_id},
                      {"iss": p.team_id, "iat": now, "exp": now + 3600,
                       "aud": "https://appleid.apple.com", "sub": p.client_id}, key)


async def _oauth_client(p: Provider, redirect_uri: str | None = None) -> AsyncOAuth2Client:
    secret = apple_client_secret(p) if p.kind == "apple" else p.client_secret
    return AsyncOAuth2Client(
        client_id=p.client_id, client_secret=secret, scope=p.scope or None,
        redirect_uri=redirect_uri, code_challenge_method="S256",
        token_endpoint_auth_method=p.token_endpoint_auth_method, timeout=HTTP_TIMEOUT)


async def _endpoints(p: Provider) -> tuple[str, str]:
    if p.is_oidc:
        meta = await metadata(p)
        return (p.authorize_url or meta["authorization_endpoint"],
                p.token_url or meta["token_endpoint"])
    return p.authorize_url, p.token_url


async def authorization_url(p: Provider, redirect_uri: str, state: str, code_verifier: str,
                            nonce: str) -> str:
    authorize, _ = await _endpoints(p)
    if p.kind == "wechat":
        # The Open Platform's parameters, in its documented order, with its fragment.
        query = urlencode({"appid": p.client_id, "redirect_uri": redirect_uri,
                           "response_type": "code", "scope": p.scope or "snsapi_login",
                           "state": state})
        return f"{authorize}?{query}#wechat_redirect"
    async with await _oauth_client(p, redirect_uri) as client:
        extra = {"nonce": nonce} if p.is_oidc else {}
        url, _ = client.create_authorization_url(authorize, state=state,
                                                 code_verifier=code_verifier, **extra)
    return url


async def exchange_code(p: Provider, code: str, redirect_uri: str | None,
                        code_verifier: str | None, nonce: str | None,
                        mobile: bool = False) -> Profile:
    """Code → tokens → the person, checked. `nonce` None: none was sent (mobile)."""
    if p.kind == "wechat":
        if mobile and p.app_appid:
            return await _wechat_profile(p, code, p.app_appid, p.app_secret)
        return await _wechat_profile(p, code, p.client_id, p.client_secret)
    _, token_url = await _endpoints(p)
    kw = {"code_verifier": code_verifier} if code_verifier else {}
    try:
        async with await _oauth_client(p, redirect_uri) as client:
            token = await client.fetch_token(token_url, code=code,
                                             headers={"Accept": "application/json"}, **kw)
    except AuthlibOAuthError as exc:
        raise _provider_error(p, exc.error or "token_error", exc.description or "") from None
    except httpx.HTTPError as exc:
        raise _unavailable(p, exc) from None
    except ValueError:
        raise _provider_error(p, "bad_token_response") from None
    if p.kind == "github":
        return await _github_profile(p, token.get("access_token", ""))
    if not token.get("id_token"):
        raise _provider_error(p, "no_id_token")
    claims = await verify_id_token(p, token["id_token"], nonce)
    info: dict = {}
    userinfo = (await metadata(p)).get("userinfo_endpoint") or p.userinfo_url
    if userinfo and token.get("access_token") and not claims.get("name"):
        got = await _get_json(p, userinfo,
                              headers={"Authorization": f"Bearer {token['access_token']}"})
        # OIDC Core §5.3.2: userinfo about someone else must not be used.
        if isinstance(got, dict) and str(got.get("sub")) == str(claims["sub"]):
            info = got
    return _oidc_profile({**info, **claims})


def _oidc_profile(claims: dict) -> Profile:
    name = claims.get("name") or " ".join(
        x for x in (claims.get("given_name"), claims.get("family_name")) if x
    ) or claims.get("nickname") or claims.get("preferred_username") or ""
    return Profile(subject=str(claims["sub"]), display_name=str(name),
                   picture=str(claims.get("picture") or ""), email=str(claims.get("email") or ""))


async def _github_profile(p: Provider, access_token: str) -> Profile:
    headers = {"Authorization": f"Bearer {access_token}",
               "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    api = p.api_url.rstrip("/")
    user = await _get_json(p, f"{api}/user", headers=headers)
    if not isinstance(user, dict) or "id" not in user:
        raise _provider_error(p, "bad_user_response")
    email = user.get("email") or ""
    if not email:
        emails = await _get_json(p, f"{api}/user/emails", headers=headers)
        primary = [e for e in emails if isinstance(e, dict) and e.get("primary")
                   and e.get("verified")] if isinstance(emails, list) else []
        email = primary[0]["email"] if primary else ""
    return Profile(subject=str(user["id"]), display_name=str(user.get("name") or user.get("login")
                                                             or ""),
                   picture=str(user.get("avatar_url") or ""), email=str(email))


async def _wechat_profile(p: Provider, code: str, appid: str, secret: str) -> Profile:
    token = await _get_json(p, p.token_url, params={
        "appid": appid, "secret": secret, "code": code,
        "grant_type": "authorization_code"})
    if not isinstance(token, dict) or token.get("errcode") or not token.get("openid"):
        raise _provider_error(p, f"errcode_{token.get('errcode')}" if isinstance(token, dict)
                              else "bad_response", str(token)[:200])
    info = await _get_json(p, p.userinfo_url, params={
        "access_token": token.get("access_token", ""), "openid": token["openid"]})
    if not isinstance(info, dict) or info.get("errcode") or info.get("openid") != token["openid"]:
        raise _provider_error(p, f"errcode_{info.get('errcode')}" if isinstance(info, dict)
                              else "bad_response", str(info)[:200])
    # unionid is the same person across all apps of one Open Platform account;
    # openid only within this app.
    subject = info.get("unionid") or token.get("unionid") or f"openid:{token['openid']}"
    return Profile(subject=str(subject), display_name=str(info.get("nickname") or ""),
                   picture=str(info.get("headimgurl") or ""))


# --- accounts and identities --------------------------------------------------------


def _display_name(p: Provider, profile: Profile) -> str:
    try:
        return clean_name(profile.display_name[:64], "display_name")
    except Exception:
        return f"{p.label} user"[:64]


async def _find_or_create(deps: Deps, p: Provider, profile: Profile) -> tuple[User, bool]:
    """The account this identity signs in to, made now if it has none."""
    found = await OAuthIdentity.get_or_none(provider=p.id, subject=profile.subject) \
        .select_related("user")
    if found is not None:
        await OAuthIdentity.filter(id=found.id).update(last_used_at=datetime.now(UTC))
        return found.user, False
    name = _display_name(p, profile)
    for _attempt in range(5):
        try:
            async with in_transaction():
                user = await User.create(id=uuid.uuid4(), username=random_username(),
                                         display_name=name, password_hash=None)
                await OAuthIdentity.create(id=uuid.uuid4(), user=user, provider=p.id,
                                           subject=profile.subject, display_name=name[:128],
                                           last_used_at=datetime.now(UTC))
            return user, True
        except IntegrityError:
            # The same first sign-in finishing twice at once, or a username clash.
            found = await OAuthIdentity.get_or_none(provider=p.id, subject=profile.subject) \
                .select_related("user")
            if found is not None:
                return found.user, False
    raise OAuthFailed("oauth_failed", "Could not create the account; try again.", status=409)


async def _link(p: Provider, user_id, profile: Profile) -> OAuthIdentity:
    existing = await OAuthIdentity.get_or_none(provider=p.id, subject=profile.subject)
    if existing is not None:
        if str(existing.user_id) == str(user_id):
            raise OAuthFailed("identity_already_linked",
                              f"This {p.label} account is already linked to yours.", status=409)
        raise OAuthFailed("identity_linked_elsewhere",
                          f"This {p.label} account signs in to another Parley account.",
                          status=409)
    try:
        return await OAuthIdentity.create(id=uuid.uuid4(), user_id=user_id, provider=p.id,
                                          subject=profile.subject,
                                          display_name=profile.display_name[:128])
    except IntegrityError:
        raise OAuthFailed("identity_linked_elsewhere",
                          f"This {p.label} account signs in to another Parley account.",
                          status=409) from None


def _provider_hosts(p: Provider) -> set[str]:
    from urllib.parse import urlsplit

    urls = (p.issuer, p.authorize_url, p.token_url, p.userinfo_url, p.api_url)
    return {urlsplit(u).hostname for u in urls if u} - {None}


async def _may_fetch(p: Provider, url: str) -> bool:
    """Pictures come from the provider's own hosts or from public addresses only:
    a `picture` claim a person can set must not make the server fetch from the
    internal network (the result would become a viewable avatar)."""
    import asyncio
    import ipaddress
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return False
    if parts.hostname in _provider_hosts(p):
        return True
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or 443,
                                                             type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_global for i in infos)


async def _adopt_picture(deps: Deps, p: Provider, user: User, picture: str) -> None:
    """The provider's picture as the new account's avatar, if it can be had quickly."""
    if not await _may_fetch(p, picture):
        return
    from app.services import avatars

    try:
        async with httpx.AsyncClient(timeout=5.0) as http, http.stream("GET", picture) as resp:
            if resp.status_code != 200:
                return

            async def chunks():
                total = 0
                async for chunk in resp.aiter_bytes():
                    total += len(chunk)
                    if total > MAX_AVATAR_FETCH:
                        raise ValueError("picture too large")
                    yield chunk

            key = await avatars.store_avatar(deps, str(user.id), chunks())
    except Exception as exc:  # the account works without a picture
        log.info("provider picture not used: %s", type(exc).__name__)
        return
    user.avatar_key = key
    await User.filter(id=user.id).update(avatar_key=key)
    from app.services import read_cache

    await read_cache.changed(deps, "user", [user.id])


async def _sign_in(deps: Deps, p: Provider, profile: Profile) -> User:
    user, created = await _find_or_create(deps, p, profile)
    if created and profile.picture:
        await _adopt_picture(deps, p, user, profile.picture)
    return user


def identity_out(i: OAuthIdentity, settings: Settings) -> dict:
    p = providers(settings).get(i.provider)
    return {"id": str(i.id), "provider": i.provider, "provider_name": p.label if p else i.provider,
            "display_name": i.display_name, "created_at": i.created_at.isoformat(),
            "last_used_at": i.last_used_at.isoformat() if i.last_used_at else None}


async def list_identities(deps: Deps, auth: accounts.Auth) -> list[dict]:
    rows = await OAuthIdentity.filter(user_id=auth.user.id).order_by("created_at")
    return [identity_out(i, deps.settings) for i in rows]


async def unlink(deps: Deps, auth: accounts.Auth, identity_id: str) -> None:
    try:
        iid = uuid.UUID(identity_id)
    except ValueError:
        raise NotFound("No such linked account.") from None
    row = await OAuthIdentity.get_or_none(id=iid, user_id=auth.user.id)
    if row is None:
        raise NotFound("No such linked account.")
    user = await User.get(id=auth.user.id)
    others = await OAuthIdentity.filter(user_id=user.id).exclude(id=iid).count()
    # Email/phone sign in by one-time code too, so an address is a way in.
    if not others and user.password_hash is None and not (user.email or user.phone):
        raise OAuthFailed("last_sign_in_method",
                          "This is your only way to sign in: set a password or add an email "
                          "address or phone number first.", status=409)
    await OAuthIdentity.filter(id=iid).delete()


# --- the browser flow ---------------------------------------------------------------


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def check_return_to(value: str | None) -> str:
    """A path on this server; anything that could leave it is refused."""
    value = value or "/"
    if (not value.startswith("/") or value.startswith("//") or "\\" in value
            or len(value) > 512 or any(ord(c) < 0x20 or c == "\x7f" for c in value)):
        raise OAuthFailed("oauth_invalid_return_to", "return_to must be a path on this server.")
    return value


@dataclass
class Started:
    url: str  # where the browser goes now
    binder: str  # cookie value tying the flow to this browser


async def start(deps: Deps, pid: str, redirect_uri: str, return_to: str | None, client_ip: str,
                link_user_id=None) -> Started:
    p = provider(deps.settings, pid)
    return_to = check_return_to(return_to)
    await deps.limiter.hit(f"oauth:ip:{client_ip}", Limit.parse(deps.settings.login_rate_limit))
    # Finished and abandoned flows are of no use after a day (indexed, cheap).
    await OAuthFlow.filter(expires_at__lt=datetime.now(UTC) - timedelta(days=1)).delete()
    state, verifier, nonce, binder = (generate_token(43), generate_token(64), generate_token(32),
                                      generate_token(32))
    url = await authorization_url(p, redirect_uri, state, verifier, nonce)
    await OAuthFlow.create(
        state_hash=_digest(state), binder_hash=_digest(binder), provider=p.id,
        purpose="link" if link_user_id else "login", user_id=link_user_id,
        code_verifier=verifier, nonce=nonce, return_to=return_to,
        expires_at=datetime.now(UTC) + timedelta(seconds=deps.settings.oauth_flow_ttl))
    return Started(url=url, binder=binder)


@dataclass
class Finished:
    fragment: str  # for the page: "oauth_code=…", "oauth_linked=…" or "oauth_error=…"


async def callback(deps: Deps, pid: str, params: dict, binder: str | None, redirect_uri: str,
                   client: accounts.Client) -> Finished:
    p = provider(deps.settings, pid)
    state = params.get("state") or ""
    flow = await OAuthFlow.get_or_none(state_hash=_digest(state)) if state else None
    if flow is None or flow.provider != p.id:
        raise OAuthFailed("oauth_state_invalid", "This sign-in was not started here.")
    if not binder or not secrets.compare_digest(_digest(binder), flow.binder_hash):
        raise OAuthFailed("oauth_state_invalid", "This sign-in was started in another browser.")
    # One completion per flow, whatever happens next.
    now = datetime.now(UTC)
    if not await OAuthFlow.filter(id=flow.id, used_at=None).update(used_at=now):
        raise OAuthFailed("oauth_state_replayed", "This sign-in was already completed.")
    if flow.expires_at <= now:
        raise OAuthFailed("oauth_state_expired", "This sign-in took too long; start again.")
    if params.get("error"):
        if params["error"] == "access_denied":
            raise OAuthFailed("oauth_denied", f"The sign-in was cancelled at {p.label}.")
        raise _provider_error(p, params["error"], params.get("error_description", ""))
    code = params.get("code") or ""
    if not code:
        raise OAuthFailed("oauth_provider_error", f"{p.label} sent no code.",
                          details={"error": "no_code"})
    profile = await exchange_code(p, code, redirect_uri, flow.code_verifier,
                                  flow.nonce if p.is_oidc else None)
    if flow.purpose == "link":
        await _link(p, flow.user_id, profile)
        return Finished(f"oauth_linked={p.id}&return_to={_q(flow.return_to)}")
    user = await _sign_in(deps, p, profile)
    handoff = generate_token(43)
    await OAuthFlow.filter(id=flow.id).update(
        handoff_hash=_digest(handoff), handoff_user_id=user.id,
        handoff_expires_at=now + timedelta(seconds=HANDOFF_TTL))
    return Finished(f"oauth_code={handoff}")


def _q(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="/")


class LinkStartIn(Payload):
    return_to: str | None = None


class ExchangeIn(Payload):
    code: str
    device: str | None = None


async def exchange(deps: Deps, data: ExchangeIn, client: accounts.Client) -> dict:
    """The page's one-time code → the same body as password sign-in, plus return_to."""
    await deps.limiter.hit(f"login:ip:{client.ip}", Limit.parse(deps.settings.login_rate_limit))
    flow = await OAuthFlow.get_or_none(handoff_hash=_digest(data.code)) if data.code else None
    now = datetime.now(UTC)
    if flow is None or flow.handoff_expires_at is None or flow.handoff_expires_at <= now:
        raise OAuthFailed("oauth_code_invalid", "This sign-in code is unknown or expired.")
    if not await OAuthFlow.filter(id=flow.id, handoff_used_at=None).update(handoff_used_at=now):
        raise OAuthFailed("oauth_code_invalid", "This sign-in code was already used.")
    user = await User.get_or_none(id=flow.handoff_user_id)
    if user is None:  # the account was deleted in the meantime
        raise OAuthFailed("oauth_code_invalid", "This sign-in code is unknown or expired.")
    out = await accounts.issue_tokens(deps, user,
                                      accounts.Client(client.ip, data.device or client.device))
    return {**out, "return_to": flow.return_to}


# --- the mobile flow ------------------------------------------------------------------


class MobileTokenIn(Payload):
    id_token: str | None = None
    code: str | None = None
    code_verifier: str | None = None
    redirect_uri: str | None = None
    nonce: str | None = None  # the nonce the app put in its request, if any
    device: str | None = None


async def mobile_sign_in(deps: Deps, pid: str, data: MobileTokenIn,
                         client: accounts.Client) -> dict:
    p = provider(deps.settings, pid)
    await deps.limiter.hit(f"login:ip:{client.ip}", Limit.parse(deps.settings.login_rate_limit))
    if bool(data.id_token) == bool(data.code):
        raise OAuthFailed("invalid", "Send either id_token or code.",
                          details={"field": "id_token"})
    if data.id_token:
        if not p.is_oidc:
            raise OAuthFailed("invalid", f"{p.label} does not issue id_tokens; send a code.",
                              details={"field": "id_token"})
        profile = _oidc_profile(await verify_id_token(p, data.id_token, data.nonce))
    else:
        profile = await exchange_code(p, data.code, data.redirect_uri, data.code_verifier,
                                      data.nonce, mobile=True)
    user = await _sign_in(deps, p, profile)
    return await accounts.issue_tokens(deps, user,
                                       accounts.Client(client.ip, data.device or client.device))
