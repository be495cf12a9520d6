"""Delivery of push notifications, behind one PushProvider interface.

- webpush.py: Web Push (RFC 8030/8291/8292) with pywebpush: aes128gcm, VAPID;
- fcm.py: Firebase Cloud Messaging HTTP v1, OAuth 2.0 JWT-bearer tokens;
- apns.py: Apple Push Notification service, token (.p8) auth over HTTP/2.

The outbox worker (app/services/push_outbox.py) decides what to send; a
provider only turns one PushMessage into one request and sorts the answer
into success, a dead device (`gone`), a retry (`transient`, with the
service's Retry-After) or a permanent refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Device:
    """One subscription as the providers need it."""

    id: str
    kind: str  # webpush | fcm | apns
    address: str  # endpoint URL or device token
    p256dh: str = ""
    auth: str = ""
    environment: str = ""


@dataclass(frozen=True, slots=True)
class PushMessage:
    kind: str  # message | recall | badge (silent)
    tag: str  # collapse id: the conversation id (the same for the recall follow-up)
    badge: int
    ttl: int  # seconds the push service may keep it
    title: str = ""
    body: str = ""
    data: dict = field(default_factory=dict)  # conversation_id, message_id, seq (strings)

    def web_payload(self) -> dict:
        """The JSON the web client's service worker and the apps receive."""
        return {"type": self.kind, "tag": self.tag, "title": self.title, "body": self.body,
                "badge": self.badge, **self.data}


class PushError(Exception):
    """A push was not delivered.

    `reason`: a short metrics label (gone, throttled, outage, timeout, rejected,
    auth). `gone`: the device is no longer registered; delete it. `transient`:
    try again later, not before `retry_after` seconds when the service said.
    """

    def __init__(self, reason: str, *, gone: bool = False, transient: bool = False,
                 retry_after: float | None = None, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.gone = gone
        self.transient = transient
        self.retry_after = retry_after
        self.detail = detail


@runtime_checkable
class PushProvider(Protocol):
    kind: str  # the subscription kind it serves

    async def send(self, device: Device, msg: PushMessage) -> None:
        """Return once the push service accepted it; raise PushError otherwise."""

    async def close(self) -> None:
        """Release connections."""


def retry_after(value: str | None) -> float | None:
    """A Retry-After header: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - datetime.now(UTC)).total_seconds())


def classify_status(status: int, retry_after_header: str | None, detail: str = "") -> PushError:
    """The common HTTP answers of push services."""
    if status in (404, 410):
        return PushError("gone", gone=True, detail=detail)
    if status == 429:
        return PushError("throttled", transient=True,
                         retry_after=retry_after(retry_after_header), detail=detail)
    if status >= 500:
        return PushError("outage", transient=True, retry_after=retry_after(retry_after_header),
                         detail=detail)
    if status in (401, 403):
        return PushError("auth", detail=detail)
    return PushError("rejected", detail=detail)


def build_providers(settings, var_dir=None) -> dict[str, PushProvider]:
    """The providers the settings configure: Web Push always (its VAPID key is
    generated when none is set), FCM and APNs when their credentials are."""
    from app.pushers.webpush import WebPushProvider

    providers: dict[str, PushProvider] = {"webpush": WebPushProvider.from_settings(settings,
                                                                                   var_dir)}
    if settings.fcm_credentials_file:
        from app.pushers.fcm import FcmProvider

        providers["fcm"] = FcmProvider.from_settings(settings)
    if settings.apns_key_file:
        from app.pushers.apns import ApnsProvider

        providers["apns"] = ApnsProvider.from_settings(settings)
    return providers
