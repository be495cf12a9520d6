"""Delivery of verification codes, behind one small interface.

Email goes over SMTP (aiosmtplib) when SMTP_URL is set; SMS goes to a provider
(the interface is here, no provider is bundled). With nothing configured the
code is written to the server log so local development works; that log line
is the only place a code is ever logged.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

log = logging.getLogger("parley.codes")

_SUBJECTS = {
    "register": "Your Parley sign-up code",
    "login": "Your Parley sign-in code",
    "reset_password": "Your Parley password reset code",
}


class CodeSender(Protocol):
    async def send(self, target: str, purpose: str, code: str) -> None: ...


class LogSender:
    """Development: prints the code to the server log."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def send(self, target: str, purpose: str, code: str) -> None:
        log.warning("DEV %s code for %s (%s): %s", self.channel, target, purpose, code)


class SmtpSender:
    """SMTP_URL: smtp://user:pass@host:port (plain/STARTTLS) or smtps:// (implicit TLS).
    `?starttls=false` turns STARTTLS off for local relays."""

    def __init__(self, url: str, sender: str) -> None:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.host = parts.hostname or "localhost"
        self.use_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.use_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        starttls = query.get("starttls", ["auto"])[0]
        if self.use_tls:
            self.start_tls = False  # implicit TLS already; aiosmtplib refuses both
        elif starttls == "auto":
            self.start_tls = None  # upgrade when the server offers STARTTLS
        else:
            self.start_tls = starttls.lower() in {"1", "true", "yes", "on"}
        self.sender = sender

    async def send(self, target: str, purpose: str, code: str) -> None:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = target
        msg["Subject"] = _SUBJECTS.get(purpose, "Your Parley code")
        msg.set_content(
            f"Your Parley code is {code}.\n\nIt expires in 10 minutes. "
            "If you did not ask for it, ignore this message."
        )
        await aiosmtplib.send(
            msg,
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            timeout=10,
        )


class SmsProvider(Protocol):
    """Implement this for a real SMS gateway and select it with SMS_PROVIDER."""

    async def send(self, target: str, purpose: str, code: str) -> None: ...


def build_senders(smtp_url: str, smtp_from: str, sms_provider: str) -> dict[str, CodeSender]:
    email: CodeSender = SmtpSender(smtp_url, smtp_from) if smtp_url else LogSender("email")
    if sms_provider:
        raise ValueError(f"unknown SMS_PROVIDER {sms_provider!r}: no provider is bundled")
    return {"email": email, "phone": LogSender("sms")}
