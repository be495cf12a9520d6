"""Image re-encoding with Pillow.

Every image is decoded and re-encoded, so what we serve is pixels we produced, not the
uploader's bytes:

* all metadata is dropped (EXIF incl. GPS, XMP, IPTC, comments, PNG text chunks); an
  embedded ICC profile is converted to sRGB first (when LittleCMS is available) so
  colours stay right after the profile is removed;
* EXIF orientation is applied to the pixels (``ImageOps.exif_transpose``);
* output is **PNG** when the image has transparency, otherwise **JPEG** (quality 85);
* **GIF**: only the first frame is kept and re-encoded with the rule above (animations
  are not preserved — a deliberate choice: one frame bounds CPU/memory, and anything
  appended to a GIF, e.g. a GIF/HTML polyglot, is gone);
* a JPEG thumbnail (longest side ``thumb_size``) is written next to it.

Decompression bombs: ``Image.open`` only parses the header, so the pixel count is checked
against ``max_pixels`` *before* any pixel data is decoded; a bomb costs a header read.
Pillow's own global ``Image.MAX_IMAGE_PIXELS`` guard (≈179 M pixels → error) is mapped to
:class:`TooLarge` as well. Only the decoders in :data:`ALLOWED_FORMATS` are ever used.

The functions are synchronous and CPU-bound; use the ``*_async`` wrappers from async code
(they run in a worker thread via :func:`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageOps, UnidentifiedImageError, features

from .errors import InvalidMedia, TooLarge

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP") + (
    ("AVIF",) if features.check("avif") else ()
)
JPEG_QUALITY = 85
THUMB_QUALITY = 80
DEFAULT_THUMB_SIZE = 320
MAX_SIDE = 30_000  # sanity cap on either dimension, independent of max_pixels


class ImageResult(NamedTuple):
    width: int
    height: int
    mime: str


def _has_alpha(img: Image.Image) -> bool:
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    return img.mode == "P" and "transparency" in img.info


def _to_srgb(img: Image.Image) -> Image.Image:
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(img, src, dst, outputMode=out_mode) or img
    except Exception:
        return img  # unusable profile: keep pixels as they are, profile is dropped anyway


def check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise InvalidMedia("The image has no pixels.")
    if w > MAX_SIDE or h > MAX_SIDE or w * h > max_pixels:
        raise TooLarge(
            f"The image is too large ({w}x{h} pixels).",
            limit="pixels",
            max_value=max_pixels,
        )


def _open(src_path: str | os.PathLike, max_pixels: int) -> Image.Image:
    try:
        img = Image.open(src_path, formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as e:
        raise TooLarge("The image is too large.", limit="pixels", max_value=max_pixels) from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InvalidMedia("The file is not a supported image.") from e
    try:
        # header only so far: reject bombs before a single pixel is decoded
        check_pixels(img.size, max_pixels)
    except Exception:
        img.close()
        raise
    return img


def _decode(img: Image.Image) -> None:
    """Load pixels (first frame) and apply EXIF orientation, in place: no second copy."""
    try:
        img.seek(0)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
    except Image.DecompressionBombError as e:
        raise TooLarge("The image is too large.", limit="pixels") from e
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as e:
        raise InvalidMedia("The image data is corrupt or truncated.") from e


def _flatten(img: Image.Image, background=(255, 255, 255)) -> Image.Image:
    rgba = img.convert("RGBA")
    base = Image.new("RGB", rgba.size, background)
    base.paste(rgba, mask=rgba.getchannel("A"))
    return base


def _clean(img: Image.Image) -> tuple[Image.Image, bool]:
    """Return (pixels-only image ready to encode, has_alpha)."""
    alpha = _has_alpha(img)
    if img.mode == "CMYK" or img.mode == "P" or img.mode.startswith(("I", "F", "1")):
        img = img.convert("RGBA" if alpha else "RGB")
    img = _to_srgb(img)
    if alpha:
        if img.mode not in ("LA", "RGBA"):
            img = img.convert("LA" if img.mode in ("LA", "La") else "RGBA")
    elif img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    # Pixels only: the encoders below take metadata from `info` (ICC profile,
    # comments) or from their arguments, and neither carries any. Emptying it
    # instead of pasting into a fresh image saves a full decoded copy.
    img.info = {}
    return img, alpha


def decode_cost(size: tuple[int, int], mode: str) -> int:
    """Bytes a decode of this image may hold at its peak: the decoded pixels at
    4 bytes each (Pillow keeps RGB as 4), once more for one conversion, plus the
    encoder's buffers. Checked before a single pixel is decoded."""
    w, h = size
    return w * h * 4 * 2 + 16 * 1024 * 1024


# Above this many pixels JPEGs are written baseline without Huffman optimisation:
# both of those make libjpeg buffer every coefficient of the image first.
BIG_IMAGE_PIXELS = 12_000_000


def process_image(
    src_path: str | os.PathLike,
    out_path: str | os.PathLike,
    thumb_path: str | os.PathLike | None,
    *,
    max_pixels: int,
    thumb_size: int = DEFAULT_THUMB_SIZE,
    max_side: int | None = None,
) -> ImageResult:
    """Decode ``src_path``, write a clean re-encoded copy to ``out_path`` and a JPEG
    thumbnail to ``thumb_path`` (skipped if ``None``).

    Returns ``(width, height, mime)`` of the written image (after orientation), where
    mime is ``image/png`` or ``image/jpeg``. ``max_side`` (optional) downscales the
    stored image so its longest side is at most that many pixels.

    Memory: one decoded copy of the image (4 bytes per pixel), two while a mode
    conversion runs; :func:`decode_cost` is the bound to check before calling.

    Raises :class:`InvalidMedia` (not an image / corrupt / unsupported format) or
    :class:`TooLarge` (more than ``max_pixels`` pixels).
    """
    with _open(src_path, max_pixels) as img:
        if max_side is not None and img.format == "JPEG":
            # JPEG decodes at 1/2, 1/4 or 1/8 scale directly: never the full size.
            img.draft("RGB", (max_side, max_side))
        _decode(img)
        check_pixels(img.size, max_pixels)
        pixels = img
        if max_side is not None and max(pixels.size) > max_side:
            pixels.thumbnail((max_side, max_side), Image.Resampling.LANCZOS,
                             reducing_gap=3.0)
        clean, alpha = _clean(pixels)
        if clean is not pixels:
            pixels.close()  # free the decoded copy before encoding
        del pixels
        out_path = Path(out_path)
        if alpha:
            clean.save(out_path, format="PNG", optimize=False, compress_level=6)
            mime = "image/png"
        else:
            small = clean.width * clean.height <= BIG_IMAGE_PIXELS
            clean.save(out_path, format="JPEG", quality=JPEG_QUALITY, optimize=small,
                       progressive=small)
            mime = "image/jpeg"
        if thumb_path is not None:
            write_thumbnail(clean, thumb_path, thumb_size)
        result = ImageResult(clean.width, clean.height, mime)
        clean.close()
        return result


def write_thumbnail(img: Image.Image, thumb_path: str | os.PathLike,
                    thumb_size: int = DEFAULT_THUMB_SIZE) -> tuple[int, int]:
    """Write a JPEG (alpha flattened on white) whose longest side is ≤ ``thumb_size``.

    Returns the thumbnail's (width, height).
    """
    w, h = img.size
    scale = min(1.0, thumb_size / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Resized straight from the source (reduce first): no full-size copy.
    thumb = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if _has_alpha(thumb):
        thumb = _flatten(thumb)
    elif thumb.mode not in ("RGB", "L"):
        thumb = thumb.convert("RGB")
    thumb.save(thumb_path, format="JPEG", quality=THUMB_QUALITY, optimize=True)
    return thumb.size


def image_size(src_path: str | os.PathLike, *, max_pixels: int) -> tuple[int, int]:
    """Header-only size check (no pixel decoding). Raises like :func:`process_image`."""
    with _open(src_path, max_pixels) as img:
        return img.size


async def process_image_async(
    src_path: str | os.PathLike,
    out_path: str | os.PathLike,
    thumb_path: str | os.PathLike | None,
    *,
    max_pixels: int,
    thumb_size: int = DEFAULT_THUMB_SIZE,
    max_side: int | None = None,
) -> ImageResult:
    """:func:`process_image` in a worker thread."""
    return await asyncio.to_thread(
        process_image, src_path, out_path, thumb_path,
        max_pixels=max_pixels, thumb_size=thumb_size, max_side=max_side,
    )


AVATAR_SIZES = (64, 160, 640)


def process_avatar(src_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                   max_pixels: int, sizes: tuple[int, ...] = AVATAR_SIZES) -> tuple[int, ...]:
    """Decode an image and write square JPEG avatars ``<out_dir>/<size>.jpg``.

    Same cleaning as :func:`process_image` (decoded and re-encoded, EXIF applied
    then dropped with every other piece of metadata), then the centred square is
    cut out and scaled to each size (never up: a small picture gives small files).
    Transparency is flattened on white: avatars are shown on any background.
    Returns the sizes written.
    """
    out = Path(out_dir)
    with _open(src_path, max_pixels) as img:
        _decode(img)
        clean, alpha = _clean(img)
        if alpha:
            clean = _flatten(clean)
        elif clean.mode != "RGB":
            clean = clean.convert("RGB")
        side = min(clean.size)
        left, top = (clean.width - side) // 2, (clean.height - side) // 2
        square = clean.crop((left, top, left + side, top + side))
        for size in sizes:
            target = min(size, side)
            square.resize((target, target), Image.Resampling.LANCZOS, reducing_gap=3.0).save(
                out / f"{size}.jpg", format="JPEG", quality=JPEG_QUALITY, optimize=True)
        return tuple(sizes)
