"""Email through SendGrid's v3 Mail Send API.

POST {base}/v3/mail/send with `Authorization: Bearer <API key>` and a JSON
body (personalizations, from, subject, content); 202 Accepted means queued.
"""

from __future__ import annotations

import json
from email.utils import parseaddr

from app.senders import CodeMessage, SendError
from app.senders.http import call, http_failure
from app.senders.texts import email_subject, email_text


class SendGridSender:
    provider = "sendgrid"

    def __init__(self, api_key: str, sender: str,
                 base_url: str = "https://api.sendgrid.com") -> None:
        self.api_key = api_key
        name, address = parseaddr(sender)
        self.sender = {"email": address, **({"name": name} if name else {})}
        self.url = f"{base_url.rstrip('/')}/v3/mail/send"

    def body(self, msg: CodeMessage) -> dict:
        return {
            "personalizations": [{"to": [{"email": msg.target}]}],
            "from": self.sender,
            "subject": email_subject(msg),
            "content": [{"type": "text/plain", "value": email_text(msg)}],
            # Codes are not marketing: no click or open tracking rewriting the text.
            "tracking_settings": {"click_tracking": {"enable": False},
                                  "open_tracking": {"enable": False}},
        }

    async def send(self, msg: CodeMessage) -> None:
        reply = await call(
            "POST", self.url, data=json.dumps(self.body(msg), ensure_ascii=False).encode(),
            headers={"Authorization": f"Bearer {self.api_key}",
                     "Content-Type": "application/json"})
        if reply.status in (200, 202):
            return
        errors = reply.json().get("errors") or []
        first = errors[0] if errors and isinstance(errors[0], dict) else {}
        detail = f"HTTP {reply.status} field {first.get('field')}"
        if reply.status == 400 and str(first.get("field", "")).startswith("personalizations"):
            raise SendError("invalid_recipient", detail=detail)  # the recipient address
        raise http_failure(reply, detail)
