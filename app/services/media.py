"""Uploaded media: upload rules, attaching to messages, who may download, signed
links, the orphan sweep.

Rules decided here (documented in docs/api.md, "Media"):

- Kind: the bytes decide (app.media.sniff). The optional `kind` the client sends
  is a claim that is checked, never trusted: claiming image/voice/video for bytes
  that are not → `invalid_media`. Without a claim, unrecognised or markup bytes
  become a `file` (served as an attachment, never inline). File name and
  Content-Type are ignored.
- Size caps: the largest cap applies while the kind is unknown (or the claimed
  kind's cap), the kind's own cap as soon as the first bytes are sniffed; voice vs
  video containers are capped at the larger of the two until probed, then checked
  against their own cap. A Content-Length above the cap is refused before reading.
- Streaming: `file` uploads go straight into the storage writer; image/voice/video
  are spooled to a local file (Pillow/FFmpeg need one), processed, then copied to
  storage. Neither holds the upload in memory.
- Attaching: a message's `type` must equal the media's kind. Whoever may download
  a media item may attach it (the uploader, or a member who can see a message that
  carries it: forwarding reuses the id, nothing is copied).
- Downloading: the uploader, or a current member whose visible range includes
  a message carrying it that is neither recalled nor deleted for them; either
  by bearer token or by a signed link (HMAC of id, variant, expiry and the user
  it was issued to; valid `media_url_ttl` seconds). A link is checked against
  its user's access on every use, so it dies with that access.
- Orphans: uploads no message carries are deleted `orphan_media_ttl` seconds after
  upload (and after the last attempt to attach them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.functions import Sum

from app.clock import now
from app.config import Settings
from app.deps import Deps
from app.errors import DomainError, Forbidden, Invalid, NotFound, RateLimited, Unauthorized
from app.media import (
    KINDS,
    SNIFF_BYTES,
    ImageDecoder,
    InvalidMedia,
    MediaLimits,
    TooLarge,
    content_disposition,
    decide_kind,
    extension_for,
    process_upload,
    safe_filename,
    sniff,
)
from app.models.media import Media, MediaAttachment
from app.models.messaging import HiddenMessage, Membership, Message
from app.ratelimit import Limit
from app.services.workers import Periodic
from app.storage import (
    RangeStream,
    Storage,
    StorageError,
    derive_key,
    new_key,
    storage_from_url,
)

log = logging.getLogger("parley.media")

MEDIA_PATH = "/api/v1/media"
VARIANTS = ("content", "thumbnail")
THUMB_TAG = "thumb.jpg"
# A multipart body carries a few hundred bytes of boundaries and headers around
# the file: allow for them before refusing by Content-Length.
MULTIPART_SLACK = 64 * 1024
SPOOL_BUFFER = 256 * 1024
SWEEP_BATCH = 500
NO_SUCH_MEDIA = "No such media."


class LinkExpired(DomainError):
    code, status, default_message = "link_expired", 403, "This link has expired; fetch a new one."


# --- storage lifecycle --------------------------------------------------------


def storage_of(deps: Deps) -> Storage:
    storage = deps.extras.get("storage")
    if storage is None:
        raise RuntimeError("media storage is not configured (see start_runtime)")
    return storage


def build_storage(settings: Settings) -> Storage:
    storage = storage_from_url(settings.media_storage_url, default_root=settings.media_root)
    return protect_storage(settings, storage)


def protect_storage(settings: Settings, storage: Storage) -> Storage:
    """Encryption at rest: local files encrypted with the data keys
    (app/storage/encrypted.py), S3 objects with server-side encryption (S3_SSE)."""
    from app import crypto
    from app.storage import LocalStorage
    from app.storage.encrypted import EncryptedLocalStorage

    if type(storage) is LocalStorage and settings.media_encryption:
        return EncryptedLocalStorage(storage.root, fsync=storage.fsync,
                                     ring=crypto.ring_for(settings.data_keys))
    if settings.s3_sse and hasattr(storage, "sse"):
        storage.sse = {"ServerSideEncryption": settings.s3_sse}
        if settings.s3_sse == "aws:kms" and settings.s3_sse_kms_key_id:
            storage.sse["SSEKMSKeyId"] = settings.s3_sse_kms_key_id
    return storage


def build_decoder(settings: Settings) -> ImageDecoder:
    workers = settings.media_decode_workers
    if workers <= 0:
        workers = max(1, min(4, len(os.sched_getaffinity(0)) // 2))
    return ImageDecoder(workers, settings.media_decode_memory)


def sweep_interval(settings: Settings) -> float:
    """How often the orphan sweep runs: a quarter of the TTL, between 1 min and 1 h."""
    return float(max(60, min(3600, settings.orphan_media_ttl // 4)))


async def start_runtime(deps: Deps) -> Storage:
    """Storage in deps.extras["storage"] plus the periodic orphan sweep; undo with
    stop_runtime. (Plain start/stop rather than a context manager: an app whose
    clean-up never runs is then simply dropped, with nothing awaited at GC time.)"""
    storage = build_storage(deps.settings)
    deps.extras["storage"] = storage
    deps.extras["image_decoder"] = build_decoder(deps.settings)
    sweeper = deps.extras["media_sweeper"] = Periodic(
        "orphan media sweep", lambda: _sweep(deps), sweep_interval(deps.settings),
        delay_first=True)
    sweeper.start()
    return storage


async def stop_runtime(deps: Deps) -> None:
    sweeper = deps.extras.pop("media_sweeper", None)
    if sweeper is not None:
        await sweeper.close()
    decoder = deps.extras.pop("image_decoder", None)
    if decoder is not None:
        decoder.close()
    storage = deps.extras.pop("storage", None)
    if storage is not None:
        await storage.aclose()


async def _sweep(deps: Deps) -> None:
    n = await delete_orphans(deps, deps.settings.orphan_media_ttl)
    if n:
        log.info("deleted orphan media", extra={"fields": {"count": n}})


# --- signed links ------------------------------------------------------------


def _link_key(settings: Settings) -> bytes:
    # A key of its own, derived from SECRET_KEY, so links never share a MAC with tokens.
    return hashlib.sha256(b"parley media links\x00" + settings.secret_key.encode()).digest()


def signature(settings: Settings, media_id: str, variant: str, exp: int, user_id: str) -> str:
    msg = f"{media_id}\x00{variant}\x00{exp}\x00{user_id}".encode()
    mac = hmac.new(_link_key(settings), msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def link_expiry(settings: Settings, at: float | None = None) -> int:
    """now + media_url_ttl, rounded up to the minute for long TTLs so links signed
    close together are identical (the browser cache can reuse them)."""
    ttl = settings.media_url_ttl
    exp = math.ceil((time.time() if at is None else at) + ttl)
    step = 60 if ttl >= 600 else 1
    return exp + (-exp % step)


def signed_url(settings: Settings, media_id: str, variant: str, user_id,
               exp: int | None = None) -> str:
    """A link for one user: it works only while that user may see the media."""
    exp = link_expiry(settings) if exp is None else exp
    uid = str(user_id)
    sig = signature(settings, media_id, variant, exp, uid)
    base = settings.public_url.rstrip("/")
    return f"{base}{MEDIA_PATH}/{media_id}/{variant}?exp={exp}&u={uid}&sig={sig}"


def check_link(settings: Settings, media_id: str, variant: str, exp: str | None,
               sig: str | None, user_id: str | None) -> str:
    """The user the link was issued to, if the link is genuine and not expired."""
    try:
        exp_i = int(exp or "")
        uid = str(uuid.UUID(user_id or ""))
    except ValueError:
        raise Forbidden("Invalid media link.") from None
    if not sig or not hmac.compare_digest(signature(settings, media_id, variant, exp_i, uid),
                                          sig):
        raise Forbidden("Invalid media link.")
    if exp_i < time.time():
        raise LinkExpired()
    return uid


# --- serialisation -----------------------------------------------------------


def snapshot(m: Media) -> dict:
    """What a message stores about its media (no links: they are signed per read)."""
    return {
        "id": str(m.id), "kind": m.kind, "mime": m.mime, "size": m.size, "name": m.name,
        "width": m.width, "height": m.height, "duration_ms": m.duration_ms,
    }


def public_media(snap: dict, deps: Deps | None, viewer=None) -> dict:
    """The Media object clients see: the snapshot plus links freshly signed for
    `viewer` (links are per user: each stops working when its user loses access).

    Without deps or viewer the links are null; clients can then fetch fresh ones
    from GET /api/v1/media/{id}.
    """
    out = {k: snap.get(k) for k in ("id", "kind", "mime", "size", "name", "width",
                                     "height", "duration_ms")}
    has_thumb = snap.get("kind") in ("image", "video")
    if deps is None or viewer is None:
        out["url"] = None
        out["thumbnail_url"] = None
        return out
    s = deps.settings
    exp = link_expiry(s)
    out["url"] = signed_url(s, out["id"], "content", viewer, exp)
    out["thumbnail_url"] = (signed_url(s, out["id"], "thumbnail", viewer, exp) if has_thumb
                            else None)
    return out


# --- lookups and access --------------------------------------------------------


def _parse_id(media_id) -> uuid.UUID:
    try:
        return uuid.UUID(str(media_id))
    except ValueError:
        raise NotFound(NO_SUCH_MEDIA) from None


async def _get(media_id) -> Media:
    m = await Media.get_or_none(id=_parse_id(media_id))
    if m is None:
        raise NotFound(NO_SUCH_MEDIA)
    return m


async def _carrying_message(att: MediaAttachment | dict, media_id) -> Message | None:
    """The stored, not recalled message an attachment row stands for, if any."""
    a = att if isinstance(att, dict) else {
        "conversation_id": att.conversation_id, "sender_id": att.sender_id,
        "client_msg_id": att.client_msg_id}
    msg = await Message.get_or_none(conversation_id=a["conversation_id"],
                                    sender_id=a["sender_id"],
                                    client_msg_id=a["client_msg_id"])
    if msg is None or not msg.data or not carries(msg.data, str(media_id)):
        return None  # the send failed, or that id carried something else in the end
    return msg


def carries(data: dict, media_id: str) -> bool:
    """Whether a message's data holds this media: its own, or an item of the chat
    record it is (a forwarded record grants access to its media, nothing else)."""
    if (data.get("media") or {}).get("id") == media_id:
        return True
    return any((it.get("media") or {}).get("id") == media_id
               for it in (data.get("chat_record") or {}).get("items", ()))


async def can_view(user_id, media: Media) -> bool:
    if media.uploader_id is not None and str(media.uploader_id) == str(user_id):
        return True
    atts = await MediaAttachment.filter(media_id=media.id).values(
        "conversation_id", "sender_id", "client_msg_id")
    if not atts:
        return False
    memberships = {
        m.conversation_id: m
        for m in await Membership.filter(
            user_id=user_id, conversation_id__in={a["conversation_id"] for a in atts})
    }
    for a in atts:
        m = memberships.get(a["conversation_id"])
        if m is None or m.left_at is not None:
            # Removed or left: the text of the history stays readable, the media
            # of that conversation is no longer served to them.
            continue
        msg = await _carrying_message(a, media.id)
        if msg is None or msg.recalled_at is not None or msg.seq <= m.visible_from_seq:
            continue
        if await HiddenMessage.filter(user_id=user_id, message_id=msg.id).exists():
            continue  # deleted for me
        return True
    return False


async def viewable(user_id, media_id) -> Media:
    """The media if this user may see it; NotFound otherwise (existence is not revealed)."""
    media = await _get(media_id)
    if not await can_view(user_id, media):
        raise NotFound(NO_SUCH_MEDIA)
    return media


async def get_media(deps: Deps, user_id, media_id) -> dict:
    """Metadata with fresh links (e.g. when links in an old message have expired)."""
    return public_media(snapshot(await viewable(user_id, media_id)), deps, user_id)


# --- attaching to messages -----------------------------------------------------


async def attach_to_message(deps: Deps, user_id: str, data) -> dict:
    """Check the sender may attach `data.media_id` as `data.type`; return the
    media snapshot stored with the message."""
    if data.media_id is None:
        raise Invalid("A media message needs a media_id.", details={"field": "media_id"})
    try:
        media = await viewable(user_id, data.media_id)
    except NotFound:
        raise NotFound(NO_SUCH_MEDIA, details={"field": "media_id"}) from None
    if media.kind != data.type:
        raise Invalid(f"This media is a {media.kind}: send it with type {media.kind!r}.",
                      details={"field": "type", "kind": media.kind})
    # Touch first: a concurrent orphan sweep only deletes rows it saw untouched.
    if not await Media.filter(id=media.id).update(last_attached_at=now()):
        raise NotFound(NO_SUCH_MEDIA, details={"field": "media_id"})
    try:
        await MediaAttachment.create(media_id=media.id,
                                     conversation_id=uuid.UUID(str(data.conversation_id)),
                                     sender_id=uuid.UUID(str(user_id)),
                                     client_msg_id=data.client_msg_id)
    except IntegrityError:
        pass  # the same send, retried
    return snapshot(media)


# --- uploading ------------------------------------------------------------------


def cap_for(settings: Settings, kind: str) -> int:
    return {
        "image": settings.max_image_bytes, "voice": settings.max_voice_bytes,
        "video": settings.max_video_bytes, "file": settings.max_file_bytes,
    }[kind]


def largest_cap(settings: Settings) -> int:
    return max(cap_for(settings, k) for k in KINDS)


def _declared(kind: str | None) -> str | None:
    if kind is None or kind == "":
        return None
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}.", details={"field": "kind"})
    return kind


def check_length(settings: Settings, declared_kind: str | None,
                 content_length: int | None) -> None:
    """Refuse by Content-Length before reading anything, when it is certain to be over."""
    declared = _declared(declared_kind)
    cap = cap_for(settings, declared) if declared else largest_cap(settings)
    if content_length is not None and content_length > cap + MULTIPART_SLACK:
        raise TooLarge("The file is too large.", limit="bytes", max_value=cap)


class _Meter:
    """Counts bytes as they arrive; the cap can tighten once the kind is known."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n
        self.check()

    def check(self) -> None:
        if self.total > self.cap:
            raise TooLarge("The file is too large.", limit="bytes", max_value=self.cap)


def _display_name(filename: str | None, kind: str, mime: str) -> str:
    name = safe_filename(filename, default=kind)
    if kind == "image":
        # Re-encoded: the extension follows what we serve (photo.png → photo.jpg).
        dot = name.rfind(".")
        stem = name[:dot] if dot > 0 else name
        name = safe_filename(stem + extension_for(mime), default=kind)
    return name


async def upload(deps: Deps, user_id: str, chunks: AsyncIterator[bytes], *,
                 filename: str | None = None, declared_kind: str | None = None,
                 content_length: int | None = None) -> dict:
    """Store one upload read from `chunks`; return the public Media object.

    Raises TooLarge (413) as soon as a cap is passed, InvalidMedia (400) when the
    bytes are not what was claimed or cannot be decoded.
    """
    s = deps.settings
    declared = _declared(declared_kind)
    check_length(s, declared, content_length)
    await deps.limiter.hit(f"upload:{user_id}", Limit.parse(s.upload_rate_limit))
    await _check_quota(deps, user_id, 0)  # already full: refused before reading
    meter = _Meter(cap_for(s, declared) if declared else largest_cap(s))
    it = chunks.__aiter__()
    head = bytearray()
    while len(head) < SNIFF_BYTES:
        chunk = await anext(it, None)
        if chunk is None:
            break
        meter.add(len(chunk))
        head += chunk
    if not head:
        raise InvalidMedia("The file is empty.")
    sniffed = sniff(bytes(head))
    kind = decide_kind(declared, sniffed)
    if declared is None and sniffed.needs_probe:
        meter.cap = max(s.max_voice_bytes, s.max_video_bytes)  # voice or video: probe decides
    else:
        meter.cap = cap_for(s, kind)
    meter.check()

    async def body() -> AsyncIterator[bytes]:
        yield bytes(head)
        async for chunk in it:
            meter.add(len(chunk))
            yield chunk

    storage = storage_of(deps)
    if kind == "file":
        media = await _store_file(deps, storage, user_id, body(), sniffed.mime, meter,
                                  filename)
    else:
        media = await _store_processed(deps, storage, user_id, body(), declared, meter,
                                       filename)
    return public_media(snapshot(media), deps, user_id)


async def _store_file(deps: Deps, storage: Storage, user_id, body, mime: str, meter: _Meter,
                      filename: str | None) -> Media:
    """A document: streamed straight into storage, untouched, always an attachment."""
    key = new_key(extension_for(mime))
    async with storage.open_writer(key, max_size=meter.cap, content_type=mime) as w:
        async for chunk in body:
            await w.write(chunk)
    return await _create_row(deps, storage, [key], user_id=user_id, kind="file", mime=mime,
                             size=w.size, name=_display_name(filename, "file", mime),
                             storage_key=key, inline=False)


async def _store_processed(deps: Deps, storage: Storage, user_id, body, declared, meter,
                           filename) -> Media:
    s = deps.settings
    spool_root = Path(s.media_root) / ".spool"
    work = spool_root / uuid.uuid4().hex
    await _on_disk(lambda: work.mkdir(parents=True, exist_ok=True))
    try:
        src = work / "upload"
        await _spool(body, src)
        limits = MediaLimits(max_image_pixels=s.max_image_pixels, max_voice_ms=s.max_voice_ms)
        result = await process_upload(src, work, declared_kind=declared, limits=limits,
                                      decoder=deps.extras.get("image_decoder"))
        meter.cap = cap_for(s, result.kind)
        meter.check()  # e.g. a 6 MB audio-only WebM is a voice note over the voice cap
        key = new_key(extension_for(result.mime))
        stored: list[str] = []
        try:
            await storage.put_file(key, result.path, content_type=result.mime)
            stored.append(key)
            thumb_key = None
            if result.thumb_path is not None:
                thumb_key = derive_key(key, THUMB_TAG)
                await storage.put_file(thumb_key, result.thumb_path, content_type="image/jpeg")
                stored.append(thumb_key)
        except BaseException:
            await _delete_objects(storage, stored)
            raise
        return await _create_row(
            deps, storage, stored, user_id=user_id, kind=result.kind, mime=result.mime,
            size=result.size, name=_display_name(filename, result.kind, result.mime),
            storage_key=key, thumb_key=thumb_key, inline=result.inline, width=result.width,
            height=result.height, duration_ms=result.duration_ms)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


async def _spool(body: AsyncIterator[bytes], path: Path) -> None:
    f = await _on_disk(open, path, "wb")
    try:
        buf = bytearray()
        async for chunk in body:
            buf += chunk
            if len(buf) >= SPOOL_BUFFER:
                data, buf = bytes(buf), bytearray()
                await _on_disk(f.write, data)
        if buf:
            await _on_disk(f.write, bytes(buf))
    except BaseException:
        with contextlib.suppress(OSError):  # the first failure is the one to report
            await asyncio.to_thread(f.close)
        raise
    await _on_disk(f.close)  # a full disk may show only when the last block is flushed


async def _on_disk(call, *args):
    """A file operation on the spool; its disk failing (full, gone) is the
    media storage's outage, not a bug (nor the client's connection, whose
    errors come from `body`)."""
    try:
        return await asyncio.to_thread(call, *args)
    except OSError as exc:
        raise StorageError(f"cannot spool an upload: {exc}") from exc


async def _stored_bytes(user_id) -> int:
    rows = await Media.filter(uploader_id=user_id).annotate(total=Sum("size")).values("total")
    return int((rows[0]["total"] if rows else 0) or 0)


async def _check_quota(deps: Deps, user_id, adding: int) -> None:
    """MEDIA_QUOTA_BYTES: what the user's uploads still stored add up to. Uploads
    running at the same moment can pass it together by at most their own size."""
    quota = deps.settings.media_quota_bytes
    if quota <= 0:
        return
    used = await _stored_bytes(user_id)
    if used + adding > quota or (adding == 0 and used >= quota):
        # Space comes back when unsent uploads are swept (ORPHAN_MEDIA_TTL).
        raise RateLimited(
            retry_after=deps.settings.orphan_media_ttl,
            message="Your media storage quota is used up.")


async def _charge(deps: Deps, user_id, size: int) -> None:
    """The day's upload bytes and the stored-bytes quota, once the size is known."""
    await deps.limiter.hit(f"upload_bytes:{user_id}",
                           Limit(deps.settings.upload_bytes_per_day, 86400), cost=size)
    await _check_quota(deps, user_id, size)


async def _create_row(deps: Deps, storage: Storage, keys: list[str], **fields) -> Media:
    try:
        await _charge(deps, fields["user_id"], fields["size"])
        return await Media.create(id=uuid.uuid4(), uploader_id=fields.pop("user_id"),
                                  **fields)
    except BaseException:
        await _delete_objects(storage, keys)
        raise


async def _delete_objects(storage: Storage, keys) -> None:
    for key in keys:
        if not key:
            continue
        try:
            await storage.delete(key)
        except Exception:
            log.exception("could not delete media object", extra={"fields": {"key": key}})


# --- downloading --------------------------------------------------------------


@dataclass
class Download:
    """An authorised object to send; the transport writes the HTTP response."""

    storage: Storage
    key: str
    mime: str
    disposition: str
    size: int | None  # known for content; thumbnails ask the storage

    @property
    def local_path(self) -> Path | None:
        return self.storage.local_path(self.key)

    async def total_size(self) -> int:
        return self.size if self.size is not None else await self.storage.size(self.key)

    async def open(self, start: int, end: int) -> RangeStream:
        return await self.storage.open_range(self.key, start, end)


async def open_download(deps: Deps, media_id: str, variant: str, *, user_id=None,
                        exp: str | None = None, sig: str | None = None,
                        link_user: str | None = None) -> Download:
    """Authorise a download by signed link (exp+u+sig) or by the caller's identity.

    A link is checked twice: its signature, then whether the user it was issued
    to may still see the media (a recall, a removal or leaving ends that at once).
    """
    if variant not in VARIANTS:
        raise NotFound(NO_SUCH_MEDIA)
    mid = str(_parse_id(media_id))
    if exp is not None or sig is not None:
        media = await viewable(check_link(deps.settings, mid, variant, exp, sig, link_user),
                               mid)
    elif user_id is None:
        raise Unauthorized()
    else:
        media = await viewable(user_id, mid)
    storage = storage_of(deps)
    if variant == "content":
        return Download(storage, media.storage_key, media.mime,
                        content_disposition(media.name, inline=media.inline), media.size)
    if media.thumb_key is None:
        raise NotFound("This media has no thumbnail.")
    stem = media.name.rsplit(".", 1)[0] if "." in media.name else media.name
    return Download(storage, media.thumb_key, "image/jpeg",
                    content_disposition(f"{stem}-thumbnail.jpg", inline=True), None)


# --- orphans -------------------------------------------------------------------


async def delete_orphans(deps: Deps, older_than: float | timedelta) -> int:
    """Delete uploads no stored message carries, uploaded (and last attached) more
    than `older_than` ago. Returns how many were deleted. Safe to run concurrently
    from several processes."""
    if not isinstance(older_than, timedelta):
        older_than = timedelta(seconds=older_than)
    cutoff = now() - older_than
    storage = storage_of(deps)
    candidates = await Media.filter(kept=False, created_at__lt=cutoff).filter(
        Q(last_attached_at=None) | Q(last_attached_at__lt=cutoff)
    ).order_by("created_at").limit(SWEEP_BATCH)
    deleted = 0
    for media in candidates:
        carried = False
        for att in await MediaAttachment.filter(media_id=media.id):
            if await _carrying_message(att, media.id) is not None:
                carried = True
                break
        if carried:
            await Media.filter(id=media.id).update(kept=True)
            continue
        # Only if nobody attached it since we looked (see attach_to_message).
        gone = await Media.filter(id=media.id, kept=False,
                                  last_attached_at=media.last_attached_at).delete()
        if not gone:
            continue
        await MediaAttachment.filter(media_id=media.id).delete()
        await _delete_objects(storage, [media.storage_key, media.thumb_key])
        deleted += 1
    return deleted


async def cleanup_media_once(settings: Settings) -> int:
    """`python -m app cleanup-media`: one sweep outside the server."""
    from app.db import init_db

    ctx = await init_db(settings.database_url)
    deps = Deps(settings=settings)
    deps.extras["storage"] = storage = build_storage(settings)
    try:
        return await delete_orphans(deps, settings.orphan_media_ttl)
    finally:
        await storage.aclose()
        await ctx.close_connections()
