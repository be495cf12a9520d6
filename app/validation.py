"""Decoding untrusted payloads into typed structs, with errors clients can read.

REST bodies and Socket.IO payloads both go through `decode`/`convert`, so the
same struct gives the same `invalid` error on either transport. Hostile JSON
(nested past the parser's depth, invalid UTF-8, NUL characters) is refused here
with `Invalid` too, never left to surface as an exception deeper down.

The rules for human-entered names and texts (`is_blank`, `clean_name`) live
here as pure functions, so every place that accepts a name applies the same one.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import UTC
from typing import Annotated, TypeVar

import msgspec

from app.errors import Invalid

T = TypeVar("T")

# Every integer stored or compared in the database is a signed 64-bit BIGINT.
MAX_INT64 = 2**63 - 1

# Shared field types.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=128)]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Username = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]{3,32}$")]
# A position in a conversation (seq, before_seq, read cursors).
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]

_PATH_RE = re.compile(r"at `\$\.?([^`]*)`")


class TextUUID(uuid.UUID):
    """A UUID that keeps its canonical text.

    One send prints its conversation and sender ids several times (the
    writer's parameters and dedupe key, the message as clients get it, the
    hand-off to push), and `uuid.UUID.__str__` formats them from the integer
    each time. The text is made by `uuid.UUID` itself, so it is only ever hex
    digits and dashes; equality and hashing are the UUID's.
    """

    __slots__ = ("_text",)

    def __init__(self, value: str) -> None:
        super().__init__(value)
        object.__setattr__(self, "_text", super().__str__())

    def __str__(self) -> str:
        return self._text

    def __reduce__(self):
        return (TextUUID, (self._text,))


class Payload(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base for request structs: unknown fields are an error, not silently dropped."""


def _invalid(exc: msgspec.ValidationError | msgspec.DecodeError) -> Invalid:
    text = str(exc)
    details = {}
    m = _PATH_RE.search(text)
    if m and m.group(1):
        details["field"] = m.group(1)
    return Invalid(text, details=details or None)


# --- hostile JSON -------------------------------------------------------------

TOO_DEEP = "JSON is nested too deeply."
NOT_UTF8 = "JSON must be valid UTF-8."
HAS_NUL = "Text may not contain NUL characters (\\u0000)."


def _has_nul(obj) -> bool:
    t = type(obj)
    if t is str:
        return "\x00" in obj
    if t is dict:
        return any(_has_nul(k) or _has_nul(v) for k, v in obj.items())
    if t is list:
        return any(_has_nul(v) for v in obj)
    if isinstance(obj, msgspec.Struct):
        return any(_has_nul(getattr(obj, f)) for f in obj.__struct_fields__)
    return False


def loads(raw: bytes | str, type=None):  # noqa: A002 - mirrors msgspec's signature
    """`msgspec.json.decode`, with hostile input turned into `Invalid`.

    NUL characters are refused: PostgreSQL cannot store them in text and no
    human-entered text needs one. JSON can only carry one as the escape
    `\\u0000`, so the payload is walked only when that escape appears in it."""
    try:
        obj = msgspec.json.decode(raw) if type is None else msgspec.json.decode(raw, type=type)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from None
    except msgspec.DecodeError as exc:
        raise Invalid(f"Malformed JSON ({str(exc)[:120]}).") from None
    except RecursionError:
        raise Invalid(TOO_DEEP) from None
    except UnicodeError:
        raise Invalid(NOT_UTF8) from None
    nul = b"\\u0000" if isinstance(raw, bytes | bytearray | memoryview) else "\\u0000"
    if nul in raw and _has_nul(obj):
        raise Invalid(HAS_NUL)
    return obj


def decode(struct_type: type[T], raw: bytes | str) -> T:
    """JSON text → struct; malformed JSON and wrong shapes both raise Invalid."""
    return loads(raw, type=struct_type)


def convert(struct_type: type[T], obj) -> T:
    """Already-parsed JSON (a Socket.IO payload, query args) → struct."""
    if obj is None:
        obj = {}
    try:
        return msgspec.convert(obj, type=struct_type, strict=True)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from None
    except RecursionError:
        raise Invalid(TOO_DEEP) from None


def convert_query(struct_type: type[T], query) -> T:
    """Query strings are text: allow str→int conversion here only."""
    args = dict(query)
    for key, value in args.items():
        if "\x00" in key or "\x00" in value:
            raise Invalid(HAS_NUL, details={"field": key[:64]})
    try:
        return msgspec.convert(args, type=struct_type, strict=False)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from None


def representable_in_utc(when) -> None:
    """For a struct's `__post_init__`: an aware time a client sent must still be a
    date once converted to UTC (year 1 at +14:00 is not), or the database
    driver fails on it. msgspec turns the ValueError into a ValidationError."""
    if when is not None and not isinstance(when, msgspec.UnsetType):
        try:
            when.astimezone(UTC)
        except OverflowError:
            raise ValueError("Time out of range (years 1 to 9999 in UTC)") from None


def int_id(value, field: str) -> int | None:
    """A numeric row id given as text (message, request ids): the int, or None
    when it is not a number at all (callers answer "no such ...").
    A number outside the database's 64-bit range is `Invalid`, not a lookup."""
    text = str(value).strip()
    if not text.isascii() or not text.isdigit():
        return None
    if len(text) > 19 or int(text) > MAX_INT64:
        raise Invalid(f"{field} is out of range.", details={"field": field})
    return int(text)


# --- names and texts ------------------------------------------------------------

# Characters that draw nothing but are not whitespace to str.isspace(): the
# Hangul fillers (a favourite for "invisible" names), the Braille blank,
# the combining grapheme joiner, Khmer inherent vowels and the variation
# selectors. Format characters (Cf: zero-width space/joiners, BOM, word joiner,
# soft hyphen, bidi marks, tags) are found by category.
_INVISIBLE = frozenset(
    "\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\u180e\u200b\u2060\ufeff"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)
# Unassigned (Cn) and private-use (Co) code points are not counted: a newer
# emoji than this Python's Unicode tables is visible to its reader.
_INVISIBLE_CATEGORIES = frozenset(("Cc", "Cf", "Zs", "Zl", "Zp", "Cs"))

# Bidi embeddings, overrides and isolates: in a name they reorder whatever is
# shown after it ("evil\u202etxt.exe"), so names never keep them.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_invisible(ch: str) -> bool:
    o = ord(ch)
    if ch in _INVISIBLE or 0xE0100 <= o <= 0xE01EF:  # + variation selectors 17–256
        return True
    return ch.isspace() or unicodedata.category(ch) in _INVISIBLE_CATEGORIES


def is_blank(text: str | None) -> bool:
    """True when nothing in `text` would be visible: empty, whitespace, or only
    zero-width/format characters, BOMs, fillers and the like."""
    if not text:
        return True
    if "!" <= text[0] <= "~":  # printable ASCII: most texts are answered here
        return False
    return all(is_invisible(ch) for ch in text)


def strip_invisible(text: str) -> str:
    """`text` without leading and trailing invisible characters (inner ones stay:
    a zero-width joiner inside an emoji sequence is part of it)."""
    start, end = 0, len(text)
    while start < end and is_invisible(text[start]):
        start += 1
    while end > start and is_invisible(text[end - 1]):
        end -= 1
    return text[start:end]


def clean_name(value: str, field: str, label: str | None = None) -> str:
    """A human-entered name (display name, group name, remark, file name) as it is
    stored: NFC, control characters (NUL included) and bidi controls removed,
    line breaks and tabs as spaces, invisible characters trimmed at both ends.
    Raises `Invalid` when nothing visible is left."""
    out = []
    for ch in unicodedata.normalize("NFC", value):
        if ch in BIDI_CONTROLS:
            continue
        cat = unicodedata.category(ch)
        if cat == "Cc" or cat in ("Zl", "Zp"):
            if ch.isspace():
                out.append(" ")
            continue
        out.append(ch)
    cleaned = strip_invisible("".join(out))
    if is_blank(cleaned):
        raise Invalid(f"{label or field.replace('_', ' ').capitalize()} cannot be blank.",
                      details={"field": field})
    return cleaned


def clean_optional_name(value: str, field: str) -> str:
    """Like `clean_name` for names that may be empty (a contact remark): an
    empty or invisible-only value becomes ""."""
    try:
        return clean_name(value, field)
    except Invalid:
        return ""
