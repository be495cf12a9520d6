"""One structured (JSON) log line per request and per Socket.IO event.

Only identifiers, routes, statuses and durations are logged: never bodies,
passwords, tokens or codes.
"""

from __future__ import annotations

import logging
import sys
import time

import msgspec

access_log = logging.getLogger("parley.access")
event_log = logging.getLogger("parley.events")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line).decode()


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(getattr(h, "_parley", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._parley = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's own access log would repeat ours without the ids.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def log_request(**fields) -> None:
    access_log.info("request", extra={"fields": fields})


def log_event(**fields) -> None:
    event_log.info("event", extra={"fields": fields})


class Timer:
    __slots__ = ("start",)

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def ms(self) -> float:
        return round((time.perf_counter() - self.start) * 1000, 2)
