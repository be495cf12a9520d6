"""One call that turns an uploaded temp file into something safe to store and serve.

Intended use by the upload handler (no web framework code here)::

    # 1. stream the multipart body into a local spool file, counting bytes
    #    (raise TooLarge past the byte cap for the declared kind)
    # 2. result = await process_upload(spool_path, work_dir, declared_kind=kind,
    #                                  limits=MediaLimits(...))
    # 3. await storage.put_file(key, result.path, content_type=result.mime)
    #    if result.thumb_path: await storage.put_file(derive_key(key, "thumb.jpg"), ...)
    # 4. persist kind/mime/size/width/height/duration_ms/inline; delete work files

``result.path`` is the file to store: the re-encoded image for ``image`` (never the
original bytes), the original file for ``voice``/``video``/``file``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from .avprobe import DEFAULT_MAX_VIDEO_PIXELS, probe_audio, probe_streams, probe_video
from .errors import InvalidMedia
from .image import process_image
from .sniff import Sniffed, decide_kind, sniff_file

_EXT = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp",
    "image/bmp": ".bmp", "image/avif": ".avif", "image/heic": ".heic",
    "audio/webm": ".webm", "audio/ogg": ".ogg", "audio/mp4": ".m4a", "audio/mpeg": ".mp3",
    "audio/wav": ".wav", "audio/flac": ".flac", "audio/aac": ".aac",
    "audio/x-matroska": ".mka", "video/webm": ".webm", "video/mp4": ".mp4",
    "video/quicktime": ".mov", "video/x-matroska": ".mkv", "application/pdf": ".pdf",
    "application/zip": ".zip", "application/gzip": ".gz", "text/plain": ".txt",
}


def extension_for(mime: str) -> str:
    """Conventional extension (with dot) for a MIME type we produce, or ``""``."""
    return _EXT.get(mime, "")


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """Content limits (byte caps are enforced while streaming, not here)."""

    max_image_pixels: int = 50_000_000
    max_image_side: int | None = None   # downscale stored images beyond this (px)
    max_voice_ms: int | None = 60_000
    max_video_ms: int | None = None
    max_video_pixels: int = DEFAULT_MAX_VIDEO_PIXELS
    thumb_size: int = 320


@dataclass(frozen=True, slots=True)
class ProcessedMedia:
    kind: str                 # image | voice | video | file
    mime: str                 # type to serve the stored object with
    path: Path                # file to store (re-encoded image, or the original)
    size: int                 # bytes of ``path``
    inline: bool              # may be served with Content-Disposition: inline
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    thumb_path: Path | None = None   # JPEG thumbnail (image) / poster (video)
    sniffed: Sniffed | None = None


def process_upload_sync(src_path: str | os.PathLike, work_dir: str | os.PathLike, *,
                        declared_kind: str | None = None,
                        limits: MediaLimits = MediaLimits()) -> ProcessedMedia:
    """Sniff, decide the kind, validate/re-encode. Blocking; see :func:`process_upload`.

    Derived files are written into ``work_dir`` (``image.jpg``/``image.png``,
    ``thumb.jpg``, ``poster.jpg``); the caller owns and cleans that directory.
    """
    src = Path(src_path)
    work = Path(work_dir)
    sniffed = sniff_file(src)
    kind = decide_kind(declared_kind, sniffed)

    if kind == "image":
        tmp_out = work / "image.out"
        thumb = work / "thumb.jpg"
        w, h, mime = process_image(src, tmp_out, thumb, max_pixels=limits.max_image_pixels,
                                   thumb_size=limits.thumb_size,
                                   max_side=limits.max_image_side)
        out = tmp_out.rename(work / ("image" + extension_for(mime)))
        return ProcessedMedia("image", mime, out, out.stat().st_size, True, w, h,
                              thumb_path=thumb, sniffed=sniffed)

    if kind in ("voice", "video") and sniffed.needs_probe and declared_kind in (None, ""):
        streams = probe_streams(src)
        if streams.has_video:
            kind = "video"
        elif streams.has_audio:
            kind = "voice"
        else:
            raise InvalidMedia("The file has neither audio nor video.")

    size = src.stat().st_size
    if kind == "voice":
        info = probe_audio(src, max_duration_ms=limits.max_voice_ms)
        return ProcessedMedia("voice", info.mime, src, size, True,
                              duration_ms=info.duration_ms, sniffed=sniffed)
    if kind == "video":
        poster = work / "poster.jpg"
        v = probe_video(src, poster, max_duration_ms=limits.max_video_ms,
                        max_pixels=limits.max_video_pixels, poster_size=limits.thumb_size)
        return ProcessedMedia("video", v.mime, src, size, True, v.width, v.height,
                              v.duration_ms, thumb_path=poster, sniffed=sniffed)
    # plain file: stored untouched, always an attachment
    return ProcessedMedia("file", sniffed.mime, src, size, False, sniffed=sniffed)


async def process_upload(src_path: str | os.PathLike, work_dir: str | os.PathLike, *,
                         declared_kind: str | None = None,
                         limits: MediaLimits = MediaLimits()) -> ProcessedMedia:
    """Async wrapper of :func:`process_upload_sync` (runs in a worker thread).

    Raises :class:`~app.media.errors.InvalidMedia` or :class:`~app.media.errors.TooLarge`.
    """
    return await asyncio.to_thread(process_upload_sync, src_path, work_dir,
                                   declared_kind=declared_kind, limits=limits)
