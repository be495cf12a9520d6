"""The application factory: `create_app(settings)` wires config, database,
Socket.IO, routes and the web client together."""

from __future__ import annotations

import asyncio
import logging

import aiohttp_jinja2
import jinja2
from aiohttp import web

from app import realtime
from app.api.http import DEPS_KEY, error_and_log_middleware
from app.api.routes import ROUTES
from app.api.web import web_headers_middleware
from app.config import ROOT, Settings
from app.db import init_db
from app.deps import Deps
from app.fanout import SocketIOFanout
from app.metrics import METRICS_KEY, Metrics
from app.presence import build_presence
from app.ratelimit import MemoryRateLimiter, RedisRateLimiter
from app.realtime.chat import ChatNamespace
from app.services.presence import close_announcer
from app.services.server_secrets import (
    SECRET_KEY_NAME,
    VAPID_KEY_NAME,
    shared_secret,
    shares_database,
)

log = logging.getLogger("parley")

SIO_KEY = web.AppKey("sio", object)
TEMPLATES = ROOT / "templates"

# Importing these modules registers their Socket.IO events.
import app.realtime.events  # noqa: E402,F401


async def activate_data_keys(settings: Settings) -> None:
    """Refuse to start with a missing or wrong data key (app/services/dataprot.py)."""
    from app import crypto
    from app.services import dataprot

    ring = crypto.ring_for(settings.data_keys)
    await dataprot.verify_keys(ring)
    crypto.activate(ring)
    if await dataprot.legacy_rows():
        log.warning("some email addresses / phone numbers are still stored in plaintext: "
                    "run `python -m app rotate-keys`")


def create_app(settings: Settings, *, generate_schemas: bool = False) -> web.Application:
    """Build the aiohttp application. `generate_schemas` is for tests only:
    real deployments get their schema from migrations (`python -m app migrate`)."""
    app = web.Application(middlewares=[web_headers_middleware, error_and_log_middleware],
                          client_max_size=1024**2)
    metrics = app[METRICS_KEY] = Metrics()  # per app: tests build many
    from app.services import read_cache

    read_cache.configure(settings.cache)
    sio = realtime.build_sio(settings, metrics)
    deps = Deps(settings=settings, fanout=SocketIOFanout(sio, metrics),
                limiter=MemoryRateLimiter())
    app[DEPS_KEY] = deps
    deps.extras["metrics"] = metrics  # services count through it (codes sent and failed)
    app[SIO_KEY] = sio
    chat = ChatNamespace(deps, metrics)
    deps.extras["sockets_connected"] = lambda: len(chat.conns)  # push delivery yields to them
    sio.register_namespace(chat)
    sio.attach(app, socketio_path="socket.io")

    app.router.add_routes(ROUTES)
    if TEMPLATES.is_dir():
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)

    async def database(app: web.Application):
        ctx = await init_db(settings.database_url, generate_schemas=generate_schemas,
                            command_timeout=settings.database_command_timeout)
        try:
            await activate_data_keys(settings)
        except BaseException:
            await ctx.close_connections()
            raise
        if settings.extra.get("secret_key_generated") and shares_database(settings.database_url):
            # No SECRET_KEY configured: every process sharing this database signs
            # with the one key stored there.
            deps.settings = deps.settings.with_(secret_key=await shared_secret(
                SECRET_KEY_NAME, settings.secret_key))
        deps.writer.start(settings)  # supervised: restarts itself if its task dies
        yield
        await deps.writer.close()  # commit what is queued before the database goes
        # Close on the context object itself: Tortoise keeps state per task and
        # cleanup may run in another one.
        await ctx.close_connections()

    async def search_index_merger(app: web.Application):
        # After database, so it stops before the database closes.
        from tortoise import Tortoise

        from app.services.search_index import PendingListMerger, backend_for
        from app.services.sql import is_postgres

        if not settings.search_index:
            yield
            return
        merger = deps.extras["search_merger"] = PendingListMerger(
            lambda: Tortoise.get_connection("default"),
            backend_for(is_postgres(Tortoise.get_connection("default"))))
        merger.start()
        yield
        await merger.close()

    async def read_replicas(app: web.Application):
        # After database: the checker compares each replica with the primary.
        from app.replicas import ReplicaSet, parse_urls

        urls = parse_urls(settings.database_replica_urls)
        if not urls:
            yield
            return
        replicas = ReplicaSet(urls, settings.replica_max_lag_seconds,
                              settings.replica_check_interval, metrics=metrics,
                              command_timeout=settings.database_command_timeout)
        # One round first (bounded by the connect timeout), so a healthy replica
        # serves from the first read; a missing one is left to the checker.
        await replicas.check()
        replicas.start()
        deps.extras["replicas"] = replicas
        yield
        deps.extras.pop("replicas", None)
        await replicas.close()

    async def redis_client(app: web.Application):
        if not settings.redis_url:
            yield
            return
        import redis.asyncio as redis

        # Short timeouts: a hung Redis must not hold requests (callers fail open).
        # A blocking pool: under load callers wait briefly for a connection
        # instead of failing with MaxConnectionsError (redis-py's default pool).
        if settings.redis_cluster:
            from redis.asyncio.cluster import RedisCluster

            client = RedisCluster.from_url(settings.redis_url, socket_connect_timeout=1,
                                           socket_timeout=2)
            try:
                # Learn the slots now: redis-py's lazy set-up raced when the first
                # commands (a burst of rate-limit calls) arrived together.
                await asyncio.wait_for(client.initialize(), 5)
            except Exception as exc:  # noqa: BLE001 - callers fail open; retried lazily
                log.warning("Redis Cluster not reachable at start-up (%s)", type(exc).__name__)
        else:
            pool = redis.BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=64, timeout=1,
                socket_connect_timeout=1, socket_timeout=2)
            client = redis.Redis.from_pool(pool)  # closes the pool with the client
        deps.redis = client
        deps.limiter = limiter = RedisRateLimiter(client, metrics=metrics)
        yield
        await limiter.aclose()
        await client.aclose()

    async def presence(app: web.Application):
        # After redis_client: shared through Redis when REDIS_URL is set.
        deps.presence = build_presence(settings, deps.redis)
        await deps.presence.start()
        yield
        await deps.presence.close()

    async def push_notifications(app: web.Application):
        # After redis_client: foreground state is shared through Redis when set.
        from app.foreground import build_foreground
        from app.pushers import build_providers
        from app.pushers.webpush import local_private_key
        from app.services import push_outbox

        foreground = deps.extras["foreground"] = build_foreground(deps.redis)
        await foreground.start()
        push_settings = settings
        if not settings.vapid_private_key and shares_database(settings.database_url):
            # Browsers' subscriptions are bound to the VAPID key: every process
            # sharing this database signs with the one stored there.
            push_settings = settings.with_(vapid_private_key=await shared_secret(
                VAPID_KEY_NAME, local_private_key(settings)))
        providers = deps.extras["push_providers"] = build_providers(push_settings)
        await push_outbox.start_runtime(deps, providers, run_worker=settings.push_workers)
        yield
        await push_outbox.stop_runtime(deps)
        for provider in providers.values():
            await provider.close()
        await foreground.close()

    async def media_storage(app: web.Application):
        # Storage backend in deps.extras["storage"], plus the orphan-media sweep.
        from app.services import media

        await media.start_runtime(deps)
        yield
        await media.stop_runtime(deps)

    async def realtime_manager(app: web.Application):
        # Subscribe to the message queue at start-up, not at the first client (python-socketio's
        # lazy default), so no publish is missed; stop the listener at the end.
        if not sio.manager_initialized:
            sio.manager_initialized = True
            sio.manager.initialize()
        start = getattr(sio.manager, "start", None)
        if start is not None:
            await start()  # subscribed, and the other processes' users known
        yield
        await sio.manager.close()

    async def privacy_jobs(app: web.Application):
        # Due account erasures (one process at a time through a database lock) and
        # requested data exports.
        from app.services import privacy_runtime

        await privacy_runtime.start(deps)
        yield
        await privacy_runtime.stop(deps)

    async def drain(app: web.Application):
        # SIGTERM: aiohttp stops accepting, then runs on_shutdown: finish in-flight
        # events, then close the sockets so clients reconnect to another process.
        await chat.drain()
        # The last connects' presence events go out before the realtime
        # manager and the database close under them.
        await close_announcer(deps)

    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(search_index_merger)
    app.cleanup_ctx.append(read_replicas)
    app.cleanup_ctx.append(redis_client)
    app.cleanup_ctx.append(presence)
    app.cleanup_ctx.append(push_notifications)
    app.cleanup_ctx.append(media_storage)
    app.cleanup_ctx.append(realtime_manager)
    app.cleanup_ctx.append(privacy_jobs)
    app.on_shutdown.append(drain)
    return app
