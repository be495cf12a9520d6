"""Decoding untrusted payloads into typed structs, with errors clients can read.

REST bodies and Socket.IO payloads both go through `decode`/`convert`, so the
same struct gives the same `invalid` error on either transport.
"""

from __future__ import annotations

import re
from typing import Annotated, TypeVar

import msgspec

from app.errors import Invalid

T = TypeVar("T")

# Shared field types.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=128)]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Username = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]{3,32}$")]
Limit = Annotated[int, msgspec.Meta(ge=1, le=200)]

_PATH_RE = re.compile(r"at `\$\.?([^`]*)`")


class Payload(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base for request structs: unknown fields are an error, not silently dropped."""


def _invalid(exc: msgspec.ValidationError | msgspec.DecodeError) -> Invalid:
    text = str(exc)
    details = {}
    m = _PATH_RE.search(text)
    if m and m.group(1):
        details["field"] = m.group(1)
    return Invalid(text, details=details or None)


def decode(struct_type: type[T], raw: bytes | str) -> T:
    """JSON text → struct; malformed JSON and wrong shapes both raise Invalid."""
    try:
        return msgspec.json.decode(raw, type=struct_type)
    except msgspec.DecodeError as exc:
        if isinstance(exc, msgspec.ValidationError):
            raise _invalid(exc) from None
        raise Invalid("Malformed JSON.") from None


def convert(struct_type: type[T], obj) -> T:
    """Already-parsed JSON (a Socket.IO payload, query args) → struct."""
    if obj is None:
        obj = {}
    try:
        return msgspec.convert(obj, type=struct_type, strict=True)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from None


def convert_query(struct_type: type[T], query) -> T:
    """Query strings are text: allow str→int conversion here only."""
    try:
        return msgspec.convert(dict(query), type=struct_type, strict=False)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from None
