"""SMS through Tencent Cloud SMS: SendSms (API 2021-01-11), TC3-HMAC-SHA256.

    CanonicalRequest = POST \\n / \\n (empty query) \\n canonical headers \\n
                       signed header names \\n hex(sha256(payload))
    StringToSign     = "TC3-HMAC-SHA256" \\n timestamp \\n date/service/tc3_request \\n
                       hex(sha256(CanonicalRequest))
    SecretSigning    = HMAC(HMAC(HMAC("TC3" + SecretKey, date), service), "tc3_request")
    Signature        = hex(HMAC(SecretSigning, StringToSign))

`date` is the UTC date of the X-TC-Timestamp. The API answers HTTP 200 for
business errors: Response.Error for the request, SendStatusSet[].Code per number.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

from app.senders import CodeMessage, SendError
from app.senders.http import call, http_failure

ALGORITHM = "TC3-HMAC-SHA256"
SERVICE = "sms"
VERSION = "2021-01-11"
CONTENT_TYPE = "application/json; charset=utf-8"

INVALID_RECIPIENT = {
    "InvalidParameterValue.IncorrectPhoneNumber",
    "FailedOperation.PhoneNumberInBlacklist",
    "FailedOperation.PhoneNumberParseFail",
    "UnsupportedOperation.UnsupportedRegion",
}


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def authorization(secret_id: str, secret_key: str, *, service: str, host: str, payload: bytes,
                  timestamp: int, content_type: str = CONTENT_TYPE,
                  extra_headers: dict[str, str] | None = None) -> str:
    """The Authorization header for a POST of `payload` to `host`."""
    headers = {"content-type": content_type, "host": host}
    headers.update({k.lower(): v for k, v in (extra_headers or {}).items()})
    names = sorted(headers)
    canonical_headers = "".join(f"{n}:{headers[n].strip().lower()}\n" for n in names)
    signed_headers = ";".join(names)
    request = "\n".join(["POST", "/", "", canonical_headers, signed_headers,
                         hashlib.sha256(payload).hexdigest()])
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join([ALGORITHM, str(timestamp), scope,
                         hashlib.sha256(request.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={signed_headers}, "
            f"Signature={signature}")


class TencentSender:
    provider = "tencent"

    def __init__(self, secret_id: str, secret_key: str, *, sdk_app_id: str, sign_name: str,
                 template_id: str, template_id_en: str = "", region: str = "ap-guangzhou",
                 base_url: str = "https://sms.tencentcloudapi.com") -> None:
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.sdk_app_id = sdk_app_id
        self.sign_name = sign_name
        self.template_id = template_id
        self.template_id_en = template_id_en or template_id
        self.region = region
        self.url = base_url.rstrip("/") + "/"
        self.host = urlsplit(self.url).netloc

    def payload(self, msg: CodeMessage) -> dict:
        return {
            "PhoneNumberSet": [msg.target],  # E.164, "+" included
            "SmsSdkAppId": self.sdk_app_id,
            "SignName": self.sign_name,
            "TemplateId": self.template_id if msg.lang == "zh" else self.template_id_en,
            # The template's {1} and {2}: the code and its lifetime in minutes.
            "TemplateParamSet": [msg.code, str(msg.ttl_minutes)],
        }

    async def send(self, msg: CodeMessage) -> None:
        body = json.dumps(self.payload(msg), ensure_ascii=False).encode()
        timestamp = int(time.time())
        headers = {
            "Authorization": authorization(self.secret_id, self.secret_key, service=SERVICE,
                                           host=self.host, payload=body, timestamp=timestamp),
            "Content-Type": CONTENT_TYPE,
            "Host": self.host,
            "X-TC-Action": "SendSms",
            "X-TC-Version": VERSION,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": self.region,
        }
        reply = await call("POST", self.url, headers=headers, data=body)
        if reply.status != 200:
            raise http_failure(reply)
        response = reply.json().get("Response") or {}
        error = response.get("Error")
        if error:
            code = str(error.get("Code", ""))
        else:
            statuses = response.get("SendStatusSet") or [{}]
            code = str(statuses[0].get("Code", ""))
            if code == "Ok":
                return
        detail = code or "no status"
        if code in INVALID_RECIPIENT:
            raise SendError("invalid_recipient", detail=detail)
        if code == "RequestLimitExceeded":  # the API's own request rate
            raise SendError("throttled", transient=True, detail=detail)
        if code.startswith("LimitExceeded"):  # per-number and daily send limits
            raise SendError("throttled", detail=detail)
        if code.startswith("InternalError"):
            raise SendError("outage", transient=True, detail=detail)
        raise SendError("rejected", detail=detail)
