"""Delivery of verification codes, behind one small interface.

Email goes over SMTP (EMAIL_PROVIDER=smtp with SMTP_URL) or the SendGrid v3
API (EMAIL_PROVIDER=sendgrid); SMS goes to Twilio, Alibaba Cloud or Tencent
Cloud (SMS_PROVIDER). With nothing configured the code is written to the
server log so local development works; that log line is the only place a code
is ever logged.

Every provider is a small signed HTTP client on aiohttp rather than the
vendor's SDK: each send is one POST of a few fields, while the official SDKs
bring their own HTTP stacks and whole API surfaces for it (Tencent's is
synchronous, on requests). A client of our own also makes the base URL a
setting, so the tests point it at a local stand-in that checks the request
the way the provider documents it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

log = logging.getLogger("parley.codes")


@dataclass(frozen=True)
class CodeMessage:
    target: str  # E.164 phone number or normalised email address
    purpose: str  # register | login | reset_password
    code: str
    lang: str  # "zh" or "en"
    ttl_minutes: int


class SendError(Exception):
    """A provider did not accept a code.

    `reason` is a short label for metrics and logs (never shown to clients):
    invalid_recipient (the provider rejects the recipient), throttled, outage,
    timeout, rejected (account, credentials, sender or template problems).
    `transient`: the request surely was not accepted and one more try may work.
    """

    def __init__(self, reason: str, *, transient: bool = False, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.transient = transient
        self.detail = detail


@runtime_checkable
class CodeSender(Protocol):
    provider: str  # metrics label: smtp, sendgrid, twilio, aliyun, tencent, log

    async def send(self, msg: CodeMessage) -> None:
        """Return once the provider accepted the message; raise SendError otherwise."""


@runtime_checkable
class SmsProvider(CodeSender, Protocol):
    """An SMS gateway, selected with SMS_PROVIDER. `msg.target` is E.164."""


class LogSender:
    """Development: prints the code to the server log."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.provider = "log"

    async def send(self, msg: CodeMessage) -> None:
        log.warning("DEV %s code for %s (%s): %s", self.channel, msg.target, msg.purpose, msg.code)


from app.senders.smtp import SmtpSender  # noqa: E402  (re-exported)

SMS_PROVIDERS = ("twilio", "aliyun", "tencent")
EMAIL_PROVIDERS = ("smtp", "sendgrid")


def _require(settings, *names: str) -> None:
    missing = [n.upper() for n in names if not getattr(settings, n)]
    if missing:
        raise ValueError(f"{', '.join(missing)} must be set for this provider")


def build_email_sender(settings) -> CodeSender:
    provider = (settings.email_provider or "smtp").lower()
    if provider == "smtp":
        return SmtpSender(settings.smtp_url, settings.smtp_from) if settings.smtp_url \
            else LogSender("email")
    if provider == "sendgrid":
        from app.senders.sendgrid import SendGridSender

        _require(settings, "sendgrid_api_key")
        return SendGridSender(settings.sendgrid_api_key, settings.smtp_from,
                              settings.sendgrid_base_url)
    raise ValueError(f"unknown EMAIL_PROVIDER {provider!r}; use one of {EMAIL_PROVIDERS}")


def allowed_countries(spec: str) -> frozenset[int]:
    """SMS_ALLOWED_COUNTRIES: calling codes such as "86, +852, 1"; empty: all."""
    try:
        codes = frozenset(int(c.strip().lstrip("+")) for c in spec.split(",") if c.strip())
    except ValueError:
        raise ValueError(f"SMS_ALLOWED_COUNTRIES must list calling codes such as "
                         f"'86,852', not {spec!r}") from None
    return codes


def build_sms_sender(settings) -> CodeSender:
    allowed_countries(settings.sms_allowed_countries)  # refuse a typo at start-up
    provider = (settings.sms_provider or "").lower()
    if not provider:
        return LogSender("sms")
    if provider == "twilio":
        from app.senders.twilio import TwilioSender

        _require(settings, "twilio_account_sid", "twilio_auth_token")
        if not (settings.twilio_from or settings.twilio_messaging_service_sid):
            raise ValueError("TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID must be set")
        return TwilioSender(settings.twilio_account_sid, settings.twilio_auth_token,
                            from_=settings.twilio_from,
                            messaging_service_sid=settings.twilio_messaging_service_sid,
                            base_url=settings.twilio_base_url)
    if provider == "aliyun":
        from app.senders.aliyun import AliyunSender

        _require(settings, "aliyun_access_key_id", "aliyun_access_key_secret",
                 "aliyun_sms_sign_name", "aliyun_sms_template_code")
        return AliyunSender(settings.aliyun_access_key_id, settings.aliyun_access_key_secret,
                            sign_name=settings.aliyun_sms_sign_name,
                            template_code=settings.aliyun_sms_template_code,
                            template_code_en=settings.aliyun_sms_template_code_en,
                            base_url=settings.aliyun_sms_base_url)
    if provider == "tencent":
        from app.senders.tencent import TencentSender

        _require(settings, "tencent_secret_id", "tencent_secret_key", "tencent_sms_sdk_app_id",
                 "tencent_sms_sign_name", "tencent_sms_template_id")
        return TencentSender(settings.tencent_secret_id, settings.tencent_secret_key,
                             sdk_app_id=settings.tencent_sms_sdk_app_id,
                             sign_name=settings.tencent_sms_sign_name,
                             template_id=settings.tencent_sms_template_id,
                             template_id_en=settings.tencent_sms_template_id_en,
                             region=settings.tencent_sms_region,
                             base_url=settings.tencent_sms_base_url)
    raise ValueError(f"unknown SMS_PROVIDER {provider!r}; use one of {SMS_PROVIDERS}")


def build_senders(settings) -> dict[str, CodeSender]:
    return {"email": build_email_sender(settings), "phone": build_sms_sender(settings)}


__all__ = ["CodeMessage", "CodeSender", "LogSender", "SendError", "SmsProvider", "SmtpSender",
           "build_senders"]
