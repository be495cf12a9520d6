"""Apple Push Notification service: token-based (.p8) authentication over HTTP/2.

The provider token is an ES256 JWT ({iss: team id, iat}, kid: key id) that
Apple accepts for up to an hour and refuses if renewed more often than every
20 minutes; it is reused for 40 minutes.
"""

from __future__ import annotations

import json
import time

import httpx
import jwt

from app.pushers import Device, PushError, PushMessage, retry_after

TOKEN_REUSE = 40 * 60
GONE_REASONS = {"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"}


class ApnsProvider:
    kind = "apns"

    def __init__(self, key_pem: str, key_id: str, team_id: str, topic: str,
                 endpoint: str, sandbox_endpoint: str) -> None:
        for name, value in (("APNS_KEY_ID", key_id), ("APNS_TEAM_ID", team_id),
                            ("APNS_TOPIC", topic)):
            if not value:
                raise ValueError(f"{name} is required with APNS_KEY_FILE")
        self.key = key_pem
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.endpoints = {"production": endpoint.rstrip("/"),
                          "sandbox": sandbox_endpoint.rstrip("/")}
        self._token: tuple[str, float] | None = None
        # APNs speaks HTTP/2 only; over http:// (a local stand-in) with prior knowledge.
        self._client = httpx.AsyncClient(http1=False, http2=True,
                                         timeout=httpx.Timeout(15.0, connect=5.0))

    @classmethod
    def from_settings(cls, settings) -> ApnsProvider:
        with open(settings.apns_key_file, encoding="utf-8") as f:
            key = f.read()
        return cls(key, settings.apns_key_id, settings.apns_team_id, settings.apns_topic,
                   settings.apns_endpoint, settings.apns_sandbox_endpoint)

    def provider_token(self, *, renew: bool = False) -> str:
        now = time.time()
        if renew or self._token is None or self._token[1] < now:
            token = jwt.encode({"iss": self.team_id, "iat": int(now)}, self.key,
                               algorithm="ES256", headers={"kid": self.key_id})
            self._token = (token, now + TOKEN_REUSE)
        return self._token[0]

    def payload(self, msg: PushMessage) -> dict:
        if msg.kind == "badge":
            return {"aps": {"content-available": 1, "badge": msg.badge}, "type": "badge"}
        return {"aps": {"alert": {"title": msg.title, "body": msg.body}, "badge": msg.badge,
                        "sound": "default", "thread-id": msg.tag},
                "type": msg.kind, **msg.data}

    def headers(self, msg: PushMessage) -> dict:
        silent = msg.kind == "badge"
        return {
            "apns-topic": self.topic,
            "apns-push-type": "background" if silent else "alert",
            "apns-priority": "5" if silent else "10",
            "apns-expiration": str(int(time.time()) + max(0, msg.ttl)),
            "apns-collapse-id": msg.tag[:64],
        }

    async def send(self, device: Device, msg: PushMessage) -> None:
        base = self.endpoints.get(device.environment or "production",
                                  self.endpoints["production"])
        url = f"{base}/3/device/{device.address}"
        body = json.dumps(self.payload(msg), separators=(",", ":")).encode()
        for attempt in (0, 1):
            headers = self.headers(msg)
            headers["authorization"] = f"bearer {self.provider_token(renew=attempt == 1)}"
            try:
                resp = await self._client.post(url, content=body, headers=headers)
            except httpx.TimeoutException:
                raise PushError("timeout", transient=True) from None
            except httpx.HTTPError as exc:
                raise PushError("outage", transient=True, detail=type(exc).__name__) from None
            if resp.status_code == 200:
                return
            reason = _reason(resp.content)
            if resp.status_code == 403 and reason == "ExpiredProviderToken" and attempt == 0:
                continue
            break
        status = resp.status_code
        if status == 410 or reason in GONE_REASONS:
            raise PushError("gone", gone=True, detail=reason or str(status))
        if status == 429 or status >= 500:
            raise PushError("throttled" if status == 429 else "outage", transient=True,
                            retry_after=retry_after(resp.headers.get("retry-after")),
                            detail=reason or str(status))
        raise PushError("auth" if status == 403 else "rejected", detail=reason or str(status))

    async def close(self) -> None:
        await self._client.aclose()


def _reason(body: bytes) -> str:
    try:
        return str(json.loads(body or b"{}").get("reason") or "")
    except ValueError:
        return ""
