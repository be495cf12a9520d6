"""Imports every module that registers Socket.IO events (keeps the list in one place)."""

from app.realtime import messaging  # noqa: F401
