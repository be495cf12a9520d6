"""Account deletion: deactivation at once, erasure after the grace period.

DELETE /me (password or code) deactivates: every session ends, pending
contact requests are dropped, the account is hidden from search, and push
subscriptions are removed. Signing in again before
`erase_after` cancels. Erasure keeps the user row as "Deleted account" (the
messages left in other people's conversations still need a sender) and
deletes everything else that was the person's: profile, email and phone,
contacts, blocks, sessions, settings, exports, media nobody else could see;
groups pass on as when leaving. With ERASE_MESSAGES_ON_DELETE their messages
become tombstones (recalled, text and payload emptied).

The erasure job runs in every process; a lease in job_locks lets one process
at a time do it.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from app import security
from app.clock import now
from app.deps import Deps
from app.errors import Invalid, InvalidCode
from app.models.accounts import AuthSession, OAuthFlow, OAuthIdentity, User, VerificationCode
from app.models.contacts import Block, Contact, ContactRequest
from app.models.media import Media, MediaAttachment
from app.models.messaging import HiddenMessage, Membership, Message
from app.models.privacy import JobLock
from app.services import avatars, push, read_cache
from app.services.workers import Periodic
from app.validation import Payload

log = logging.getLogger("parley.erasure")

DELETED_NAME = "Deleted account"

# An account signed in only through another provider has no password and may
# have no address for a code: its deletion is confirmed by a sign-in this recent.
RECENT_SIGN_IN = timedelta(minutes=10)


class DeleteAccountIn(Payload):
    password: str | None = None
    code: str | None = None  # a code requested with purpose "delete_account"


# --- deactivation ----------------------------------------------------------


async def request_deletion(deps: Deps, auth, data: DeleteAccountIn) -> dict:
    """Check the password (or a code sent to the account's email / phone), then
    deactivate. Returns when erasure is due."""
    from app.services import accounts, codes

    user: User = auth.user
    if bool(data.password) == bool(data.code):
        if not data.password and not data.code and user.password_hash is None \
                and not (user.email or user.phone) \
                and now() - auth.session.created_at <= RECENT_SIGN_IN:
            pass  # just signed in through the provider: that was the confirmation
        else:
            raise Invalid("Give your password or a code.", details={"field": "password"})
    elif data.password is not None:
        if user.password_hash is None:
            raise Invalid("This account has no password: confirm with a code, or sign in "
                          "again and delete within 10 minutes.", details={"field": "password"})
        ok, _ = await security.verify_password_async(user.password_hash, data.password)
        if not ok:
            # Not 401: the caller is signed in; it is this confirmation that failed.
            raise Invalid("The password is not right.", details={"field": "password"})
    else:
        targets = [(c, v) for c, v in (("email", user.email), ("phone", user.phone)) if v]
        for channel, target in targets:
            try:
                await codes.consume(deps, channel, target, "delete_account", data.code)
                break
            except InvalidCode:
                continue
        else:
            raise InvalidCode()
    grace = timedelta(days=max(0, deps.settings.account_delete_grace_days))
    at = now()
    await User.filter(id=user.id).update(deactivated_at=at, erase_after=at + grace)
    user.deactivated_at, user.erase_after = at, at + grace
    await read_cache.changed(deps, "user", [user.id])
    await _drop_pending_requests(user.id)
    await push.delete_subscriptions_for_user(user.id)
    await accounts.end_all_sessions(deps, user)
    return {"erase_after": user.erase_after.isoformat()}


async def _drop_pending_requests(user_id) -> None:
    await ContactRequest.filter(Q(from_user_id=user_id) | Q(to_user_id=user_id),
                                status="pending").delete()


async def cancel_deletion(user: User) -> bool:
    """Signing in before erasure cancels it; True when there was one to cancel."""
    if user.deactivated_at is None or user.erased_at is not None:
        return False
    cancelled = await User.filter(id=user.id, erased_at=None, deactivated_at__isnull=False) \
        .update(deactivated_at=None, erase_after=None)
    user.deactivated_at = user.erase_after = None
    return bool(cancelled)


# --- erasure -----------------------------------------------------------------


async def erase_due(deps: Deps, *, limit: int = 100) -> int:
    """Erase every account whose grace period is over; returns how many."""
    erased = 0
    while True:
        due = await User.filter(erase_after__lte=now(), erased_at=None,
                                deactivated_at__isnull=False).order_by("erase_after") \
            .limit(limit).values_list("id", flat=True)
        if not due:
            return erased
        for user_id in due:
            try:
                await erase_account(deps, str(user_id))
                erased += 1
            except Exception:
                log.exception("erasing account %s failed; it is tried again next run", user_id)
                return erased


async def erase_account(deps: Deps, user_id: str) -> None:
    from app.services import groups

    uid = uuid.UUID(user_id)
    user = await User.get(id=uid)
    # Groups first, through the same rule as leaving: an owner's group passes on.
    group_ids = await Membership.filter(user_id=uid, left_at=None,
                                        conversation__type="group",
                                        conversation__dissolved_at=None) \
        .values_list("conversation_id", flat=True)
    for cid in group_ids:
        try:
            await groups.leave(deps, user_id, cid)
        except Exception as exc:  # already gone (dissolved meanwhile): nothing to pass on
            log.info("leaving group %s while erasing %s: %s", cid, user_id, exc)
    await AuthSession.filter(user_id=uid).delete()
    await OAuthIdentity.filter(user_id=uid).delete()
    await OAuthFlow.filter(user_id=uid).delete()
    await push.delete_subscriptions_for_user(uid)
    await avatars.delete_avatar(deps, user.avatar_key)
    await Contact.filter(Q(owner_id=uid) | Q(contact_id=uid)).delete()
    await ContactRequest.filter(Q(from_user_id=uid) | Q(to_user_id=uid)).delete()
    await Block.filter(Q(blocker_id=uid) | Q(blocked_id=uid)).delete()
    await HiddenMessage.filter(user_id=uid).delete()
    targets = []
    from app.services.codes import code_targets

    for channel, value in (("email", user.email), ("phone", user.phone)):
        if value:
            targets += code_targets(channel, value)
    if targets:
        await VerificationCode.filter(target__in=targets).delete()
    await _erase_exports(deps, uid)
    if deps.settings.erase_messages_on_delete:
        await Message.filter(sender_id=uid).exclude(type="system").update(
            text="", data=None, recalled_at=now())
    await _erase_media(deps, uid, everything=deps.settings.erase_messages_on_delete)
    for _attempt in range(5):
        try:
            await User.filter(id=uid).update(
                username=f"deleted_{secrets.token_hex(8)}", display_name=DELETED_NAME, bio="",
                email_enc=None, email_bidx=None, phone_enc=None, phone_bidx=None, avatar_key=None,
                legacy_email=None, legacy_phone=None, password_hash=None, last_seen_at=None,
                allow_strangers=False, send_read_receipts=False,
                last_seen_visibility="nobody", discoverable_by_email=False,
                discoverable_by_phone=False, language="", erase_after=None, erased_at=now())
            break
        except IntegrityError:
            continue  # the random handle collided
    await read_cache.changed(deps, "user", [uid])
    log.info("erased account %s", user_id)


async def _erase_exports(deps: Deps, uid) -> None:
    from app.models.privacy import DataExport

    storage = deps.extras.get("storage")
    for export in await DataExport.filter(user_id=uid):
        if storage is not None and export.storage_key:
            await storage.delete(export.storage_key)
    await DataExport.filter(user_id=uid).delete()


async def _erase_media(deps: Deps, uid, *, everything: bool) -> None:
    """Media the person uploaded that nobody else could see: never attached, or
    attached only in conversations where they are the only member left. With
    `everything` (their messages became tombstones) all of it."""
    storage = deps.extras.get("storage")
    for media in await Media.filter(uploader_id=uid):
        if not everything:
            cids = await MediaAttachment.filter(media_id=media.id) \
                .values_list("conversation_id", flat=True)
            others = await Membership.filter(conversation_id__in=list(set(cids))) \
                .exclude(user_id=uid).exists() if cids else False
            if others:
                continue
        if storage is not None:
            for key in (media.storage_key, media.thumb_key):
                if key:
                    await storage.delete(key)
        await media.delete()


# --- the scheduled job ---------------------------------------------------------


async def acquire_lock(name: str, holder: str, lease_seconds: float) -> bool:
    """A lease on `name` for `holder`; True when taken (or renewed)."""
    at = now()
    until = at + timedelta(seconds=lease_seconds)
    taken = await JobLock.filter(Q(name=name) & (Q(holder=holder) | Q(expires_at__lt=at))) \
        .update(holder=holder, expires_at=until)
    if taken:
        return True
    try:
        await JobLock.create(name=name, holder=holder, expires_at=until)
        return True
    except IntegrityError:
        return False


async def release_lock(name: str, holder: str) -> None:
    await JobLock.filter(name=name, holder=holder).delete()


async def run_erasure_job(deps: Deps, holder: str) -> int | None:
    """One run if this process gets the lock; None when another process holds it."""
    lease = max(60.0, deps.settings.erasure_interval_seconds * 2)
    if not await acquire_lock("erase-due", holder, lease):
        return None
    try:
        return await erase_due(deps)
    finally:
        await release_lock("erase-due", holder)


def erasure_worker(deps: Deps) -> Periodic:
    """Due erasures every ERASURE_INTERVAL_SECONDS, by one process at a time."""
    holder = uuid.uuid4().hex

    async def job() -> None:
        erased = await run_erasure_job(deps, holder)
        if erased:
            log.info("erased accounts", extra={"fields": {"count": erased}})

    return Periodic("erasure job", job, max(1, deps.settings.erasure_interval_seconds))
