"""app.media: sniffing, kind decisions, image re-encoding, A/V probing, file names.

All inputs are generated at test time by tests/media_samples.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import pytest
from PIL import Image, ImageFile

from app.media import (
    InvalidMedia,
    MediaLimits,
    TooLarge,
    ascii_filename,
    content_disposition,
    decide_kind,
    image_size,
    probe_audio,
    probe_audio_async,
    probe_streams,
    probe_video,
    probe_video_async,
    process_image,
    process_image_async,
    process_upload,
    safe_filename,
    sniff,
    sniff_file,
)
from tests import media_samples as ms

ROOT = Path(__file__).resolve().parent.parent


class Samples:
    """Lazily generated, cached sample files (one set per test session)."""

    def __init__(self, root: Path):
        self.root = root
        self._cache: dict[str, Path] = {}

    def get(self, name: str) -> Path:
        if name not in self._cache:
            p = self.root / name
            kind, _, rest = name.partition(".")
            makers = {
                "photo.jpg": lambda: ms.make_jpeg_with_exif(p),
                "plain.png": lambda: ms.make_png(p, (64, 48)),
                "alpha.png": lambda: ms.make_png(p, (64, 48), alpha=True),
                "big.png": lambda: ms.make_png(p, (1000, 700)),
                "anim.gif": lambda: ms.make_gif(p),
                "doc.pdf": lambda: ms.make_pdf(p),
                "page.png": lambda: ms.make_html_as_png(p),
                "poly.gif": lambda: ms.make_gif_html_polyglot(p),
                "trailer.gif": lambda: ms.make_gif(p, trailer=ms.HTML_PAYLOAD),
                "logo.svg": lambda: ms.make_svg(p),
                "bomb.png": lambda: ms.make_png_bomb(p),
                "bomb9k.png": lambda: ms.make_png_bomb(p, 9000, 9000),
                "voice.ogg": lambda: ms.make_audio(p, "ogg"),
                "voice.webm": lambda: ms.make_audio(p, "webm"),
                "voice.m4a": lambda: ms.make_audio(p, "m4a"),
                "voice.mp3": lambda: ms.make_audio(p, "mp3"),
                "voice3s.ogg": lambda: ms.make_audio(p, "ogg", seconds=3.0),
                "live.webm": lambda: ms.make_live_webm_audio(p),
                "clip.mp4": lambda: ms.make_video(p, "mp4", size=(480, 272), audio=True),
                "clip-mpeg4.mp4": lambda: ms.make_video(p, "mp4-mpeg4", size=(480, 272)),
                "clip.webm": lambda: ms.make_video(p, "webm", size=(480, 272), audio=True),
                "silent.mp4": lambda: ms.make_video(p, "mp4", size=(160, 120)),
                "portrait.mp4": lambda: ms.make_video(p, "mp4", size=(160, 120),
                                                      rotation=90),
                "long.webm": lambda: ms.make_video(p, "webm", size=(64, 48), seconds=3.0),
            }
            makers[name]()
            self._cache[name] = p
        return self._cache[name]


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> Samples:
    return Samples(tmp_path_factory.mktemp("media-samples"))


# ------------------------------------------------------------------------ sniffing


@pytest.mark.parametrize("name,mime,kind,candidates,inline", [
    ("photo.jpg", "image/jpeg", "image", {"image"}, True),
    ("plain.png", "image/png", "image", {"image"}, True),
    ("anim.gif", "image/gif", "image", {"image"}, True),
    ("voice.ogg", "audio/ogg", "voice", {"voice"}, True),
    ("voice.webm", "video/webm", "video", {"voice", "video"}, True),
    ("voice.m4a", "audio/mp4", "voice", {"voice"}, True),
    ("voice.mp3", "audio/mpeg", "voice", {"voice"}, True),
    ("clip.mp4", "video/mp4", "video", {"voice", "video"}, True),
    ("clip.webm", "video/webm", "video", {"voice", "video"}, True),
    ("doc.pdf", "application/pdf", "file", set(), False),
    ("page.png", "application/octet-stream", "file", set(), False),
    ("logo.svg", "application/octet-stream", "file", set(), False),
])
def test_sniff_generated_files(samples, name, mime, kind, candidates, inline):
    s = sniff_file(samples.get(name))
    assert (s.mime, s.kind, set(s.candidates), s.inline) == (mime, kind, candidates, inline)


def _webp_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="WEBP")
    return buf.getvalue()


def _bmp_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="BMP")
    return buf.getvalue()


@pytest.mark.parametrize("head,mime,kind", [
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav", "voice"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "image/heic", "file"),
    (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", "video/quicktime", "video"),
    (b"\x00\x00\x00\x1cftypM4A \x00\x00\x00\x00M4A isommp42", "audio/mp4", "voice"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00", "audio/mpeg", "voice"),
    (b"\xff\xfb\x90\x64" + b"\x00" * 100, "audio/mpeg", "voice"),
    (b"\xff\xf1\x50\x80" + b"\x00" * 100, "audio/aac", "voice"),
    (b"fLaC\x00\x00\x00\x22", "audio/flac", "voice"),
    (b"PK\x03\x04\x14\x00", "application/zip", "file"),
    (b"hello, this is a plain text note\n", "text/plain", "file"),
    (b"\x00\x01\x02\x03\x04binary", "application/octet-stream", "file"),
    (b"", "application/octet-stream", "file"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska", "video/x-matroska", "video"),
])
def test_sniff_magic_numbers(head, mime, kind):
    s = sniff(head)
    assert (s.mime, s.kind) == (mime, kind)


def test_sniff_webp_and_bmp():
    assert sniff(_webp_bytes()).mime == "image/webp"
    assert sniff(_bmp_bytes()).mime == "image/bmp"
    assert sniff(b"BM is how this text file starts").kind == "file"


@pytest.mark.parametrize("payload", [
    b"<html><body>hi</body></html>",
    b"   \n\t<!doctype html><p>x",
    b"\xef\xbb\xbf<svg xmlns='http://www.w3.org/2000/svg'/>",
    b"<?xml version='1.0'?><root/>",
    b"<!-- comment --><SCRIPT>alert(1)</SCRIPT>",
    b"Some text first then <iframe src=//evil>",
    "<svg onload=alert(1)>".encode("utf-16"),
    ms.SVG_PAYLOAD,
    ms.HTML_PAYLOAD,
])
def test_markup_is_never_renderable(payload):
    s = sniff(payload)
    assert s.kind == "file"
    assert s.mime == "application/octet-stream"
    assert not s.inline
    assert "html" not in s.mime and "svg" not in s.mime and "xml" not in s.mime


# ------------------------------------------------------------------ kind decisions


def test_decide_kind_matrix(samples):
    jpg, webm_audio = sniff_file(samples.get("photo.jpg")), sniff_file(samples.get("voice.webm"))
    html, pdf = sniff_file(samples.get("page.png")), sniff_file(samples.get("doc.pdf"))
    ogg = sniff_file(samples.get("voice.ogg"))
    assert decide_kind(None, jpg) == "image"
    assert decide_kind("image", jpg) == "image"
    assert decide_kind("file", jpg) == "file"
    assert decide_kind("voice", webm_audio) == "voice"
    assert decide_kind("video", webm_audio) == "video"  # verified later by probing
    assert decide_kind("voice", ogg) == "voice"
    assert decide_kind(None, pdf) == "file"
    assert decide_kind("file", html) == "file"
    for declared, sniffed in [("image", html), ("image", pdf), ("voice", jpg),
                              ("video", ogg), ("image", webm_audio), ("video", pdf)]:
        with pytest.raises(InvalidMedia) as ei:
            decide_kind(declared, sniffed)
        assert ei.value.code == "invalid_media"
    with pytest.raises(InvalidMedia):
        decide_kind("sticker", jpg)


# -------------------------------------------------------------------------- images


def test_jpeg_exif_stripped_and_orientation_applied(samples, tmp_path):
    src = samples.get("photo.jpg")
    with Image.open(src) as orig:  # precondition: the sample really carries the data
        assert orig.size == (200, 100)
        assert orig.getexif()[0x0112] == 6
        assert orig.getexif().get_ifd(0x8825)
    assert ms.GPS_MARKER.encode() in src.read_bytes()

    out, thumb = tmp_path / "out", tmp_path / "thumb.jpg"
    w, h, mime = process_image(src, out, thumb, max_pixels=10_000_000)
    assert (w, h, mime) == (100, 200, "image/jpeg")
    raw = out.read_bytes()
    assert ms.GPS_MARKER.encode() not in raw
    assert b"Exif" not in raw and b"SpyCam" not in raw and b"http://ns.adobe.com/xap" not in raw
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (100, 200)
        assert len(img.getexif()) == 0
        assert "exif" not in img.info and "comment" not in img.info
        # stored left half red → after the 90° clockwise turn red is on top
        top, bottom = img.convert("RGB").getpixel((50, 10)), img.getpixel((50, 190))
        assert top[0] > 200 and top[2] < 60, top
        assert bottom[2] > 200 and bottom[0] < 60, bottom
    with Image.open(thumb) as t:
        assert t.format == "JPEG" and t.size == (100, 200)  # already ≤ 320
        assert len(t.getexif()) == 0
    assert ms.GPS_MARKER.encode() not in thumb.read_bytes()


def test_icc_and_xmp_removed(tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>XMP-SECRET</rdf:RDF></x:xmpmeta>'
    src = tmp_path / "icc.jpg"
    Image.new("RGB", (50, 40), (200, 100, 50)).save(src, format="JPEG", icc_profile=icc,
                                                   xmp=xmp)
    with Image.open(src) as img:
        assert img.info.get("icc_profile") and b"XMP-SECRET" in src.read_bytes()
    process_image(src, tmp_path / "o", tmp_path / "t", max_pixels=10**6)
    with Image.open(tmp_path / "o") as out:
        assert "icc_profile" not in out.info and "xmp" not in out.info
        r, g, b = out.getpixel((25, 20))
        assert abs(r - 200) < 12 and abs(g - 100) < 12 and abs(b - 50) < 12
    assert b"XMP-SECRET" not in (tmp_path / "o").read_bytes()


def test_png_with_alpha_stays_png(samples, tmp_path):
    out, thumb = tmp_path / "o", tmp_path / "t.jpg"
    assert process_image(samples.get("alpha.png"), out, thumb, max_pixels=10**6) == (
        64, 48, "image/png")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.mode == "RGBA"
        assert img.getpixel((5, 5))[3] == 0 and img.getpixel((60, 5)) == (255, 0, 0, 255)
    with Image.open(thumb) as t:
        assert t.format == "JPEG" and t.mode == "RGB"
        assert t.getpixel((5, 5))[0] > 240  # transparent part flattened on white


def test_opaque_png_becomes_jpeg_and_thumbnail_is_scaled(samples, tmp_path):
    out, thumb = tmp_path / "o", tmp_path / "t.jpg"
    assert process_image(samples.get("big.png"), out, thumb, max_pixels=10**7) == (
        1000, 700, "image/jpeg")
    with Image.open(thumb) as t:
        assert t.size == (320, 224)
    out2, thumb2 = tmp_path / "o2", tmp_path / "t2.jpg"
    process_image(samples.get("big.png"), out2, thumb2, max_pixels=10**7, thumb_size=100)
    with Image.open(thumb2) as t:
        assert max(t.size) == 100
    assert process_image(samples.get("big.png"), tmp_path / "o3", None, max_pixels=10**7,
                         max_side=500) == (500, 350, "image/jpeg")
    with Image.open(tmp_path / "o3") as img:
        assert img.size == (500, 350)


def test_gif_keeps_first_frame_only(samples, tmp_path):
    out = tmp_path / "o"
    w, h, mime = process_image(samples.get("anim.gif"), out, None, max_pixels=10**6)
    assert (w, h, mime) == (40, 30, "image/jpeg")
    with Image.open(out) as img:
        r, g, b = img.convert("RGB").getpixel((3, 3))
        assert r > 200 and g > 200 and b < 60  # palette index 1 = yellow


@pytest.mark.parametrize("fmt", ["WEBP", "BMP"])
def test_other_formats_reencoded(tmp_path, fmt):
    src = tmp_path / f"in.{fmt.lower()}"
    Image.new("RGB", (30, 20), (10, 200, 30)).save(src, format=fmt)
    assert process_image(src, tmp_path / "o", tmp_path / "t", max_pixels=10**6) == (
        30, 20, "image/jpeg")


def test_html_renamed_png_is_rejected(samples, tmp_path):
    p = samples.get("page.png")
    with pytest.raises(InvalidMedia):
        decide_kind("image", sniff_file(p))
    with pytest.raises(InvalidMedia):
        process_image(p, tmp_path / "o", tmp_path / "t", max_pixels=10**6)
    assert not (tmp_path / "o").exists()


def test_gif_html_polyglot(samples, tmp_path):
    poly = samples.get("poly.gif")
    assert sniff_file(poly).kind == "image"  # the magic says GIF …
    with pytest.raises(InvalidMedia):       # … but it does not decode as one
        process_image(poly, tmp_path / "o", tmp_path / "t", max_pixels=10**6)

    # a valid GIF with HTML appended: re-encoding drops everything but pixels
    trailer = samples.get("trailer.gif")
    assert b"<script>" in trailer.read_bytes()
    process_image(trailer, tmp_path / "o2", tmp_path / "t2", max_pixels=10**6)
    assert b"<script>" not in (tmp_path / "o2").read_bytes()
    assert b"<script>" not in (tmp_path / "t2").read_bytes()


def test_svg_is_a_plain_file(samples, tmp_path):
    p = samples.get("logo.svg")
    s = sniff_file(p)
    assert (s.kind, s.mime, s.inline) == ("file", "application/octet-stream", False)
    with pytest.raises(InvalidMedia):
        decide_kind("image", s)
    with pytest.raises(InvalidMedia):
        process_image(p, tmp_path / "o", None, max_pixels=10**6)


def test_truncated_jpeg_is_invalid(samples, tmp_path):
    src = tmp_path / "cut.jpg"
    ms.make_png(tmp_path / "x.png", (300, 300))
    Image.open(tmp_path / "x.png").convert("RGB").save(src, format="JPEG")
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidMedia):
        process_image(src, tmp_path / "o", None, max_pixels=10**6)


@pytest.fixture
def no_pixel_loading(monkeypatch):
    """Fail loudly if any image pixel data gets decoded."""
    calls = []

    def forbidden(self, *a, **kw):
        calls.append(self.size)
        raise AssertionError(f"pixel data loaded for {self.size}")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    return calls


def test_bomb_rejected_by_own_pixel_cap_without_decoding(samples, tmp_path, no_pixel_loading):
    bomb = samples.get("bomb9k.png")  # 81 Mpx: below Pillow's own error threshold
    assert bomb.stat().st_size < 200_000
    with pytest.raises(TooLarge) as ei:
        process_image(bomb, tmp_path / "o", tmp_path / "t", max_pixels=50_000_000)
    assert ei.value.details == {"limit": "pixels", "max": 50_000_000}
    assert no_pixel_loading == []
    assert not (tmp_path / "o").exists()
    with pytest.raises(TooLarge):
        image_size(bomb, max_pixels=50_000_000)


def test_bomb_rejected_even_without_pillow_global_guard(samples, tmp_path, monkeypatch,
                                                        no_pixel_loading):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(TooLarge):
        process_image(samples.get("bomb.png"), tmp_path / "o", None, max_pixels=50_000_000)
    assert no_pixel_loading == []


def test_bomb_rejection_keeps_memory_bounded(samples):
    """Fresh interpreter; peak RSS growth while rejecting a 30000x30000 PNG (900 MB if
    decoded) must stay far below the decoded size."""
    bomb = samples.get("bomb.png")
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from PIL import Image
        from app.media import TooLarge, process_image

        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

        Image.MAX_IMAGE_PIXELS = None  # only our own cap protects us
        before = hwm()
        try:
            process_image({str(bomb)!r}, "/dev/null", None, max_pixels=50_000_000)
            outcome = "accepted"
        except TooLarge:
            outcome = "too_large"
        print(json.dumps({{"outcome": outcome, "growth": hwm() - before}}))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["outcome"] == "too_large"
    assert out["growth"] < 100 * 1024 * 1024, out


async def test_process_image_async(samples, tmp_path):
    res = await process_image_async(samples.get("plain.png"), tmp_path / "o", tmp_path / "t",
                                    max_pixels=10**6)
    assert res.width == 64 and res.height == 48 and res.mime == "image/jpeg"


# --------------------------------------------------------------------------- voice


@pytest.mark.parametrize("name,mime", [
    ("voice.ogg", "audio/ogg"),
    ("voice.webm", "audio/webm"),
    ("voice.m4a", "audio/mp4"),
    ("voice.mp3", "audio/mpeg"),
    ("live.webm", "audio/webm"),  # MediaRecorder-style: no duration in the header
])
def test_probe_audio(samples, name, mime):
    info = probe_audio(samples.get(name))
    assert info.mime == mime
    assert abs(info.duration_ms - 1500) <= 120, info


def test_live_webm_really_lacks_header_duration(samples):
    with av.open(str(samples.get("live.webm"))) as c:
        assert not c.duration


def test_voice_over_duration_is_too_large(samples):
    p = samples.get("voice3s.ogg")
    assert abs(probe_audio(p).duration_ms - 3000) <= 120
    with pytest.raises(TooLarge) as ei:
        probe_audio(p, max_duration_ms=1000)
    assert ei.value.code == "too_large"
    assert ei.value.details == {"limit": "duration", "max": 1000}
    assert probe_audio(p, max_duration_ms=None).duration_ms > 2800


def test_voice_rejects_video_and_non_audio(samples):
    with pytest.raises(InvalidMedia):
        probe_audio(samples.get("silent.mp4"))  # video only
    with pytest.raises(InvalidMedia):
        probe_audio(samples.get("clip.webm"))   # has audio, but also video
    with pytest.raises(InvalidMedia):
        probe_audio(samples.get("photo.jpg"))
    with pytest.raises(InvalidMedia):
        probe_audio(samples.get("page.png"))


def test_corrupted_audio_is_invalid(samples, tmp_path):
    good = samples.get("voice.webm").read_bytes()
    truncated = tmp_path / "cut.webm"
    truncated.write_bytes(good[:60])
    with pytest.raises(InvalidMedia):
        probe_audio(truncated)
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(b"OggS" + b"\x00" * 22 + b"OpusHead" + bytes(range(256)) * 40)
    with pytest.raises(InvalidMedia):
        probe_audio(garbage)


async def test_probe_audio_async(samples):
    info = await probe_audio_async(samples.get("voice.ogg"))
    assert info.mime == "audio/ogg" and info.duration_ms > 1000


# --------------------------------------------------------------------------- video


@pytest.mark.parametrize("name,mime", [
    ("clip.mp4", "video/mp4"),
    ("clip-mpeg4.mp4", "video/mp4"),
    ("clip.webm", "video/webm"),
])
def test_probe_video_and_poster(samples, tmp_path, name, mime):
    poster = tmp_path / "poster.jpg"
    info = probe_video(samples.get(name), poster)
    assert (info.width, info.height, info.mime) == (480, 272, mime)
    assert abs(info.duration_ms - 1000) <= 150, info
    with Image.open(poster) as img:
        assert img.format == "JPEG" and img.size == (320, 181)
        # first frame: red bar at the left edge, blue elsewhere
        left, right = img.convert("RGB").getpixel((3, 90)), img.getpixel((300, 90))
        assert left[0] > 180 and left[2] < 90, left
        assert right[2] > 180 and right[0] < 90, right


def test_rotated_phone_video(samples, tmp_path):
    poster = tmp_path / "p.jpg"
    info = probe_video(samples.get("portrait.mp4"), poster)
    assert (info.width, info.height) == (120, 160)
    with Image.open(poster) as img:
        assert img.size == (120, 160)
        # the red bar at the stored left edge ends up at the bottom after 90° CCW
        bottom, top = img.convert("RGB").getpixel((60, 155)), img.getpixel((60, 5))
        assert bottom[0] > 180 and bottom[2] < 90, bottom
        assert top[2] > 180 and top[0] < 90, top


def test_video_rejections(samples, tmp_path):
    with pytest.raises(InvalidMedia):
        probe_video(samples.get("voice.webm"), tmp_path / "p.jpg")  # audio only
    with pytest.raises(InvalidMedia):
        probe_video(samples.get("voice.ogg"), tmp_path / "p.jpg")
    with pytest.raises(InvalidMedia):
        probe_video(samples.get("doc.pdf"), tmp_path / "p.jpg")
    with pytest.raises(TooLarge) as ei:
        probe_video(samples.get("long.webm"), tmp_path / "p.jpg", max_duration_ms=1000)
    assert ei.value.details["limit"] == "duration"
    with pytest.raises(TooLarge):
        probe_video(samples.get("clip.mp4"), tmp_path / "p.jpg", max_pixels=320 * 240)


async def test_probe_video_async(samples, tmp_path):
    info = await probe_video_async(samples.get("silent.mp4"), tmp_path / "p.jpg")
    assert (info.width, info.height) == (160, 120)
    assert (tmp_path / "p.jpg").stat().st_size > 0


def test_probe_streams(samples):
    assert probe_streams(samples.get("voice.webm"))[1:] == (True, False)
    assert probe_streams(samples.get("clip.webm"))[1:] == (True, True)
    assert probe_streams(samples.get("silent.mp4"))[1:] == (False, True)


# ------------------------------------------------------------------------ pipeline


async def test_pipeline_image(samples, tmp_path):
    r = await process_upload(samples.get("photo.jpg"), tmp_path)
    assert (r.kind, r.mime, r.width, r.height, r.inline) == ("image", "image/jpeg", 100, 200,
                                                             True)
    assert r.path.parent == tmp_path and r.path.suffix == ".jpg"
    assert r.size == r.path.stat().st_size
    assert r.thumb_path and r.thumb_path.exists()
    assert b"Exif" not in r.path.read_bytes()


async def test_pipeline_av_kind_from_streams(samples, tmp_path):
    voice = await process_upload(samples.get("voice.webm"), tmp_path)
    assert (voice.kind, voice.mime, voice.thumb_path) == ("voice", "audio/webm", None)
    assert abs(voice.duration_ms - 1500) <= 120
    video = await process_upload(samples.get("clip.webm"), tmp_path)
    assert (video.kind, video.mime, video.width, video.height) == ("video", "video/webm",
                                                                   480, 272)
    assert video.thumb_path.exists() and video.path == samples.get("clip.webm")
    m4a = await process_upload(samples.get("voice.m4a"), tmp_path, declared_kind="voice")
    assert (m4a.kind, m4a.mime) == ("voice", "audio/mp4")


async def test_pipeline_rejections(samples, tmp_path):
    with pytest.raises(InvalidMedia):
        await process_upload(samples.get("clip.webm"), tmp_path, declared_kind="voice")
    with pytest.raises(InvalidMedia):
        await process_upload(samples.get("voice.webm"), tmp_path, declared_kind="video")
    with pytest.raises(InvalidMedia):
        await process_upload(samples.get("page.png"), tmp_path, declared_kind="image")
    with pytest.raises(TooLarge):
        await process_upload(samples.get("voice3s.ogg"), tmp_path,
                             limits=MediaLimits(max_voice_ms=1000))
    with pytest.raises(TooLarge):
        await process_upload(samples.get("bomb9k.png"), tmp_path)


async def test_pipeline_files_are_attachments(samples, tmp_path):
    pdf = await process_upload(samples.get("doc.pdf"), tmp_path)
    assert (pdf.kind, pdf.mime, pdf.inline) == ("file", "application/pdf", False)
    html = await process_upload(samples.get("page.png"), tmp_path, declared_kind="file")
    assert (html.kind, html.mime, html.inline) == ("file", "application/octet-stream", False)
    photo = await process_upload(samples.get("photo.jpg"), tmp_path, declared_kind="file")
    assert (photo.kind, photo.inline, photo.path) == ("file", False, samples.get("photo.jpg"))


# ----------------------------------------------------------------------- file names


@pytest.mark.parametrize("raw,expected", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\system32\\cmd.exe", "cmd.exe"),
    ("/abs/path/photo.jpg", "photo.jpg"),
    ("..", "file"),
    ("", "file"),
    (None, "file"),
    ("   ", "file"),
    (".bashrc", "bashrc"),
    ("a\x00b\x1fc\x7f.txt", "abc.txt"),
    ("line\nbreak\r\n.txt", "line break.txt"),
    ("evil\u202egnp.exe", "evilgnp.exe"),          # bidi override removed
    ('quo"te<>:|?*.txt', "quo_te______.txt"),
    ("CON.txt", "_CON.txt"),
    ("trailing dots... ", "trailing dots"),
    ("Привет мир.docx", "Привет мир.docx"),        # unicode kept
    ("e\u0301te\u0301.png", "été.png"),            # NFC
])
def test_safe_filename(raw, expected):
    assert safe_filename(raw) == expected


def test_safe_filename_length_keeps_extension():
    name = safe_filename("x" * 500 + ".tar.gz")
    assert len(name) == 180 and name.endswith(".gz")
    assert len(safe_filename("é" * 400, max_length=50)) == 50


def test_content_disposition():
    assert content_disposition("report.pdf") == 'attachment; filename="report.pdf"'
    assert content_disposition("photo.jpg", inline=True) == 'inline; filename="photo.jpg"'
    cd = content_disposition("résumé final.pdf")
    assert cd == ("attachment; filename=\"resume final.pdf\"; "
                  "filename*=UTF-8''r%C3%A9sum%C3%A9%20final.pdf")
    cd = content_disposition("Привет.txt")
    assert cd == ("attachment; filename=\"file.txt\"; "
                  "filename*=UTF-8''%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82.txt")
    cd = content_disposition('a"b\\c;\r\nSet-Cookie: x=1.txt')
    assert "\r" not in cd and "\n" not in cd
    fallback = cd.split('filename="', 1)[1].split('"', 1)[0]
    assert '"' not in fallback and "\\" not in fallback
    assert ascii_filename("日本語") == "file"


# --- decoding memory, measured on a real server process --------------------------------


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


@pytest.mark.timeout(240)
async def test_ten_parallel_zero_pngs_keep_the_server_memory_bounded(tmp_path):
    """Ten 7000x7000 all-black PNGs (~140 KB each, under the pixel limit) uploaded at
    once: the server process grows by less than 300 MiB, and every upload gets a
    clear answer (201, or 413 too_large), nothing else."""
    import asyncio
    import os

    import aiohttp

    from tests.cluster_helpers import Worker

    png = tmp_path / "zeros.png"
    Image.new("RGB", (7000, 7000)).save(png, optimize=True)
    data = png.read_bytes()
    db = f"sqlite://{tmp_path / 'p.db'}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_", "REDIS_", "TEST_"))}
    env.update(DATABASE_URL=db, SECRET_KEY="s" * 48, MEDIA_ROOT=str(tmp_path / "media"),
               LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "migrate", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(migrate.wait(), 120) == 0
    server = Worker("server", env, tmp_path)
    server.start()
    samples: list[tuple[float, float]] = []
    try:
        await server.wait_ready()
        pid = server.proc.pid
        async with aiohttp.ClientSession() as http:
            async with http.post(server.url + "/api/v1/auth/register", json={
                    "email": "big@example.org", "password": "correct horse battery",
                    "display_name": "Big"}) as r:
                assert r.status == 201
                headers = {"Authorization": "Bearer " + (await r.json())["access_token"]}

            async def upload(body: bytes, name: str):
                form = aiohttp.FormData()
                form.add_field("file", body, filename=name, content_type="image/png")
                async with http.post(server.url + "/api/v1/media", data=form,
                                     headers=headers) as r:
                    return r.status, await r.json()

            small = ms.make_png(tmp_path / "small.png").read_bytes()
            assert (await upload(small, "small.png"))[0] == 201  # warm: code paths loaded
            base = _rss_mib(pid)
            done = False

            async def sample():
                while not done:
                    tree = _rss_mib(pid) + sum(_rss_mib(c) for c in _children(pid))
                    samples.append((_rss_mib(pid), tree))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            answers = await asyncio.gather(*(upload(data, f"z{i}.png") for i in range(10)))
            done = True
            await sampler
        for status, body in answers:
            assert (status == 201 and body["media"]["width"] == 7000) or (
                status == 413 and body["error"]["code"] == "too_large"), (status, body)
        peak = max(s for s, _t in samples)
        print(f"server RSS: base {base:.0f} MiB, peak {peak:.0f} MiB, "
              f"growth {peak - base:.0f} MiB; server+decoders peak "
              f"{max(t for _s, t in samples):.0f} MiB; statuses {[a[0] for a in answers]}")
        assert peak - base < 300, (base, peak)
    finally:
        server.stop()


def _crash(*_args, **_kw):
    import os

    os._exit(3)  # what a segfaulting decoder looks like to the pool


async def test_image_decoder_survives_a_dead_worker_and_keeps_its_budget(tmp_path):
    from app.media import ImageDecoder

    decoder = ImageDecoder(workers=1, memory_budget=100 * 1024 * 1024)
    try:
        with pytest.raises(TooLarge):  # more than the whole budget: refused, not queued
            await decoder.run(process_image, "x", "y", None, cost=200 * 1024 * 1024,
                              max_pixels=10)
        with pytest.raises(InvalidMedia):
            await decoder.run(_crash, cost=1)
        src = ms.make_png(tmp_path / "a.png", size=(64, 48))
        out = tmp_path / "out"
        w, h, mime = await decoder.run(process_image, str(src), str(out), None, cost=1,
                                       max_pixels=10**6)
        assert (w, h, mime) == (64, 48, "image/jpeg") and out.stat().st_size > 0
        with pytest.raises(InvalidMedia):  # media errors come back as themselves
            await decoder.run(process_image, str(tmp_path / "missing"), str(out), None,
                              cost=1, max_pixels=10**6)
        assert decoder._free == decoder.memory_budget  # every reservation given back
    finally:
        decoder.close()
