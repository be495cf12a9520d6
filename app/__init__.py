"""Parley: a self-hostable instant-messaging server."""

__version__ = "0.1.0"
