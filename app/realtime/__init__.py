"""Socket.IO transport: namespace `/chat`. Parse, call a service, ack."""

from __future__ import annotations

from app import jsonfast
from app.config import Settings
from app.realtime.engine import AsyncServer
from app.realtime.limits import ConnectionLimits
from app.realtime.managers import LocalManager
from app.realtime.queue import QueueManager


def build_sio(settings: Settings, metrics=None) -> AsyncServer:
    queue_url = settings.message_queue_url or settings.redis_url
    if queue_url:
        manager = QueueManager(queue_url, channel=settings.message_queue_channel,
                               metrics=metrics, order_hold=settings.message_order_hold)
    else:
        manager = LocalManager(order_hold=settings.message_order_hold)
        manager.metrics = metrics
    origins = [o.strip() for o in settings.cors_allowed_origins.split(",") if o.strip()] or None
    return AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        json=jsonfast,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        cors_allowed_origins=origins,
        max_http_buffer_size=256 * 1024,
        logger=False,
        engineio_logger=False,
        limits=ConnectionLimits.from_settings(settings),
        metrics=metrics,
        connect_timeout=settings.socket_connect_timeout,
    )
