"""Sign-in with other accounts, against a real OpenID Connect provider (npm
oidc-provider) and local stand-ins for Google, Apple, GitHub and WeChat."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from yarl import URL

from app.models.accounts import OAuthFlow, OAuthIdentity, User
from app.services import oauth
from tests.factories import make_user
from tests.oauth_helpers import (
    WEB_SECRET,
    Grant,
    OidcProvider,
    StandIn,
    browser,
    drive,
    fragment_of,
    parley_port,  # noqa: F401 - fixture
    pkce_pair,
    query_of,
    server,  # noqa: F401 - fixture
)

API = "/api/v1"
MOBILE_REDIRECT = "com.example.parley:/oauth"


@pytest.fixture(scope="module")
def oidc(parley_port):
    provider = OidcProvider([
        {"client_id": "parley-web", "client_secret": WEB_SECRET,
         "redirect_uris": [f"http://127.0.0.1:{parley_port}/api/v1/auth/oauth/company/callback"]},
        {"client_id": "parley-mobile", "token_endpoint_auth_method": "none",
         "application_type": "native", "redirect_uris": [MOBILE_REDIRECT]},
    ])
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture
async def standins():
    made = {}
    for kind in ("google", "apple", "github", "wechat"):
        made[kind] = await StandIn(
            kind, apple_key=ECKey.generate_key("P-256") if kind == "apple" else None).start()
    for s in made.values():
        s.picture = f"{made['google'].base}/avatar.png"
    yield made
    for s in made.values():
        await s.stop()


@pytest.fixture
def settings_overrides(oidc, standins, parley_port):
    providers = {
        "company": {"type": "oidc", "issuer": oidc.issuer, "client_id": "parley-web",
                    "client_secret": WEB_SECRET, "label": "Company SSO",
                    "audiences": ["parley-mobile"]},
        "other": {"issuer": oidc.issuer, "client_id": "someone-else", "client_secret": "x"},
        **{kind: s.config() for kind, s in standins.items()},
    }
    providers["wechat"].update(app_appid="wx-mobile-app", app_secret="mobile-secret")
    return {"oauth_providers": json.dumps(providers),
            "public_url": f"http://127.0.0.1:{parley_port}"}


def base(server) -> str:
    return f"http://127.0.0.1:{server.port}"


async def err(resp, status, code):
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == code, body
    return body["error"]


async def web_sign_in(server, session, provider="company", login="alice", return_to="/"):
    """Start → provider → callback; returns the fragment the page is sent to."""
    start = f"{base(server)}{API}/auth/oauth/{provider}/start?return_to={return_to}"
    if provider == "company":
        final = await drive(session, start, f"{base(server)}/#", login=login)
    else:
        final = await follow(session, start, f"{base(server)}/#")
    return fragment_of(final)


async def follow(session, url, stop_at):
    for _ in range(10):
        async with session.get(url, allow_redirects=False) as resp:
            assert resp.status in (302, 303), (resp.status, await resp.text())
            url = resp.headers["Location"]
            if url.startswith("/"):
                url = stop_at.rsplit("/", 1)[0] + url
            if url.startswith(stop_at):
                return url
    raise AssertionError("no redirect back")


async def exchange(client, code, device="browser"):
    return await client.post(f"{API}/auth/oauth/exchange", json={"code": code, "device": device})


# --- the real OpenID Connect provider: browser flow ----------------------------------------


async def test_first_sign_in_creates_an_account_and_the_next_finds_it(client, server):
    r = await client.get(f"{API}/auth/oauth/providers")
    names = {p["id"]: p["name"] for p in (await r.json())["providers"]}
    assert names["company"] == "Company SSO" and names["github"] == "GitHub"

    async with browser() as session:
        # What we send the provider: state, PKCE S256 and a nonce.
        async with session.get(f"{base(server)}{API}/auth/oauth/company/start?return_to=/chats",
                               allow_redirects=False) as resp:
            assert resp.status == 302
            q = query_of(resp.headers["Location"])
        assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
        assert q["state"] and q["nonce"] and q["client_id"] == "parley-web"
        assert q["redirect_uri"] == f"{base(server)}{API}/auth/oauth/company/callback"
        frag = await web_sign_in(server, session, return_to="/chats")
    assert set(frag) == {"oauth_code"}
    r = await exchange(client, frag["oauth_code"])
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["return_to"] == "/chats" and body["access_token"] and body["refresh_token"]
    user = body["user"]
    assert user["display_name"] == "Name alice"
    assert user["email"] is None and user["has_password"] is False  # nothing taken on trust
    assert user["username"].startswith("u_")
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    ids = (await (await client.get(f"{API}/me/identities", headers=headers)).json())["identities"]
    assert [(i["provider"], i["provider_name"]) for i in ids] == [("company", "Company SSO")]

    # The one-time code works once.
    await err(await exchange(client, frag["oauth_code"]), 400, "oauth_code_invalid")
    await err(await exchange(client, "made-up"), 400, "oauth_code_invalid")

    async with browser() as session:
        again = await web_sign_in(server, session)
    body2 = await (await exchange(client, again["oauth_code"])).json()
    assert body2["user"]["id"] == user["id"]
    assert await User.all().count() == 1


async def test_matching_email_never_takes_over_an_account(client, server):
    # The provider says alice@example.org (unverified); Parley has that address.
    victim = await make_user(_deps(server), "victim", email="alice@example.org")
    async with browser() as session:
        frag = await web_sign_in(server, session, login="alice")
    body = await (await exchange(client, frag["oauth_code"])).json()
    assert body["user"]["id"] != victim.user_id
    assert body["user"]["email"] is None
    assert await OAuthIdentity.filter(user_id=victim.user_id).count() == 0
    assert (await User.get(id=victim.user_id)).email == "alice@example.org"


def _deps(server):
    from app.api.http import DEPS_KEY

    return server.app[DEPS_KEY]


async def test_state_is_checked_replay_expiry_other_browser_and_denial(client, server):
    async with browser() as session:
        start = f"{base(server)}{API}/auth/oauth/company/start"
        callback_url = await drive(session, start, f"{base(server)}{API}/auth/oauth/company/callback")
        # Another browser (no cookie) brings the callback: refused, and it stays usable
        # for nobody else either.
        async with browser() as other:
            final = await follow(other, callback_url, f"{base(server)}/#")
        assert fragment_of(final) == {"oauth_error": "oauth_state_invalid"}
        final = await follow(session, callback_url, f"{base(server)}/#")
        assert "oauth_code" in fragment_of(final)
        # The same callback again: a replay.
        final = await follow(session, callback_url, f"{base(server)}/#")
    # (the cookie was cleared by the first completion)
    assert fragment_of(final)["oauth_error"] in ("oauth_state_invalid", "oauth_state_replayed")

    async with browser() as session:
        callback_url = await drive(session, f"{base(server)}{API}/auth/oauth/company/start",
                                   f"{base(server)}{API}/auth/oauth/company/callback")
        await OAuthFlow.all().update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        final = await follow(session, callback_url, f"{base(server)}/#")
        assert fragment_of(final) == {"oauth_error": "oauth_state_expired"}

        # A forged state, and none at all.
        for q in ("?state=forged&code=x", "?code=x"):
            final = await follow(session, f"{base(server)}{API}/auth/oauth/company/callback{q}",
                                 f"{base(server)}/#")
            assert fragment_of(final) == {"oauth_error": "oauth_state_invalid"}

    # The person cancels at the provider.
    async with browser() as session:
        final = await drive(session, f"{base(server)}{API}/auth/oauth/company/start",
                            f"{base(server)}{API}/auth/oauth/company/callback", abort=True)
        final = await follow(session, final, f"{base(server)}/#")
        assert fragment_of(final) == {"oauth_error": "oauth_denied"}
    assert await User.all().count() == 1  # only the one sign-in that completed


async def test_state_replay_with_the_cookie_is_refused(client, server):
    async with browser() as session:
        callback_url = await drive(session, f"{base(server)}{API}/auth/oauth/company/start",
                                   f"{base(server)}{API}/auth/oauth/company/callback")
        binder = {c.key: c.value for c in session.cookie_jar}[oauth.COOKIE]
        final = await follow(session, callback_url, f"{base(server)}/#")
        assert "oauth_code" in fragment_of(final)
    async with browser() as thief:  # holds the cookie and the URL
        thief.cookie_jar.update_cookies({oauth.COOKIE: binder}, response_url=URL(callback_url))
        final = await follow(thief, callback_url, f"{base(server)}/#")
    assert fragment_of(final) == {"oauth_error": "oauth_state_replayed"}


async def test_return_to_must_stay_on_this_server(client, server):
    async with browser() as session:
        for bad in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "evil"):
            async with session.get(f"{base(server)}{API}/auth/oauth/company/start",
                                   params={"return_to": bad}, allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == "/#oauth_error=oauth_invalid_return_to"
        async with session.get(f"{base(server)}{API}/auth/oauth/nope/start",
                               allow_redirects=False) as resp:
            assert resp.headers["Location"] == "/#oauth_error=oauth_unknown_provider"
    assert await OAuthFlow.all().count() == 0


# --- the real provider: mobile id_token flow ------------------------------------------------


async def mobile_id_token(oidc, login="mia", nonce="n-0S6_WzA2Mj"):
    """What the app does natively: authorization code + PKCE as a public client,
    then the token request at the provider."""
    verifier, challenge = pkce_pair()
    async with browser() as session:
        url = (f"{oidc.issuer}/auth?client_id=parley-mobile&response_type=code&scope=openid"
               f"%20profile%20email&redirect_uri={MOBILE_REDIRECT}&state=s&nonce={nonce}"
               f"&code_challenge={challenge}&code_challenge_method=S256")
        final = await drive(session, url, MOBILE_REDIRECT, login=login)
        code = query_of(final)["code"]
        async with session.post(f"{oidc.issuer}/token", data={
                "grant_type": "authorization_code", "code": code, "client_id": "parley-mobile",
                "redirect_uri": MOBILE_REDIRECT, "code_verifier": verifier}) as resp:
            assert resp.status == 200, await resp.text()
            return (await resp.json())["id_token"]


async def test_mobile_id_token_sign_in_and_its_errors(client, server, oidc):
    id_token = await mobile_id_token(oidc)
    url = f"{API}/auth/oauth/company/token"
    await err(await client.post(url, json={"id_token": id_token, "nonce": "another"}), 401,
              "oauth_nonce_mismatch")
    # Meant for another client of the same issuer.
    await err(await client.post(f"{API}/auth/oauth/other/token", json={"id_token": id_token}),
              401, "oauth_wrong_audience")
    head, payload, sig = id_token.split(".")
    tampered = f"{head}.{payload}.{sig[:-6]}{'A' * 6 if not sig.endswith('AAAAAA') else 'B' * 6}"
    await err(await client.post(url, json={"id_token": tampered}), 401, "oauth_bad_id_token")
    # Same claims, signed by a key that is not the provider's.
    kid = json.loads(base64.urlsafe_b64decode(head + "==")).get("kid")
    forged = jwt.encode({"alg": "RS256", "kid": kid},
        {"iss": oidc.issuer, "aud": "parley-mobile", "sub": "mia", "iat": int(time.time()),
         "exp": int(time.time()) + 600, "nonce": "n-0S6_WzA2Mj"},
        RSAKey.generate_key(2048))
    await err(await client.post(url, json={"id_token": forged}), 401, "oauth_bad_id_token")
    await err(await client.post(url, json={"id_token": "not.a.jwt"}), 401, "oauth_bad_id_token")
    await err(await client.post(url, json={}), 400, "invalid")
    assert await User.all().count() == 0  # nothing half-made by the failures

    r = await client.post(url, json={"id_token": id_token, "nonce": "n-0S6_WzA2Mj",
                                     "device": "Mia's phone"})
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["user"]["display_name"] == "Name mia" and body["token_type"] == "Bearer"
    sessions = await (await client.get(f"{API}/auth/sessions", headers={
        "Authorization": f"Bearer {body['access_token']}"})).json()
    assert [s["device"] for s in sessions["sessions"]] == ["Mia's phone"]


# --- linking and unlinking --------------------------------------------------------------------


async def test_link_unlink_and_the_last_way_in(client, server, oidc):
    deps = _deps(server)
    ann = await make_user(deps, "ann")
    async with browser() as session:
        session.headers.update(ann.headers)
        async with session.post(f"{base(server)}{API}/me/identities/company/start",
                                json={"return_to": "/settings"}) as resp:
            assert resp.status == 200, await resp.text()
            url = (await resp.json())["url"]
        del session.headers["Authorization"]
        final = await drive(session, url, f"{base(server)}/#", login="ann-at-work")
    assert fragment_of(final) == {"oauth_linked": "company", "return_to": "/settings"}
    ids = (await (await client.get(f"{API}/me/identities", headers=ann.headers)).json())[
        "identities"]
    assert len(ids) == 1 and ids[0]["display_name"] == "Name ann-at-work"

    # Signing in with it now reaches Ann's account.
    async with browser() as session:
        frag = await web_sign_in(server, session, login="ann-at-work")
    assert (await (await exchange(client, frag["oauth_code"])).json())["user"]["id"] == ann.user_id

    # Bob cannot link Ann's provider account, nor Ann twice.
    bob = await make_user(deps, "bob")
    for who, code in ((bob, "identity_linked_elsewhere"), (ann, "identity_already_linked")):
        async with browser() as session:
            async with session.post(f"{base(server)}{API}/me/identities/company/start",
                                    json={}, headers=who.headers) as resp:
                url = (await resp.json())["url"]
            final = await drive(session, url, f"{base(server)}/#", login="ann-at-work")
        assert fragment_of(final) == {"oauth_error": code}
    assert await OAuthIdentity.all().count() == 1

    # Ann has a password: the identity can go.
    await err(await client.delete(f"{API}/me/identities/{ids[0]['id']}", headers=bob.headers),
              404, "not_found")
    assert (await client.delete(f"{API}/me/identities/{ids[0]['id']}",
                                headers=ann.headers)).status == 204
    assert await OAuthIdentity.all().count() == 0

    # An account made by a provider has no other way in: its identity stays.
    async with browser() as session:
        frag = await web_sign_in(server, session, login="solo")
    solo = await (await exchange(client, frag["oauth_code"])).json()
    h = {"Authorization": f"Bearer {solo['access_token']}"}
    [ident] = (await (await client.get(f"{API}/me/identities", headers=h)).json())["identities"]
    await err(await client.delete(f"{API}/me/identities/{ident['id']}", headers=h), 409,
              "last_sign_in_method")
    # Once it sets a password, it may.
    r = await client.post(f"{API}/me/password", headers=h, json={"new_password": "a new secret!"})
    assert r.status == 200, await r.text()
    assert (await client.delete(f"{API}/me/identities/{ident['id']}", headers=h)).status == 204


# --- presets against their stand-ins -----------------------------------------------------------


async def test_google_preset_web_and_mobile(client, server, standins):
    g = standins["google"]
    async with browser() as session:
        frag = await web_sign_in(server, session, provider="google")
    body = await (await exchange(client, frag["oauth_code"])).json()
    assert body["user"]["display_name"] == "Wang Fang"
    # The provider's picture became the avatar, through the avatar pipeline.
    assert body["user"]["avatar_urls"]["64"]
    got = await client.get(body["user"]["avatar_urls"]["64"])
    assert got.status == 200 and got.headers["Content-Type"] == "image/jpeg"
    [req] = g.token_requests
    assert req["client_secret"] == g.client_secret and req["code_verifier"]
    assert g.authorize_requests[0]["nonce"]

    url = f"{API}/auth/oauth/google/token"
    r = await client.post(url, json={"id_token": g.id_token()})
    assert (await r.json())["user"]["id"] == body["user"]["id"]
    now = int(time.time())
    for claims, code in (
        ({"iss": "https://evil.example"}, "oauth_wrong_issuer"),
        ({"aud": "another-client"}, "oauth_wrong_audience"),
        ({"exp": now - 3600, "iat": now - 7200}, "oauth_id_token_expired"),
        ({"sub": None}, "oauth_bad_id_token"),
    ):
        await err(await client.post(url, json={"id_token": g.id_token(**claims)}), 401, code)
    await err(await client.post(url, json={"id_token": g.id_token(nonce="a"), "nonce": "b"}),
              401, "oauth_nonce_mismatch")
    # Google's token endpoint refusing a code is a provider error.
    r = await client.post(url, json={"code": "never-issued", "redirect_uri": "x"})
    err_body = await err(r, 400, "oauth_provider_error")
    assert err_body["details"] == {"error": "invalid_grant"}


async def test_apple_preset_signs_its_client_secret_with_the_p8_key(client, server, standins):
    a = standins["apple"]
    async with browser() as session:
        frag = await web_sign_in(server, session, provider="apple")
    assert "oauth_code" in frag, frag
    [req] = a.token_requests
    tok = jwt.decode(req["client_secret"], a.apple_key, algorithms=["ES256"])
    assert tok.header["kid"] == a.apple_key_id and tok.claims["iss"] == a.apple_team
    assert tok.claims["aud"] == "https://appleid.apple.com"
    assert tok.claims["sub"] == a.client_id
    # A wrong key makes Apple refuse: a provider error, nothing created.
    before = await User.all().count()
    a.apple_key = ECKey.generate_key("P-256")
    async with browser() as session:
        frag = await web_sign_in(server, session, provider="apple")
    assert frag == {"oauth_error": "oauth_provider_error"}
    assert await User.all().count() == before


async def test_github_preset_web_mobile_and_errors(client, server, standins):
    gh = standins["github"]
    async with browser() as session:
        frag = await web_sign_in(server, session, provider="github")
    body = await (await exchange(client, frag["oauth_code"])).json()
    assert body["user"]["display_name"] == "Wang Fang"
    assert gh.authorize_requests[0]["code_challenge_method"] == "S256"
    # GitHub answers a bad code with 200 and an error body.
    r = await client.post(f"{API}/auth/oauth/github/token",
                          json={"code": "bad", "redirect_uri": "x"})
    assert (await err(r, 400, "oauth_provider_error"))["details"] == {
        "error": "bad_verification_code"}
    # GitHub issues no id_tokens.
    await err(await client.post(f"{API}/auth/oauth/github/token", json={"id_token": "x.y.z"}),
              400, "invalid")
    # The mobile code flow (the app got a code for Parley's client id).
    gh.next_subject = "octo"
    async with browser() as session:
        async with session.get(f"{gh.base}/login/oauth/authorize", params={
                "client_id": gh.client_id, "redirect_uri": MOBILE_REDIRECT, "state": "s"},
                allow_redirects=False) as resp:
            code = query_of(resp.headers["Location"])["code"]
    r = await client.post(f"{API}/auth/oauth/github/token",
                          json={"code": code, "redirect_uri": MOBILE_REDIRECT})
    assert r.status == 200, await r.text()
    assert (await r.json())["user"]["id"] != body["user"]["id"]


async def test_wechat_preset_uses_unionid_and_maps_errcodes(client, server, standins):
    wx = standins["wechat"]
    async with browser() as session:
        async with session.get(f"{base(server)}{API}/auth/oauth/wechat/start",
                               allow_redirects=False) as resp:
            location = resp.headers["Location"]
        assert location.startswith(f"{wx.base}/connect/qrconnect?appid={wx.client_id}&")
        assert location.endswith("#wechat_redirect") and "scope=snsapi_login" in location
        frag = await web_sign_in(server, session, provider="wechat")
    body = await (await exchange(client, frag["oauth_code"])).json()
    assert body["user"]["display_name"] == "Wang Fang"
    ident = await OAuthIdentity.get(user_id=body["user"]["id"])
    assert ident.provider == "wechat" and ident.subject == "u_person-1"
    # The mobile app signs in with its own appid (WeChat SDK); the same unionid is
    # the same person. Until WeChat knows that appid, it refuses.
    r = await client.post(f"{API}/auth/oauth/wechat/token", json={"code": "bad"})
    assert (await err(r, 400, "oauth_provider_error"))["details"] == {"error": "errcode_40125"}
    wx.extra_clients = {"wx-mobile-app": "mobile-secret"}
    r = await client.post(f"{API}/auth/oauth/wechat/token", json={"code": "bad"})
    assert (await err(r, 400, "oauth_provider_error"))["details"] == {"error": "errcode_40029"}
    code = "sdk-code"
    wx.grants[code] = Grant("", None, None, "person-1")
    r = await client.post(f"{API}/auth/oauth/wechat/token", json={"code": code})
    assert r.status == 200, await r.text()
    assert (await r.json())["user"]["id"] == body["user"]["id"]
    assert wx.token_requests[-1]["appid"] == "wx-mobile-app"


async def test_provider_down_is_unavailable_and_creates_nothing(client, server, standins):
    g = standins["google"]
    g.down = True
    oauth._metadata.clear()
    r = await client.post(f"{API}/auth/oauth/google/token", json={"id_token": g.id_token()})
    await err(r, 503, "oauth_provider_unavailable")
    await g.stop()
    oauth._metadata.clear()
    r = await client.post(f"{API}/auth/oauth/google/token", json={"id_token": g.id_token()})
    await err(r, 503, "oauth_provider_unavailable")
    await err(await client.post(f"{API}/auth/oauth/nope/token", json={"id_token": "x"}), 404,
              "oauth_unknown_provider")
    assert await User.all().count() == 0


def test_provider_configuration_is_checked():
    with pytest.raises(oauth.ConfigError, match="issuer"):
        oauth.parse_providers('{"corp": {"client_id": "x"}}')
    with pytest.raises(oauth.ConfigError, match="team_id"):
        oauth.parse_providers('{"apple": {"client_id": "x"}}')
    with pytest.raises(oauth.ConfigError, match="unknown keys"):
        oauth.parse_providers('{"github": {"client_id": "x", "clientsecret": "y"}}')
    with pytest.raises(oauth.ConfigError, match="JSON"):
        oauth.parse_providers("{nope")
    got = oauth.parse_providers('{"wechat": {"appid": "wx1", "secret": "s"}}')["wechat"]
    assert (got.client_id, got.client_secret, got.kind) == ("wx1", "s", "wechat")
    assert got.token_url == "https://api.weixin.qq.com/sns/oauth2/access_token"


async def test_provider_pictures_only_from_the_provider_or_public_addresses():
    p = oauth.parse_providers(
        '{"corp": {"issuer": "https://id.example.org", "client_id": "x"}}')["corp"]
    assert await oauth._may_fetch(p, "https://id.example.org/pictures/1.png")
    for url in ("http://127.0.0.1:8080/admin.png", "http://10.1.2.3/x.png",
                "http://[::1]/x.png", "http://169.254.169.254/latest/meta-data",
                "ftp://id.example.org/x.png", "javascript:alert(1)", "", "http:///x"):
        assert not await oauth._may_fetch(p, url), url
