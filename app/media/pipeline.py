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
import contextlib
import ctypes
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .avprobe import DEFAULT_MAX_VIDEO_PIXELS, probe_audio, probe_streams, probe_video
from .errors import InvalidMedia, MediaError, TooLarge
from .image import _open, decode_cost, process_image
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
        return _image_media(work, tmp_out, thumb, w, h, mime, sniffed)

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


def _image_media(work: Path, tmp_out: Path, thumb: Path, w: int, h: int, mime: str,
                 sniffed: Sniffed) -> ProcessedMedia:
    out = tmp_out.rename(work / ("image" + extension_for(mime)))
    return ProcessedMedia("image", mime, out, out.stat().st_size, True, w, h,
                          thumb_path=thumb, sniffed=sniffed)


async def process_upload(src_path: str | os.PathLike, work_dir: str | os.PathLike, *,
                         declared_kind: str | None = None,
                         limits: MediaLimits = MediaLimits(),
                         decoder: ImageDecoder | None = None) -> ProcessedMedia:
    """Async wrapper of :func:`process_upload_sync` (runs in a worker thread).

    With a `decoder`, images are decoded through it (worker processes, bounded
    memory) instead of in a thread of this process.

    Raises :class:`~app.media.errors.InvalidMedia` or :class:`~app.media.errors.TooLarge`.
    """
    if decoder is not None:
        src, work = Path(src_path), Path(work_dir)
        sniffed = await asyncio.to_thread(sniff_file, src)
        if decide_kind(declared_kind, sniffed) == "image":
            size, mode = await asyncio.to_thread(image_header, src, limits.max_image_pixels)
            tmp_out, thumb = work / "image.out", work / "thumb.jpg"
            w, h, mime = await decoder.run(
                process_image, str(src), str(tmp_out), str(thumb),
                cost=decode_cost(size, mode), max_pixels=limits.max_image_pixels,
                thumb_size=limits.thumb_size, max_side=limits.max_image_side)
            return _image_media(work, tmp_out, thumb, w, h, mime, sniffed)
    return await asyncio.to_thread(process_upload_sync, src_path, work_dir,
                                   declared_kind=declared_kind, limits=limits)


def image_header(src: Path, max_pixels: int) -> tuple[tuple[int, int], str]:
    """Size and mode from the header only (bombs are refused here, undecoded)."""
    with _open(src, max_pixels) as img:
        return img.size, img.mode


# --- decoding images in worker processes ---------------------------------------------


def _child_init() -> None:
    """Give freed pixel memory back to the system at once: with glibc's dynamic
    mmap threshold, big image blocks would otherwise stay in the heap."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD


def _run_job(fn, args, kw):
    """In the worker: media errors travel back as plain data (they do not pickle)."""
    try:
        return ("ok", tuple(fn(*args, **kw)))
    except MediaError as e:
        return ("error", "too_large" if isinstance(e, TooLarge) else "invalid",
                e.message, e.details)


class ImageDecoder:
    """Decodes images in a pool of worker processes, bounded twice: at most
    `workers` at once, and their estimated peak memory (image.decode_cost) within
    `memory_budget` bytes together. An image that alone needs more than the
    budget is refused before decoding; the others wait for room.

    Worker processes keep the server's own memory flat (what a decode takes is
    returned when a worker is recycled, after `tasks_per_child` images), and a
    decoder crash on a hostile file costs a worker, not the server.
    """

    def __init__(self, workers: int, memory_budget: int, tasks_per_child: int = 50) -> None:
        self.workers = max(1, workers)
        self.memory_budget = memory_budget
        self.tasks_per_child = tasks_per_child
        self._free = memory_budget
        self._freed: asyncio.Event | None = None  # set (and replaced) on every release
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_init, max_tasks_per_child=self.tasks_per_child)
        return self._pool

    async def run(self, fn, *args, cost: int, **kw):
        if cost > self.memory_budget:
            raise TooLarge("The image is too large to process.", limit="decode_memory",
                           max_value=self.memory_budget)
        while self._free < cost:
            if self._freed is None:
                self._freed = asyncio.Event()
            await self._freed.wait()
        self._free -= cost
        loop = asyncio.get_running_loop()
        try:
            fut = loop.run_in_executor(self._executor(), partial(_run_job, fn, args, kw))
        except BaseException:
            self._release(cost)
            raise
        # The memory is given back when the worker is done, even if the caller
        # stops waiting (a client that hung up does not free the worker).
        fut.add_done_callback(lambda _f: self._release(cost))
        try:
            status, *rest = await asyncio.shield(fut)
        except BrokenProcessPool:
            # A worker died (a crashed decoder): start afresh next time.
            self.close()
            raise InvalidMedia("The image could not be decoded.") from None
        if status == "ok":
            return rest[0]
        kind, message, details = rest
        if kind == "too_large":
            raise TooLarge(message, details=details)
        raise InvalidMedia(message, details=details)

    def _release(self, cost: int) -> None:
        self._free += cost
        if self._freed is not None:
            self._freed.set()  # every waiter looks again
            self._freed = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
