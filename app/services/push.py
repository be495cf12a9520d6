"""Push notifications: device registration, push settings, and the hooks the
messaging services call after a commit (new message, recall, read).

The decisions are in app/services/push_rules.py (pure), the durable outbox and
its worker in app/services/push_outbox.py, delivery in app/pushers/.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from tortoise.exceptions import IntegrityError

from app.deps import Deps
from app.errors import Invalid, NotFound
from app.models.accounts import User
from app.models.push import PushSubscription
from app.services import push_rules
from app.validation import Payload

KINDS = ("webpush", "fcm", "apns")
MAX_ENDPOINT = 2048
MAX_FCM_TOKEN = 4096
_APNS_TOKEN = re.compile(r"^[0-9a-fA-F]{64,200}$")
# Push settings under /me/settings (validated here, stored on the user).
SETTINGS_FIELDS = ("push_enabled", "push_preview", "dnd_start", "dnd_end", "timezone")
NO_SUCH_SUBSCRIPTION = "No such push subscription."


class SubscriptionIn(Payload):
    kind: str
    endpoint: str | None = None
    keys: dict[str, Any] | None = None
    token: str | None = None
    environment: str | None = None


def _b64url(value, field: str, size: int) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise Invalid(f"keys.{field} must be a base64url string.",
                      details={"field": f"keys.{field}"})
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise Invalid(f"keys.{field} is not base64url.",
                      details={"field": f"keys.{field}"}) from None
    if len(raw) != size:
        raise Invalid(f"keys.{field} must be {size} bytes, not {len(raw)}.",
                      details={"field": f"keys.{field}"})
    if field == "p256dh" and raw[0] != 4:
        raise Invalid("keys.p256dh must be an uncompressed P-256 point.",
                      details={"field": "keys.p256dh"})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def insecure_hosts(setting: str) -> set[str]:
    return {h.strip().lower() for h in setting.split(",") if h.strip()}


def check_endpoint(endpoint, insecure: set[str]) -> str:
    if not isinstance(endpoint, str) or not endpoint:
        raise Invalid("endpoint is required for webpush.", details={"field": "endpoint"})
    if len(endpoint) > MAX_ENDPOINT:
        raise Invalid(f"endpoint is limited to {MAX_ENDPOINT} characters.",
                      details={"field": "endpoint"})
    try:
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise Invalid("endpoint is not a URL.", details={"field": "endpoint"}) from None
    if not host or parts.username or parts.password or \
            any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in endpoint):
        raise Invalid("endpoint is not a URL.", details={"field": "endpoint"})
    if parts.scheme == "https":
        return endpoint
    if parts.scheme == "http" and host in insecure:
        return endpoint
    raise Invalid("endpoint must be an https:// URL.", details={"field": "endpoint"})


def _clean(deps: Deps, data: SubscriptionIn) -> dict:
    if data.kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}.", details={"field": "kind"})
    if data.kind == "webpush":
        endpoint = check_endpoint(data.endpoint,
                                  insecure_hosts(deps.settings.push_insecure_hosts))
        keys = data.keys or {}
        if not isinstance(keys, dict):
            raise Invalid("keys must be an object.", details={"field": "keys"})
        return {"address": endpoint, "p256dh": _b64url(keys.get("p256dh"), "p256dh", 65),
                "auth": _b64url(keys.get("auth"), "auth", 16), "environment": ""}
    token = data.token
    if not isinstance(token, str) or not token.strip():
        raise Invalid(f"token is required for {data.kind}.", details={"field": "token"})
    token = token.strip()
    if data.kind == "fcm":
        if len(token) > MAX_FCM_TOKEN:
            raise Invalid(f"token is limited to {MAX_FCM_TOKEN} characters.",
                          details={"field": "token"})
        if any(c.isspace() or ord(c) < 32 for c in token) or "/" in token:
            raise Invalid("token has characters an FCM token never has.",
                          details={"field": "token"})
        return {"address": token, "p256dh": "", "auth": "", "environment": ""}
    if len(token) > 200:
        raise Invalid("token is limited to 200 hex characters.", details={"field": "token"})
    if not _APNS_TOKEN.match(token) or len(token) % 2:
        raise Invalid("token must be the device token in hex.", details={"field": "token"})
    env = data.environment or "production"
    if env not in ("production", "sandbox"):
        raise Invalid("environment must be production or sandbox.",
                      details={"field": "environment"})
    return {"address": token.lower(), "p256dh": "", "auth": "", "environment": env}


def _hash(kind: str, address: str) -> str:
    return hashlib.sha256(f"{kind}:{address}".encode()).hexdigest()


def subscription_out(s: PushSubscription) -> dict:
    out = {"id": str(s.id), "kind": s.kind, "created_at": s.created_at.isoformat()}
    if s.kind == "apns":
        out["environment"] = s.environment
    return out


async def subscribe(deps: Deps, auth, data: SubscriptionIn) -> tuple[dict, bool]:
    """Register this session's device → (subscription, created). The same
    endpoint/token again returns the existing one; a device registered by
    another session (a new sign-in on it) moves to this one."""
    fields = _clean(deps, data)
    digest = _hash(data.kind, fields["address"])
    for _attempt in range(3):
        existing = await PushSubscription.get_or_none(address_hash=digest)
        if existing is not None:
            if existing.session_id == auth.session.id:
                changed = [k for k in ("p256dh", "auth", "environment")
                           if getattr(existing, k) != fields[k]]
                for k in changed:
                    setattr(existing, k, fields[k])
                if changed:
                    await existing.save(update_fields=changed)
                return subscription_out(existing), False
            # The device now belongs to whoever signed in on it last.
            await PushSubscription.filter(id=existing.id).delete()
        try:
            sub = await PushSubscription.create(
                id=uuid.uuid4(), user_id=auth.user.id, session_id=auth.session.id,
                kind=data.kind, address_hash=digest, **fields)
        except IntegrityError:
            continue  # registered concurrently: answer with that one
        return subscription_out(sub), True
    raise Invalid("The device is being registered concurrently; retry.")


async def list_subscriptions(deps: Deps, auth) -> list[dict]:
    subs = await PushSubscription.filter(user_id=auth.user.id).order_by("created_at")
    return [subscription_out(s) for s in subs]


async def unsubscribe(deps: Deps, auth, subscription_id: str) -> None:
    try:
        sid = uuid.UUID(str(subscription_id))
    except ValueError:
        raise NotFound(NO_SUCH_SUBSCRIPTION) from None
    deleted = await PushSubscription.filter(id=sid, user_id=auth.user.id).delete()
    if not deleted:
        raise NotFound(NO_SUCH_SUBSCRIPTION)


async def delete_subscriptions_for_session(session_id) -> int:
    """Signing out, or ending the session from another device."""
    return await PushSubscription.filter(session_id=session_id).delete()


async def delete_subscriptions_for_user(user_id) -> int:
    """Every device of a user (account deletion)."""
    return await PushSubscription.filter(user_id=user_id).delete()


def vapid_public_key(deps: Deps) -> str:
    provider = (deps.extras.get("push_providers") or {}).get("webpush")
    if provider is None:
        from app.errors import Unavailable

        raise Unavailable("Web Push is not configured on this server.")
    return provider.public_key


# --- settings (/me/settings) -------------------------------------------------


def check_settings(data) -> dict:
    """The push fields of a /me/settings patch that are set, validated →
    {field: value}. An empty string clears dnd_start / dnd_end / timezone."""
    out = {}
    preview = getattr(data, "push_preview", None)
    if preview is not None:
        if preview not in push_rules.PREVIEWS:
            raise Invalid("push_preview must be full, sender or none.",
                          details={"field": "push_preview"})
        out["push_preview"] = preview
    enabled = getattr(data, "push_enabled", None)
    if enabled is not None:
        out["push_enabled"] = bool(enabled)
    for name in ("dnd_start", "dnd_end"):
        value = getattr(data, name, None)
        if value is None:
            continue
        if value == "":
            out[name] = None
        elif push_rules.parse_hhmm(value) is None:
            raise Invalid(f"{name} must be a time like 22:30.", details={"field": name})
        else:
            out[name] = value
    tz = getattr(data, "timezone", None)
    if tz is not None:
        if len(tz) > 64 or not push_rules.valid_timezone(tz):
            raise Invalid("timezone must be an IANA time zone name such as Asia/Shanghai.",
                          details={"field": "timezone"})
        out["timezone"] = tz
    return out


def settings_out(user: User) -> dict:
    return {name: getattr(user, name) for name in SETTINGS_FIELDS}


# --- hooks the messaging services call after a commit ------------------------
#
# They only hand the event to this process's push planner (no I/O, no await):
# the send path and its ack never wait for push work.


def message_stored(deps: Deps, *, message_id: int, conversation_id, sender_id,
                   recipients, type: str, text: str, data: dict | None, seq: int) -> None:
    planner = deps.extras.get("push_planner")
    if planner is None or not recipients:
        return
    planner.submit(("message", {
        "message_id": int(message_id), "conversation_id": str(conversation_id),
        "sender_id": str(sender_id),
        # The writer's recipients are already a tuple of ids as text: kept as they
        # are, so a large group's send pays nothing per member here.
        "recipients": recipients if isinstance(recipients, tuple)
        else tuple(str(u) for u in recipients),
        "type": type, "text": text, "data": data or {}, "seq": seq}))


def message_recalled(deps: Deps, *, message_id: int, conversation_id) -> None:
    planner = deps.extras.get("push_planner")
    if planner is not None:
        planner.submit(("recall", {"message_id": int(message_id),
                                   "conversation_id": str(conversation_id)}))


def conversation_read(deps: Deps, *, user_id, conversation_id) -> None:
    planner = deps.extras.get("push_planner")
    if planner is not None:
        planner.submit(("read", {"user_id": str(user_id),
                                 "conversation_id": str(conversation_id)}))
