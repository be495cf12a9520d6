"""Accounts: register, login, tokens, refresh rotation, sessions, logout."""

import time
import uuid

import jwt
import pytest

from app.models.accounts import AuthSession
from app.services import accounts, read_cache
from tests.factories import make_user

API = "/api/v1"


async def register(client, **body):
    body.setdefault("password", "correct horse battery")
    body.setdefault("display_name", "Alice")
    return await client.post(f"{API}/auth/register", json=body)


async def test_register_login_me_refresh_logout_round_trip(client):
    r = await register(client, email="Alice@Example.org", username="alice")
    assert r.status == 201
    reg = await r.json()
    assert reg["user"]["email"] == "alice@example.org"
    assert reg["user"]["username"] == "alice"
    assert reg["expires_in"] == 900
    assert reg["access_token"] and reg["refresh_token"]

    r = await client.post(f"{API}/auth/login", json={"login": "alice", "password": "correct horse battery"})
    assert r.status == 200
    tokens = await r.json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}

    r = await client.get(f"{API}/me", headers=headers)
    assert r.status == 200
    assert (await r.json())["user"]["id"] == reg["user"]["id"]

    r = await client.post(f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status == 200
    rotated = await r.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    headers = {"Authorization": f"Bearer {rotated['access_token']}"}

    r = await client.post(f"{API}/auth/logout", headers=headers)
    assert r.status == 204
    r = await client.get(f"{API}/me", headers=headers)
    assert r.status == 401
    assert (await r.json())["error"]["code"] == "unauthorized"


async def test_login_by_email_and_phone(client):
    r = await register(client, email="bob@example.org", phone="+44 20 7946 0958")
    assert r.status == 201
    assert (await r.json())["user"]["phone"] == "+442079460958"
    for login in ("BOB@example.org", "+442079460958"):
        r = await client.post(f"{API}/auth/login", json={"login": login, "password": "correct horse battery"})
        assert r.status == 200, login


async def test_wrong_password_and_unknown_user_get_the_same_answer(client, deps):
    await make_user(deps, "carol", email="carol@example.org")
    r1 = await client.post(f"{API}/auth/login", json={"login": "carol@example.org", "password": "wrong password"})
    r2 = await client.post(f"{API}/auth/login", json={"login": "nobody@example.org", "password": "wrong password"})
    assert r1.status == r2.status == 401
    b1, b2 = await r1.json(), await r2.json()
    assert b1 == b2 == {"error": {"code": "invalid_credentials", "message": "Wrong login or password."}}


async def test_duplicates_are_409_naming_the_field(client):
    assert (await register(client, email="d@example.org", phone="+14155550100", username="dup")).status == 201
    for body, code in (
        ({"email": "D@example.org"}, "email_taken"),
        ({"phone": "+1 415 555 0100"}, "phone_taken"),
        ({"email": "other@example.org", "username": "dup"}, "username_taken"),
    ):
        r = await register(client, **body)
        assert r.status == 409
        assert (await r.json())["error"]["code"] == code


async def test_register_validation(client):
    cases = [
        {"password": "correct horse battery", "display_name": "x"},  # neither email nor phone
        {"email": "not-an-email", "password": "correct horse battery", "display_name": "x"},
        {"phone": "12", "password": "correct horse battery", "display_name": "x"},
        {"email": "a@example.org", "password": "short", "display_name": "x"},
        {"email": "a@example.org", "password": "p" * 129, "display_name": "x"},
        {"email": "a@example.org", "password": "correct horse battery", "display_name": ""},
        {"email": "a@example.org", "password": "correct horse battery", "display_name": "   "},
        {"email": "a@example.org", "password": "correct horse battery", "display_name": "x", "username": "No"},
        {"email": "a@example.org", "password": "correct horse battery", "display_name": "x", "admin": True},
        {"email": 5, "password": "correct horse battery", "display_name": "x"},
    ]
    for body in cases:
        r = await client.post(f"{API}/auth/register", json=body)
        assert r.status == 400, body
        err = (await r.json())["error"]
        assert err["code"] == "invalid" and err["message"], body


async def test_generated_username_is_valid(client):
    r = await register(client, email="gen@example.org")
    username = (await r.json())["user"]["username"]
    assert 3 <= len(username) <= 32 and username.replace("_", "").isalnum() and username.islower()


async def test_refresh_token_reuse_revokes_the_session(client, deps):
    p = await make_user(deps)
    r = await client.post(f"{API}/auth/refresh", json={"refresh_token": p.refresh_token})
    assert r.status == 200
    new = await r.json()
    # The old token comes back: someone copied it. The whole session ends.
    r = await client.post(f"{API}/auth/refresh", json={"refresh_token": p.refresh_token})
    assert r.status == 401
    r = await client.post(f"{API}/auth/refresh", json={"refresh_token": new["refresh_token"]})
    assert r.status == 401
    r = await client.get(f"{API}/me", headers={"Authorization": f"Bearer {new['access_token']}"})
    assert r.status == 401


async def test_bad_tokens_are_401(client, deps, settings):
    p = await make_user(deps)
    claims = jwt.decode(p.access_token, options={"verify_signature": False})
    expired = jwt.encode({**claims, "exp": int(time.time()) - 5}, settings.secret_key, algorithm="HS256")
    forged = jwt.encode(claims, "another-secret-key-that-is-long-enough-1234", algorithm="HS256")
    none_alg = jwt.encode(claims, None, algorithm="none")
    for header in (
        None,
        "Bearer",
        "Basic abc",
        "Bearer garbage",
        f"Bearer {expired}",
        f"Bearer {forged}",
        f"Bearer {none_alg}",
        f"Bearer {p.refresh_token}",
    ):
        headers = {"Authorization": header} if header else {}
        r = await client.get(f"{API}/me", headers=headers)
        assert r.status == 401, header
        assert (await r.json())["error"]["code"] == "unauthorized"


async def test_sessions_list_and_end_one(client, deps):
    p = await make_user(deps)
    r = await client.post(f"{API}/auth/login", json={"login": p.email, "password": p.password, "device": "phone"})
    second = await r.json()
    r = await client.get(f"{API}/auth/sessions", headers=p.headers)
    sessions = (await r.json())["sessions"]
    assert len(sessions) == 2
    assert sum(s["current"] for s in sessions) == 1
    other = next(s for s in sessions if not s["current"])
    assert other["device"] == "phone"
    r = await client.delete(f"{API}/auth/sessions/{other['id']}", headers=p.headers)
    assert r.status == 204
    r = await client.get(f"{API}/me", headers={"Authorization": f"Bearer {second['access_token']}"})
    assert r.status == 401
    # Unknown / foreign / malformed ids are 404.
    q = await make_user(deps)
    r = await client.get(f"{API}/auth/sessions", headers=q.headers)
    q_session = (await r.json())["sessions"][0]["id"]
    for sid in (q_session, "not-a-uuid", other["id"]):
        r = await client.delete(f"{API}/auth/sessions/{sid}", headers=p.headers)
        assert r.status == 404, sid


async def test_password_hash_is_argon2id_with_owasp_parameters(deps):
    from app.models.accounts import User

    p = await make_user(deps)
    user = await User.get(id=p.user_id)
    assert user.password_hash.startswith("$argon2id$")
    params = dict(kv.split("=") for kv in user.password_hash.split("$")[3].split(","))
    assert int(params["m"]) >= 19 * 1024 and int(params["t"]) >= 2


async def test_login_rehashes_weaker_hash(client, deps):
    from argon2 import PasswordHasher

    from app.models.accounts import User

    p = await make_user(deps)
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(p.password)
    await User.filter(id=p.user_id).update(password_hash=weak)
    r = await client.post(f"{API}/auth/login", json={"login": p.email, "password": p.password})
    assert r.status == 200
    user = await User.get(id=p.user_id)
    assert user.password_hash != weak and "m=20480" in user.password_hash


# --- the per-connect path: session and user straight from one row ----------------


async def test_session_row_equals_the_orm_lookup(deps):
    alice = await make_user(deps)
    sid = (await AuthSession.filter(user_id=alice.user_id).first()).id
    orm = await AuthSession.get(id=sid).select_related("user")
    read_cache.clear_all()
    for source in ("database", "read cache"):
        fast = await accounts.authenticate(deps, alice.access_token)
        for f in AuthSession._meta.fields_map:
            if f != "user" and f in AuthSession._meta.db_fields | {"user_id"}:
                assert getattr(fast.session, f) == getattr(orm, f), (source, f)
        for f in orm.user._meta.db_fields:
            assert getattr(fast.user, f) == getattr(orm.user, f), (source, f)
        assert fast.session.user_id == orm.user_id and accounts.private_user(fast.user) == \
            accounts.private_user(orm.user), source
    assert await accounts._session_of(uuid.uuid4()) is None


async def test_authenticate_checks_the_session(deps):
    alice = await make_user(deps)
    auth = await accounts.authenticate(deps, alice.access_token)
    assert auth.user_id == alice.user_id and auth.user.email == alice.email
    # "last used" is kept roughly right: an old mark is moved forward.
    old = accounts.now().replace(year=2020)
    await AuthSession.filter(id=auth.session.id).update(last_used_at=old)
    read_cache.clear_all()  # written behind the services' backs: nobody dropped it
    await accounts.authenticate(deps, alice.access_token)
    assert (await AuthSession.get(id=auth.session.id)).last_used_at > old
    await accounts.logout(deps, auth)
    for token in (alice.access_token, "garbage", None):
        try:
            await accounts.authenticate(deps, token)
        except accounts.Unauthorized:
            continue
        raise AssertionError("accepted")


# --- password hashing stays off the event loop ------------------------------------


async def test_healthz_is_served_while_a_burst_of_hashes_runs(client, monkeypatch):
    """20 concurrent registrations and logins: every argon2 call is held inside the
    hasher until the test lets go. /healthz must answer while they are held (the
    loop is free), and no more than HASH_WORKERS hashes run at once."""
    import asyncio
    import threading

    from app import security

    real = security._hasher
    release = threading.Event()
    lock = threading.Lock()
    state = {"running": 0, "peak": 0, "entered": 0}

    def held(fn):
        def wrapper(*args, **kw):
            with lock:
                state["running"] += 1
                state["entered"] += 1
                state["peak"] = max(state["peak"], state["running"])
            try:
                release.wait(timeout=5)  # on the loop thread this would freeze the loop
                return fn(*args, **kw)
            finally:
                with lock:
                    state["running"] -= 1
        return wrapper

    class HeldHasher:  # PasswordHasher has slots: wrap it whole
        hash = staticmethod(held(real.hash))
        verify = staticmethod(held(real.verify))
        check_needs_rehash = staticmethod(real.check_needs_rehash)

    monkeypatch.setattr(security, "_hasher", HeldHasher())

    burst = [asyncio.create_task(register(client, email=f"u{i}@example.org"))
             for i in range(10)]
    burst += [asyncio.create_task(client.post(
        f"{API}/auth/login", json={"login": f"nobody{i}@example.org", "password": "x" * 12}))
        for i in range(10)]
    for _ in range(600):  # a thread sets the counter: poll it
        if state["entered"]:
            break
        await asyncio.sleep(0.005)
    r = await asyncio.wait_for(client.get("/healthz"), 3)
    assert r.status == 200
    # Answered while the hashes were still held, not after they finished.
    assert not release.is_set() and state["running"] >= 1
    release.set()
    answers = await asyncio.gather(*burst)
    assert [a.status for a in answers] == [201] * 10 + [401] * 10
    assert state["peak"] <= security.HASH_WORKERS


# --- sign-up limits ----------------------------------------------------------------


async def _limited(r, window: int) -> None:
    body = await r.json()
    assert r.status == 429, body
    assert body["error"]["code"] == "rate_limited"
    retry = int(r.headers["Retry-After"])
    assert 0 < retry <= window and body["error"]["details"]["retry_after"] == retry


@pytest.mark.parametrize("settings_overrides", [{"register_rate_limit": "3/3600"}])
async def test_register_rate_limit_per_address(client, deps):
    for i in range(3):
        assert (await register(client, email=f"r{i}@example.org")).status == 201
    await _limited(await register(client, email="r3@example.org"), 3600)
    # Another address still signs up (its own bucket).
    data = accounts.RegisterIn(password="correct horse battery", display_name="Z",
                               email="other@example.org")
    out = await accounts.register(deps, data, accounts.Client(ip="203.0.113.9"))
    assert out["user"]["email"] == "other@example.org"


@pytest.mark.parametrize("settings_overrides", [{"register_global_rate_limit": "2/3600"}])
async def test_register_global_ceiling_across_addresses(client, deps):
    from app.errors import RateLimited

    for i in range(2):
        data = accounts.RegisterIn(password="correct horse battery", display_name="Z",
                                   email=f"g{i}@example.org")
        await accounts.register(deps, data, accounts.Client(ip=f"203.0.113.{i}"))
    data = accounts.RegisterIn(password="correct horse battery", display_name="Z",
                               email="g9@example.org")
    with pytest.raises(RateLimited):
        await accounts.register(deps, data, accounts.Client(ip="198.51.100.7"))
    await _limited(await register(client, email="g10@example.org"), 3600)
