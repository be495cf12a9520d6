"""Voice-note and video probing with PyAV (FFmpeg).

* :func:`probe_audio` — validates a voice note and returns ``(duration_ms, mime)``.
  Accepted: what browsers/phones record — WebM/Opus, Ogg/Opus (and Vorbis), MP4/M4A with
  AAC, MP3, plus WAV and FLAC. Rejected with :class:`InvalidMedia`: no audio stream, a
  real video stream (send it as a video), an unsupported codec, or audio that does not
  decode. Longer than ``max_duration_ms`` (+ :data:`DURATION_GRACE_MS`) →
  :class:`TooLarge` with ``details["limit"] == "duration"``.
* :func:`probe_video` — validates a video (H.264/HEVC/VP8/VP9/AV1/MPEG-4 Part 2 in
  MP4/MOV/WebM/Matroska), returns ``(duration_ms, width, height, mime)`` and writes a
  JPEG poster of the first decodable frame (longest side ≤ ``poster_size``).

Safety
------
* FFmpeg never guesses the container: the demuxer is chosen from our own magic-byte
  sniffing (``mov``, ``matroska``, ``ogg``, ``mp3``, ``wav``, ``flac``, ``aac``), so
  playlist/reference formats (HLS, concat, …) that could read other files or URLs are
  never used.
* Durations are measured by demuxing packets (no decoding), so a missing or lying
  header duration (MediaRecorder WebM has none) is handled; scanning stops as soon as
  the limit is exceeded. Only the first frame is decoded.

The functions are blocking; use the ``*_async`` wrappers (``asyncio.to_thread``) from
async code.
"""

from __future__ import annotations

import asyncio
import os
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
from PIL import Image

from .errors import InvalidMedia, TooLarge
from .sniff import sniff_file

DEFAULT_MAX_VOICE_MS = 60_000
DURATION_GRACE_MS = 500
DEFAULT_POSTER_SIZE = 320
DEFAULT_MAX_VIDEO_PIXELS = 8192 * 4320
MAX_DECODE_PACKETS = 256  # give up finding a first frame after this many packets

AUDIO_CODECS = frozenset({"opus", "vorbis", "aac", "mp3", "flac"})
VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4"})

# container family (from sniff) -> (ffmpeg demuxer, audio mime, video mime or None)
_CONTAINERS: dict[str, tuple[str, str, str | None]] = {
    "webm": ("matroska", "audio/webm", "video/webm"),
    "matroska": ("matroska", "audio/x-matroska", "video/x-matroska"),
    "mp4": ("mov", "audio/mp4", "video/mp4"),
    "mov": ("mov", "audio/mp4", "video/quicktime"),
    "ogg": ("ogg", "audio/ogg", None),
    "mp3": ("mp3", "audio/mpeg", None),
    "wav": ("wav", "audio/wav", None),
    "flac": ("flac", "audio/flac", None),
    "aac": ("aac", "audio/aac", None),
}


class AudioInfo(NamedTuple):
    duration_ms: int
    mime: str


class VideoInfo(NamedTuple):
    duration_ms: int
    width: int
    height: int
    mime: str


class StreamInfo(NamedTuple):
    """Which streams a container has (see :func:`probe_streams`)."""

    container: str
    has_audio: bool
    has_video: bool


def _codec_name(stream) -> str:
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


def _is_attached_pic(stream) -> bool:
    try:
        return bool(int(stream.disposition) & int(av.stream.Disposition.attached_pic))
    except Exception:
        return False


def _open(path: str | os.PathLike):
    sniffed = sniff_file(path)
    spec = _CONTAINERS.get(sniffed.container)
    if spec is None:
        raise InvalidMedia("The file is not a supported audio or video format.",
                           details={"detected": sniffed.mime})
    try:
        container = av.open(os.fspath(path), mode="r", format=spec[0],
                            metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InvalidMedia("The media file cannot be read.") from e
    return sniffed.container, spec, container


def _real_video_streams(container) -> list:
    return [s for s in container.streams.video if not _is_attached_pic(s)]


def probe_streams(path: str | os.PathLike) -> StreamInfo:
    """Cheap check: does the A/V container hold audio and/or (real) video streams?

    Used to decide voice vs video when the client did not say. Raises ``InvalidMedia``
    for anything that is not a supported A/V container.
    """
    family, _spec, container = _open(path)
    with container:
        return StreamInfo(family, bool(container.streams.audio),
                          bool(_real_video_streams(container)))


def _scan(container, primary, max_ms: int | None, *, want_frame: bool):
    """Demux every audio/video packet; return (duration_ms, first decoded frame or None).

    Raises TooLarge as soon as the measured duration exceeds ``max_ms`` + grace.
    """
    streams = [s for s in container.streams if s.type in ("audio", "video")
               and not _is_attached_pic(s)]
    start: Fraction | None = None
    end: Fraction | None = None
    frame = None
    decoded_any = False
    tried = 0
    limit = None if max_ms is None else Fraction(max_ms + DURATION_GRACE_MS, 1000)
    try:
        for packet in container.demux(streams):
            if packet.pts is not None and packet.time_base is not None:
                t0 = packet.pts * packet.time_base
                t1 = (packet.pts + (packet.duration or 0)) * packet.time_base
                start = t0 if start is None else min(start, t0)
                end = t1 if end is None else max(end, t1)
                if limit is not None and end - start > limit:
                    raise TooLarge("The recording is too long.", limit="duration",
                                   max_value=max_ms)
            if packet.stream is primary and not decoded_any and tried < MAX_DECODE_PACKETS:
                tried += 1
                for f in packet.decode():
                    decoded_any = True
                    if want_frame:
                        frame = f
                    break
        if not decoded_any:
            # flush: decoders with delay (B-frames) emit frames only at the end
            for f in primary.codec_context.decode(None):
                decoded_any = True
                frame = f if want_frame else None
                break
    except TooLarge:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as e:
        if not decoded_any:
            raise InvalidMedia("The media data cannot be decoded.") from e
        # a damaged tail after valid data: keep what we measured so far
    if not decoded_any:
        raise InvalidMedia("The media data cannot be decoded.")
    if start is None or end is None or end <= start:
        # no timestamps at all: fall back to the header
        if container.duration:
            duration_ms = int(container.duration // 1000)
        else:
            raise InvalidMedia("The media duration cannot be determined.")
    else:
        duration_ms = int(round((end - start) * 1000))
    if max_ms is not None and duration_ms > max_ms + DURATION_GRACE_MS:
        raise TooLarge("The recording is too long.", limit="duration", max_value=max_ms)
    return duration_ms, frame


def probe_audio(path: str | os.PathLike, *,
                max_duration_ms: int | None = DEFAULT_MAX_VOICE_MS) -> AudioInfo:
    """Validate a voice note; return ``(duration_ms, mime)``.

    ``max_duration_ms=None`` disables the duration limit.
    """
    family, spec, container = _open(path)
    with container:
        if _real_video_streams(container):
            raise InvalidMedia("A voice message must not contain video.")
        if not container.streams.audio:
            raise InvalidMedia("The file has no audio.")
        stream = container.streams.audio[0]
        codec = _codec_name(stream)
        if codec not in AUDIO_CODECS and not codec.startswith("pcm_"):
            raise InvalidMedia(f"Unsupported audio codec {codec!r}.",
                               details={"codec": codec})
        duration_ms, _ = _scan(container, stream, max_duration_ms, want_frame=False)
    if duration_ms <= 0:
        raise InvalidMedia("The recording is empty.")
    return AudioInfo(duration_ms, spec[1])


def _rotation(frame, stream) -> int:
    rot = getattr(frame, "rotation", 0) or 0
    return int(round(rot)) % 360


def probe_video(
    path: str | os.PathLike,
    poster_path: str | os.PathLike | None,
    *,
    max_duration_ms: int | None = None,
    max_pixels: int = DEFAULT_MAX_VIDEO_PIXELS,
    poster_size: int = DEFAULT_POSTER_SIZE,
) -> VideoInfo:
    """Validate a video; return ``(duration_ms, width, height, mime)`` and write a JPEG
    poster (first decodable frame, longest side ≤ ``poster_size``) to ``poster_path``.

    Width/height are the *display* size (rotation metadata applied, e.g. portrait phone
    videos). ``max_duration_ms=None`` means no duration limit.
    """
    family, spec, container = _open(path)
    if spec[2] is None:
        container.close()
        raise InvalidMedia("The file is not a video.")
    with container:
        streams = _real_video_streams(container)
        if not streams:
            raise InvalidMedia("The file has no video.")
        stream = streams[0]
        codec = _codec_name(stream)
        if codec not in VIDEO_CODECS:
            raise InvalidMedia(f"Unsupported video codec {codec!r}.", details={"codec": codec})
        for a in container.streams.audio:
            acodec = _codec_name(a)
            if acodec not in AUDIO_CODECS and not acodec.startswith("pcm_"):
                raise InvalidMedia(f"Unsupported audio codec {acodec!r}.",
                                   details={"codec": acodec})
        cw, ch = stream.codec_context.width, stream.codec_context.height
        if not cw or not ch:
            raise InvalidMedia("The video has no picture size.")
        if cw * ch > max_pixels:
            raise TooLarge("The video resolution is too large.", limit="pixels",
                           max_value=max_pixels)
        duration_ms, frame = _scan(container, stream, max_duration_ms, want_frame=True)
        rotation = _rotation(frame, stream)
        try:
            img = frame.to_image()
        except Exception as e:  # pragma: no cover - exotic pixel formats
            raise InvalidMedia("The video frame cannot be converted.") from e
    width, height = img.size
    if rotation:
        # FFmpeg's rotation is counter-clockwise degrees to apply for display
        img = img.rotate(rotation, expand=True)
        width, height = img.size
    if poster_path is not None:
        img = img.convert("RGB")
        img.thumbnail((poster_size, poster_size), Image.Resampling.LANCZOS)
        img.save(Path(poster_path), format="JPEG", quality=80, optimize=True)
    return VideoInfo(duration_ms, width, height, spec[2])


async def probe_audio_async(path: str | os.PathLike, *,
                            max_duration_ms: int | None = DEFAULT_MAX_VOICE_MS) -> AudioInfo:
    return await asyncio.to_thread(probe_audio, path, max_duration_ms=max_duration_ms)


async def probe_video_async(
    path: str | os.PathLike,
    poster_path: str | os.PathLike | None,
    *,
    max_duration_ms: int | None = None,
    max_pixels: int = DEFAULT_MAX_VIDEO_PIXELS,
    poster_size: int = DEFAULT_POSTER_SIZE,
) -> VideoInfo:
    return await asyncio.to_thread(
        probe_video, path, poster_path, max_duration_ms=max_duration_ms,
        max_pixels=max_pixels, poster_size=poster_size,
    )
