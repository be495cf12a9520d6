"""User-supplied file names: metadata only, made safe for display and download.

A file name never becomes a storage path (keys are server-generated, see
:mod:`app.storage`). It is only shown in the UI and echoed in ``Content-Disposition``:

>>> safe_filename("../../etc/passwd")
'passwd'
>>> content_disposition("résumé.pdf")
'attachment; filename="resume.pdf"; filename*=UTF-8\\'\\'r%C3%A9sum%C3%A9.pdf'
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from app.validation import is_blank, strip_invisible

DEFAULT_NAME = "file"
MAX_FILENAME_LENGTH = 180  # characters

# Windows device names are harmless for us but confuse users' machines on save.
_WINDOWS_RESERVED = {
    "con", "prn", "aux", "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}
_RESERVED_CHARS = re.compile(r'[<>:"/\\|?*]')
_ASCII_UNSAFE = re.compile(r'[^A-Za-z0-9 !#$&+,\-.;=@\[\]^_`{}~()\']')
_SPACES = re.compile(r"\s+")


def _drop_unsafe_chars(s: str) -> str:
    out = []
    for ch in s:
        cat = unicodedata.category(ch)
        # Cc control, Cf format (incl. bidi overrides like U+202E), Cs surrogates,
        # Co private use, Cn unassigned, Zl/Zp line/paragraph separators
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            if ch in "\t\n\r\v\f":
                out.append(" ")
            continue
        out.append(" " if cat == "Zs" else ch)
    return "".join(out)


def _split_ext(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0 or len(name) - dot > 16:
        return name, ""
    return name[:dot], name[dot:]


def safe_filename(name: str | None, *, max_length: int = MAX_FILENAME_LENGTH,
                  default: str = DEFAULT_NAME) -> str:
    """Return a display/download-safe version of a user-supplied file name.

    Keeps Unicode (NFC-normalised) but removes directory parts (``/`` and ``\\``),
    control and bidi-override characters, invisible characters at either end (a
    name of only fillers or zero-width spaces becomes ``default``), characters
    reserved on Windows, leading dots (no hidden files, no ``..``) and trailing
    dots/spaces; collapses whitespace; limits
    the length to ``max_length`` characters while keeping the extension. Never empty.
    """
    if not name:
        return default
    s = unicodedata.normalize("NFC", str(name))
    s = s.replace("\\", "/").rsplit("/", 1)[-1]
    s = _drop_unsafe_chars(s)
    s = _RESERVED_CHARS.sub("_", s)
    s = _SPACES.sub(" ", s).strip()
    stem, ext = _split_ext(s)
    if is_blank(stem) and not is_blank(ext[1:]):
        # Nothing visible before the extension (Hangul fillers, zero-width spaces).
        s = default + ext
    s = strip_invisible(s).lstrip(". ").rstrip(". ")
    if is_blank(s):
        return default
    stem, ext = _split_ext(s)
    stem = strip_invisible(stem) or stem
    if stem.lower() in _WINDOWS_RESERVED:
        stem = "_" + stem
    if len(stem) + len(ext) > max_length:
        keep = max(1, max_length - len(ext))
        stem = stem[:keep].rstrip(". ")
        ext = ext[: max_length - len(stem)]
    s = (stem + ext).strip()
    return s or default


def ascii_filename(name: str, *, default: str = DEFAULT_NAME) -> str:
    """ASCII fallback for the plain ``filename=`` parameter (quoted-string safe)."""

    def fold(part: str) -> str:
        part = unicodedata.normalize("NFKD", part).encode("ascii", "ignore").decode("ascii")
        return _SPACES.sub(" ", _ASCII_UNSAFE.sub("_", part))

    stem, ext = _split_ext(name)
    stem, ext = fold(stem).strip().lstrip(". "), fold(ext).strip()
    if ext and not ext[1:].strip("_"):
        ext = ""
    if not stem.strip("_ "):
        # nothing recognisable left (e.g. a fully non-Latin name)
        stem = default
    return stem + ext


def content_disposition(name: str | None, *, inline: bool = False) -> str:
    """Build a ``Content-Disposition`` header value for downloading ``name``.

    Always sanitises ``name`` first. Emits both an ASCII ``filename="..."`` and the
    RFC 5987/6266 ``filename*=UTF-8''...`` form (preferred by browsers). ``inline=True``
    only for media the server re-encoded/validated (``Sniffed.inline``); everything else
    must be an attachment.
    """
    safe = safe_filename(name)
    fallback = ascii_filename(safe)
    value = f'{"inline" if inline else "attachment"}; filename="{fallback}"'
    if fallback != safe:
        value += "; filename*=UTF-8''" + quote(safe, safe="")
    return value
