"""Content sniffing: decide what an upload *really* is from its first bytes.

The file name and the ``Content-Type`` sent by the client are never consulted. Feed
:func:`sniff` at least :data:`SNIFF_BYTES` bytes from the start of the file (fewer is
fine for short files).

Kinds
-----
``image`` | ``voice`` | ``video`` | ``file``. Audio/video containers (WebM/Matroska,
MP4/MOV, Ogg) can hold either audio only or audio+video; for those
:attr:`Sniffed.candidates` has more than one kind and the final decision is made after
probing the streams (:func:`app.media.pipeline.process_upload` does that).

Markup is never renderable
--------------------------
HTML, SVG, XML and anything that *looks* like markup in its first bytes is classified as
``kind="file"`` with ``mime="application/octet-stream"`` and ``inline=False``: it must be
served as an attachment (and always with ``X-Content-Type-Options: nosniff``), so a
browser can never execute it on our origin. Other text is ``text/plain`` (also served as
an attachment). Only media that the server re-encodes (images) or probes (voice/video)
is ``inline``-safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KINDS = ("image", "voice", "video", "file")
SNIFF_BYTES = 8192

OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Sniffed:
    """Result of :func:`sniff`.

    ``mime``: best MIME type from magic bytes (for A/V containers the video flavour,
    refined after probing). ``kind``: most likely kind. ``candidates``: every kind the
    bytes may legitimately be used as (``file`` is always allowed and not listed).
    ``container``: short family name (``jpeg``, ``png``, ``webm``, ``mp4``, ``ogg`` …,
    ``text``, ``markup`` or ``unknown``). ``inline``: may be displayed inline by a
    browser once processed (never for markup/text/unknown/documents).
    """

    mime: str
    kind: str
    container: str = "unknown"
    candidates: frozenset[str] = field(default_factory=frozenset)
    inline: bool = False

    @property
    def needs_probe(self) -> bool:
        """True when voice vs video must be decided from the streams."""
        return len(self.candidates) > 1


def _image(mime: str, container: str) -> Sniffed:
    return Sniffed(mime, "image", container, frozenset({"image"}), True)


def _audio(mime: str, container: str) -> Sniffed:
    return Sniffed(mime, "voice", container, frozenset({"voice"}), True)


def _av(mime: str, container: str, default_kind: str = "video") -> Sniffed:
    return Sniffed(mime, default_kind, container, frozenset({"voice", "video"}), True)


def _file(mime: str, container: str) -> Sniffed:
    return Sniffed(mime, "file", container, frozenset(), False)


# ISO BMFF (ftyp) brands
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_M4A_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_QT_BRANDS = {b"qt  "}

_MARKUP_RE = re.compile(
    rb"<\s*(?:!doctype|html|head|body|script|svg|iframe|object|embed|meta|link|style|"
    rb"xml|\?xml|!--|a\s|img|div|span|title|math|form|base|table|p\b|h1|br\b)",
    re.IGNORECASE,
)


def _avif_supported() -> bool:
    try:
        from PIL import features

        return bool(features.check("avif"))
    except Exception:  # pragma: no cover - Pillow always importable here
        return False


def _sniff_ftyp(head: bytes) -> Sniffed | None:
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    box_len = int.from_bytes(head[0:4], "big")
    major = head[8:12]
    brands = {major}
    # compatible brands follow the minor version (4 bytes)
    end = min(box_len if 16 <= box_len <= 4096 else 16, len(head))
    for i in range(16, end - 3, 4):
        brands.add(head[i : i + 4])
    if major in _AVIF_BRANDS or (brands & _AVIF_BRANDS and not brands & _M4A_BRANDS):
        if _avif_supported():
            return _image("image/avif", "avif")
        return _file("image/avif", "avif")
    if major in _HEIF_BRANDS:
        # Pillow cannot decode HEIC without a plugin: accepted as a plain file only.
        return _file("image/heic", "heic")
    if major in _M4A_BRANDS:
        return _audio("audio/mp4", "mp4")
    if major in _QT_BRANDS:
        return Sniffed("video/quicktime", "video", "mov", frozenset({"video"}), True)
    return _av("video/mp4", "mp4")


def _sniff_ebml(head: bytes) -> Sniffed | None:
    if not head.startswith(b"\x1a\x45\xdf\xa3"):
        return None
    # DocType element: id 0x4282, then a 1-byte size (0x80 | len), then the string.
    i = head.find(b"\x42\x82", 4, 64)
    if i != -1 and i + 3 <= len(head):
        n = head[i + 2] & 0x7F
        doctype = head[i + 3 : i + 3 + n]
        if doctype == b"webm":
            return _av("video/webm", "webm")
        if doctype == b"matroska":
            return _av("video/x-matroska", "matroska")
    return _file(OCTET_STREAM, "ebml")


def _sniff_ogg(head: bytes) -> Sniffed | None:
    if not head.startswith(b"OggS"):
        return None
    first_page = head[:512]
    if b"OpusHead" in first_page or b"\x01vorbis" in first_page or b"\x7fFLAC" in first_page:
        return _audio("audio/ogg", "ogg")
    if b"\x80theora" in first_page:
        # Theora is not something browsers record; treat as a file.
        return _file("video/ogg", "ogg")
    return _file(OCTET_STREAM, "ogg")


def _mpeg_audio_frame(head: bytes) -> str | None:
    """Return 'mp3' for an MPEG audio frame header, 'aac' for ADTS, else None."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    layer = (head[1] >> 1) & 0x03
    if layer == 0:
        # ADTS: 12-bit sync, layer must be 00
        if head[1] & 0xF6 == 0xF0 and ((head[2] >> 2) & 0x0F) < 13:
            return "aac"
        return None
    version = (head[1] >> 3) & 0x03
    bitrate = head[2] >> 4
    rate = (head[2] >> 2) & 0x03
    if version == 1 or bitrate in (0, 15) or rate == 3:
        return None
    return "mp3"


def _looks_textual(head: bytes) -> bool:
    if not head:
        return False
    sample = head[:SNIFF_BYTES]
    if b"\x00" in sample:
        # UTF-16 text with a BOM is still text (and may be markup).
        return sample[:2] in (b"\xff\xfe", b"\xfe\xff")
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte sequence cut at the end of the sample is fine
        if e.start < len(sample) - 4:
            return False
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls <= len(sample) // 100


def _looks_like_markup(head: bytes) -> bool:
    sample = head[:SNIFF_BYTES]
    if sample[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            sample = sample.decode("utf-16", errors="ignore").encode("utf-8")
        except Exception:  # pragma: no cover
            return True
    return bool(_MARKUP_RE.search(sample))


def sniff(head: bytes) -> Sniffed:
    """Classify ``head`` (the first bytes of an upload) by magic numbers.

    Never raises. Unknown binary data is ``application/octet-stream`` / ``file``.
    """
    h = bytes(head[:SNIFF_BYTES])
    if h.startswith(b"\xff\xd8\xff"):
        return _image("image/jpeg", "jpeg")
    if h.startswith(b"\x89PNG\r\n\x1a\n"):
        return _image("image/png", "png")
    if h.startswith((b"GIF87a", b"GIF89a")):
        return _image("image/gif", "gif")
    if h.startswith(b"RIFF") and len(h) >= 12:
        sub = h[8:12]
        if sub == b"WEBP":
            return _image("image/webp", "webp")
        if sub == b"WAVE":
            return _audio("audio/wav", "wav")
        return _file(OCTET_STREAM, "riff")
    if h.startswith(b"BM") and len(h) >= 26 and h[6:10] == b"\x00\x00\x00\x00":
        header_size = int.from_bytes(h[14:18], "little")
        if header_size in (12, 40, 52, 56, 64, 108, 124):
            return _image("image/bmp", "bmp")
    for probe in (_sniff_ftyp, _sniff_ebml, _sniff_ogg):
        res = probe(h)
        if res is not None:
            return res
    if h.startswith(b"ID3"):
        return _audio("audio/mpeg", "mp3")
    if h.startswith(b"fLaC"):
        return _audio("audio/flac", "flac")
    frame = _mpeg_audio_frame(h)
    if frame == "mp3":
        return _audio("audio/mpeg", "mp3")
    if frame == "aac":
        return _audio("audio/aac", "aac")
    if h.startswith(b"%PDF-"):
        return _file("application/pdf", "pdf")
    if h.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _file("application/zip", "zip")
    if h.startswith(b"\x1f\x8b"):
        return _file("application/gzip", "gzip")
    if h.startswith(b"7z\xbc\xaf\x27\x1c"):
        return _file("application/x-7z-compressed", "7z")
    if _looks_textual(h):
        if _looks_like_markup(h):
            return _file(OCTET_STREAM, "markup")
        return _file("text/plain", "text")
    return _file(OCTET_STREAM, "unknown")


def sniff_file(path) -> Sniffed:
    """:func:`sniff` the first :data:`SNIFF_BYTES` of the file at ``path``."""
    with open(path, "rb") as f:
        return sniff(f.read(SNIFF_BYTES))


def decide_kind(declared: str | None, sniffed: Sniffed) -> str:
    """Combine the kind the client claims (optional) with what the bytes are.

    * ``declared is None`` → ``sniffed.kind`` (for A/V containers this is provisional:
      probe the streams to choose voice vs video).
    * ``declared == "file"`` → ``"file"`` (anything may be sent as a document; it is
      stored untouched and served as an attachment).
    * ``image``/``voice``/``video`` → returned only if the bytes can be that kind,
      otherwise :class:`~app.media.errors.InvalidMedia`.

    Decoding is verified later (``process_image`` / ``probe_audio`` / ``probe_video``),
    which raise ``InvalidMedia`` if the bytes only *start* like the claimed format.
    """
    from .errors import InvalidMedia

    if declared is None or declared == "":
        return sniffed.kind
    if declared not in KINDS:
        raise InvalidMedia(f"Unknown media kind {declared!r}.", details={"kind": declared})
    if declared == "file":
        return "file"
    if declared in sniffed.candidates:
        return declared
    raise InvalidMedia(
        f"The file is not a supported {declared}.",
        details={"kind": declared, "detected": sniffed.mime},
    )
