"""The one clock the services read: aware UTC datetimes, as the models store them."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
