"""Avatars of people and groups.

An upload goes through the media pipeline's rules: the bytes decide (only
images are taken), the picture is decoded and re-encoded in the image decoder's
worker processes (metadata, EXIF included, is dropped after its orientation is
applied), cut to the centred square and written as 64, 160 and 640 px JPEGs.

Objects are stored under ``avatars/<key>/<size>.jpg`` with a fresh random key
per upload, so an avatar URL never changes content and can be cached for good.
Avatars are public like a profile picture: whoever is shown the person or group
gets the URL, and the URL needs no token (an <img> cannot send one); the key is
unguessable.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from app.deps import Deps
from app.errors import NotFound
from app.media import SNIFF_BYTES, InvalidMedia, TooLarge, sniff
from app.media.image import AVATAR_SIZES, decode_cost, process_avatar
from app.media.pipeline import image_header
from app.ratelimit import Limit
from app.storage import Storage

AVATAR_PATH = "/api/v1/avatars"
DEFAULT_SIZE = 160
_KEY_RE = re.compile(r"^[0-9a-f]{32}$")


def avatar_urls(key: str | None) -> dict | None:
    """{"64": url, "160": url, "640": url} (paths on this server), or None."""
    if not key:
        return None
    return {str(size): f"{AVATAR_PATH}/{key}/{size}.jpg" for size in AVATAR_SIZES}


def avatar_url(key: str | None) -> str | None:
    return f"{AVATAR_PATH}/{key}/{DEFAULT_SIZE}.jpg" if key else None


def _object_key(key: str, size: int) -> str:
    return f"avatars/{key}/{size}.jpg"


def _storage(deps: Deps) -> Storage:
    from app.services.media import storage_of

    return storage_of(deps)


async def store_avatar(deps: Deps, user_id: str, chunks: AsyncIterator[bytes],
                       content_length: int | None = None) -> str:
    """Process one uploaded picture and store its sizes; returns the new key.

    Counts against the uploader's upload rate like any media upload.
    """
    s = deps.settings
    cap = s.max_image_bytes
    if content_length is not None and content_length > cap + 64 * 1024:
        raise TooLarge("The picture is too large.", limit="bytes", max_value=cap)
    await deps.limiter.hit(f"upload:{user_id}", Limit.parse(s.upload_rate_limit))
    work = Path(s.media_root) / ".spool" / uuid.uuid4().hex
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    try:
        src = work / "upload"
        size = 0
        head = bytearray()
        f = await asyncio.to_thread(open, src, "wb")
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > cap:
                    raise TooLarge("The picture is too large.", limit="bytes", max_value=cap)
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                await asyncio.to_thread(f.write, chunk)
        finally:
            await asyncio.to_thread(f.close)
        if not size:
            raise InvalidMedia("The file is empty.")
        if sniff(bytes(head)).kind != "image":
            raise InvalidMedia("An avatar must be a picture (JPEG, PNG, GIF, WebP…).")
        dims, mode = await asyncio.to_thread(image_header, src, s.max_image_pixels)
        decoder = deps.extras.get("image_decoder")
        if decoder is not None:
            await decoder.run(process_avatar, str(src), str(work), cost=decode_cost(dims, mode),
                              max_pixels=s.max_image_pixels)
        else:
            await asyncio.to_thread(process_avatar, src, work, max_pixels=s.max_image_pixels)
        key = uuid.uuid4().hex
        storage = _storage(deps)
        stored: list[str] = []
        try:
            for px in AVATAR_SIZES:
                await storage.put_file(_object_key(key, px), work / f"{px}.jpg",
                                       content_type="image/jpeg")
                stored.append(_object_key(key, px))
        except BaseException:
            await _delete(storage, stored)
            raise
        return key
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


async def delete_avatar(deps: Deps, key: str | None) -> None:
    if key:
        await _delete(_storage(deps), [_object_key(key, px) for px in AVATAR_SIZES])


async def _delete(storage: Storage, keys: list[str]) -> None:
    for k in keys:
        try:
            await storage.delete(k)
        except Exception:  # a leftover object is harmless; the row no longer names it
            pass


def object_for(key: str, size_name: str) -> str:
    """The storage key behind /avatars/{key}/{size}.jpg; NotFound for anything else."""
    size = size_name.removesuffix(".jpg")
    if not _KEY_RE.match(key) or not size.isdigit() or int(size) not in AVATAR_SIZES:
        raise NotFound("No such avatar.")
    return _object_key(key, int(size))
