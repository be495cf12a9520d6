"""Parley on a Heroku-like platform: the Procfile's `release`, then `web`, run
from a copy of the app (the "slug") with nothing but PORT and DATABASE_URL
(plus PATH and HOME) in the environment, as such platforms start them; then
/healthz, /readyz, sign-up, sign-in and SIGTERM.

SQLite always; PostgreSQL too when TEST_DATABASE_URL is set (given to the app
as `postgresql://`, the spelling some platforms use).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from app.config import ROOT
from tests.cluster_helpers import create_database, drop_database, free_port

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
BACKENDS = ["sqlite"] + (["postgres"] if TEST_DATABASE_URL.startswith("postgres") else [])
API = "/api/v1"


def procfile() -> dict[str, str]:
    kinds = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, _, command = line.partition(":")
            kinds[kind.strip()] = command.strip()
    return kinds


def make_slug(tmp: Path) -> Path:
    """What the buildpacks ship: the app's files without local state, after the
    Node.js buildpack's `npm run build` (the web client's bundle)."""
    slug = tmp / "slug"
    slug.mkdir()
    for name in ("app", "templates", "static", "deploy", "Procfile", "pyproject.toml",
                 "package.json", "package-lock.json", "scripts/build-web.mjs"):
        src = ROOT / name
        (slug / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, slug / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, slug / name)
    (slug / "node_modules").symlink_to(ROOT / "node_modules")
    subprocess.run(["npm", "run", "build", "--silent"], cwd=slug, check=True,
                   capture_output=True, timeout=120)
    assert (slug / "build" / "web").is_dir()
    return slug


@pytest.fixture(params=BACKENDS)
async def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'paas.db'}"
        return
    url = await create_database(TEST_DATABASE_URL)
    yield url.replace("postgres://", "postgresql://", 1)
    await drop_database(TEST_DATABASE_URL, url)


def tail(log: Path) -> str:
    return log.read_bytes()[-3000:].decode(errors="replace")


def run_release(command: str, slug: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", command], cwd=slug, env=env,
                          capture_output=True, text=True, timeout=120)


def start_web(command: str, slug: Path, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(["/bin/sh", "-c", "exec " + command], cwd=slug, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


async def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"web exited {proc.returncode}: {tail(log)}"
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise AssertionError(f"web not healthy in {timeout}s: {tail(log)}")


async def test_procfile_release_then_web_with_only_port_and_database_url(database_url,
                                                                        tmp_path):
    kinds = procfile()
    assert set(kinds) >= {"release", "web"}
    slug = make_slug(tmp_path)
    port = free_port()
    # A platform's environment: its PATH (with the runtime's python), HOME, and
    # the two variables it sets.
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
           "HOME": str(tmp_path / "home"), "PORT": str(port), "DATABASE_URL": database_url}
    release = run_release(kinds["release"], slug, env)
    assert release.returncode == 0, release.stderr[-3000:]

    log = tmp_path / "web.log"
    web = start_web(kinds["web"], slug, env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base, web, log)
        email = f"paas-{uuid.uuid4().hex[:8]}@example.org"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/readyz") as r:
                assert r.status == 200, await r.text()
            async with http.get(base + "/") as r:
                assert r.status == 200 and "text/html" in r.content_type
            async with http.post(base + API + "/auth/register", json={
                    "email": email, "password": "correct horse battery",
                    "display_name": "Paas"}) as r:
                assert r.status == 201, await r.text()
            async with http.post(base + API + "/auth/login", json={
                    "login": email, "password": "correct horse battery"}) as r:
                assert r.status == 200, await r.text()
                token = (await r.json())["access_token"]
            async with http.get(base + API + "/me",
                                headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200 and (await r.json())["user"]["email"] == email
        # The platform stops a dyno with SIGTERM: a clean, prompt exit.
        os.killpg(web.pid, signal.SIGTERM)
        assert web.wait(20) == 0, tail(log)
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(10)
    assert shlex.split(kinds["web"])[-1] == "$PORT"
