"""What services are handed: settings and the small interfaces they act through."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.config import Settings
from app.fanout import Fanout, RecordingFanout
from app.presence import PresenceTracker, build_presence
from app.ratelimit import MemoryRateLimiter, RateLimiter
from app.senders import CodeSender, build_senders
from app.services.message_writer import MessageWriter


@dataclass
class Deps:
    settings: Settings
    fanout: Fanout = field(default_factory=RecordingFanout)
    limiter: RateLimiter = field(default_factory=MemoryRateLimiter)
    senders: dict[str, CodeSender] = field(default_factory=dict)
    redis: object | None = None  # redis.asyncio.Redis when REDIS_URL is set
    extras: dict = field(default_factory=dict)  # per-domain helpers (presence, storage…)
    # Group-commits new messages (app/services/message_writer/).
    writer: MessageWriter = field(default_factory=MessageWriter)
    # Who is online; in memory unless create_app swaps in the Redis-backed store.
    presence: PresenceTracker | None = None

    def __post_init__(self) -> None:
        if self.presence is None:
            self.presence = build_presence(self.settings)
        if not self.senders:
            self.senders = build_senders(self.settings)
