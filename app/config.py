"""Settings read from the environment (12-factor), with safe defaults for local use.

Every variable is listed in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = ROOT / "var"


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _local_secret_key() -> str:
    """A random key persisted under var/ so local restarts keep sessions valid.

    PyJWT warns for HMAC keys under 32 bytes, so generate 48 random bytes.
    Production sets SECRET_KEY explicitly.
    """
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = f"sqlite://{VAR_DIR / 'parley.db'}"
    redis_url: str = ""
    secret_key: str = ""
    media_root: str = str(VAR_DIR / "media")
    media_storage_url: str = ""
    public_url: str = ""
    # Origin (and optional path) the web client's built assets are served from, e.g. a CDN.
    asset_url: str = ""
    log_level: str = "INFO"
    # Accounts
    access_token_ttl: int = 15 * 60
    refresh_token_ttl: int = 30 * 24 * 3600
    require_verification: bool = False
    code_ttl: int = 10 * 60
    code_max_attempts: int = 5
    smtp_url: str = ""
    smtp_from: str = "Parley <no-reply@localhost>"
    sms_provider: str = ""
    login_rate_limit: str = "10/60"  # attempts per seconds, per account and per address
    code_rate_limit: str = "5/600"
    # Messaging
    max_text_length: int = 16_000
    recall_window_seconds: int = 120
    send_rate_limit: str = "30/1"  # messages per seconds, per user
    typing_throttle_seconds: float = 2.0
    # Contacts and presence
    contact_request_ttl_days: int = 7
    presence_grace_seconds: float = 5.0
    # Groups
    max_group_members: int = 500
    # Media (bytes / milliseconds)
    max_image_bytes: int = 20 * 1024 * 1024
    max_voice_bytes: int = 5 * 1024 * 1024
    max_voice_ms: int = 60_000
    max_video_bytes: int = 100 * 1024 * 1024
    max_file_bytes: int = 100 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    media_url_ttl: int = 3600
    orphan_media_ttl: int = 24 * 3600
    # Socket.IO engine
    ping_interval: int = 25
    ping_timeout: int = 20
    cors_allowed_origins: str = ""
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
    if not values.get("secret_key"):
        values["secret_key"] = _local_secret_key()
    return Settings(**values)
