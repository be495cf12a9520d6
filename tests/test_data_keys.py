"""Encryption at rest of emails and phones: ciphertext really in the database,
lookups through the blind index, the in-place migration of a database made
before encryption, `rotate-keys` while a server runs, and a wrong or missing
key refused at start-up. Real subprocesses on real SQLite files."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime

import pytest

from app import crypto
from app.config import ROOT
from tests.test_cli import env_for, free_port, run, wait_healthy

pytestmark = pytest.mark.heavy

KEY_A = crypto.new_key_spec("ka")
KEY_B = crypto.new_key_spec("kb")

OLD_SCHEMA = "models.0002_media_uploader_index"  # the schema before encryption

MIGRATE_TO = """
import asyncio, sys
from tortoise.migrations.api.migrate import migrate
from app.db import tortoise_config
from tortoise.context import get_current_context

async def main():
    try:
        await migrate(config=tortoise_config(sys.argv[1]), target=sys.argv[2])
    finally:
        await get_current_context().close_connections()

asyncio.run(main())
"""


def post(url: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def get_json(url: str, token: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Server:
    def __init__(self, tmp_path, db: str, keys: str, name: str = "serve"):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp_path / f"{name}.log", "w+")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port",
             str(self.port)], cwd=ROOT,
            env=env_for(db, DATA_KEYS=keys, MEDIA_ROOT=str(tmp_path / "media")),
            stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def servers():
    started: list[Server] = []
    yield started
    for s in started:
        s.stop()


def start(servers, tmp_path, db, keys, name="serve") -> Server:
    s = Server(tmp_path, db, keys, name)
    servers.append(s)
    wait_healthy(s.proc, s.base, s.log)
    return s


def raw_rows(path, sql: str) -> list[dict]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql)]
    finally:
        con.close()


def register(base: str, email: str, phone: str | None = None) -> dict:
    body = {"email": email, "password": "correct horse battery", "display_name": "P"}
    if phone:
        body["phone"] = phone
    status, data = post(f"{base}/api/v1/auth/register", body)
    assert status == 201, data
    return data


def login(base: str, login_name: str) -> tuple[int, dict]:
    return post(f"{base}/api/v1/auth/login",
                {"login": login_name, "password": "correct horse battery"})


def test_email_and_phone_are_ciphertext_at_rest_and_found_by_blind_index(tmp_path, servers):
    path = tmp_path / "p.db"
    db = f"sqlite://{path}"
    run(["-m", "app", "migrate"], env_for(db, DATA_KEYS=KEY_A))
    s = start(servers, tmp_path, db, KEY_A)
    alice = register(s.base, "Alice@Example.org", "+8613800138000")
    assert alice["user"]["email"] == "alice@example.org"
    # Raw rows: neither the address nor the number appears in any column.
    dump = json.dumps(raw_rows(path, "SELECT * FROM users"), default=str)
    assert "alice@example.org" not in dump.lower() and "13800138000" not in dump
    row = raw_rows(path, "SELECT * FROM users")[0]
    assert row["email"] is None and row["phone"] is None
    assert row["email_enc"].startswith("ka:") and row["email_bidx"].startswith("ka:")
    # Lookups: sign-in by email (any spelling) and phone, uniqueness, exact search.
    assert login(s.base, "ALICE@example.org")[0] == 200
    assert login(s.base, "+86 138 0013 8000")[0] == 200
    status, err = post(f"{s.base}/api/v1/auth/register", {
        "email": "alice@EXAMPLE.org", "password": "another password 1", "display_name": "Q"})
    assert status == 409 and "email" in json.dumps(err), err
    status, err = post(f"{s.base}/api/v1/auth/register", {
        "email": "q@example.org", "phone": "+8613800138000", "password": "another password 1",
        "display_name": "Q"})
    assert status == 409 and "phone" in json.dumps(err), err
    bob = register(s.base, "bob@example.org")
    status, found = get_json(f"{s.base}/api/v1/users/search?q=alice%40example.org",
                             bob["access_token"])
    assert status == 200 and [u["id"] for u in found["users"]] == [alice["user"]["id"]]
    status, found = get_json(f"{s.base}/api/v1/users/search?q=%2B8613800138000",
                             bob["access_token"])
    assert [u["id"] for u in found["users"]] == [alice["user"]["id"]]
    # Codes are stored under the blind index too, never the address.
    status, _ = post(f"{s.base}/api/v1/auth/codes", {"purpose": "login",
                                                      "email": "alice@example.org"})
    assert status == 202
    codes = raw_rows(path, "SELECT target FROM verification_codes")
    assert codes and all(c["target"].startswith("ka:") and "alice" not in c["target"]
                         for c in codes)


def test_wrong_or_missing_key_stops_start_up_with_a_clear_message(tmp_path, servers):
    path = tmp_path / "w.db"
    db = f"sqlite://{path}"
    run(["-m", "app", "migrate"], env_for(db, DATA_KEYS=KEY_A))
    s = start(servers, tmp_path, db, KEY_A)
    register(s.base, "carol@example.org")
    s.stop()
    wrong = "ka:" + crypto.new_key_spec("x").split(":", 1)[1]  # same id, other bytes
    for keys, says in ((wrong, "is not the key"), (KEY_B, "'ka'"), ("ka:notbase64!", "base64")):
        proc = subprocess.run([sys.executable, "-m", "app", "serve", "--port",
                               str(free_port())], cwd=ROOT, env=env_for(db, DATA_KEYS=keys),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    # With the right key it still serves the account.
    s = start(servers, tmp_path, db, KEY_A, "again")
    assert login(s.base, "carol@example.org")[0] == 200


class Db:
    """A fresh database of either backend, and raw SQL on it (no ORM, no keys)."""

    def __init__(self, backend: str, tmp_path):
        self.backend = backend
        if backend == "sqlite":
            self.path = tmp_path / "old.db"
            self.url = f"sqlite://{self.path}"
        else:
            from tests.conftest import TEST_DATABASE_URL

            self.name = f"parley_dp_{uuid.uuid4().hex[:10]}"
            self.admin = TEST_DATABASE_URL.replace("postgres://", "postgresql://", 1)
            self._pg(f'CREATE DATABASE "{self.name}"', self.admin)
            base = TEST_DATABASE_URL.rpartition("/")[0]
            self.url = f"{base}/{self.name}"

    def _pg(self, sql: str, dsn: str, args=(), fetch=False):
        import asyncio

        import asyncpg

        async def go():
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                if fetch:
                    return [dict(r) for r in await conn.fetch(sql, *args)]
                await conn.execute(sql, *args)
            finally:
                await conn.close()

        return asyncio.run(go())

    def execute(self, sql: str, args=()) -> None:
        if self.backend == "sqlite":
            con = sqlite3.connect(self.path)
            con.execute(sql, args)
            con.commit()
            con.close()
        else:
            n = iter(range(1, 100))
            self._pg(re.sub(r"\?", lambda _: f"${next(n)}", sql),
                     self.url.replace("postgres://", "postgresql://", 1), args)

    def rows(self, sql: str) -> list[dict]:
        if self.backend == "sqlite":
            return raw_rows(self.path, sql)
        return self._pg(sql, self.url.replace("postgres://", "postgresql://", 1), fetch=True)

    def drop(self) -> None:
        if self.backend != "sqlite":
            self._pg(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', self.admin)


BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get("TEST_DATABASE_URL") else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_database_made_before_encryption_is_migrated_in_place(tmp_path, servers, backend):
    dbx = Db(backend, tmp_path)
    try:
        _migrated_in_place(tmp_path, servers, dbx)
    finally:
        for s in servers:
            s.stop()
        dbx.drop()


def _migrated_in_place(tmp_path, servers, dbx: Db) -> None:
    db = dbx.url
    env = env_for(db, DATA_KEYS=KEY_A)
    subprocess.run([sys.executable, "-c", MIGRATE_TO, db, OLD_SCHEMA], cwd=ROOT, env=env,
                   check=True, timeout=120)
    # Accounts as today's schema stores them: plaintext email and phone.
    from app.security import hash_password

    pw = hash_password("correct horse battery")
    for n in range(3):
        dbx.execute(
            "INSERT INTO users (id, username, email, phone, password_hash, display_name, bio, "
            "created_at, allow_strangers, send_read_receipts, last_seen_visibility, "
            "discoverable_by_email, discoverable_by_phone, language) VALUES "
            "(?, ?, ?, ?, ?, 'Old', '', ?, FALSE, TRUE, 'contacts', TRUE, TRUE, '')",
            (uuid.uuid4() if dbx.backend == "postgres" else str(uuid.uuid4()), f"old{n}",
             f"old{n}@example.org", f"+1415555012{n}", pw,
             datetime(2026, 1, 1, tzinfo=UTC) if dbx.backend == "postgres"
             else "2026-01-01 00:00:00+00:00"))
    run(["-m", "app", "migrate"], env)
    # Migrated, not yet rotated: the server serves the old rows (through the
    # plaintext columns) and says what to run.
    s = start(servers, tmp_path, db, KEY_A)
    assert login(s.base, "old0@example.org")[0] == 200
    assert login(s.base, "+14155550121")[0] == 200
    status, err = post(f"{s.base}/api/v1/auth/register", {
        "email": "old2@example.org", "password": "another password 1", "display_name": "Q"})
    assert status == 409, err
    proc = run(["-m", "app", "rotate-keys"], env)
    assert "3 accounts" in proc.stdout, proc.stdout
    rows = dbx.rows("SELECT * FROM users ORDER BY username")
    assert all(r["email"] is None and r["phone"] is None for r in rows)
    assert all(r["email_enc"].startswith("ka:") and r["phone_bidx"].startswith("ka:")
               for r in rows)
    assert "old1@example.org" not in json.dumps(rows, default=str)
    # The running server finds them through the blind index now.
    assert login(s.base, "old1@example.org")[0] == 200
    status, data = login(s.base, "+14155550122")
    assert status == 200 and data["user"]["email"] == "old2@example.org"
    # A second run has nothing left to do.
    assert "0 accounts" in run(["-m", "app", "rotate-keys"], env).stdout


def _bulk_users(path, keys: str, n: int) -> None:
    """n accounts encrypted under the ring's current key, written straight to the file."""
    ring = crypto.parse_keys(keys)
    from app.security import hash_password

    pw = hash_password("correct horse battery")
    con = sqlite3.connect(path)
    rows = []
    for i in range(n):
        email = f"bulk{i}@example.org"
        rows.append((str(uuid.uuid4()), f"bulk{i}", ring.encrypt("users.email", email),
                     ring.blind_index("users.email", email), pw))
    con.executemany(
        "INSERT INTO users (id, username, email_enc, email_bidx, password_hash, display_name, "
        "bio, created_at, allow_strangers, send_read_receipts, last_seen_visibility, "
        "discoverable_by_email, discoverable_by_phone, language) VALUES "
        "(?, ?, ?, ?, ?, 'B', '', '2026-01-01 00:00:00+00:00', 0, 1, 'contacts', 1, 1, '')",
        rows)
    con.commit()
    con.close()


def test_rotate_keys_while_servers_run_and_read(tmp_path, servers):
    path = tmp_path / "r.db"
    db = f"sqlite://{path}"
    run(["-m", "app", "migrate"], env_for(db, DATA_KEYS=KEY_A))
    first = start(servers, tmp_path, db, KEY_A, "first")  # records key ka as in use
    uploader = register(first.base, "uploader@example.org")
    blob = os.urandom(300_000)  # a file under the old key, read during and after rotation
    media = upload(first.base, uploader["access_token"], blob)
    first.stop()
    _bulk_users(path, KEY_A, 3000)
    ring = f"{KEY_B},{KEY_A}"  # kb current, ka still readable
    writer = start(servers, tmp_path, db, ring, "writer")
    reader = start(servers, tmp_path, db, ring, "reader")  # a second process reading
    viewer = register(writer.base, "viewer@example.org")
    failures: list = []
    stop = threading.Event()
    checks = 0

    def read_loop():
        nonlocal checks
        i = 0
        while not stop.is_set():
            i = (i * 7919 + 1) % 3000
            status, found = get_json(
                f"{reader.base}/api/v1/users/search?q=bulk{i}%40example.org",
                viewer["access_token"])
            if status != 200 or len(found["users"]) != 1:
                failures.append((i, status, found))
            checks += 1

    t = threading.Thread(target=read_loop)
    t.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "app", "rotate-keys", "--batch", "200"],
                              cwd=ROOT, env=env_for(db, DATA_KEYS=ring,
                                                    MEDIA_ROOT=str(tmp_path / "media")),
                              capture_output=True, text=True, timeout=300)
    finally:
        stop.set()
        t.join()
    assert proc.returncode == 0, proc.stderr
    assert "rotate-keys: accounts" in proc.stderr  # progress
    assert "3001 accounts" in proc.stdout and "key(s) ka any more" in proc.stdout, proc.stdout
    assert checks > 0 and not failures, failures[:5]
    rows = raw_rows(path, "SELECT email_enc, email_bidx FROM users")
    assert all(r["email_enc"].startswith("kb:") and r["email_bidx"].startswith("kb:")
               for r in rows)
    assert "1 media files" in proc.stdout, proc.stdout
    files = [p for p in (tmp_path / "media").rglob("*") if p.is_file() and ".spool" not in p.parts]
    assert files and all(p.read_bytes()[8:10] == b"kb" for p in files)
    assert download(reader.base, uploader["access_token"], media) == blob
    for s in (writer, reader):
        s.stop()
    # Key ka is retired: the ring without it starts and serves everyone...
    s = start(servers, tmp_path, db, KEY_B, "after")
    assert login(s.base, "bulk2999@example.org")[0] == 200
    assert login(s.base, "viewer@example.org")[0] == 200
    s.stop()
    # ...and a ring with only the retired key does not start.
    proc = subprocess.run([sys.executable, "-m", "app", "serve", "--port", str(free_port())],
                          cwd=ROOT, env=env_for(db, DATA_KEYS=KEY_A), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "'kb'" in proc.stderr, proc.stderr


def upload(base: str, token: str, data: bytes) -> str:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"x.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() \
        + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{base}/api/v1/media", data=body, method="POST", headers={
        "Authorization": f"Bearer {token}",
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["media"]["id"]


def download(base: str, token: str, media_id: str) -> bytes:
    req = urllib.request.Request(f"{base}/api/v1/media/{media_id}/content",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


def test_key_ring_parsing_and_values():
    ring = crypto.parse_keys(f"{KEY_B}, {KEY_A}")
    assert ring.current.kid == "kb" and ring.ids == ["kb", "ka"]
    a = ring.encrypt("users.email", "x@example.org")
    b = ring.encrypt("users.email", "x@example.org")
    assert a != b and a.startswith("kb:")  # random nonce per value
    assert ring.decrypt("users.email", a) == "x@example.org"
    with pytest.raises(crypto.DecryptError):
        ring.decrypt("users.phone", a)  # bound to its column
    older = crypto.parse_keys(KEY_A).encrypt("users.email", "y@example.org")
    assert ring.decrypt("users.email", older) == "y@example.org"
    with pytest.raises(crypto.DecryptError):
        crypto.parse_keys(KEY_B).decrypt("users.email", older)
    assert ring.blind_index("users.email", "x@example.org") == \
        ring.blind_index("users.email", "x@example.org")
    for bad in ("", "nokey", "k:" + "A" * 10, "a b:" + KEY_A.split(":")[1], f"{KEY_A},{KEY_A}"):
        with pytest.raises(ValueError):
            crypto.parse_keys(bad)
