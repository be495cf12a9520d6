"""Generators for media test files (nothing binary is committed).

Everything is produced with Pillow / PyAV / zlib at test time. No numpy needed.
"""

from __future__ import annotations

import math
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
from PIL import ExifTags, Image

# --------------------------------------------------------------------------- images


def make_png(path: Path, size=(64, 48), *, alpha: bool = False) -> Path:
    if alpha:
        img = Image.new("RGBA", size, (255, 0, 0, 255))
        for x in range(size[0] // 2):
            for y in range(size[1]):
                img.putpixel((x, y), (0, 0, 255, 0))  # left half transparent
    else:
        img = Image.new("RGB", size, (0, 128, 0))
    img.save(path, format="PNG")
    return path


GPS_MARKER = "GPS-SECRET"


def make_jpeg_with_exif(path: Path, size=(200, 100)) -> Path:
    """Stored 200x100: left half red, right half blue; EXIF orientation 6 (display
    needs a 90° clockwise turn → 100x200 with red on top); GPS + camera tags."""
    w, h = size
    img = Image.new("RGB", size, (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, w // 2, h))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "SpyCam"
    exif[ExifTags.Base.Model] = "Model-X"
    exif[ExifTags.Base.ImageDescription] = GPS_MARKER
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (13.0, 24.0, 36.0),
    }
    img.save(path, format="JPEG", exif=exif.tobytes(), quality=95,
             comment=b"comment " + GPS_MARKER.encode())
    return path


def make_gif(path: Path, size=(40, 30), *, trailer: bytes = b"") -> Path:
    img = Image.new("P", size, 1)
    img.putpalette([0, 0, 0, 255, 255, 0] + [0] * (256 * 3 - 6))
    img.save(path, format="GIF")
    if trailer:
        with open(path, "ab") as f:
            f.write(trailer)
    return path


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def make_png_bomb(path: Path, width: int = 30_000, height: int = 30_000) -> Path:
    """A *valid* PNG declaring width x height 1-bit grey pixels, all black.

    Decoded it needs ``width*height`` bytes of RAM (900 MB for the default); on disk it
    is ~100 KB because every row is zeros. Written with zlib in a streaming loop.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0 + packed bits
    comp = zlib.compressobj(9)
    parts = []
    batch = row * 256
    full, rest = divmod(height, 256)
    for _ in range(full):
        parts.append(comp.compress(batch))
    parts.append(comp.compress(row * rest))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_png_chunk(b"IHDR", ihdr))
        f.write(_png_chunk(b"IDAT", b"".join(parts)))
        f.write(_png_chunk(b"IEND", b""))
    return path


# ----------------------------------------------------------------------- documents

HTML_PAYLOAD = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG_PAYLOAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(1)</script><rect width='10' height='10'/></svg>"
)


def make_pdf(path: Path) -> Path:
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objs) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def make_html_as_png(path: Path) -> Path:
    path.write_bytes(HTML_PAYLOAD)
    return path


def make_svg(path: Path) -> Path:
    path.write_bytes(SVG_PAYLOAD)
    return path


def make_gif_html_polyglot(path: Path) -> Path:
    """GIF magic followed by HTML/JS: not a decodable GIF."""
    path.write_bytes(b"GIF89a/*\x00\x00*/=1;" + HTML_PAYLOAD)
    return path


# --------------------------------------------------------------------- audio/video

def _sine_frames(stream, seconds: float, rate: int = 48_000, freq: float = 440.0):
    """Yield s16 mono AudioFrames of a sine wave in 20 ms chunks."""
    n_total = int(seconds * rate)
    chunk = rate // 50
    pts = 0
    while pts < n_total:
        n = min(chunk, n_total - pts)
        pcm = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * (pts + i) / rate)))
            for i in range(n)
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(pcm)
        frame.sample_rate = rate
        frame.pts = pts
        frame.time_base = Fraction(1, rate)
        pts += n
        yield frame


def _encode_audio(container, stream, seconds: float, rate: int):
    for frame in _sine_frames(stream, seconds, rate):
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


_AUDIO_FORMATS = {
    # name: (container format, codec, sample rate)
    "ogg": ("ogg", "libopus", 48_000),
    "webm": ("webm", "libopus", 48_000),
    "m4a": ("ipod", "aac", 44_100),
    "mp3": ("mp3", "libmp3lame", 44_100),
}


def make_audio(path: Path, fmt: str = "ogg", seconds: float = 1.5) -> Path:
    """Voice clip: ``fmt`` in ogg (opus), webm (opus), m4a (aac), mp3."""
    cfmt, codec, rate = _AUDIO_FORMATS[fmt]
    with av.open(str(path), "w", format=cfmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "mono"
        _encode_audio(c, s, seconds, rate)
    return path


class _PipeWriter:
    """A write-only, non-seekable file object (like a MediaRecorder stream): the
    Matroska muxer cannot seek back to store the duration."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        return self._f.write(data)


def make_live_webm_audio(path: Path, seconds: float = 1.5) -> Path:
    """WebM/Opus written to a non-seekable sink: no Duration element in the header."""
    with open(path, "wb") as raw:
        with av.open(_PipeWriter(raw), "w", format="webm") as c:
            s = c.add_stream("libopus", rate=48_000)
            s.layout = "mono"
            _encode_audio(c, s, seconds, 48_000)
    return path


_VIDEO_FORMATS = {
    "mp4": ("mp4", "libx264", "yuv420p"),
    "mp4-mpeg4": ("mp4", "mpeg4", "yuv420p"),
    "webm": ("webm", "libvpx", "yuv420p"),
}


def make_video(path: Path, fmt: str = "mp4", *, size=(160, 120), seconds: float = 1.0,
               fps: int = 10, audio: bool = False, rotation: int = 0) -> Path:
    """Short clip: ``fmt`` in mp4 (h264), mp4-mpeg4, webm (vp8). Frames are a red box
    moving over blue. ``rotation`` sets display-matrix rotation (CCW degrees)."""
    cfmt, codec, pix = _VIDEO_FORMATS[fmt]
    w, h = size
    with av.open(str(path), "w", format=cfmt) as c:
        vs = c.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, pix
        if codec == "libx264":
            vs.options = {"preset": "ultrafast"}
        if rotation:
            vs.set_display_rotation(rotation)
        as_ = None
        if audio:
            acodec = "libopus" if cfmt == "webm" else "aac"
            as_ = c.add_stream(acodec, rate=48_000)
            as_.layout = "mono"
        n = int(seconds * fps)
        for i in range(n):
            img = Image.new("RGB", size, (0, 0, 255))
            x = int((w - 20) * i / max(1, n - 1))
            img.paste((255, 0, 0), (x, 0, x + 20, h))
            frame = av.VideoFrame.from_image(img).reformat(format=pix)
            frame.pts = i
            for packet in vs.encode(frame):
                c.mux(packet)
        for packet in vs.encode(None):
            c.mux(packet)
        if as_ is not None:
            _encode_audio(c, as_, seconds, 48_000)
    return path
