"""HTTPS/WSS served directly (TLS_CERT_FILE / TLS_KEY_FILE): a real
`python -m app serve` process with a throw-away certificate from `trustme`,
two official socket.io-clients (Node, npm) chatting over wss, and HSTS only
over TLS. nginx terminating TLS: tests/test_cluster.py."""

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
import trustme

from tests.cluster_helpers import SECRET, free_port

pytestmark = pytest.mark.heavy

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "tests" / "interop" / "chat_client.mjs"
API = "/api/v1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A throw-away CA and a certificate for 127.0.0.1 / localhost signed by it."""
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(d / "cert.pem"), append=True)
    client_ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    return {"ca": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem", "ctx": client_ctx}


def serve_env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_", "REDIS_", "SMTP_", "TEST_", "TLS_", "TRUSTED_"))}
    env.update(DATABASE_URL=f"sqlite://{tmp / 'tls.db'}", SECRET_KEY=SECRET,
               MEDIA_ROOT=str(tmp / "media"), LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Server:
    """`python -m app serve` as a real process; its log goes to a file."""

    def __init__(self, env: dict, tmp: Path, scheme: str, ctx=None) -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.ctx = ctx
        self.log_path = tmp / f"serve-{self.port}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        migrate = subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert migrate.returncode == 0, migrate.stderr
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port",
             str(self.port)], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.tail()
                with contextlib.suppress(aiohttp.ClientConnectionError, OSError):
                    async with http.get(self.url + "/healthz", ssl=self.ctx or True) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"not healthy in {timeout}s: {self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def tail(self) -> str:
        return self.log_path.read_bytes()[-3000:].decode(errors="replace")


@pytest.fixture
async def tls_server(certs, tmp_path):
    env = serve_env(tmp_path, TLS_CERT_FILE=certs["cert"], TLS_KEY_FILE=certs["key"])
    server = Server(env, tmp_path, "https", certs["ctx"])
    try:
        await server.wait_ready()
        yield server
    finally:
        server.stop()


async def rest(http, server, method, path, body=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, server.url + API + path, json=body, headers=headers,
                            ssl=server.ctx) as r:
        return r.status, await r.json()


async def register(http, server, name: str) -> dict:
    status, body = await rest(http, server, "POST", "/auth/register", {
        "email": f"{name}-{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse 1",
        "display_name": name})
    assert status == 201, body
    return body


async def node_client(certs, *args):
    node_bin = shutil.which("node")
    assert node_bin, "Node.js is required for the TLS interop test"
    assert (ROOT / "node_modules" / "socket.io-client").is_dir(), "run npm ci (scripts/test does)"
    # The client verifies the certificate against the throw-away CA (no
    # rejectUnauthorized=false): what a real client does against a real CA.
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(certs["ca"])}
    return await asyncio.create_subprocess_exec(
        node_bin, str(CLIENT), *args, stdout=asyncio.subprocess.PIPE, cwd=str(ROOT), env=env)


async def read_json_line(proc) -> dict:
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line, "node client printed nothing"
    return json.loads(line)


async def test_official_clients_chat_over_wss(tls_server, certs):
    async with aiohttp.ClientSession() as http:
        alice, bob = await register(http, tls_server, "alice"), await register(http, tls_server,
                                                                                "bob")
        status, body = await rest(http, tls_server, "POST", "/contacts/requests",
                                  {"user_id": bob["user"]["id"]}, alice["access_token"])
        assert status == 201, body
        status, body = await rest(http, tls_server, "POST",
                                  f"/contacts/requests/{body['request']['id']}/accept",
                                  None, bob["access_token"])
        assert status == 200, body
        status, body = await rest(http, tls_server, "POST", "/conversations/direct",
                                  {"user_id": bob["user"]["id"]}, alice["access_token"])
        assert status == 200, body
        cid = body["conversation"]["id"]

    # Bob listens, Alice sends: both are the official client, over wss://.
    receiver = await node_client(certs, tls_server.url, bob["access_token"], "receive", cid)
    sender = None
    try:
        assert await read_json_line(receiver) == {"ready": True}
        sender = await node_client(certs, tls_server.url, alice["access_token"], "send", cid)
        out = await read_json_line(sender)
        assert await sender.wait() == 0, out
        ack = out["ack"]
        assert ack["ok"] is True and ack["message"]["text"] == "hello from socket.io-client"
        got = await read_json_line(receiver)
        assert await receiver.wait() == 0, got
        assert got["received"] == ack["message"]
    finally:
        for proc in (receiver, sender):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_a_client_without_the_ca_is_refused(tls_server):
    # TLS is really on: the system CAs do not know the throw-away CA.
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(tls_server.url + "/healthz")


async def test_hsts_over_tls_only(tls_server, client):
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/healthz", API + "/me"):
            async with http.get(tls_server.url + path, ssl=tls_server.ctx) as r:
                assert r.headers.get("Strict-Transport-Security") == "max-age=31536000", path
    # The same app over plain HTTP (the test server) never pins HTTPS.
    for path in ("/", "/healthz", API + "/me"):
        r = await client.get(path)
        assert "Strict-Transport-Security" not in r.headers, path


def test_serve_refuses_a_missing_certificate(tmp_path):
    env = serve_env(tmp_path, TLS_CERT_FILE=tmp_path / "nope.pem",
                    TLS_KEY_FILE=tmp_path / "nope.key")
    run = subprocess.run([sys.executable, "-m", "app", "serve", "--port", str(free_port())],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "TLS_CERT_FILE" in run.stderr


def test_serve_refuses_a_malformed_trusted_proxies(tmp_path):
    env = serve_env(tmp_path, TRUSTED_PROXIES="127.0.0.1/32,nginx")
    run = subprocess.run([sys.executable, "-m", "app", "serve", "--port", str(free_port())],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "TRUSTED_PROXIES" in run.stderr and "Traceback" not in run.stderr
