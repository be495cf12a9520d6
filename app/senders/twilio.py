"""SMS through Twilio's Messages resource (REST API 2010-04-01).

POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json, form-encoded To,
Body and From (or MessagingServiceSid), HTTP Basic auth AccountSid:AuthToken.
201 Created means Twilio queued the message; errors carry a numeric `code`.
"""

from __future__ import annotations

import base64
from urllib.parse import quote, urlencode

from app.senders import CodeMessage, SendError
from app.senders.http import call, http_failure
from app.senders.texts import sms_text

# Twilio error codes that mean "this recipient cannot get an SMS from us".
INVALID_NUMBER = {
    21211,  # invalid 'To' phone number
    21214,  # 'To' number cannot be reached
    21217,  # phone number does not appear to be valid
    21219,  # 'To' number not verified (trial accounts)
    21408,  # permission to send to this region not enabled
    21610,  # recipient replied STOP
    21612,  # cannot route to this number
    21614,  # 'To' number is not a mobile number
}
THROTTLED = {14107, 20429, 30022}  # rate limits


class TwilioSender:
    provider = "twilio"

    def __init__(self, account_sid: str, auth_token: str, *, from_: str = "",
                 messaging_service_sid: str = "",
                 base_url: str = "https://api.twilio.com") -> None:
        self.account_sid = account_sid
        token = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self.authorization = f"Basic {token}"
        self.from_ = from_
        self.messaging_service_sid = messaging_service_sid
        self.url = (f"{base_url.rstrip('/')}/2010-04-01/Accounts/"
                    f"{quote(account_sid, safe='')}/Messages.json")

    def form(self, msg: CodeMessage) -> dict[str, str]:
        form = {"To": msg.target, "Body": sms_text(msg)}
        # A Messaging Service picks the sender itself (and is what Twilio
        # recommends for A2P traffic); From is the single-number alternative.
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        else:
            form["From"] = self.from_
        return form

    async def send(self, msg: CodeMessage) -> None:
        reply = await call(
            "POST", self.url, data=urlencode(self.form(msg)).encode(),
            headers={"Authorization": self.authorization,
                     "Content-Type": "application/x-www-form-urlencoded",
                     "Accept": "application/json"})
        if reply.status in (200, 201):
            return
        body = reply.json()
        code = body.get("code")
        detail = f"HTTP {reply.status} code {code}"
        if code in INVALID_NUMBER:
            raise SendError("invalid_recipient", detail=detail)
        if code in THROTTLED:
            raise SendError("throttled", transient=reply.status == 429, detail=detail)
        raise http_failure(reply, detail)
