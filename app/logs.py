"""One structured (JSON) log line per request and per Socket.IO event, and
how code that keeps trying a dependency logs it being away (`Retrying`).

Only identifiers, routes, statuses and durations are logged: never bodies,
passwords, tokens or codes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

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


class Retrying:
    """How code that keeps trying a dependency (a background loop, a connect
    hook, the rate limiter) logs a run of failures: each kind of failure the
    first time in full (with its traceback), the same kind again at most once
    every `remind_every` seconds as one line, and the end of the run with how
    long it lasted. A database or Redis that is away for an hour is then a few
    lines, not a traceback every round or every client, and the line that
    says it is back is there to find."""

    __slots__ = ("_log", "_what", "_level", "_meanwhile", "_remind_every", "_clock", "_since",
                 "_told", "failures")

    def __init__(self, logger: logging.Logger, what: str, *, level: int = logging.WARNING,
                 meanwhile: str = "retrying", remind_every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._what, self._level = logger, what, level
        self._meanwhile = meanwhile  # what the loop does until it works again
        self._remind_every, self._clock = remind_every, clock
        self._since: float | None = None  # when the run of failures began
        self._told: dict[type, float] = {}  # kind of failure → when it was last told
        self.failures = 0  # in the current run

    def failed(self, exc: BaseException, detail: str = "",
               fields: dict | None = None) -> None:
        """`detail` is added to the what of the lines it causes, `fields` to
        their JSON (who and what this failure was about)."""
        now = self._clock()
        self.failures += 1
        if self._since is None:
            self._since = now
        what = f"{self._what} {detail}".rstrip()
        kind = type(exc)
        told = self._told.get(kind)
        if told is None:
            self._told[kind] = now
            self._log.log(self._level, "%s failed (%s); %s", what, kind.__name__,
                          self._meanwhile, exc_info=exc, extra={"fields": fields} if fields else None)
        elif now - told >= self._remind_every:
            self._told[kind] = now
            self._log.log(self._level, "%s still failing after %.0f s (%d attempts): %s: %s",
                          what, now - self._since, self.failures, kind.__name__, exc,
                          extra={"fields": fields} if fields else None)

    def ok(self) -> None:
        if self._since is None:
            return
        self._log.info("%s works again after %.0f s (%d failed attempt%s)",
                       self._what, self._clock() - self._since, self.failures,
                       "" if self.failures == 1 else "s")
        self._since, self.failures = None, 0
        self._told.clear()
