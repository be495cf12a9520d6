"""Imports every module that registers Socket.IO events (keeps the list in one place)."""

from app.realtime import (
    contacts,  # noqa: F401
    message_changes,  # noqa: F401
    messaging,  # noqa: F401
    push,  # noqa: F401
)
