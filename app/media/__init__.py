"""Media handling: content sniffing, image re-encoding, voice/video probing, safe names.

Pure library code (no web framework). Public API::

    sniff(head: bytes) -> Sniffed(mime, kind, container, candidates, inline)
    sniff_file(path) -> Sniffed
    decide_kind(declared: str | None, sniffed: Sniffed) -> str        # InvalidMedia
    process_image(src, out, thumb, *, max_pixels, thumb_size=320)
        -> ImageResult(width, height, mime)                            # InvalidMedia, TooLarge
    probe_audio(path, *, max_duration_ms=60_000) -> AudioInfo(duration_ms, mime)
    probe_video(path, poster_path, *, max_duration_ms=None, max_pixels=..., poster_size=320)
        -> VideoInfo(duration_ms, width, height, mime)
    probe_streams(path) -> StreamInfo(container, has_audio, has_video)
    process_upload(src, work_dir, *, declared_kind=None, limits=MediaLimits())
        -> ProcessedMedia                                             # async, whole pipeline
    safe_filename(name) -> str;  content_disposition(name, *, inline=False) -> str

Blocking functions have ``*_async`` twins that run them in a worker thread.
Errors: :class:`InvalidMedia` (code ``invalid_media``), :class:`TooLarge` (``too_large``),
both :class:`MediaError` and part of :mod:`app.errors`' ``DomainError`` family.
"""

from .avprobe import (
    AudioInfo,
    StreamInfo,
    VideoInfo,
    probe_audio,
    probe_audio_async,
    probe_streams,
    probe_video,
    probe_video_async,
)
from .errors import InvalidMedia, MediaError, TooLarge
from .filenames import ascii_filename, content_disposition, safe_filename
from .image import ImageResult, image_size, process_image, process_image_async
from .pipeline import (
    ImageDecoder,
    MediaLimits,
    ProcessedMedia,
    extension_for,
    process_upload,
    process_upload_sync,
)
from .sniff import KINDS, SNIFF_BYTES, Sniffed, decide_kind, sniff, sniff_file

__all__ = [
    "KINDS", "SNIFF_BYTES", "AudioInfo", "ImageDecoder", "ImageResult", "InvalidMedia", "MediaError",
    "MediaLimits", "ProcessedMedia", "Sniffed", "StreamInfo", "TooLarge", "VideoInfo",
    "ascii_filename", "content_disposition", "decide_kind", "extension_for", "image_size",
    "probe_audio", "probe_audio_async", "probe_streams", "probe_video", "probe_video_async",
    "process_image", "process_image_async", "process_upload", "process_upload_sync",
    "safe_filename", "sniff", "sniff_file",
]
