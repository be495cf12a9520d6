"""Six-digit verification codes: sign-up, code sign-in, password reset.

Codes are stored as keyed digests once a provider accepted them, live
CODE_TTL seconds and allow CODE_MAX_ATTEMPTS guesses; a new code for the same
target and purpose replaces the previous one. Phone codes also pass the SMS
cost controls (SMS_ALLOWED_COUNTRIES, SMS_DAILY_LIMIT).
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Literal

import phonenumbers
from tortoise.expressions import F

from app import crypto, security
from app.deps import Deps
from app.errors import Invalid, InvalidCode, RateLimited, Unavailable
from app.models.accounts import User, VerificationCode
from app.ratelimit import Limit
from app.senders import CodeMessage, SendError, allowed_countries
from app.services.identity import normalise_email, normalise_phone
from app.validation import Password, Payload

log = logging.getLogger("parley.codes")

Purpose = Literal["register", "login", "reset_password", "delete_account"]


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
    await send_code(deps, channel, target, data.purpose, client_ip)


async def send_code(deps: Deps, channel: str, target: str, purpose: str, client_ip: str) -> None:
    """Send a fresh code for `purpose` to a normalised target (throttled, stored hashed)."""
    settings = deps.settings
    limit = Limit.parse(settings.code_rate_limit)
    await deps.limiter.hit(f"code:ip:{client_ip}", limit)
    # Stored and counted under the blind index: no address in the database or Redis.
    stored_target = code_target(channel, target)
    await deps.limiter.hit(f"code:target:{stored_target}", limit)
    sender = deps.senders[channel]
    if channel == "phone":
        await _sms_cost_control(deps, sender, target)
    code = security.new_code()
    msg = CodeMessage(target=target, purpose=purpose, code=code,
                      lang=await _language(channel, target),
                      ttl_minutes=max(1, math.ceil(settings.code_ttl / 60)))
    # Whether the account exists or not, the answer is the same; only the
    # recipient learns anything.
    await _deliver(deps, sender, channel, msg)
    # Stored only once the provider took it: a code that never left cannot be
    # guessed at, and a failed resend leaves the previous code usable.
    now = datetime.now(UTC)
    await VerificationCode.filter(target__in=code_targets(channel, target), purpose=purpose,
                                  consumed_at=None).update(
        consumed_at=now  # only the newest code counts
    )
    await VerificationCode.create(
        target=stored_target,
        purpose=purpose,
        code_hash=security.code_digest(settings.secret_key, target, purpose, code),
        expires_at=now + timedelta(seconds=settings.code_ttl),
    )


async def send_notice(deps: Deps, channel: str, target: str, purpose: str) -> None:
    """Tell an address something happened to its account (e.g. `email_changed`).

    Best effort: the change is already made, and a notice that cannot go out
    must not undo it. SMS gateways that only send reviewed code templates
    (Alibaba Cloud, Tencent Cloud) cannot carry a notice; those are logged.
    """
    sender = deps.senders[channel]
    provider = getattr(sender, "provider", "log")
    if provider in ("aliyun", "tencent"):
        log.info("no %s notice over %s (code templates only)", purpose, provider)
        return
    msg = CodeMessage(target=target, purpose=purpose, code="", lang=await _language(channel, target),
                      ttl_minutes=0)
    try:
        await sender.send(msg)
    except Exception as exc:
        log.warning("could not send a %s notice: %s", purpose, type(exc).__name__)


def _count(deps: Deps, name: str, **labels: str) -> None:
    metrics = deps.extras.get("metrics")
    if metrics is not None:
        getattr(metrics, name).labels(**labels).inc()


async def _sms_cost_control(deps: Deps, sender, target: str) -> None:
    """Refuse numbers outside the allowed countries and anything over the
    global daily budget, before a paid message goes out (SMS pumping fraud
    sends codes to premium numbers in bulk from many addresses)."""
    settings = deps.settings
    provider = getattr(sender, "provider", "log")
    allowed = allowed_countries(settings.sms_allowed_countries)
    if allowed and phonenumbers.parse(target).country_code not in allowed:
        _count(deps, "codes_failed", provider=provider, reason="country_not_allowed")
        raise Invalid("Codes cannot be sent to phone numbers in this country.",
                      details={"field": "phone"})
    if settings.sms_daily_limit > 0:
        now = datetime.now(UTC)
        try:
            # One counter per UTC day, in Redis when configured: every process
            # shares the budget.
            await deps.limiter.hit(f"code:sms:day:{now:%Y-%m-%d}",
                                   Limit(settings.sms_daily_limit, 86400))
        except RateLimited:
            _count(deps, "codes_failed", provider=provider, reason="daily_limit")
            midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                         microsecond=0)
            seconds = max(1, math.ceil((midnight - now).total_seconds()))
            log.error("SMS_DAILY_LIMIT (%d) reached; phone codes refused until midnight UTC",
                      settings.sms_daily_limit)
            raise Unavailable("Phone codes cannot be sent right now; try again later.",
                              details={"retry_after": seconds},
                              headers={"Retry-After": str(seconds)}) from None


def code_target(channel: str, target: str) -> str:
    """What a code row stores for its target: the blind index under the current key."""
    return crypto.active().blind_index(f"users.{channel}", target)


def code_targets(channel: str, target: str) -> list[str]:
    """Every stored form of the target: under each key of the ring."""
    return crypto.active().blind_indexes(f"users.{channel}", target)


async def _language(channel: str, target: str) -> str:
    """Chinese for +86 numbers and for accounts set to Chinese, English otherwise."""
    if channel == "phone" and target.startswith("+86"):
        return "zh"
    from app.services.accounts import identity_q

    lang = await User.filter(identity_q(channel, target)).first().values_list(
        "language", flat=True)
    return "zh" if (lang or "").lower().startswith("zh") else "en"


async def _deliver(deps: Deps, sender, channel: str, msg: CodeMessage) -> None:
    provider = getattr(sender, "provider", "log")
    for attempt in (1, 2):
        try:
            await sender.send(msg)
        except SendError as exc:
            _count(deps, "codes_failed", provider=provider, reason=exc.reason)
            # The provider's own words stay in the server log: they can name
            # accounts, templates or balances.
            log.warning("%s did not take a %s code (attempt %d): %s", provider, channel, attempt,
                        exc.detail or exc.reason)
            if exc.transient and attempt == 1:
                await asyncio.sleep(0.2)
                continue
            if exc.reason == "invalid_recipient":
                field = "phone" if channel == "phone" else "email"
                raise Invalid(f"This {'phone number' if field == 'phone' else 'address'} "
                              "cannot receive codes.", details={"field": field}) from None
            raise Unavailable("Could not send the code right now; try again later.") from None
        except Exception as exc:  # a bug or an unexpected library error: still no 500
            _count(deps, "codes_failed", provider=provider, reason="error")
            log.error("could not send %s code: %s", channel, type(exc).__name__)
            raise Unavailable("Could not send the code right now; try again later.") from None
        _count(deps, "codes_sent", provider=provider,
               channel="sms" if channel == "phone" else "email")
        return


async def consume(deps: Deps, channel: str, target: str, purpose: str, code: str) -> None:
    """Check and spend a code; raises InvalidCode (same error for every failure)."""
    now = datetime.now(UTC)
    row = (
        await VerificationCode.filter(
            target__in=code_targets(channel, target), purpose=purpose, consumed_at=None,
            expires_at__gt=now
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
