"""Whom to notify, and what the notification says: pure functions, no I/O.

WeChat's behaviour, as docs/push.md describes it for app developers:

- nobody is pushed a message while one of their sessions is in the foreground;
- a muted chat stays silent, except for a message that mentions the person
  or @all;
- `push_enabled` off, or the do-not-disturb hours (in the person's own time
  zone), silence everything, mentions included;
- the preview setting decides how much leaves the server: `full` (sender and
  text), `sender` (sender only) or `none` ("You have a new message"); text is
  in a push only with `full`;
- one notification per chat and device at most every PUSH_COALESCE_SECONDS,
  replaced in place ("3 new messages");
- the badge is the unread total of the chats that are not muted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PREVIEWS = ("full", "sender", "none")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# Longest body text sent with `full` previews: notifications show a few lines.
BODY_LIMIT = 200

MEDIA_LABELS = {"image": "[Photo]", "voice": "[Voice message]", "video": "[Video]",
                "file": "[File]"}


@dataclass(frozen=True, slots=True)
class Recipient:
    """What the rules need to know about one person for one message."""

    user_id: str
    push_enabled: bool = True
    preview: str = "full"
    dnd_start: str | None = None
    dnd_end: str | None = None
    timezone: str = ""
    muted: bool = False  # the chat is muted on their side
    foreground: bool = False  # one of their sessions is in the foreground
    mentioned: bool = False  # the message mentions them or @all


def parse_hhmm(value: str) -> int | None:
    """'HH:MM' → minutes after midnight; None when malformed."""
    m = _HHMM.match(value or "")
    return int(m.group(1)) * 60 + int(m.group(2)) if m else None


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo | None:
    """The IANA zone of that name, or None (unknown names never raise here)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def valid_timezone(name: str) -> bool:
    return name == "" or zone(name) is not None


def in_dnd(start: str | None, end: str | None, tz: str, at: datetime) -> bool:
    """Whether `at` falls in the do-not-disturb window [start, end) in time zone
    `tz` (UTC when empty). A window whose end is before its start spans
    midnight (22:00-07:00); equal ends mean no window."""
    lo, hi = parse_hhmm(start or ""), parse_hhmm(end or "")
    if lo is None or hi is None or lo == hi:
        return False
    local = at.astimezone(zone(tz) or UTC)
    minute = local.hour * 60 + local.minute
    if lo < hi:
        return lo <= minute < hi
    return minute >= lo or minute < hi


def skip_reason(r: Recipient, at: datetime) -> str | None:
    """None when `r` gets a push for a new message at `at`; otherwise why not."""
    if r.foreground:
        return "foreground"
    if not r.push_enabled:
        return "disabled"
    if in_dnd(r.dnd_start, r.dnd_end, r.timezone, at):
        return "dnd"
    if r.muted and not r.mentioned:
        return "muted"
    return None


def is_mentioned(user_id: str, data: Mapping | None) -> bool:
    """The stored message data names this user, or @all."""
    if not data:
        return False
    if data.get("mention_all"):
        return True
    return str(user_id) in {str(u) for u in data.get("mentions") or ()}


def notifying(messages: Sequence[Mapping]) -> dict[str, tuple[Mapping, int]]:
    """Per person: the newest of one chat's `messages` (oldest first, each with
    `message_id`, `sender_id` and `recipients`) that notifies them, and how
    many do. A message notifies its recipients other than its sender.

    A busy chat's messages share one audience (the same recipients), so the
    work is per distinct audience and per person, not per message and person."""
    audiences: dict[tuple, list[Mapping]] = {}
    for m in messages:
        audiences.setdefault(m["recipients"], []).append(m)
    out: dict[str, tuple[Mapping, int]] = {}
    for recipients, group in audiences.items():
        sent_by = Counter(m["sender_id"] for m in group)
        last = group[-1]
        for u in recipients:
            n = len(group) - sent_by.get(u, 0)
            if not n:
                continue
            newest = last
            if newest["sender_id"] == u:
                newest = next(m for m in reversed(group) if m["sender_id"] != u)
            seen = out.get(u)
            if seen is None:
                out[u] = (newest, n)
            else:
                out[u] = (max(seen[0], newest, key=lambda m: m["message_id"]), seen[1] + n)
    return out


def summary(message_type: str, text: str) -> str:
    """The body text of a `full` preview: the text, or a label for media."""
    label = MEDIA_LABELS.get(message_type)
    if label:
        return f"{label} {text}".strip() if text else label
    text = " ".join(text.split())
    return text if len(text) <= BODY_LIMIT else text[:BODY_LIMIT - 1] + "…"


def notification(preview: str, *, sender: str, chat_title: str, is_group: bool,
                 message_type: str, text: str, count: int, mentioned: bool = False
                 ) -> dict:
    """{title, body} of a new-message notification under a preview mode. Only
    `full` carries anything of the message itself."""
    if preview == "none":
        return {"title": "Parley",
                "body": "You have a new message" if count <= 1
                else f"You have {count} new messages"}
    title = chat_title if is_group else sender
    if preview == "sender":
        if count > 1:
            body = f"{count} new messages"
        elif is_group:
            body = f"{sender} sent a message"
        else:
            body = "New message"
        return {"title": title, "body": body}
    line = summary(message_type, text)
    if is_group:
        line = f"{sender}: {line}"
    if mentioned:
        line = f"[Mentioned you] {line}"
    if count > 1:
        line = f"[{count} messages] {line}"
    return {"title": title, "body": line}


def recalled_notification(preview: str, *, sender: str, chat_title: str,
                          is_group: bool) -> dict:
    """The follow-up that replaces a recalled message's notification."""
    if preview == "none":
        return {"title": "Parley", "body": "A message was recalled"}
    title = chat_title if is_group else sender
    body = f"{sender} recalled a message" if is_group or preview == "full" \
        else "A message was recalled"
    return {"title": title, "body": body}


def due_at(now: datetime, last_sent_at: datetime | None, window: float) -> datetime:
    """When the next notification of a chat may go to a device: at once, or
    `window` seconds after the previous one."""
    if last_sent_at is None or window <= 0:
        return now
    return max(now, last_sent_at + timedelta(seconds=window))


def badge(unread: Mapping[str, int], muted: Iterable[str]) -> int:
    """The app badge: unread messages of the chats that are not muted."""
    quiet = {str(c) for c in muted}
    return sum(n for c, n in unread.items() if str(c) not in quiet and n > 0)


def should_send_badge(new: int, last_sent: int) -> bool:
    """A silent badge update goes out only when the badge dropped (reading
    elsewhere); rises come with the next notification."""
    return new < last_sent


def backoff(attempts: int, retry_after: float | None = None, *, base: float = 2.0,
            cap: float = 3600.0) -> float:
    """Seconds before the next try: exponential in the attempts so far, never
    earlier than the push service's Retry-After."""
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, 24 * 3600.0))
    return delay
