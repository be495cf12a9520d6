"""Command line: `python -m app serve|cluster|migrate|makemigrations|cleanup-media|demo|
search-backfill|rotate-keys|erase-due`."""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys

from aiohttp import web

from app.config import load_settings
from app.logs import setup_logging


def tls_context(settings) -> ssl.SSLContext | None:
    """HTTPS/WSS when TLS_CERT_FILE and TLS_KEY_FILE are set: the certificate
    file holds the chain (leaf first), the key file its private key."""
    if not settings.tls_cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return ctx


def new_event_loop(settings) -> tuple[asyncio.AbstractEventLoop, str]:
    """The loop `serve` runs on, and its name: uvloop unless EVENT_LOOP=asyncio or
    uvloop is not installed (it has no Windows build)."""
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("parley: uvloop is not installed; running on asyncio's event loop",
                  file=sys.stderr, flush=True)
        else:
            loop = uvloop.new_event_loop()
            return loop, type(loop).__module__.split(".")[0]
    loop = asyncio.new_event_loop()
    return loop, type(loop).__module__.split(".")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Parley server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    cl = sub.add_parser("cluster", help="run N workers behind nginx (see docs/deployment.md)")
    cl.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    cl.add_argument("--port", type=int, help="where nginx listens (default: PORT)")
    cl.add_argument("--base-port", type=int, help="first worker port (default: port + 1)")
    cl.add_argument("--host", help="where nginx listens (default: HOST)")
    cl.add_argument("--run-dir", help="nginx config, pid and logs (default: a temp dir)")
    cl.add_argument("--no-nginx", action="store_true", help="workers only (own balancer)")
    cl.add_argument("--http-port", type=int,
                    help="with TLS_CERT_FILE/TLS_KEY_FILE: a plain-HTTP port nginx redirects "
                         "to HTTPS (e.g. 80)")
    sub.add_parser("migrate", help="apply database migrations")
    mk = sub.add_parser("makemigrations", help="write a migration for model changes")
    mk.add_argument("--name", default=None)
    sub.add_parser("demo", help="create demo accounts, contacts, a group and history")
    sub.add_parser("cleanup-media", help="delete uploads never attached to a message")
    bf = sub.add_parser("search-backfill",
                        help="index messages stored before search existed, then list "
                        "every indexed word for prefix search (safe while serving)")
    bf.add_argument("--batch", type=int, default=2000, help="messages per transaction")
    rk = sub.add_parser("rotate-keys", help="re-encrypt stored data with the current data key "
                        "(first in DATA_KEYS); safe while the server runs, resumable")
    rk.add_argument("--batch", type=int, default=500, help="rows per batch (default 500)")
    sub.add_parser("erase-due", help="erase the accounts whose deletion grace period is over")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ValueError as exc:  # a malformed setting: say which, without a traceback
        print(f"parley: bad setting: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)

    if args.command == "serve":
        from app.server import create_app

        host = args.host or settings.host
        port = args.port or settings.port
        try:
            ssl_context = tls_context(settings)
        except (OSError, ssl.SSLError) as exc:
            print(f"serve: cannot load TLS_CERT_FILE / TLS_KEY_FILE: {exc}", file=sys.stderr)
            return 2
        try:
            app = create_app(settings)
        except ValueError as exc:  # a setting that cannot work, e.g. a provider half set up
            print(f"configuration error: {exc}", file=sys.stderr, flush=True)
            return 2
        scheme = "https" if ssl_context else "http"
        loop, loop_name = new_event_loop(settings)
        print(f"Parley on {scheme}://{host}:{port} ({loop_name} event loop)",
              file=sys.stderr, flush=True)
        # SIGTERM: stop accepting, drain events and sockets (create_app's on_shutdown),
        # then give the last requests 10 more seconds.
        from app.crypto import KeyError_

        try:
            web.run_app(app, host=host, port=port, print=None, access_log=None,
                        shutdown_timeout=10, ssl_context=ssl_context, loop=loop,
                        backlog=settings.listen_backlog)
        except KeyError_ as exc:  # a missing or wrong data key: never serve garbage
            print(f"parley: data keys: {exc}", file=sys.stderr, flush=True)
            return 2
        return 0
    if args.command == "cluster":
        from pathlib import Path

        from app.cluster import Cluster

        if not settings.redis_url:
            print("cluster: set REDIS_URL (and a shared DATABASE_URL, e.g. PostgreSQL): "
                  "workers exchange events through Redis", file=sys.stderr)
            return 2
        host = args.host or settings.host
        port = args.port or settings.port
        base = args.base_port or port + 1
        listen = None if args.no_nginx else f"{host}:{port}"
        run_dir = Path(args.run_dir) if args.run_dir else None
        tls = (settings.tls_cert_file, settings.tls_key_file) if settings.tls_cert_file else None
        http_listen = f"{host}:{args.http_port}" if args.http_port and tls else None
        return Cluster(args.workers, base, listen, host=settings.host, run_dir=run_dir,
                       tls=tls, http_listen=http_listen).run()
    if args.command == "migrate":
        from app.db import migrate

        applied = asyncio.run(migrate(settings.database_url))
        print(f"applied {applied} migration{'s' if applied != 1 else ''}" if applied
              else "up to date", flush=True)
        return 0
    if args.command == "cleanup-media":
        from app.services.media import cleanup_media_once

        deleted = asyncio.run(cleanup_media_once(settings))
        print(f"deleted {deleted} orphan media", file=sys.stderr)
        return 0
    if args.command == "search-backfill":
        from app.services.search import backfill_command

        indexed = asyncio.run(backfill_command(settings.database_url, max(1, args.batch)))
        print(f"indexed {indexed} message{'s' if indexed != 1 else ''} for search", flush=True)
        return 0
    if args.command == "rotate-keys":
        from app.crypto import KeyError_
        from app.dataprot_cli import rotate_keys

        try:
            return asyncio.run(rotate_keys(settings, batch=max(1, args.batch)))
        except KeyError_ as exc:
            print(f"rotate-keys: data keys: {exc}", file=sys.stderr, flush=True)
            return 2
    if args.command == "erase-due":
        from app.dataprot_cli import erase_due

        return asyncio.run(erase_due(settings))
    if args.command == "makemigrations":
        from tortoise.cli.cli import main as tortoise_main

        extra = ["--name", args.name] if args.name else []
        sys.argv = ["tortoise", "-c", "app.tortoise_cli.TORTOISE_ORM", "makemigrations", *extra]
        return tortoise_main() or 0
    if args.command == "demo":
        from app import demo

        print(demo.instructions(settings, asyncio.run(demo.run(settings))), flush=True)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
