"""`python -m app cluster`: N worker processes on consecutive ports behind nginx.

One machine, many processes: the workers share PostgreSQL (DATABASE_URL) and
Redis (REDIS_URL) and are ordinary `python -m app serve` processes; nginx
(Debian's package) balances WebSocket connections and keeps long-polling
clients on the worker that issued their session. The configuration is rendered
from deploy/nginx.conf.template into the run directory.

The supervisor restarts a worker that dies (after a short, growing pause) and
on SIGTERM/SIGINT stops nginx, then asks every worker to drain (SIGTERM:
finish in-flight events, disconnect sockets so clients reconnect elsewhere).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.config import ROOT

TEMPLATE = ROOT / "deploy" / "nginx.conf.template"


# nginx connects to the workers from the loopback address: they believe its
# X-Forwarded-For (app/netaddr.py).
NGINX_PEER = "127.0.0.1/32"


def _sections(text: str, flags: dict[str, bool]) -> str:
    """Keep the lines between `{{#name}}` and `{{/name}}` when flags[name], those
    between `{{^name}}` and `{{/name}}` when not; the marker lines go."""
    out: list[str] = []
    keep: list[bool] = []
    for line in text.splitlines(keepends=True):
        marker = line.strip()
        if marker.startswith(("{{#", "{{^")) and marker.endswith("}}"):
            want = flags[marker[3:-2]]
            keep.append(want if marker[2] == "#" else not want)
        elif marker.startswith("{{/") and marker.endswith("}}"):
            keep.pop()
        elif all(keep):
            out.append(line)
    return "".join(out)


def render_nginx(listen: str, ports: list[int], run_dir: Path, host: str = "127.0.0.1",
                 template: Path = TEMPLATE, tls: tuple[str, str] | None = None,
                 http_listen: str | None = None) -> str:
    """The nginx configuration. With `tls` (certificate, key) nginx serves HTTPS
    on `listen` and, when `http_listen` is given, redirects plain HTTP there."""
    servers = "\n".join(f"        server {host}:{p} max_fails=1 fail_timeout=2s;" for p in ports)
    text = template.read_text()
    port = listen.rpartition(":")[2]
    values = {"listen": listen, "servers": servers, "run_dir": str(run_dir),
              "first_port": str(ports[0])}
    if tls:
        values.update(tls_cert=str(Path(tls[0]).resolve()), tls_key=str(Path(tls[1]).resolve()),
                      http_listen=http_listen or "", https_port="" if port == "443" else f":{port}")
    text = _sections(text, {"tls": bool(tls), "redirect": bool(tls and http_listen)})
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def worker_env(env: dict, with_nginx: bool) -> dict:
    """The workers' environment. Behind our nginx they trust it for client
    addresses, and leave TLS to it (one certificate, terminated once)."""
    env = dict(env)
    if with_nginx:
        env.pop("TLS_CERT_FILE", None)
        env.pop("TLS_KEY_FILE", None)
        mine = [p.strip() for p in env.get("TRUSTED_PROXIES", "").split(",") if p.strip()]
        if NGINX_PEER not in mine:
            mine.insert(0, NGINX_PEER)
        env["TRUSTED_PROXIES"] = ",".join(mine)
    return env


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


class Cluster:
    def __init__(self, workers: int, base_port: int, listen: str | None,
                 host: str = "127.0.0.1", run_dir: Path | None = None,
                 env: dict | None = None, tls: tuple[str, str] | None = None,
                 http_listen: str | None = None) -> None:
        self.ports = [base_port + i for i in range(workers)]
        self.host = host
        self.listen = listen
        self.tls = tls if listen else None
        self.http_listen = http_listen
        self.run_dir = run_dir or Path(tempfile.mkdtemp(prefix="parley-cluster-"))
        self.env = worker_env(os.environ if env is None else env, with_nginx=bool(listen))
        self.procs: dict[int, subprocess.Popen] = {}
        self.restarts: dict[int, int] = {}
        self.nginx: subprocess.Popen | None = None
        self.stopping = False

    def say(self, text: str) -> None:
        print(f"[cluster] {text}", file=sys.stderr, flush=True)

    def start_worker(self, port: int) -> None:
        self.procs[port] = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--host", self.host, "--port", str(port)],
            cwd=ROOT, env=self.env)
        self.say(f"worker on {self.host}:{port} (pid {self.procs[port].pid})")

    def start_nginx(self) -> None:
        nginx = find_nginx()
        if nginx is None:
            raise SystemExit("nginx not found: apt-get install -y nginx (or pass --no-nginx)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        conf = self.run_dir / "nginx.conf"
        conf.write_text(render_nginx(self.listen, self.ports, self.run_dir, self.host,
                                     tls=self.tls, http_listen=self.http_listen))
        check = subprocess.run([nginx, "-t", "-q", "-p", str(self.run_dir), "-c", str(conf)],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise SystemExit(f"nginx rejected {conf}:\n{check.stderr}")
        self.nginx = subprocess.Popen(
            [nginx, "-p", str(self.run_dir), "-c", str(conf), "-g", "daemon off;"])
        scheme = "https" if self.tls else "http"
        self.say(f"nginx on {scheme}://{self.listen} -> ports {self.ports} (config {conf})")

    def start(self) -> None:
        for port in self.ports:
            self.start_worker(port)
        if self.listen:
            self.start_nginx()

    def supervise_once(self) -> None:
        """Restart workers that died; the pause grows with repeated crashes (max 30 s)."""
        for port, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            n = self.restarts.get(port, 0)
            self.say(f"worker on port {port} exited with {proc.returncode}; restarting")
            time.sleep(min(30, 0.5 * 2**n))
            self.restarts[port] = n + 1
            if not self.stopping:
                self.start_worker(port)
        if self.nginx is not None and self.nginx.poll() is not None and not self.stopping:
            self.say("nginx exited; restarting it")
            self.start_nginx()

    def stop(self, timeout: float = 20.0) -> None:
        self.stopping = True
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)  # graceful: finish open requests
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in [*self.procs.values(), *([self.nginx] if self.nginx else [])]:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def run(self) -> int:
        def on_signal(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            self.start()
            while True:
                time.sleep(1)
                self.supervise_once()
        except KeyboardInterrupt:
            self.say("stopping: draining workers")
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self.stop()
        return 0
