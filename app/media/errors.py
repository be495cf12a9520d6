"""Typed errors raised by :mod:`app.media` (and by the storage writers for size caps).

They subclass the project's :class:`app.errors.DomainError` family, so a transport
that already maps domain errors (HTTP status + ``{"code", "message"}`` body) handles
them without extra code:

* :class:`InvalidMedia` — ``code="invalid_media"``, HTTP 400. The bytes are not what was
  claimed, cannot be decoded, or use an unsupported format/codec.
* :class:`TooLarge` — ``code="too_large"``, HTTP 413. Too many bytes, too many pixels
  (decompression bomb) or — by decision — a voice note/video that is *longer* than the
  allowed duration. Over-duration is reported as ``too_large`` because, like a byte cap,
  it is a quantitative limit the client can show as "too long/too big" and retrying with
  a shorter recording fixes it; ``details["limit"]`` says which limit was hit.
"""

from __future__ import annotations

from app import errors as _errors


class MediaError(_errors.DomainError):
    """Base class of every media error (never raised directly)."""


class InvalidMedia(MediaError, _errors.Invalid):
    code, status, default_message = "invalid_media", 400, "The file is not valid media."


class TooLarge(MediaError, _errors.TooLarge):
    code, status, default_message = "too_large", 413, "The file is too large."

    def __init__(self, message: str | None = None, *, limit: str | None = None,
                 max_value: int | None = None, details: dict | None = None):
        d = dict(details or {})
        if limit is not None:
            d["limit"] = limit
        if max_value is not None:
            d["max"] = max_value
        super().__init__(message, details=d or None)
        self.limit = limit
        self.max_value = max_value
