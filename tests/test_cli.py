"""The command line: `python -m app migrate` and `python -m app serve`, run as
real subprocesses on a fresh SQLite file."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app.config import ROOT
from tests.ports import free_port

pytestmark = pytest.mark.heavy

GENERATE = """
import asyncio, sys
from app.db import init_db

async def main():
    ctx = await init_db(sys.argv[1], generate_schemas=True)
    await ctx.close_connections()

asyncio.run(main())
"""


def env_for(database_url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "SMTP_", "SMS_", "EMAIL_"))}
    env.update(DATABASE_URL=database_url, SECRET_KEY="cli-test-secret-" + "x" * 40, **extra)
    return env


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def schema(path: Path) -> dict:
    """{table: {column: (type, notnull, pk)}} plus unique/indexed column sets."""
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        out = {}
        for t in tables:
            cols = {r[1]: (r[2].upper(), bool(r[3]), bool(r[5]))
                    for r in con.execute(f'PRAGMA table_info("{t}")')}
            indexes = set()
            for idx in con.execute(f'PRAGMA index_list("{t}")'):
                cols_of = tuple(r[2] for r in con.execute(f'PRAGMA index_info("{idx[1]}")'))
                indexes.add((cols_of, bool(idx[2])))  # (columns, unique)
            out[t] = {"columns": cols, "indexes": indexes}
        return out
    finally:
        con.close()


def test_migrate_creates_the_tables_the_models_describe(tmp_path):
    migrated = tmp_path / "migrated.db"
    run(["-m", "app", "migrate"], env_for(f"sqlite://{migrated}"))
    generated = tmp_path / "generated.db"
    run(["-c", GENERATE, f"sqlite://{generated}"], env_for(f"sqlite://{generated}"))

    got = schema(migrated)
    want = schema(generated)
    # The migration tool keeps its own bookkeeping table.
    bookkeeping = set(got) - set(want)
    assert all("migration" in t for t in bookkeeping), bookkeeping
    for t in bookkeeping:
        del got[t]
    assert {"users", "auth_sessions", "refresh_tokens", "verification_codes"} <= set(got)
    assert set(got) == set(want), (
        f"only migrated: {sorted(set(got) - set(want))}, only in models: "
        f"{sorted(set(want) - set(got))}; run `python -m app makemigrations`")
    for table in want:
        assert got[table]["columns"] == want[table]["columns"], (
            f"columns of {table} differ from the models: run `python -m app makemigrations`")
        assert got[table]["indexes"] == want[table]["indexes"], (
            f"indexes of {table} differ from the models: run `python -m app makemigrations`")

    # Running it again is a no-op, not an error.
    run(["-m", "app", "migrate"], env_for(f"sqlite://{migrated}"))


@pytest.fixture
def serve(tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "w+")  # noqa: SIM115 (closed below)
    db = f"sqlite://{tmp_path / 'serve.db'}"
    run(["-m", "app", "migrate"], env_for(db))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env_for(db), stdout=log, stderr=subprocess.STDOUT,
    )
    yield proc, f"http://127.0.0.1:{port}", log
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_healthy(proc, base: str, log) -> tuple[int, bytes]:
    """The first answer of `base`/healthz once the server listens."""
    deadline = time.monotonic() + 60  # start-up wait, not an assertion on speed
    while True:
        assert proc.poll() is None, Path(log.name).read_text()
        try:
            return get(f"{base}/healthz")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_serve_answers_health_checks(serve):
    proc, base, log = serve
    status, body = wait_healthy(proc, base, log)
    assert (status, body) == (200, b'{"status":"ok"}')
    status, body = get(f"{base}/readyz")
    assert status == 200, body
    status, body = get(f"{base}/api/v1/me")
    assert status == 401 and b'"unauthorized"' in body
    proc.terminate()
    assert proc.wait(timeout=20) == 0
    output = Path(log.name).read_text()
    # Logs are JSON lines; the request lines are there.
    assert '"route":"/healthz"' in output


DOCS = ROOT / "docs"


def test_every_setting_is_documented():
    from dataclasses import fields

    from app.config import Settings

    text = (DOCS / "configuration.md").read_text()
    missing = [f.name.upper() for f in fields(Settings)
               if f.name != "extra" and f"`{f.name.upper()}`" not in text]
    assert missing == [], f"add to docs/configuration.md: {missing}"
    for name in ("TEST_DATABASE_URL", "TEST_REDIS_URL"):
        assert f"`{name}`" in text


def test_account_routes_are_documented():
    from app.api.routes import API, ROUTES

    text = (DOCS / "api.md").read_text()
    missing, checked = [], 0
    for route in ROUTES:
        if route.handler.__module__ not in ("app.api.auth", "app.api.users", "app.api.health"):
            continue
        path = route.path[len(API):] if route.path.startswith(API) else route.path
        checked += 1
        if f"`{route.method} {path}" not in text:
            missing.append(f"{route.method} {path}")
    assert checked >= 15
    assert missing == [], f"add to docs/api.md: {missing}"


def test_cluster_nginx_config_renders_with_and_without_tls(tmp_path):
    """`python -m app cluster` renders deploy/nginx.conf.template; nginx itself
    runs it in tests/test_cluster.py."""
    from app.cluster import render_nginx, worker_env

    plain = render_nginx("127.0.0.1:8080", [8081, 8082], tmp_path)
    tls = render_nginx("0.0.0.0:443", [8081], tmp_path, tls=("c.pem", "k.pem"),
                       http_listen="0.0.0.0:80")
    tls_only = render_nginx("127.0.0.1:8443", [8081], tmp_path, tls=("c.pem", "k.pem"))
    for text in (plain, tls, tls_only):
        assert not [line for line in text.splitlines()
                    if "{{" in line and not line.lstrip().startswith("#")]
        # Every proxy_set_header at server level: one in a location would drop
        # the inherited X-Forwarded-For for that location.
        for block in text.split("\n        location ")[1:]:
            assert "proxy_set_header" not in block.split("}")[0]
        assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    assert "ssl" not in plain and "Strict-Transport-Security" not in plain
    assert "listen 127.0.0.1:8080;" in plain
    assert "listen 0.0.0.0:443 ssl;" in tls and "Strict-Transport-Security" in tls
    assert "listen 0.0.0.0:80;" in tls and "return 301 https://$host$request_uri;" in tls
    assert "return 301" not in tls_only and "listen 127.0.0.1:8443 ssl;" in tls_only

    env = {"TLS_CERT_FILE": "c", "TLS_KEY_FILE": "k", "TRUSTED_PROXIES": "10.0.0.0/8"}
    behind = worker_env(env, with_nginx=True)
    assert behind["TRUSTED_PROXIES"] == "127.0.0.1/32,10.0.0.0/8"
    assert "TLS_CERT_FILE" not in behind and "TLS_KEY_FILE" not in behind
    assert worker_env({}, with_nginx=True)["TRUSTED_PROXIES"] == "127.0.0.1/32"
    assert worker_env(env, with_nginx=False) == env


def migrations_in_tree() -> int:
    return len([p for p in (ROOT / "app" / "migrations").glob("[0-9][0-9][0-9][0-9]_*.py")])


def test_migrate_says_what_it_did_in_one_human_line(tmp_path):
    env = env_for(f"sqlite://{tmp_path / 'human.db'}")
    first = run(["-m", "app", "migrate"], env)
    n = migrations_in_tree()
    assert first.stdout == f"applied {n} migration{'s' if n != 1 else ''}\n"
    again = run(["-m", "app", "migrate"], env)
    assert again.stdout == "up to date\n"
    for proc in (first, again):
        assert "Tortoise-ORM shutdown" not in proc.stdout + proc.stderr
        assert proc.stderr == ""


def test_demo_start_up_is_not_cluttered_by_tortoise(tmp_path):
    env = env_for(f"sqlite://{tmp_path / 'demo.db'}")
    out = run(["-m", "app", "demo"], env)
    assert out.stdout.startswith("Parley demo accounts are ready.")
    assert "Tortoise-ORM" not in out.stdout + out.stderr


def test_readme_lists_every_cli_command():
    help_text = run(["-m", "app", "--help"], dict(os.environ)).stdout
    commands = re.search(r"\{([a-z,-]+)\}", help_text).group(1).split(",")
    assert {"serve", "cluster", "migrate", "cleanup-media"} <= set(commands)
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Command line"):]
    missing = [c for c in commands if f"| `python -m app {c}" not in table]
    assert missing == [], f"add to README's command table: {missing}"


def test_readme_try_the_api_runs_as_written(serve):
    proc, base, log = serve
    assert wait_healthy(proc, base, log)[0] == 200
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Try the API"):readme.index("## Command line")]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    base_line = "BASE=http://127.0.0.1:8080/api/v1\n"
    assert script.startswith(base_line), "the example starts with its one BASE variable"
    script = script.replace(base_line, f"BASE={base}/api/v1\n")
    script = "set -eu\n" + script + 'echo\necho "ACCESS=$ACCESS_TOKEN"\n'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    register, me, logout, blank, last = out.stdout.splitlines()
    assert json.loads(register)["user"]["email"] == "alice@example.org", out.stdout
    me = json.loads(me)["user"]
    assert me["email"] == "alice@example.org" and me["display_name"] == "Alice", out.stdout
    assert logout == "204"
    access = last.removeprefix("ACCESS=")
    assert access.count(".") == 2  # a JWT, captured from the refresh answer
    # After logout the token captured by the example no longer works.
    req = urllib.request.Request(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {access}"})
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("the token still works after logout")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401


def test_serve_refuses_a_half_configured_provider_with_a_clear_message(tmp_path):
    env = env_for(f"sqlite://{tmp_path / 'conf.db'}", SMS_PROVIDER="twilio",
                  TWILIO_ACCOUNT_SID="AC" + "0" * 32)
    proc = subprocess.run([sys.executable, "-m", "app", "serve", "--port", str(free_port())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "configuration error: TWILIO_AUTH_TOKEN must be set for this provider")


@pytest.mark.parametrize("choice", ["uvloop", "asyncio", None])
def test_serve_runs_on_the_event_loop_chosen_and_says_which(tmp_path, choice):
    db = f"sqlite://{tmp_path / 'loop.db'}"
    run(["-m", "app", "migrate"], env_for(db))
    port = free_port()
    env = env_for(db)
    env.pop("EVENT_LOOP", None)
    if choice is not None:
        env["EVENT_LOOP"] = choice
    env["LISTEN_BACKLOG"] = "777"
    log = open(tmp_path / "serve.log", "w+")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        status, _ = wait_healthy(proc, f"http://127.0.0.1:{port}", log)
        assert status == 200
        expected = choice or "uvloop"  # the default where uvloop installs
        assert f"http://127.0.0.1:{port} ({expected} event loop)" in Path(log.name).read_text()
        # A listening socket's Send-Q is its backlog.
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                                   text=True, check=True).stdout.split()
        assert listening[2] == "777", listening
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_serve_refuses_an_unknown_event_loop(tmp_path):
    env = env_for(f"sqlite://{tmp_path / 'conf.db'}", EVENT_LOOP="trio")
    proc = subprocess.run([sys.executable, "-m", "app", "serve", "--port", str(free_port())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "EVENT_LOOP is uvloop or asyncio" in proc.stderr
