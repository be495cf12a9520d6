"""Data keys in use: start-up verification and `python -m app rotate-keys`.

The data_keys table remembers every key that encrypted something, with a
check value (app/crypto.py). At start-up every key still needed must be in the
ring and match its check, so a missing or wrong key stops the process instead
of serving rows it cannot decrypt. rotate-keys re-encrypts what is under an
older key (or still plaintext, in a database made before encryption) with the
current one, in batches, and afterwards marks the older keys retired: they may
then be removed from DATA_KEYS.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from app import crypto
from app.crypto import KeyError_, KeyRing
from app.models.accounts import User
from app.models.privacy import DataKeyRecord

log = logging.getLogger("parley.dataprot")

Progress = Callable[[str, int, int], None]


async def verify_keys(ring: KeyRing) -> None:
    """Raise KeyError_ (with what to fix) unless `ring` can read all stored data;
    then record the current key as in use."""
    for _attempt in range(2):
        records = {r.kid: r for r in await DataKeyRecord.all()}
        for kid, record in records.items():
            key = ring.keys.get(kid)
            if key is None:
                if record.retired_at is None:
                    raise KeyError_(
                        f"data key {kid!r} encrypted stored data but is not configured: put it "
                        "in DATA_KEYS (or restore var/data_keys); the server will not start "
                        "without it")
            elif not hmac.compare_digest(key.check, record.check):
                raise KeyError_(f"DATA_KEYS key {kid!r} is not the key stored data was "
                                "encrypted with (its check value differs): configure the "
                                "right key")
        current = records.get(ring.current.kid)
        if current is None:
            try:
                await DataKeyRecord.create(kid=ring.current.kid, check=ring.current.check)
            except IntegrityError:
                continue  # another process recorded it at the same moment: check again
        elif current.retired_at is not None:
            await DataKeyRecord.filter(kid=current.kid).update(retired_at=None)
        return
    raise KeyError_("could not record the current data key")


async def legacy_rows() -> int:
    """Accounts whose email or phone is still in plaintext columns."""
    return await User.filter(Q(legacy_email__isnull=False) | Q(legacy_phone__isnull=False)).count()


def _stale_users_q(ring: KeyRing) -> Q:
    prefix = f"{ring.current.kid}:"
    return (Q(legacy_email__isnull=False) | Q(legacy_phone__isnull=False)
            | (Q(email_enc__isnull=False) & ~Q(email_enc__startswith=prefix))
            | (Q(phone_enc__isnull=False) & ~Q(phone_enc__startswith=prefix)))


async def rotate_users(ring: KeyRing, *, batch: int = 500,
                       progress: Progress | None = None) -> int:
    """Re-encrypt accounts not under the current key; returns how many.

    Each row is written only if it did not change since it was read, so a
    concurrent profile change is never overwritten (it already used the
    current key). Re-running continues where a stopped run left off: what is
    left to do is exactly what the query finds.
    """
    total = await User.filter(_stale_users_q(ring)).count()
    done = 0
    last_id = None
    while True:
        query = User.filter(_stale_users_q(ring))
        if last_id is not None:
            query = query.filter(id__gt=last_id)
        rows = await query.order_by("id").limit(batch).only(
            "id", "email_enc", "email_bidx", "phone_enc", "phone_bidx",
            "legacy_email", "legacy_phone")
        if not rows:
            break
        for user in rows:
            last_id = user.id
            before = {f: getattr(user, f) for f in (*User.EMAIL_FIELDS, *User.PHONE_FIELDS)}
            user.email = user.email
            user.phone = user.phone
            after = {f: getattr(user, f) for f in before}
            try:
                done += await User.filter(id=user.id, **_eq(before)).update(**after)
            except IntegrityError:
                # The same address in plaintext on one row and encrypted on another
                # cannot come from the service; leave the row for a person to look at.
                log.error("account %s: its email/phone is also held by another account; "
                          "left as it is", user.id)
        if progress:
            progress("accounts", done, total)
    return done


def _eq(values: dict) -> dict:
    return {(f"{k}__isnull" if v is None else k): (True if v is None else v)
            for k, v in values.items()}


async def rotate_codes(ring: KeyRing) -> int:
    """Verification codes live minutes: those not under the current key (or
    holding a plaintext target) are simply ended."""
    from app.models.accounts import VerificationCode

    return await VerificationCode.filter(
        ~Q(target__startswith=f"{ring.current.kid}:"), consumed_at=None
    ).update(consumed_at=datetime.now(UTC))


async def retire_old_keys(ring: KeyRing) -> list[str]:
    """Mark keys other than the current one retired once nothing needs them."""
    if await User.filter(_stale_users_q(ring)).exists():
        return []
    old = await DataKeyRecord.filter(retired_at=None).exclude(kid=ring.current.kid) \
        .values_list("kid", flat=True)
    if old:
        await DataKeyRecord.filter(kid__in=list(old)).update(retired_at=datetime.now(UTC))
    return list(old)


async def rotate(ring: KeyRing, *, batch: int = 500, progress: Progress | None = None,
                 media: Callable[[], Awaitable[tuple[int, int]]] | None = None) -> dict:
    await verify_keys(ring)
    crypto.activate(ring)
    users = await rotate_users(ring, batch=batch, progress=progress)
    codes = await rotate_codes(ring)
    media_done, media_left = (0, 0)
    if media is not None:
        media_done, media_left = await media()
    retired = await retire_old_keys(ring) if not media_left else []
    return {"accounts": users, "codes_ended": codes, "media": media_done,
            "media_left": media_left, "retired": retired}
