"""Settings read from the environment (12-factor), with safe defaults for local use.

Every variable is listed in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from app.durable import fsync_dir, make_dirs

ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = ROOT / "var"


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def local_secret_file(path: Path, make) -> str:
    """The secret kept in `path`, created from `make()` on first use.

    Several processes starting at once agree on one value and never read a
    half-written file: the new value is written to a private temporary file
    that is then hard-linked to `path`, which fails if another process got
    there first (its value is then read and used). The file and the link are
    flushed to the disk before the value is used: data encrypted or signed
    with a key that a crash of the machine then took away could not be read."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    new_entries = make_dirs(path.parent)
    value = make()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            value = path.read_text().strip()  # another process's, perhaps not flushed yet
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    finally:
        os.unlink(tmp)
    for d in (path.parent, *new_entries):
        fsync_dir(d)
    return value


def _local_secret_key(path: Path | None = None) -> str:
    """A random key persisted under var/ so local restarts keep sessions valid.

    PyJWT warns for HMAC keys under 32 bytes, so generate 48 random bytes.
    Production sets SECRET_KEY explicitly.
    """
    return local_secret_file(path or VAR_DIR / "secret_key", lambda: secrets.token_urlsafe(48))


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Connections the kernel holds for `serve` until the event loop accepts them
    # (capped by net.core.somaxconn): a reconnect storm after a restart arrives
    # faster than a busy loop accepts, and a connection dropped here waits out
    # the client's SYN retries (1, 3, 7, 15 s).
    listen_backlog: int = 1024
    # A request body that stops arriving, or a download the client stops taking,
    # for this many seconds is cut off (nginx's client_body_timeout/send_timeout).
    http_stall_timeout: float = 60.0
    database_url: str = f"sqlite://{VAR_DIR / 'parley.db'}"
    # PostgreSQL: a statement of the server's that has no answer after this many
    # seconds fails (the database, or the network to it, stopped answering
    # without refusing); 0: wait as long as TCP does. Not for migrations or CLI.
    database_command_timeout: float = 30.0
    # PostgreSQL streaming replicas serving history, sync and search reads (app/replicas.py)
    database_replica_urls: str = ""  # comma-separated postgres:// URLs
    replica_max_lag_seconds: float = 5.0  # a replica further behind is skipped
    replica_check_interval: float = 1.0  # seconds between lag checks
    redis_url: str = ""
    # Message queue between server processes (app/realtime/queue.py): redis://… or
    # amqp://… (RabbitMQ); empty: REDIS_URL's Redis when set, else single process.
    message_queue_url: str = ""
    message_queue_channel: str = "parley"  # channel / exchange name prefix
    # Seconds a process holds a message that came after a seq gap, waiting for the
    # earlier ones sent through other processes (app/realtime/seq_order.py); 0: no
    # holding, each event goes out as it arrives.
    message_order_hold: float = 0.1
    redis_cluster: bool = False  # REDIS_URL names a node of a Redis Cluster
    secret_key_file: str = ""  # where the generated key is kept; empty: var/secret_key
    secret_key: str = ""
    media_root: str = str(VAR_DIR / "media")
    media_storage_url: str = ""
    public_url: str = ""
    # Origin (and optional path) the web client's built assets are served from, e.g. a CDN.
    asset_url: str = ""
    log_level: str = "INFO"
    # Event loop of `serve`: uvloop where it is installed, else asyncio's own.
    event_loop: str = "uvloop"
    # Hot reads (sessions at connect, profiles, privacy settings) served from memory,
    # invalidated across processes (app/services/read_cache.py); false: every read
    # goes to the database.
    cache: bool = True
    # Network: proxies whose X-Forwarded-For / Forwarded are believed (app/netaddr.py),
    # and a certificate to serve HTTPS/WSS directly.
    trusted_proxies: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Accounts
    access_token_ttl: int = 15 * 60
    refresh_token_ttl: int = 30 * 24 * 3600
    require_verification: bool = False
    code_ttl: int = 10 * 60
    code_max_attempts: int = 5
    smtp_url: str = ""
    smtp_from: str = "Parley <no-reply@localhost>"
    sms_provider: str = ""  # twilio | aliyun | tencent; empty: codes go to the log
    email_provider: str = "smtp"  # smtp | sendgrid
    sms_daily_limit: int = 1000  # SMS codes per UTC day, all numbers together; 0: no limit
    sms_allowed_countries: str = ""  # calling codes, e.g. "86,852,1"; empty: every country
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_from: str = ""
    twilio_messaging_service_sid: str = ""
    twilio_base_url: str = "https://api.twilio.com"
    aliyun_access_key_id: str = ""
    aliyun_access_key_secret: str = ""
    aliyun_sms_sign_name: str = ""
    aliyun_sms_template_code: str = ""
    aliyun_sms_template_code_en: str = ""  # English template for non-Chinese recipients
    aliyun_sms_base_url: str = "https://dysmsapi.aliyuncs.com"
    tencent_secret_id: str = ""
    tencent_secret_key: str = ""
    tencent_sms_sdk_app_id: str = ""
    tencent_sms_sign_name: str = ""
    tencent_sms_template_id: str = ""
    tencent_sms_template_id_en: str = ""  # English template for non-Chinese recipients
    tencent_sms_region: str = "ap-guangzhou"
    tencent_sms_base_url: str = "https://sms.tencentcloudapi.com"
    sendgrid_api_key: str = ""
    sendgrid_base_url: str = "https://api.sendgrid.com"
    login_rate_limit: str = "10/60"  # attempts per seconds, per account and per address
    code_rate_limit: str = "5/600"
    register_rate_limit: str = "10/3600"  # sign-ups per client address
    register_global_rate_limit: str = "600/3600"  # sign-ups on the whole server
    # Messaging
    max_text_length: int = 16_000
    recall_window_seconds: int = 120
    send_rate_limit: str = "30/1"  # messages per seconds, per user
    typing_throttle_seconds: float = 2.0
    # Search
    search_rate_limit: str = "30/10"  # searches (messages or the search box) per seconds, per user
    search_index: bool = True  # false: no built-in index writes; message search answers 503
    # Contacts and presence
    contact_request_ttl_days: int = 7
    contact_request_rate_limit: str = "50/86400"  # requests sent per user
    presence_grace_seconds: float = 5.0
    # Groups
    max_group_members: int = 500
    group_create_rate_limit: str = "20/86400"  # groups created per user
    # Media (bytes / milliseconds)
    max_image_bytes: int = 20 * 1024 * 1024
    max_voice_bytes: int = 5 * 1024 * 1024
    max_voice_ms: int = 60_000
    max_video_bytes: int = 100 * 1024 * 1024
    max_file_bytes: int = 100 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    media_decode_workers: int = 0  # image decoding processes; 0: half the cores (1-4)
    media_decode_memory: int = 1024**3  # bytes all decodes at once may take together
    media_url_ttl: int = 900
    orphan_media_ttl: int = 24 * 3600
    upload_rate_limit: str = "500/86400"  # uploads per user
    upload_bytes_per_day: int = 2 * 1024**3  # bytes uploaded per user per day
    media_quota_bytes: int = 10 * 1024**3  # bytes stored per user (0: no quota)
    # Socket.IO engine
    ping_interval: int = 25
    ping_timeout: int = 20
    socket_connect_timeout: float = 45.0  # seconds to join a namespace; 0: no limit
    cors_allowed_origins: str = ""
    # What one connection may cost (app/realtime/limits.py)
    socket_max_inflight: int = 8  # events of one socket handled at once
    socket_event_rate: str = "200/5"  # token bucket: count held, refilled count/seconds
    socket_flood_disconnect: int = 100  # refused events within 10 s that drop the socket
    # Sends waiting for the message writer, per process; more get a `busy` ack
    max_pending_sends: int = 5000
    writer_drain_seconds: float = 10.0  # shutdown: longest wait for queued sends
    # Push notifications (app/services/push*.py, docs/push.md)
    push_insecure_hosts: str = ""  # hosts whose Web Push endpoints may be http://
    push_coalesce_seconds: float = 5.0  # at most one notification per chat this often
    push_ttl_seconds: int = 24 * 3600  # a push not delivered by then is dropped
    push_workers: bool = True  # run the outbox worker in this process
    push_planner_interval: float = 1.0  # seconds between planner batches while events come
    vapid_private_key: str = ""  # base64url raw P-256 key or PEM; empty: generated into var/
    vapid_private_key_file: str = ""  # where the generated key is kept; empty: var/vapid_private_key
    vapid_subject: str = "mailto:admin@localhost"
    fcm_credentials_file: str = ""  # service-account JSON; empty: FCM off
    fcm_endpoint: str = "https://fcm.googleapis.com"
    fcm_token_endpoint: str = ""  # empty: the service account's token_uri
    apns_key_file: str = ""  # .p8 signing key; empty: APNs off
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""  # the app's bundle id
    apns_endpoint: str = "https://api.push.apple.com"
    apns_sandbox_endpoint: str = "https://api.sandbox.push.apple.com"
    # Sign-in with other providers (app/services/oauth.py, docs/configuration.md)
    oauth_providers: str = ""  # JSON object, or the path of a JSON file
    oauth_flow_ttl: int = 600  # seconds from "start" to the provider's callback
    # Richer messages: edit, reactions, pins, forward
    edit_window_seconds: int = 86_400  # how long after sending a sender may edit
    # Data protection: encryption at rest, account deletion, data export
    data_keys: str = ""  # "id:base64key,..." first current; empty: var/data_keys (local)
    media_encryption: bool = True  # local media files: chunked AES-GCM with the data keys
    s3_sse: str = ""  # S3 server-side encryption: "" | AES256 | aws:kms
    s3_sse_kms_key_id: str = ""  # with aws:kms: the KMS key (empty: the bucket's default)
    account_delete_grace_days: int = 7
    erase_messages_on_delete: bool = False
    erasure_interval_seconds: int = 300
    export_ttl_days: int = 7  # data exports are deleted after this many days
    export_link_ttl: int = 600  # seconds a signed export download link works
    extra: dict = field(default_factory=dict)

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)


def load_settings(environ: dict[str, str] | None = None, **overrides) -> Settings:
    """Build Settings from environment variables named like the fields in upper case."""
    env = os.environ if environ is None else environ
    values: dict = {}
    for f in fields(Settings):
        if f.name == "extra":
            continue
        raw = env.get(f.name.upper())
        if raw is None or raw == "":
            continue
        if f.type in ("int", int):
            values[f.name] = int(raw)
        elif f.type in ("float", float):
            values[f.name] = float(raw)
        elif f.type in ("bool", bool):
            values[f.name] = _bool(raw)
        else:
            values[f.name] = raw
    values.update(overrides)
    from app.netaddr import parse_networks

    parse_networks(values.get("trusted_proxies", ""))  # a typo fails at start, not per request
    if values.get("oauth_providers"):
        from app.services.oauth import parse_providers

        parse_providers(values["oauth_providers"])  # likewise
    if bool(values.get("tls_cert_file")) != bool(values.get("tls_key_file")):
        raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both or neither")
    if values.get("data_keys"):
        from app.crypto import parse_keys

        parse_keys(values["data_keys"])  # a malformed key ring fails here, saying why
    if values.get("s3_sse", "") not in ("", "AES256", "aws:kms"):
        raise ValueError("S3_SSE is AES256 or aws:kms (or empty)")
    if values.get("event_loop", "uvloop") not in ("uvloop", "asyncio"):
        raise ValueError("EVENT_LOOP is uvloop or asyncio")
    mq = values.get("message_queue_url", "")
    if mq and not mq.startswith(("redis://", "rediss://", "unix://", "valkey://", "amqp://",
                                 "amqps://")):
        raise ValueError("MESSAGE_QUEUE_URL must be redis://… or amqp://…")
    if mq.startswith(("amqp://", "amqps://")) and not values.get("redis_url"):
        raise ValueError("MESSAGE_QUEUE_URL=amqp://… needs REDIS_URL too: presence and rate "
                         "limits are shared through Redis")
    replicas = [u.strip() for u in values.get("database_replica_urls", "").split(",") if u.strip()]
    if replicas:
        if not str(values.get("database_url", Settings.database_url)).startswith(
                ("postgres://", "postgresql://")):
            raise ValueError("DATABASE_REPLICA_URLS needs a PostgreSQL DATABASE_URL")
        if not all(u.startswith(("postgres://", "postgresql://")) for u in replicas):
            raise ValueError("DATABASE_REPLICA_URLS are postgres://… URLs, comma-separated")
    if values.get("replica_check_interval", 1.0) <= 0:
        raise ValueError("REPLICA_CHECK_INTERVAL must be above 0")
    if values.get("http_stall_timeout", 1.0) <= 0:
        raise ValueError("HTTP_STALL_TIMEOUT must be above 0")
    if values.get("database_command_timeout", 0.0) < 0:
        raise ValueError("DATABASE_COMMAND_TIMEOUT is seconds, 0 for none")
    if not 0 <= values.get("message_order_hold", 0.1) <= 5:
        raise ValueError("MESSAGE_ORDER_HOLD is seconds from 0 (off) to 5")
    if values.get("listen_backlog", 1) < 1:
        raise ValueError("LISTEN_BACKLOG must be at least 1")
    if not values.get("secret_key"):
        values["secret_key"] = _local_secret_key(
            Path(values["secret_key_file"]) if values.get("secret_key_file") else None)
        # Not configured: with a shared database the key stored there wins
        # (app/services/server_secrets.py).
        values["extra"] = {**values.get("extra", {}), "secret_key_generated": True}
    return Settings(**values)
