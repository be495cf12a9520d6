"""Structured logs: one JSON line per request and per Socket.IO event, and no
secrets (passwords, tokens, codes) in any of them."""

from __future__ import annotations

import json
import logging

import pytest
import socketio

from app.logs import JsonFormatter, Retrying
from tests.factories import connect, make_user

API = "/api/v1"
FORMATTER = JsonFormatter()


@pytest.fixture
def lines(caplog):
    """Every record captured so far, as the JSON lines production would write."""
    caplog.set_level(logging.DEBUG)

    def formatted() -> list[dict]:
        return [json.loads(FORMATTER.format(rec)) for rec in caplog.records]

    return formatted


def access_lines(lines) -> list[dict]:
    return [x for x in lines() if x["logger"] == "parley.access"]


async def test_one_json_line_per_request(client, deps, lines):
    p = await make_user(deps)
    r = await client.get(f"{API}/users/{p.user_id}", headers={**p.headers, "X-Request-Id": "req-1"})
    assert r.status == 200
    r = await client.get(f"{API}/nope", headers={"X-Request-Id": "req-2"})
    assert r.status == 404

    logged = access_lines(lines)
    assert [x["request_id"] for x in logged] == ["req-1", "req-2"]
    ok, missing = logged
    assert ok["user_id"] == p.user_id
    assert ok["method"] == "GET"
    assert ok["route"] == "/api/v1/users/{user_id}"  # the route, not the raw path
    assert ok["status"] == 200
    assert isinstance(ok["duration_ms"], float | int) and ok["duration_ms"] >= 0
    assert ok["level"] == "info" and isinstance(ok["ts"], float | int)
    assert missing["status"] == 404 and missing["user_id"] is None


async def test_request_line_for_errors_and_sign_in(client, deps, lines):
    p = await make_user(deps)
    r = await client.post(f"{API}/auth/login", json={"login": p.email, "password": p.password})
    assert r.status == 200
    r = await client.post(f"{API}/auth/login", json={"login": p.email, "password": "wrong password"})
    assert r.status == 401
    login_ok, login_bad = access_lines(lines)
    # A sign-in is attributed to the user it signed in.
    assert (login_ok["route"], login_ok["status"], login_ok["user_id"]) == (
        "/api/v1/auth/login", 200, p.user_id)
    assert (login_bad["status"], login_bad["user_id"]) == (401, None)
    assert login_ok["request_id"] != login_bad["request_id"]
    assert login_bad["request_id"] == r.headers["X-Request-Id"]


async def test_one_json_line_per_socketio_connect(client, deps, base_url, lines):
    p = await make_user(deps)
    sio = await connect(base_url, p.access_token)
    await sio.disconnect()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await connect(base_url, "not-a-token")

    events = [x for x in lines() if x["logger"] == "parley.events"]
    connects = [x for x in events if x["event"] == "connect"]
    assert [c["status"] for c in connects] == ["ok", "unauthorized"]
    assert connects[0]["user_id"] == p.user_id
    assert connects[0]["sid"] and "duration_ms" in connects[0]
    assert "user_id" not in connects[1] or connects[1]["user_id"] is None


async def test_secrets_never_reach_the_logs(client, deps, base_url, lines):
    password = "Tr0ub4dor&3 horse staple"
    new_password = "a completely new secret 42"
    r = await client.post(f"{API}/auth/register", json={
        "email": "sec@example.org", "password": password, "display_name": "Sec"})
    reg = await r.json()
    r = await client.post(f"{API}/auth/login", json={"login": "sec@example.org", "password": password})
    login = await r.json()
    r = await client.post(f"{API}/auth/login", json={"login": "sec@example.org", "password": password + "x"})
    assert r.status == 401
    r = await client.post(f"{API}/auth/refresh", json={"refresh_token": login["refresh_token"]})
    refreshed = await r.json()
    headers = {"Authorization": f"Bearer {refreshed['access_token']}"}
    await client.get(f"{API}/me", headers=headers)
    sio = await connect(base_url, refreshed["access_token"])
    await sio.disconnect()
    # A malformed body that contains a password must not be echoed into logs either.
    await client.post(f"{API}/auth/login", data=f'{{"login": "x", "password": "{password}"',
                      headers={"Content-Type": "application/json"})
    await client.post(f"{API}/auth/refresh", json={"refresh_token": login["refresh_token"]})

    # A reset code, delivered by the dev email sender: the one sanctioned place
    # a code is logged. Every other line must not carry it.
    await client.post(f"{API}/auth/codes", json={"purpose": "reset_password", "email": "sec@example.org"})
    sender_lines = [x for x in lines() if x["logger"] == "parley.codes"]
    assert len(sender_lines) == 1
    code = sender_lines[0]["msg"].rsplit(" ", 1)[-1]
    assert len(code) == 6 and code.isdigit()
    r = await client.post(f"{API}/auth/password/reset", json={
        "email": "sec@example.org", "code": code, "new_password": new_password})
    assert r.status == 200

    secrets = {
        "password": password,
        "new password": new_password,
        "access token": reg["access_token"],
        "refresh token": reg["refresh_token"],
        "login access token": login["access_token"],
        "login refresh token": login["refresh_token"],
        "refreshed access token": refreshed["access_token"],
        "refreshed refresh token": refreshed["refresh_token"],
    }
    output = [json.dumps(x) for x in lines()]
    assert len(access_lines(lines)) >= 8
    for line in output:
        for what, value in secrets.items():
            assert value not in line, f"{what} logged: {line}"
    # Token halves (a JWT's signature, say) do not leak either.
    signature = refreshed["access_token"].rsplit(".", 1)[1]
    assert not [line for line in output if signature in line]
    # (Timestamps and durations are numbers that could contain six digits by chance.)
    def carries_code(x: dict) -> bool:
        return any(code in str(v) for k, v in x.items() if k not in ("ts", "duration_ms"))

    assert [x for x in lines() if carries_code(x)] == sender_lines


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_run_of_failures_is_told_once_then_once_a_minute_then_its_end(caplog):
    caplog.set_level(logging.INFO, "parley.test")
    clock = Clock()
    failures = Retrying(logging.getLogger("parley.test"), "the job", clock=clock)
    failures.ok()  # nothing was failing: nothing to say
    for step in (0, 10, 20, 30, 40, 50):  # one minute of the same failure
        clock.t = 1000.0 + step
        failures.failed(ConnectionRefusedError("refused"))
    clock.t = 1060.0
    failures.failed(ConnectionRefusedError("refused"))  # a minute since it was told
    clock.t = 1065.0
    failures.failed(TimeoutError("slow"))  # another kind: told in full at once
    clock.t = 1070.0
    failures.failed(TimeoutError("slow"), "(3 events)")
    clock.t = 1090.0
    failures.ok()
    failures.ok()
    said = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert said == [
        ("WARNING", "the job failed (ConnectionRefusedError); retrying", True),
        ("WARNING", "the job still failing after 60 s (7 attempts): "
                    "ConnectionRefusedError: refused", False),
        ("WARNING", "the job failed (TimeoutError); retrying", True),
        ("INFO", "the job works again after 90 s (9 failed attempts)", False),
    ], said
    assert caplog.records[0].exc_info[0] is ConnectionRefusedError
    assert caplog.records[2].exc_info[0] is TimeoutError
    assert failures.failures == 0


def test_a_failure_after_the_end_of_a_run_is_told_in_full_again(caplog):
    caplog.set_level(logging.INFO, "parley.test")
    clock = Clock()
    failures = Retrying(logging.getLogger("parley.test"), "the job", level=logging.ERROR,
                        clock=clock)
    failures.failed(OSError("gone"))
    failures.ok()
    clock.t += 1
    failures.failed(OSError("gone"), "(2 events)")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "the job failed (OSError); retrying"),
        ("INFO", "the job works again after 0 s (1 failed attempt)"),
        ("ERROR", "the job (2 events) failed (OSError); retrying"),
    ]


def test_failures_that_take_turns_are_each_told_once(caplog):
    """An outage may fail in more than one way (a refused connect, then a
    timeout, then a refused connect again): each way is told once."""
    caplog.set_level(logging.INFO, "parley.test")
    clock = Clock()
    failures = Retrying(logging.getLogger("parley.test"), "the job", clock=clock)
    for i in range(20):  # 40 s, every other round another way
        clock.t = 1000.0 + 2 * i
        failures.failed(TimeoutError("slow") if i % 2 else ConnectionRefusedError("refused"))
    assert [(r.getMessage(), r.exc_info[0]) for r in caplog.records] == [
        ("the job failed (ConnectionRefusedError); retrying", ConnectionRefusedError),
        ("the job failed (TimeoutError); retrying", TimeoutError),
    ]
