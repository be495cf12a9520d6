"""Command line: `python -m app serve|migrate|makemigrations|demo`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

from app.config import load_settings
from app.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Parley server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    sub.add_parser("migrate", help="apply database migrations")
    mk = sub.add_parser("makemigrations", help="write a migration for model changes")
    mk.add_argument("--name", default=None)
    args = parser.parse_args(argv)

    settings = load_settings()
    setup_logging(settings.log_level)

    if args.command == "serve":
        from app.server import create_app

        host = args.host or settings.host
        port = args.port or settings.port
        print(f"Parley on http://{host}:{port}", file=sys.stderr, flush=True)
        web.run_app(create_app(settings), host=host, port=port, print=None, access_log=None)
        return 0
    if args.command == "migrate":
        from app.db import migrate

        asyncio.run(migrate(settings.database_url))
        return 0
    if args.command == "makemigrations":
        from tortoise.cli.cli import main as tortoise_main

        extra = ["--name", args.name] if args.name else []
        sys.argv = ["tortoise", "-c", "app.tortoise_cli.TORTOISE_ORM", "makemigrations", *extra]
        return tortoise_main() or 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
