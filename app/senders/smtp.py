"""Email codes over SMTP (aiosmtplib)."""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from app.senders import CodeMessage, SendError


class SmtpSender:
    """SMTP_URL: smtp://user:pass@host:port (plain/STARTTLS) or smtps:// (implicit TLS).
    `?starttls=false` turns STARTTLS off for local relays."""

    provider = "smtp"

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

    async def send(self, msg: CodeMessage) -> None:
        from app.senders.texts import email_subject, email_text

        await self.send_text(msg.target, email_subject(msg), email_text(msg))

    async def send_text(self, to: str, subject: str, body: str) -> None:
        """A plain-text notice (e.g. a data export is ready); SendError on failure."""
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = to
        mail["Subject"] = subject
        mail.set_content(body)
        try:
            await aiosmtplib.send(
                mail,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.use_tls,
                start_tls=self.start_tls,
                timeout=10,
            )
        except aiosmtplib.SMTPConnectError as exc:
            raise SendError("outage", transient=True, detail=type(exc).__name__) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise SendError("rejected", detail=type(exc).__name__) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SendError("outage", detail=type(exc).__name__) from None
