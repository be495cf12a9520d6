"""Cost of encryption at rest: `python -m bench.dataprot [--quick]`.

Reports ratios measured in one invocation, never absolute targets:

- sign-in by email (blind index + decrypting the profile) on this tree against
  a reference tree without encryption at rest (`--reference`, default: the
  revision the `-ref` targets of scripts/bench run, exported with `git archive`
  into a temporary directory);
  rounds alternate between the two servers so machine noise hits both;
- media upload and download throughput (MB/s) on this tree with
  MEDIA_ENCRYPTION=true against MEDIA_ENCRYPTION=false.

Each server is a real `python -m app serve` on a fresh SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.targets import REFERENCE

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tree: Path, work: Path, name: str, **env):
        self.tree, self.name = tree, name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        db = work / f"{name}.db"
        self.env = {**os.environ, "PYTHONPATH": str(tree), "DATABASE_URL": f"sqlite://{db}",
                    "SECRET_KEY": "bench-secret-" + "x" * 40, "LOG_LEVEL": "WARNING",
                    "MEDIA_ROOT": str(work / f"{name}-media"),
                    "DATA_KEYS": "b1:" + base64.b64encode(os.urandom(32)).decode(),
                    "LOGIN_RATE_LIMIT": "1000000/1", "REGISTER_RATE_LIMIT": "1000000/1",
                    "REGISTER_GLOBAL_RATE_LIMIT": "1000000/1",
                    "UPLOAD_RATE_LIMIT": "1000000/1", "UPLOAD_BYTES_PER_DAY": str(1 << 40),
                    "MEDIA_QUOTA_BYTES": "0", **env}
        self.log = open(work / f"{name}.log", "w")  # noqa: SIM115 (closed in stop)
        subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=tree, env=self.env,
                       check=True, capture_output=True, timeout=120)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port",
             str(self.port)], cwd=tree, env=self.env, stdout=self.log,
            stderr=subprocess.STDOUT)

    async def wait(self, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log.name}")
            try:
                async with http.get(f"{self.base}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def register(http, server: Server, n: int) -> list[str]:
    emails = []
    for i in range(n):
        email = f"bench{i}@example.org"
        async with http.post(f"{server.base}/api/v1/auth/register", json={
                "email": email, "password": PASSWORD, "display_name": f"B{i}"}) as r:
            assert r.status == 201, await r.text()
        emails.append(email)
    return emails


async def login_rate(http, server: Server, emails: list[str], seconds: float,
                     concurrency: int) -> float:
    done = 0
    stop = time.monotonic() + seconds

    async def worker(k: int):
        nonlocal done
        i = k
        while time.monotonic() < stop:
            async with http.post(f"{server.base}/api/v1/auth/login", json={
                    "login": emails[i % len(emails)], "password": PASSWORD}) as r:
                assert r.status == 200, await r.text()
                await r.read()
            done += 1
            i += concurrency

    t0 = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return done / (time.monotonic() - t0)


async def media_token(http, server: Server) -> dict:
    async with http.post(f"{server.base}/api/v1/auth/register", json={
            "email": "media@example.org", "password": PASSWORD, "display_name": "M"}) as r:
        return {"Authorization": f"Bearer {(await r.json())['access_token']}"}


async def media_round(http, server: Server, headers: dict, blob: bytes) -> tuple[float, float]:
    """Seconds to upload `blob` once and download it once."""
    form = aiohttp.FormData()
    form.add_field("file", blob, filename="bench.bin", content_type="application/octet-stream")
    t0 = time.perf_counter()
    async with http.post(f"{server.base}/api/v1/media", data=form, headers=headers) as r:
        body = await r.json()
        assert r.status == 201, body
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    async with http.get(f"{server.base}/api/v1/media/{body['media']['id']}/content",
                        headers=headers) as r:
        got = 0
        async for chunk in r.content.iter_chunked(1 << 20):
            got += len(chunk)
        assert r.status == 200 and got == len(blob)
    return up, time.perf_counter() - t0


def export_reference(ref: str, into: Path) -> Path:
    tree = into / "reference"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


async def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dataprot")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reference", default=REFERENCE,
                    help=f"git ref of the tree without encryption at rest (default {REFERENCE}: "
                         "main before encryption at rest was merged)")
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "dataprot.json"))
    args = ap.parse_args(argv)
    rounds, seconds, users = (3, 3.0, 20) if args.quick else (5, 6.0, 50)
    media_size, media_rounds = (16 << 20, 7) if args.quick else (32 << 20, 15)
    work = Path(tempfile.mkdtemp(prefix="parley-dataprot-bench-"))
    servers: list[Server] = []
    result: dict = {"quick": args.quick, "reference": args.reference}
    try:
        ref_tree = export_reference(args.reference, work)
        async with aiohttp.ClientSession() as http:
            new = Server(ROOT, work, "encrypted")
            old = Server(ref_tree, work, "reference")
            servers += [new, old]
            for s in (new, old):
                await s.wait(http)
            emails = {s.name: await register(http, s, users) for s in (new, old)}
            rates: dict[str, list[float]] = {"encrypted": [], "reference": []}
            for r in range(rounds):
                order = (new, old) if r % 2 == 0 else (old, new)
                for s in order:
                    rates[s.name].append(await login_rate(http, s, emails[s.name], seconds, 4))
            for s in (new, old):
                s.stop()
            servers.clear()
            enc, ref = (statistics.median(rates[k]) for k in ("encrypted", "reference"))
            result["login_per_s"] = {"encrypted": round(enc, 1), "reference": round(ref, 1),
                                     "ratio": round(enc / ref, 3), "rounds": rates}
            # Both media servers up at once, rounds alternating; medians per operation.
            pair = {flag: Server(ROOT, work, f"media-{flag}", MEDIA_ENCRYPTION=flag)
                    for flag in ("true", "false")}
            servers += pair.values()
            tokens = {}
            for flag, s in pair.items():
                await s.wait(http)
                tokens[flag] = await media_token(http, s)
            blob = os.urandom(media_size)
            times: dict[str, list] = {"true": [], "false": []}
            for r in range(media_rounds):
                for flag in (("true", "false") if r % 2 == 0 else ("false", "true")):
                    times[flag].append(await media_round(http, pair[flag], tokens[flag], blob))
            mb = media_size / 1e6

            def mbps(flag: str, op: int) -> float:
                return mb / statistics.median(t[op] for t in times[flag])

            result["media_MBps"] = {
                op: {"encrypted": round(mbps("true", i), 1), "plain": round(mbps("false", i), 1),
                     "ratio": round(mbps("true", i) / mbps("false", i), 3)}
                for i, op in enumerate(("upload", "download"))}
            result["media_MBps"].update(object_bytes=media_size, rounds=media_rounds)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    await asyncio.to_thread(out.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(out.write_text, json.dumps(result, indent=1))
    lg, md = result["login_per_s"], result["media_MBps"]
    print(f"sign-in by email: {lg['encrypted']}/s encrypted vs {lg['reference']}/s "
          f"{args.reference} (ratio {lg['ratio']})")
    for k in ("upload", "download"):
        print(f"media {k}: {md[k]['encrypted']} MB/s encrypted vs {md[k]['plain']} MB/s plain "
              f"(ratio {md[k]['ratio']})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
