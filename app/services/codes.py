"""Six-digit verification codes: sign-up, code sign-in, password reset.

Codes are stored as keyed digests, live CODE_TTL seconds and allow
CODE_MAX_ATTEMPTS guesses; a new code for the same target and purpose
replaces the previous one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Literal

from tortoise.expressions import F

from app import security
from app.deps import Deps
from app.errors import Invalid, InvalidCode, Unavailable
from app.models.accounts import VerificationCode
from app.ratelimit import Limit
from app.services.identity import normalise_email, normalise_phone
from app.validation import Password, Payload

log = logging.getLogger("parley.codes")

Purpose = Literal["register", "login", "reset_password"]


class CodeRequestIn(Payload):
    purpose: Purpose
    email: str | None = None
    phone: str | None = None


class CodeLoginIn(Payload):
    code: str
    email: str | None = None
    phone: str | None = None
    device: str | None = None


class PasswordResetIn(Payload):
    code: str
    new_password: Password
    email: str | None = None
    phone: str | None = None


def target_of(email: str | None, phone: str | None) -> tuple[str, str]:
    """('email'|'phone', normalised target); exactly one must be given."""
    if bool(email) == bool(phone):
        raise Invalid("Give either an email address or a phone number.", details={"field": "email"})
    return ("email", normalise_email(email)) if email else ("phone", normalise_phone(phone))


async def request_code(deps: Deps, data: CodeRequestIn, client_ip: str) -> None:
    channel, target = target_of(data.email, data.phone)
    limit = Limit.parse(deps.settings.code_rate_limit)
    await deps.limiter.hit(f"code:ip:{client_ip}", limit)
    await deps.limiter.hit(f"code:target:{target}", limit)
    code = security.new_code()
    now = datetime.now(UTC)
    # Only the newest code counts.
    await VerificationCode.filter(target=target, purpose=data.purpose, consumed_at=None).update(
        consumed_at=now
    )
    await VerificationCode.create(
        target=target,
        purpose=data.purpose,
        code_hash=security.code_digest(deps.settings.secret_key, target, data.purpose, code),
        expires_at=now + timedelta(seconds=deps.settings.code_ttl),
    )
    # Whether the account exists or not, the answer is the same; only the
    # recipient learns anything.
    try:
        await deps.senders[channel].send(target, data.purpose, code)
    except Exception as exc:  # SMTP down, provider error: the client may retry
        log.error("could not send %s code: %s", channel, type(exc).__name__)
        raise Unavailable("Could not send the code right now; try again later.") from None


async def consume(deps: Deps, channel: str, target: str, purpose: str, code: str) -> None:
    """Check and spend a code; raises InvalidCode (same error for every failure)."""
    now = datetime.now(UTC)
    row = (
        await VerificationCode.filter(
            target=target, purpose=purpose, consumed_at=None, expires_at__gt=now
        )
        .order_by("-created_at")
        .first()
    )
    if row is None:
        raise InvalidCode()
    # Spend one attempt before comparing, atomically: parallel guesses cannot
    # exceed the budget, and once it is spent even the right code is refused.
    counted = await VerificationCode.filter(
        id=row.id, consumed_at=None, attempts__lt=deps.settings.code_max_attempts
    ).update(attempts=F("attempts") + 1)
    if not counted:
        raise InvalidCode()
    digest = security.code_digest(deps.settings.secret_key, target, purpose, code.strip())
    if not security.constant_time_equal(digest, row.code_hash):
        raise InvalidCode()
    spent = await VerificationCode.filter(id=row.id, consumed_at=None).update(consumed_at=now)
    if not spent:
        raise InvalidCode()
