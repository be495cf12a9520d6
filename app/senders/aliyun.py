"""SMS through Alibaba Cloud Short Message Service: SendSms (API 2017-05-25).

Signed with Alibaba Cloud's V3 request signature, ACS3-HMAC-SHA256, which its
documentation recommends over the older HMAC-SHA1 RPC signature. The RPC
parameters travel in the query string of a POST with an empty body:

    CanonicalRequest = method \\n path \\n canonical query \\n canonical headers \\n
                       signed header names \\n hex(sha256(body))
    StringToSign     = "ACS3-HMAC-SHA256" \\n hex(sha256(CanonicalRequest))
    Signature        = hex(hmac_sha256(AccessKeySecret, StringToSign))

Keys and values are percent-encoded per RFC 3986 (space %20, `*` %2A, `~` kept).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from yarl import URL

from app.senders import CodeMessage, SendError
from app.senders.http import call, http_failure

ALGORITHM = "ACS3-HMAC-SHA256"
VERSION = "2017-05-25"

INVALID_RECIPIENT = {"isv.MOBILE_NUMBER_ILLEGAL", "isv.BLACK_KEY_CONTROL_LIMIT"}
THROTTLED = {"isv.BUSINESS_LIMIT_CONTROL", "isv.DAY_LIMIT_CONTROL", "isv.MOBILE_COUNT_OVER_LIMIT"}
TRANSIENT = {"isp.SYSTEM_ERROR", "ServiceUnavailable", "InternalError"}


def percent_encode(value: str) -> str:
    return quote(value, safe="-_.~")


def canonical_query(params: dict[str, str]) -> str:
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))


def sign(method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes,
         access_key_id: str, access_key_secret: str) -> str:
    """The Authorization header for a request whose `headers` already hold host
    and every x-acs-* header (x-acs-content-sha256 included)."""
    signed = {k.lower(): v.strip() for k, v in headers.items()
              if k.lower() == "host" or k.lower().startswith("x-acs-")
              or k.lower() == "content-type"}
    names = sorted(signed)
    canonical_headers = "".join(f"{n}:{signed[n]}\n" for n in names)
    signed_headers = ";".join(names)
    request = "\n".join([method.upper(), path or "/", canonical_query(query), canonical_headers,
                         signed_headers, hashlib.sha256(body).hexdigest()])
    to_sign = f"{ALGORITHM}\n{hashlib.sha256(request.encode()).hexdigest()}"
    signature = hmac.new(access_key_secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"


def signed_headers(method: str, host: str, path: str, query: dict[str, str], body: bytes,
                   action: str, version: str, access_key_id: str, access_key_secret: str,
                   *, date: str | None = None, nonce: str | None = None) -> dict[str, str]:
    headers = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": version,
        "x-acs-date": date or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-signature-nonce": nonce or secrets.token_hex(16),
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    headers["Authorization"] = sign(method, path, query, headers, body, access_key_id,
                                    access_key_secret)
    return headers


class AliyunSender:
    provider = "aliyun"

    def __init__(self, access_key_id: str, access_key_secret: str, *, sign_name: str,
                 template_code: str, template_code_en: str = "",
                 base_url: str = "https://dysmsapi.aliyuncs.com") -> None:
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.sign_name = sign_name
        self.template_code = template_code
        self.template_code_en = template_code_en or template_code
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc

    def params(self, msg: CodeMessage) -> dict[str, str]:
        return {
            # International format without "+": accepted for the Chinese
            # mainland (86…) and required for everywhere else.
            "PhoneNumbers": msg.target.lstrip("+"),
            "SignName": self.sign_name,
            "TemplateCode": self.template_code if msg.lang == "zh" else self.template_code_en,
            "TemplateParam": json.dumps({"code": msg.code, "minutes": str(msg.ttl_minutes)},
                                        separators=(",", ":")),
        }

    async def send(self, msg: CodeMessage) -> None:
        query = self.params(msg)
        body = b""
        headers = signed_headers("POST", self.host, "/", query, body, "SendSms", VERSION,
                                 self.access_key_id, self.access_key_secret)
        # Send the query exactly as signed: yarl must not re-encode it.
        url = URL(f"{self.base_url}/?{canonical_query(query)}", encoded=True)
        # No body at all, so no Content-Type the signature would have to cover.
        reply = await call("POST", url, headers=headers, data=None)
        data = reply.json()
        code = str(data.get("Code", ""))
        if reply.status == 200 and code == "OK":
            return
        detail = f"HTTP {reply.status} {code}"
        if code in INVALID_RECIPIENT:
            raise SendError("invalid_recipient", detail=detail)
        if code in THROTTLED:
            raise SendError("throttled", detail=detail)  # per-number limits: retrying won't help
        if code.startswith("Throttling"):  # the API's own request rate
            raise SendError("throttled", transient=True, detail=detail)
        if code in TRANSIENT or code.startswith("isp."):
            raise SendError("outage", transient=True, detail=detail)
        if reply.status == 200:
            raise SendError("rejected", detail=detail)
        raise http_failure(reply, detail)
