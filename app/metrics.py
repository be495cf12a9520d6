"""Per-process Prometheus metrics, served at GET /metrics.

Each application gets its own CollectorRegistry (tests build many apps in one
process; the global registry would refuse duplicate names). Every process of a
cluster is scraped on its own port: the numbers are per process, Prometheus
sums them.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest

# Ack latency: loopback sends take a few ms, a loaded PostgreSQL tens of ms.
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# REST requests: the same, and the long tail of uploads, downloads and the
# statement timeout's 503s.
HTTP_BUCKETS = ACK_BUCKETS + (30.0, 60.0)
# Label values must come from a small set: a client picks the method and the
# path, so anything else is counted as `other` / `unmatched`, never as itself.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _DatabaseStatements:
    """Read from the driver hooks' counter when scraped (app/db.py): nothing to
    update per statement here."""

    def collect(self):
        from app.db import statements_sent

        yield CounterMetricFamily(
            "parley_db_statements", "Statements this process sent to the database "
            "(BEGIN/COMMIT included).", value=statements_sent())


class _ReadCache:
    """Hits, misses and entries of the read caches (app/services/read_cache.py)."""

    def collect(self):
        from app.services.read_cache import CACHES

        hits = CounterMetricFamily("parley_cache_hits", "Reads served from the read cache, "
                                   "by cache (session, user).", labels=["cache"])
        misses = CounterMetricFamily("parley_cache_misses", "Reads the read cache sent to the "
                                     "database, by cache.", labels=["cache"])
        size = GaugeMetricFamily("parley_cache_entries", "Rows held by the read cache, "
                                 "by cache.", labels=["cache"])
        for name, cache in CACHES.items():
            hits.add_metric([name], cache.hits)
            misses.add_metric([name], cache.misses)
            size.add_metric([name], len(cache))
        yield from (hits, misses, size)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        r.register(_DatabaseStatements())
        r.register(_ReadCache())
        self.connected_sockets = Gauge(
            "parley_connected_sockets", "Authenticated /chat sockets on this process.",
            registry=r)
        self.inflight_events = Gauge(
            "parley_inflight_events", "Socket.IO events being handled right now.", registry=r)
        self.messages_sent = Counter(
            "parley_messages_sent", "message:send acked ok (idempotent repeats included).",
            registry=r)
        self.messages_delivered = Counter(
            "parley_messages_delivered",
            "message:new events handed to sockets on this process.", registry=r)
        self.ack_seconds = Histogram(
            "parley_ack_seconds", "Time from receiving an event to its ack.", ["event"],
            buckets=ACK_BUCKETS, registry=r)
        self.event_errors = Counter(
            "parley_event_errors", "Events acked with ok:false, by error code.", ["code"],
            registry=r)
        self.database_errors = Counter(
            "parley_database_errors", "Events that failed because the database did.",
            registry=r)
        self.http_unavailable = Counter(
            "parley_http_unavailable",
            "REST requests answered 503 unavailable because a dependency failed, by "
            "dependency (database, media_storage).", ["dependency"], registry=r)
        self.http_requests = Counter(
            "parley_http_requests", "HTTP requests answered, by method, route (its "
            "template; `unmatched` when no route took the path and method) and status.",
            ["method", "route", "status"], registry=r)
        self.http_seconds = Histogram(
            "parley_http_request_seconds", "Time from a request's arrival to its answer "
            "(a streamed body included), by route; WebSocket upgrades are not timed.",
            ["route"], buckets=HTTP_BUCKETS, registry=r)
        self.fanout_errors = Counter(
            "parley_fanout_errors", "Emits after a commit that failed or timed out "
            "(the ack still goes out; clients catch up with sync).", registry=r)
        self.redis_publish_failures = Counter(
            "parley_redis_publish_failures",
            "Socket.IO messages not published to Redis (other processes missed them).",
            registry=r)
        self.redis_subscribed = Gauge(
            "parley_redis_subscribed", "1 while this process listens on the Redis channel.",
            registry=r)
        self.redis_resubscribes = Counter(
            "parley_redis_resubscribes", "Times the Redis listener came back after a gap.",
            registry=r)
        self.queue_order_held = Counter(
            "parley_queue_order_held", "message:new events held until an earlier seq of "
            "their conversation arrived (through another process, or emitted later by this one).", registry=r)
        self.queue_order_timeouts = Counter(
            "parley_queue_order_timeouts", "Holds of message:new that ended without the "
            "earlier seq (its clients see a gap and sync).", registry=r)
        self.replica_reads = Counter(
            "parley_replica_reads", "History, sync and search reads by where they were "
            "answered: replica, primary (no fit replica), stale (the replica was behind "
            "the client: redone on the primary), failed (replica error: redone on the "
            "primary).", ["outcome"], registry=r)
        self.replica_lag = Gauge(
            "parley_replica_lag_seconds", "Each read replica's lag at the last check "
            "(-1: unreachable).", ["replica"], registry=r)
        self.ratelimit_fallbacks = Counter(
            "parley_ratelimit_fallbacks",
            "Rate-limit checks answered in memory because Redis was unreachable.", registry=r)
        self.codes_sent = Counter(
            "parley_codes_sent", "Verification codes a provider accepted, by provider "
            "(twilio, aliyun, tencent, smtp, sendgrid, log) and channel (sms, email).",
            ["provider", "channel"], registry=r)
        self.codes_failed = Counter(
            "parley_codes_failed", "Verification codes not sent, by provider and reason "
            "(invalid_recipient, throttled, outage, timeout, rejected, daily_limit, "
            "country_not_allowed, error); a retried failure counts once per attempt.",
            ["provider", "reason"], registry=r)
        # Push notifications (app/services/push_outbox.py)
        self.push_queued = Counter(
            "parley_push_queued", "Pushes written to the outbox (new or coalesced into a "
            "pending one).", registry=r)
        self.push_sent = Counter(
            "parley_push_sent", "Pushes a push service accepted, by kind (message, recall, "
            "badge).", ["kind"], registry=r)
        self.push_failed = Counter(
            "parley_push_failed", "Push attempts that failed, by reason (gone, throttled, "
            "outage, timeout, rejected, auth, expired, …).", ["reason"], registry=r)
        self.push_retried = Counter(
            "parley_push_retried", "Pushes put back for a later retry.", registry=r)
        self.push_skipped = Counter(
            "parley_push_skipped", "Recipients not pushed, by rule (foreground, muted, dnd, "
            "disabled).", ["reason"], registry=r)
        self.push_subscriptions_removed = Counter(
            "parley_push_subscriptions_removed", "Devices deleted because their push service "
            "reported them gone.", ["reason"], registry=r)
        self.push_outbox_depth = Gauge(
            "parley_push_outbox_depth", "Pushes waiting in the outbox (all processes).",
            registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def http_request(self, method: str, route: str | None, status: int,
                     seconds: float) -> None:
        """One answered request. `route`: the matched route's template, None
        when no route matched."""
        route = route or "unmatched"
        self.http_requests.labels(method if method in HTTP_METHODS else "other", route,
                                  str(status)).inc()
        if status != 101:  # an upgrade's "answer" comes when its socket closes
            self.http_seconds.labels(route).observe(seconds)


METRICS_KEY = web.AppKey("metrics", Metrics)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """GET /metrics (Prometheus text format). Keep it off the public front:
    deploy/nginx.conf.template denies it; scrape each worker's own port."""
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
