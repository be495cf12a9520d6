"""The container image for real (slow suite: `scripts/test -m docker`).

Builds a base image from Debian's packages (deploy/docker/debian-base.sh, cached
under a stable tag) and Parley's Dockerfile on top of it, then runs the image on
the host network against the machine's PostgreSQL (a fresh database) and Redis:
migrations and one-off commands through the image, two containers on two ports,
a chat between them with the official socket.io-client, and `docker stop` of one
container under load behind nginx, after which every client is back on the other
container with every acked message stored exactly once.

Needs TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL like the cluster suite;
skips only where dockerd is not installed or cannot start (.ci/run installs and
starts it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from app import demo
from app.cluster import find_nginx, render_nginx
from app.config import ROOT
from tests.cluster_helpers import GENEROUS_LIMITS, create_database, drop_database, free_port

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
SECRET = "docker-test-secret-" + "x" * 40
DATA_KEYS = "dk1:" + base64.b64encode(bytes(range(32))).decode()
CLIENT = ROOT / "tests" / "interop" / "deploy_chat.mjs"
API = "/api/v1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.heavy,
    pytest.mark.docker,
    pytest.mark.skipif(
        not (TEST_DATABASE_URL.startswith("postgres") and TEST_REDIS_URL),
        reason="the container tests need TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL"),
    # The first run builds the base image (debootstrap) and the image.
    pytest.mark.timeout(900),
]


def run(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None,
        **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args[:4])}… exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def docker_client() -> str | None:
    # Debian's docker.io client builds with BuildKit by itself (DOCKER_BUILDKIT=1);
    # a newer client does only through the buildx plugin.
    if os.path.exists("/usr/bin/docker"):
        return "/usr/bin/docker"
    return shutil.which("docker")


def ensure_dockerd(docker: str) -> None:
    """Start dockerd without a bridge or iptables rules if it is not running."""
    if run(docker, "info", check=False, timeout=30).returncode == 0:
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.skip("dockerd is not installed (apt-get install docker.io; .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("dockerd is not running and only root can start it")
    (ROOT / "var").mkdir(exist_ok=True)
    log_path = ROOT / "var" / "dockerd.log"
    with open(log_path, "ab") as log:
        subprocess.Popen([dockerd, "--bridge=none", "--iptables=false"], stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + 60
    while run(docker, "info", check=False, timeout=30).returncode != 0:
        if time.monotonic() > deadline:
            pytest.skip("dockerd could not start here: "
                        + log_path.read_bytes()[-1500:].decode(errors="replace"))
        time.sleep(0.5)
    # Every container uses the host network; a default bridge is never wanted.
    if os.path.exists("/sys/class/net/docker0"):
        run("ip", "link", "delete", "docker0", check=False)


def build_args() -> list[str]:
    """Hand the machine's package-index setup to the build stage only: an index
    URL (not a file:// one: no host path is visible in the build) and the CA
    bundle, as a BuildKit secret, for machines whose egress re-signs TLS."""
    args: list[str] = []
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "NPM_CONFIG_REGISTRY"):
        urls = [u for u in os.environ.get(name, "").split() if not u.startswith("file:")]
        if urls:
            args += ["--build-arg", f"{name}={' '.join(urls)}"]
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        if os.path.isfile(os.environ.get(name, "")):
            return args + ["--secret", f"id=ca,src={os.environ[name]}"]
    if os.path.isfile("/etc/ssl/certs/ca-certificates.crt"):
        args += ["--secret", "id=ca,src=/etc/ssl/certs/ca-certificates.crt"]
    return args


@pytest.fixture(scope="module")
def docker() -> str:
    client = docker_client()
    if client is None:
        pytest.skip("no docker client (apt-get install docker.io; .ci/run does)")
    ensure_dockerd(client)
    return client


@pytest.fixture(scope="module")
def image(docker):
    if shutil.which("debootstrap") is None and not os.environ.get("PARLEY_TEST_BASE_IMAGE"):
        pytest.fail("debootstrap is needed for the base image (apt-get install debootstrap)")
    started = time.monotonic()
    # Where a registry is reachable (GitHub Actions) CI names an official base
    # instead; here it is built from Debian's packages and cached by tag.
    base = os.environ.get("PARLEY_TEST_BASE_IMAGE") or run(
        str(ROOT / "deploy" / "docker" / "debian-base.sh"), timeout=600).stdout.strip()
    tag = f"parley:test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    run(docker, "build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
        *build_args(), "-t", tag, str(ROOT), env=env, timeout=800)
    size = int(run(docker, "image", "inspect", "-f", "{{.Size}}", tag).stdout)
    print(f"\nimage {tag} on {base}: {size / 1e6:.0f} MB, base + build "
          f"{time.monotonic() - started:.0f} s")
    yield tag
    # The layers stay in the build cache for the next run; only the tag goes.
    run(docker, "rmi", tag, check=False)


def inspect(docker: str, ref: str, kind: str = "image") -> dict:
    return json.loads(run(docker, kind, "inspect", ref).stdout)[0]


def test_image_runs_as_non_root_with_healthcheck_and_no_baked_config(docker, image):
    cfg = inspect(docker, image)["Config"]
    assert cfg["User"] == "parley"
    assert cfg["StopSignal"] == "SIGTERM"
    assert "/healthz" in " ".join(cfg["Healthcheck"]["Test"])
    assert "/data" in cfg["Volumes"]
    assert cfg["Cmd"] == ["python", "-m", "app", "serve"]
    names = {e.split("=", 1)[0] for e in cfg["Env"]}
    # Configuration only from the environment the container is given.
    assert not names & {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "MEDIA_STORAGE_URL",
                        "SMTP_URL", "PIP_CERT", "PIP_INDEX_URL", "NPM_CONFIG_REGISTRY"}, names
    out = run(docker, "run", "--rm", "--network", "none", image, "sh", "-c",
              "id -u; test -w /data && echo data-writable; ls /app/node_modules/socket.io-client/dist/"
              "socket.io.esm.min.js; ls /app; python -m app --help").stdout
    lines = out.splitlines()
    assert lines[0] == "10001" and lines[1] == "data-writable", out
    for absent in ("tests", "bench", "docs", ".git", ".venv", ".env"):
        assert absent not in lines, f"{absent} shipped in the image: {out}"
    assert "cleanup-media" in out and "migrate" in out


async def _http(method: str, url: str, body=None, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(
            method, url, json=body, headers=headers,
            timeout=aiohttp.ClientTimeout(total=15)) as r:
        data = await r.json() if r.content_type == "application/json" else {}
        return r.status, data


class Container:
    """`docker run -d` of the image on the host network, one port."""

    def __init__(self, docker: str, image: str, name: str, env: dict) -> None:
        self.docker, self.image = docker, image
        self.name = f"parley-test-{name}-{uuid.uuid4().hex[:6]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "HOST": "127.0.0.1", "PORT": str(self.port)}

    def start(self) -> None:
        env_args = [a for k, v in self.env.items() for a in ("-e", f"{k}={v}")]
        run(self.docker, "run", "-d", "--name", self.name, "--network", "host", *env_args,
            self.image)

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                if (await _http("GET", self.url + "/readyz"))[0] == 200:
                    return
            state = inspect(self.docker, self.name, "container")["State"]
            if not state["Running"]:
                raise AssertionError(f"{self.name} exited {state['ExitCode']}: {self.logs()}")
            await asyncio.sleep(0.3)
        raise AssertionError(f"{self.name} not ready in {timeout}s: {self.logs()}")

    async def sockets(self) -> float:
        async with aiohttp.ClientSession() as http, http.get(self.url + "/metrics") as r:
            text = await r.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("parley_connected_sockets"))

    def logs(self) -> str:
        p = run(self.docker, "logs", "--tail", "40", self.name, check=False)
        return (p.stdout + p.stderr)[-3000:]

    def remove(self) -> None:
        run(self.docker, "rm", "-f", "-v", self.name, check=False)


@pytest.fixture
async def database():
    url = await create_database(TEST_DATABASE_URL)
    yield url
    await drop_database(TEST_DATABASE_URL, url)


def container_env(database_url: str) -> dict:
    # Containers share no var/: like SECRET_KEY, the data key ring is given to each.
    return {"DATABASE_URL": database_url, "REDIS_URL": TEST_REDIS_URL, "SECRET_KEY": SECRET,
            "DATA_KEYS": DATA_KEYS, "LOG_LEVEL": "WARNING", **GENEROUS_LIMITS}


async def register(c: Container, name: str) -> dict:
    status, body = await _http("POST", c.url + API + "/auth/register", {
        "email": f"{name}-{uuid.uuid4().hex[:6]}@example.org", "password": "correct horse battery",
        "display_name": name.title()})
    assert status == 201, body
    return body


async def node(*args: str):
    node_bin = shutil.which("node")
    assert node_bin, "Node.js is required (socket.io-client drives the containers)"
    assert (ROOT / "node_modules" / "socket.io-client").is_dir(), "run npm ci (scripts/test does)"
    return await asyncio.create_subprocess_exec(
        node_bin, str(CLIENT), *args, stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE, cwd=str(ROOT), limit=16 * 1024 * 1024)


async def next_line(proc, timeout: float = 60) -> dict:
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line, "the node client printed nothing more"
    out = json.loads(line)
    assert out.get("event") != "error", out
    return out


@contextlib.contextmanager
def nginx_front(ports: list[int], tmp: Path):
    """The project's own nginx template (deploy/nginx.conf.template) over the containers."""
    nginx = find_nginx()
    assert nginx, "nginx is needed in front of the containers (apt-get install nginx)"
    listen = free_port()
    run_dir = tmp / "nginx"
    run_dir.mkdir()
    conf = run_dir / "nginx.conf"
    conf.write_text(render_nginx(f"127.0.0.1:{listen}", ports, run_dir))
    proc = subprocess.Popen([nginx, "-p", str(run_dir), "-c", str(conf), "-g", "daemon off;"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{listen}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


async def test_two_containers_migrate_chat_and_survive_docker_stop(docker, image, database,
                                                                   tmp_path):
    env = container_env(database)
    env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    # release: migrations through the image, twice (the second finds nothing to do).
    for _ in range(2):
        run(docker, "run", "--rm", "--network", "host", *env_args, image,
            "python", "-m", "app", "migrate", timeout=120)
    conn = await asyncpg.connect(database.replace("postgres://", "postgresql://", 1))
    try:
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        await conn.close()
    assert {"users", "messages", "conversations"} <= tables, tables
    # One-off commands through the same image.
    out = run(docker, "run", "--rm", "--network", "host", *env_args, image,
              "python", "-m", "app", "cleanup-media", timeout=120)
    assert "deleted 0 orphan media" in out.stderr, out.stderr
    run(docker, "run", "--rm", "--network", "host", *env_args, image,
        "python", "-m", "app", "demo", timeout=120)

    a = Container(docker, image, "a", env)
    b = Container(docker, image, "b", env)
    try:
        a.start()
        b.start()
        await asyncio.gather(a.wait_ready(), b.wait_ready())

        # The demo accounts the one-off command made can sign in.
        status, body = await _http("POST", b.url + API + "/auth/login", {
            "login": demo.PEOPLE[0][2], "password": demo.PASSWORD})
        assert status == 200, body

        # Two people, one on each container, become contacts over REST.
        alice, bob = await register(a, "alice"), await register(b, "bob")
        status, req = await _http("POST", a.url + API + "/contacts/requests",
                                  {"user_id": bob["user"]["id"], "message": "hi"},
                                  alice["access_token"])
        assert status == 201, req
        status, accepted = await _http(
            "POST", b.url + API + f"/contacts/requests/{req['request']['id']}/accept",
            token=bob["access_token"])
        assert status == 200, accepted
        cid = accepted["conversation"]["id"]

        # A chat across the two containers with the official socket.io-client.
        proc = await node("converse", json.dumps({
            "alice": {"url": a.url, "token": alice["access_token"]},
            "bob": {"url": b.url, "token": bob["access_token"]}, "cid": cid}))
        out = await next_line(proc)
        assert await proc.wait() == 0, out
        assert out["alice_ack"]["ok"] and out["bob_ack"]["ok"], out
        assert out["bob_got"] == out["alice_ack"]["message"]
        assert out["alice_got"] == out["bob_ack"]["message"]
        assert out["bob_got"]["text"] == "hello Bob, from container A"
        assert [out["alice_ack"]["message"]["seq"], out["bob_ack"]["message"]["seq"]] == [1, 2]

        # Load through nginx over both containers, then `docker stop` one of them.
        n = 300
        with nginx_front([a.port, b.port], tmp_path) as front:
            proc = await node("load", json.dumps({
                "url": front, "cid": cid, "n": n, "window": 8, "warm": 150,
                "users": [{"name": "alice", "token": alice["access_token"]},
                          {"name": "bob", "token": bob["access_token"]}]}))
            try:
                assert (await next_line(proc))["event"] == "connected"
                on_a, on_b = await a.sockets(), await b.sockets()
                assert on_a + on_b == 2, (on_a, on_b)
                victim, survivor = (a, b) if on_a >= on_b else (b, a)
                assert (await next_line(proc))["event"] == "warm"
                stop = await asyncio.to_thread(
                    run, docker, "stop", "-t", "30", victim.name, timeout=60)
                assert stop.returncode == 0
                # The clients have kept sending all along; now they may finish.
                proc.stdin.write(b"stopped\n")
                await proc.stdin.drain()
                done = await next_line(proc, timeout=120)
                assert await proc.wait() == 0, done
            finally:
                if proc.returncode is None:
                    proc.kill()
        state = inspect(docker, victim.name, "container")["State"]
        # 0, not 137: SIGTERM drained it before docker's SIGKILL.
        assert state["ExitCode"] == 0, (state, victim.logs())

        users = done["users"]
        # The two of the conversation above, then everything the load was acked.
        expected = 2 + sum(len(u["acked"]) for u in users.values())
        print(f"\nstopped {victim.name} with {max(on_a, on_b):.0f} socket(s) under load, "
              f"{expected - 2} messages acked; "
              + ", ".join(f"{k}: {v['disconnects']} disconnects, {v['retries']} retries"
                          for k, v in users.items()))
        # Whoever was on the stopped container dropped and came back (on the survivor).
        assert sum(u["disconnects"] for u in users.values()) >= 1
        for u in users.values():
            assert u["connects"] == u["disconnects"] + 1, u
        assert await survivor.sockets() == 0  # the load client closed its sockets
        for name, u in users.items():
            synced = u["synced"]
            assert [m["seq"] for m in synced] == list(range(1, expected + 1)), name
            by_cmid = {m["client_msg_id"]: m for m in synced}
            assert len(by_cmid) == expected, f"{name}: a client_msg_id stored twice"
            assert len(u["acked"]) >= n
            for other in users.values():  # what anyone was acked, everyone holds
                for cmid, ack in other["acked"].items():
                    held = by_cmid.get(cmid)
                    assert held and held["id"] == ack["id"] and held["seq"] == ack["seq"], (
                        name, cmid, ack, held)

        # Docker's own HEALTHCHECK (/healthz) reports the survivor healthy.
        deadline = time.monotonic() + 60
        while (health := inspect(docker, survivor.name, "container")["State"]["Health"]
               )["Status"] != "healthy":
            assert time.monotonic() < deadline, health
            await asyncio.sleep(1)
    finally:
        a.remove()
        b.remove()


def compose_override(image: str, database_url: str, port: int) -> dict:
    """compose.yaml on the host network: the machine's PostgreSQL and Redis stand
    in for the `postgres` and `redis` services (their images cannot be pulled
    here), one app replica on a spare port, no nginx."""
    stand_in = {"image": image, "network_mode": "host", "command": ["sleep", "infinity"],
                "stop_signal": "SIGKILL",
                "healthcheck": {"test": ["CMD", "true"], "interval": "1s", "timeout": "2s",
                                "retries": 3}}
    host_env = {"DATABASE_URL": database_url, "REDIS_URL": TEST_REDIS_URL, **GENEROUS_LIMITS}
    return {"services": {
        "postgres": stand_in, "redis": stand_in,
        "migrate": {"network_mode": "host", "environment": host_env},
        "app": {"network_mode": "host", "deploy": {"replicas": 1},
                "environment": {**host_env, "HOST": "127.0.0.1", "PORT": str(port)}},
    }}


def compose(project: str, override: Path, *args: str, env: dict,
            timeout: float = 180) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is required (apt-get install docker-compose; .ci/run does)"
    return run(exe, "-p", project, "-f", str(ROOT / "compose.yaml"), "-f", str(override),
               *args, env=env, timeout=timeout, cwd=ROOT)


async def test_compose_migrates_first_and_replicas_share_the_generated_key(
        docker, image, database, tmp_path):
    import yaml

    port, port2 = free_port(), free_port()
    override = tmp_path / "compose.host.yaml"
    override.write_text(yaml.safe_dump(compose_override(image, database, port)))
    project = f"parleytest{uuid.uuid4().hex[:8]}"
    # No SECRET_KEY, as on a fresh machine without .env.
    env = {"PATH": os.environ["PATH"], "PARLEY_IMAGE": image}
    try:
        compose(project, override, "up", "-d", "--no-build", "app", env=env)
        # `up app` ran migrate to completion first (app depends on it).
        ps = run(docker, "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                 "--format", "{{.Label \"com.docker.compose.service\"}} {{.Status}}").stdout
        assert "migrate Exited (0)" in ps, ps
        first = Container(docker, image, "unused", {})
        first.port, first.url = port, f"http://127.0.0.1:{port}"
        first.name = run(docker, "ps", "-q", "--filter",
                         f"label=com.docker.compose.project={project}", "--filter",
                         "label=com.docker.compose.service=app").stdout.strip()
        await first.wait_ready()
        # A second replica: the same image, environment (no SECRET_KEY) and data
        # volume, another port. (`docker-compose run` links its dependencies,
        # which the host network refuses.)
        second = Container(docker, image, "replica2", {})
        second.port, second.url = port2, f"http://127.0.0.1:{port2}"
        app_env = inspect(docker, first.name, "container")["Config"]["Env"]
        env_args = [a for e in app_env if not e.startswith("PORT=") for a in ("-e", e)]
        run(docker, "run", "-d", "--name", second.name, "--network", "host",
            "--volumes-from", first.name, *env_args, "-e", f"PORT={port2}", image)
        await second.wait_ready()
        user = await register(first, "carol")
        status, me = await _http("GET", second.url + API + "/me",
                                 token=user["access_token"])
        assert status == 200 and me["user"]["id"] == user["user"]["id"], me
        key = run(docker, "exec", second.name, "cat", "/data/secret_key").stdout.strip()
        assert len(key) >= 48
        assert [e for e in app_env if e.startswith("SECRET_KEY=")] == ["SECRET_KEY="]
    finally:
        run(docker, "rm", "-f", second.name, check=False)
        compose(project, override, "down", "-v", "--remove-orphans", env=env, timeout=120)
