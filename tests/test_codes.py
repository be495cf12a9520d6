"""Verification codes (sign-up, code sign-in, password reset) and throttling.

Email codes travel over real SMTP to an aiosmtpd server started per test;
phone codes go to the development log sender.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from app.models.accounts import VerificationCode
from app.services.codes import code_targets
from tests.factories import make_user
from tests.ports import free_port

API = "/api/v1"
PASSWORD = "correct horse battery"
CODE_RE = re.compile(r"\b(\d{6})\b")


class Mailbox:
    """aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list = []
        self._lock = threading.Lock()
        self.url = ""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
        msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        with self._lock:
            self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list:
        with self._lock:
            return [m for rcpts, m in self.messages if address in rcpts]

    def last_code(self, address: str) -> str:
        msgs = self.to(address)
        assert msgs, f"no mail for {address}"
        body = msgs[-1].get_body(preferencelist=("plain",)).get_content()
        m = CODE_RE.search(body)
        assert m, body
        return m.group(1)


@pytest.fixture
def smtp():
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    mailbox.url = f"smtp://127.0.0.1:{port}?starttls=false"
    yield mailbox
    controller.stop()


@pytest.fixture
def extra_settings():
    """Parametrise this (directly) to add settings on top of the SMTP URL."""
    return {}


@pytest.fixture
def settings_overrides(smtp, extra_settings):
    return {"smtp_url": smtp.url, **extra_settings}


async def request_code(client, purpose: str, **target):
    return await client.post(f"{API}/auth/codes", json={"purpose": purpose, **target})


async def assert_error(resp, status: int, code: str) -> dict:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == code, body
    return body["error"]


# --- email codes over SMTP ---------------------------------------------------


async def test_email_code_is_sent_over_smtp_and_hashed_at_rest(client, smtp, deps):
    r = await request_code(client, "login", email="Ann@Example.org")
    assert r.status == 202
    assert await r.json() == {"ok": True}
    msgs = smtp.to("ann@example.org")
    assert len(msgs) == 1
    assert msgs[0]["Subject"] == "Your Parley sign-in code"
    code = smtp.last_code("ann@example.org")
    assert len(code) == 6 and code.isdigit()

    rows = await VerificationCode.filter(target__in=code_targets("email", "ann@example.org")).values()
    assert len(rows) == 1
    row = rows[0]
    assert row["purpose"] == "login"
    assert all(code not in str(v) for v in row.values()), row
    assert len(row["code_hash"]) == 64
    # Ten minutes, give or take the request's own duration.
    ttl = (row["expires_at"] - row["created_at"]).total_seconds()
    assert 595 <= ttl <= 605


async def test_code_login_signs_in(client, smtp, deps):
    p = await make_user(deps, email="dora@example.org")
    assert (await request_code(client, "login", email=p.email)).status == 202
    code = smtp.last_code(p.email)
    r = await client.post(f"{API}/auth/login/code", json={"email": "DORA@example.org", "code": code})
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["user"]["id"] == p.user_id
    r = await client.get(f"{API}/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert r.status == 200
    # A code is spent once.
    r = await client.post(f"{API}/auth/login/code", json={"email": p.email, "code": code})
    await assert_error(r, 400, "invalid_code")


async def test_code_for_another_purpose_or_target_is_refused(client, smtp, deps):
    p = await make_user(deps, email="eve@example.org")
    q = await make_user(deps, email="fay@example.org")
    await request_code(client, "reset_password", email=p.email)
    code = smtp.last_code(p.email)
    r = await client.post(f"{API}/auth/login/code", json={"email": p.email, "code": code})
    await assert_error(r, 400, "invalid_code")
    r = await client.post(f"{API}/auth/login/code", json={"email": q.email, "code": code})
    await assert_error(r, 400, "invalid_code")
    # Still usable for what it was sent for.
    r = await client.post(f"{API}/auth/password/reset",
                          json={"email": p.email, "code": code, "new_password": "a new long password"})
    assert r.status == 200


async def test_expired_code_is_refused(client, smtp, deps):
    p = await make_user(deps, email="gus@example.org")
    await request_code(client, "login", email=p.email)
    code = smtp.last_code(p.email)
    await VerificationCode.filter(target__in=code_targets("email", p.email)).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    r = await client.post(f"{API}/auth/login/code", json={"email": p.email, "code": code})
    await assert_error(r, 400, "invalid_code")


async def test_five_wrong_attempts_then_even_the_right_code_is_refused(client, smtp, deps):
    p = await make_user(deps, email="hal@example.org")
    await request_code(client, "login", email=p.email)
    code = smtp.last_code(p.email)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(5):
        r = await client.post(f"{API}/auth/login/code", json={"email": p.email, "code": wrong})
        await assert_error(r, 400, "invalid_code")
    r = await client.post(f"{API}/auth/login/code", json={"email": p.email, "code": code})
    await assert_error(r, 400, "invalid_code")


async def test_four_wrong_attempts_leave_the_fifth_for_the_right_code(client, smtp, deps):
    p = await make_user(deps, email="ida@example.org")
    await request_code(client, "login", email=p.email)
    code = smtp.last_code(p.email)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(4):
        r = await client.post(f"{API}/auth/login/code", json={"email": p.email, "code": wrong})
        await assert_error(r, 400, "invalid_code")
    r = await client.post(f"{API}/auth/login/code", json={"email": p.email, "code": code})
    assert r.status == 200


async def test_new_code_replaces_the_old_one(client, smtp, deps):
    p = await make_user(deps, email="jon@example.org")
    await request_code(client, "login", email=p.email)
    old = smtp.last_code(p.email)
    for _ in range(5):  # two random codes are equal once in a million
        await request_code(client, "login", email=p.email)
        new = smtp.last_code(p.email)
        if new != old:
            break
    assert new != old
    r = await client.post(f"{API}/auth/login/code", json={"email": p.email, "code": old})
    await assert_error(r, 400, "invalid_code")
    r = await client.post(f"{API}/auth/login/code", json={"email": p.email, "code": new})
    assert r.status == 200


async def test_code_login_for_unknown_account_fails(client, smtp):
    # Asking for a code says nothing about whether the account exists...
    r = await request_code(client, "login", email="nobody@example.org")
    assert r.status == 202
    code = smtp.last_code("nobody@example.org")
    # ...and the code signs nobody in.
    r = await client.post(f"{API}/auth/login/code", json={"email": "nobody@example.org", "code": code})
    assert r.status in (400, 401)
    assert "access_token" not in await r.json()


async def test_password_reset_changes_password_and_ends_all_sessions(client, smtp, deps):
    p = await make_user(deps, email="kim@example.org")
    r = await client.post(f"{API}/auth/login", json={"login": p.email, "password": p.password})
    second = await r.json()
    await request_code(client, "reset_password", email=p.email)
    code = smtp.last_code(p.email)
    assert smtp.to(p.email)[-1]["Subject"] == "Your Parley password reset code"

    r = await client.post(f"{API}/auth/password/reset",
                          json={"email": p.email, "code": code, "new_password": "short"})
    await assert_error(r, 400, "invalid")
    r = await client.post(f"{API}/auth/password/reset",
                          json={"email": p.email, "code": code, "new_password": "brand new secret"})
    assert r.status == 200
    assert await r.json() == {"ok": True}

    for token in (p.access_token, second["access_token"]):
        r = await client.get(f"{API}/me", headers={"Authorization": f"Bearer {token}"})
        await assert_error(r, 401, "unauthorized")
    for refresh in (p.refresh_token, second["refresh_token"]):
        r = await client.post(f"{API}/auth/refresh", json={"refresh_token": refresh})
        await assert_error(r, 401, "unauthorized")
    r = await client.post(f"{API}/auth/login", json={"login": p.email, "password": p.password})
    await assert_error(r, 401, "invalid_credentials")
    r = await client.post(f"{API}/auth/login", json={"login": p.email, "password": "brand new secret"})
    assert r.status == 200


async def test_code_request_validation(client, smtp):
    for body in (
        {"purpose": "login"},  # no target
        {"purpose": "login", "email": "a@example.org", "phone": "+14155550100"},  # both
        {"purpose": "admin", "email": "a@example.org"},
        {"purpose": "login", "email": "not-an-email"},
        {"purpose": "login", "phone": "12"},
        {"purpose": "login", "email": "a@example.org", "extra": 1},
    ):
        r = await client.post(f"{API}/auth/codes", json=body)
        await assert_error(r, 400, "invalid")
    assert smtp.messages == []


@pytest.mark.parametrize("extra_settings", [{"smtp_url": "smtp://127.0.0.1:1?starttls=false"}])
async def test_unreachable_smtp_is_503_not_500(client):
    r = await request_code(client, "login", email="lea@example.org")
    await assert_error(r, 503, "unavailable")


# --- sign-up with verification required ---------------------------------------


@pytest.mark.parametrize("extra_settings", [{"require_verification": True}])
async def test_register_requires_a_register_code(client, smtp):
    body = {"email": "max@example.org", "password": PASSWORD, "display_name": "Max"}
    r = await client.post(f"{API}/auth/register", json=body)
    err = await assert_error(r, 400, "invalid")
    assert err["details"] == {"field": "code"}

    r = await client.post(f"{API}/auth/register", json={**body, "code": "123456"})
    await assert_error(r, 400, "invalid_code")

    # A login code is not a sign-up code.
    await request_code(client, "login", email="max@example.org")
    r = await client.post(f"{API}/auth/register", json={**body, "code": smtp.last_code("max@example.org")})
    await assert_error(r, 400, "invalid_code")

    await request_code(client, "register", email="max@example.org")
    assert smtp.to("max@example.org")[-1]["Subject"] == "Your Parley sign-up code"
    r = await client.post(f"{API}/auth/register", json={**body, "code": smtp.last_code("max@example.org")})
    assert r.status == 201, await r.text()
    assert (await r.json())["user"]["email"] == "max@example.org"


async def test_register_without_verification_needs_no_code(client):
    r = await client.post(f"{API}/auth/register",
                          json={"email": "ned@example.org", "password": PASSWORD, "display_name": "Ned"})
    assert r.status == 201


# --- phone codes: development log sender --------------------------------------


async def test_phone_code_goes_only_to_the_dev_log(client, smtp, deps, caplog):
    caplog.set_level(logging.DEBUG)
    await client.post(f"{API}/auth/register", json={
        "phone": "+1 415 555 0123", "password": PASSWORD, "display_name": "Olga"})
    r = await request_code(client, "login", phone="+1 (415) 555-0123")
    assert r.status == 202
    assert smtp.messages == []
    rows = await VerificationCode.filter(target__in=code_targets("phone", "+14155550123")).values("code_hash")
    assert len(rows) == 1

    mentioning = [rec for rec in caplog.records if "+14155550123" in rec.getMessage()
                  and rec.name == "parley.codes"]
    assert len(mentioning) == 1
    code = CODE_RE.search(mentioning[0].getMessage()).group(1)
    # The code appears in that one record and nowhere else.
    carrying = [rec for rec in caplog.records if code in rec.getMessage()
                or code in str(getattr(rec, "fields", ""))]
    assert carrying == mentioning

    r = await client.post(f"{API}/auth/login/code", json={"phone": "+14155550123", "code": code})
    assert r.status == 200
    assert (await r.json())["user"]["phone"] == "+14155550123"


async def test_email_code_over_smtp_is_never_logged(client, smtp, caplog):
    caplog.set_level(logging.DEBUG)
    await request_code(client, "register", email="pia@example.org")
    code = smtp.last_code("pia@example.org")
    # (aiosmtpd's "mail.log" is the receiving server, not ours.)
    ours = [rec for rec in caplog.records if not rec.name.startswith("mail.")]
    assert ours and not [rec for rec in ours if code in rec.getMessage()]


# --- throttling ---------------------------------------------------------------


def from_address(server, ip: str):
    """A client whose requests come from another loopback address (request.remote)."""
    connector = aiohttp.TCPConnector(local_addr=(ip, 0))
    return aiohttp.ClientSession(f"http://{server.host}:{server.port}", connector=connector)


async def assert_limited(resp, window: int) -> None:
    await assert_error(resp, 429, "rate_limited")
    retry = int(resp.headers["Retry-After"])
    assert 1 <= retry <= window
    assert (await resp.json())["error"]["details"]["retry_after"] == retry


@pytest.mark.parametrize("extra_settings", [{"login_rate_limit": "3/60"}])
async def test_login_is_limited_per_account_however_it_is_spelt(client, server, deps):
    p = await make_user(deps, email="quin@example.org", phone="+442079460958")
    for login in ("+44 20 7946 0958", "QUIN@example.org", p.username):
        r = await client.post(f"{API}/auth/login", json={"login": login, "password": "wrong password"})
        await assert_error(r, 401, "invalid_credentials")
    # A fresh address does not help: the account itself is throttled, even
    # for the right password.
    async with from_address(server, "127.0.0.2") as other:
        r = await other.post(f"{API}/auth/login", json={"login": "+442079460958", "password": p.password})
        await assert_limited(r, 60)
        # Other accounts are fine from there.
        q = await make_user(deps)
        r = await other.post(f"{API}/auth/login", json={"login": q.email, "password": q.password})
        assert r.status == 200


@pytest.mark.parametrize("extra_settings", [{"login_rate_limit": "3/60"}])
async def test_login_is_limited_per_address(client, server, deps):
    for i in range(3):
        r = await client.post(f"{API}/auth/login",
                              json={"login": f"nobody{i}@example.org", "password": "wrong password"})
        await assert_error(r, 401, "invalid_credentials")
    p = await make_user(deps)
    r = await client.post(f"{API}/auth/login", json={"login": p.email, "password": p.password})
    await assert_limited(r, 60)
    async with from_address(server, "127.0.0.2") as other:
        r = await other.post(f"{API}/auth/login", json={"login": p.email, "password": p.password})
        assert r.status == 200


@pytest.mark.parametrize("extra_settings", [{"login_rate_limit": "3/60"}])
async def test_code_login_is_limited_too(client, server, smtp, deps):
    p = await make_user(deps, email="rex@example.org")
    await request_code(client, "login", email=p.email)
    code = smtp.last_code(p.email)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(3):
        r = await client.post(f"{API}/auth/login/code", json={"email": p.email, "code": wrong})
        await assert_error(r, 400, "invalid_code")
    async with from_address(server, "127.0.0.2") as other:
        r = await other.post(f"{API}/auth/login/code", json={"email": p.email, "code": code})
        await assert_limited(r, 60)


@pytest.mark.parametrize("extra_settings", [{"code_rate_limit": "3/600"}])
async def test_code_sending_is_limited_per_target(client, server, smtp):
    for _ in range(3):
        assert (await request_code(client, "login", email="sam@example.org")).status == 202
    async with from_address(server, "127.0.0.2") as other:
        r = await other.post(f"{API}/auth/codes", json={"purpose": "login", "email": "SAM@example.org"})
        await assert_limited(r, 600)
        r = await other.post(f"{API}/auth/codes", json={"purpose": "login", "email": "tia@example.org"})
        assert r.status == 202
    assert len(smtp.to("sam@example.org")) == 3


@pytest.mark.parametrize("extra_settings", [{"code_rate_limit": "3/600"}])
async def test_code_sending_is_limited_per_address(client, server, smtp):
    for i in range(3):
        assert (await request_code(client, "login", email=f"u{i}@example.org")).status == 202
    r = await request_code(client, "login", email="u3@example.org")
    await assert_limited(r, 600)
    assert smtp.to("u3@example.org") == []
    async with from_address(server, "127.0.0.2") as other:
        r = await other.post(f"{API}/auth/codes", json={"purpose": "login", "email": "u3@example.org"})
        assert r.status == 202


def test_smtp_url_parsing():
    from app.senders import SmtpSender

    s = SmtpSender("smtp://us%40er:p%3Ass%2Fw@mail.example.org:587", "Parley <x@example.org>")
    assert (s.host, s.port, s.username, s.password) == ("mail.example.org", 587, "us@er", "p:ss/w")
    assert (s.use_tls, s.start_tls) == (False, None)  # STARTTLS when offered
    s = SmtpSender("smtp://relay?starttls=false", "x@example.org")
    assert (s.host, s.port, s.username, s.use_tls, s.start_tls) == ("relay", 25, None, False, False)
    assert SmtpSender("smtp://relay?starttls=true", "x").start_tls is True
    s = SmtpSender("smtps://mail.example.org?starttls=true", "x")
    assert (s.port, s.use_tls, s.start_tls) == (465, True, False)


@pytest.mark.parametrize("extra_settings", [{"require_verification": True}])
async def test_sign_up_with_verification_does_not_tell_who_has_an_account(client, smtp, deps):
    """Taken and free addresses get identical answers at every step a stranger can
    reach; only the owner of an address (who holds its code) learns it is taken."""
    import uuid

    from app.models.accounts import User

    await User.create(id=uuid.uuid4(), username="tara", email="tara@example.org",
                      phone="+14155550177", password_hash="-", display_name="Tara")
    pairs = (("tara@example.org", "free@example.org"),)
    for used, free in pairs:
        answers = []
        for email in (used, free):
            r = await request_code(client, "register", email=email)
            answers.append((r.status, await r.json()))
        assert answers[0] == answers[1] == (202, {"ok": True})
        answers = []
        for email in (used, free):
            r = await client.post(f"{API}/auth/register", json={
                "email": email, "password": PASSWORD, "display_name": "X", "code": "000000"})
            answers.append((r.status, await r.json()))
        assert answers[0] == answers[1]
        assert answers[0][0] == 400 and answers[0][1]["error"]["code"] == "invalid_code"
    # My own verified email plus someone else's phone: refused the same way
    # whether that phone has an account or not (never `phone_taken`).
    answers = []
    for phone in ("+14155550177", "+14155550188"):
        await request_code(client, "register", email="mallory@example.org")
        r = await client.post(f"{API}/auth/register", json={
            "email": "mallory@example.org", "phone": phone, "password": PASSWORD,
            "display_name": "M", "code": smtp.last_code("mallory@example.org")})
        answers.append((r.status, await r.json()))
    assert answers[0] == answers[1] and answers[0][0] == 400
    assert answers[0][1]["error"]["code"] == "invalid"


@pytest.mark.parametrize("extra_settings", [{"code_ttl": 300}])
async def test_email_text_follows_code_ttl_and_the_account_language(client, smtp, deps):
    from app.models.accounts import User

    await request_code(client, "login", email="vic@example.org")
    body = smtp.to("vic@example.org")[-1].get_body(preferencelist=("plain",)).get_content()
    assert "5 minutes" in body and "10 minutes" not in body
    p = await make_user(deps, email="wen@example.org")
    await User.filter(id=p.user_id).update(language="zh-CN")
    await request_code(client, "reset_password", email=p.email)
    mail = smtp.to(p.email)[-1]
    assert mail["Subject"] == "你的 Parley 重置密码验证码"
    body = mail.get_body(preferencelist=("plain",)).get_content()
    assert "5 分钟内有效" in body and smtp.last_code(p.email) in body
