"""The push rules (app/services/push_rules.py), one by one, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.services import push_rules as rules
from app.services.push_rules import Recipient

NOON_UTC = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_a_foreground_session_means_no_push():
    assert rules.skip_reason(Recipient("u", foreground=True), NOON_UTC) == "foreground"
    assert rules.skip_reason(Recipient("u"), NOON_UTC) is None


def test_push_disabled_means_no_push_not_even_mentions():
    r = Recipient("u", push_enabled=False, mentioned=True)
    assert rules.skip_reason(r, NOON_UTC) == "disabled"


def test_muted_chat_is_silent_unless_mentioned():
    assert rules.skip_reason(Recipient("u", muted=True), NOON_UTC) == "muted"
    assert rules.skip_reason(Recipient("u", muted=True, mentioned=True), NOON_UTC) is None


def test_mentions_name_the_user_or_all():
    assert rules.is_mentioned("a", {"mentions": ["a", "b"]})
    assert not rules.is_mentioned("c", {"mentions": ["a", "b"]})
    assert rules.is_mentioned("c", {"mentions": [], "mention_all": True})
    assert not rules.is_mentioned("c", None)


@pytest.mark.parametrize("start, end, at, tz, expected", [
    ("22:00", "07:00", "23:30", "", True),  # spans midnight
    ("22:00", "07:00", "06:59", "", True),
    ("22:00", "07:00", "07:00", "", False),  # the end is excluded
    ("22:00", "07:00", "12:00", "", False),
    ("09:00", "17:00", "12:00", "", True),
    ("09:00", "17:00", "08:59", "", False),
    ("09:00", "09:00", "09:00", "", False),  # equal ends: no window
    (None, "07:00", "03:00", "", False),
    ("bad", "07:00", "03:00", "", False),
])
def test_dnd_window(start, end, at, tz, expected):
    h, m = map(int, at.split(":"))
    when = datetime(2026, 12, 4, h, m, tzinfo=UTC)
    assert rules.in_dnd(start, end, tz, when) is expected


def test_dnd_is_read_in_the_users_time_zone():
    # 12:00 UTC is 20:00 in Shanghai: inside 19:00-23:00 there, outside in UTC.
    assert rules.in_dnd("19:00", "23:00", "Asia/Shanghai", NOON_UTC)
    assert not rules.in_dnd("19:00", "23:00", "", NOON_UTC)
    # An unknown zone name falls back to UTC instead of failing.
    assert not rules.in_dnd("19:00", "23:00", "Nowhere/City", NOON_UTC)


def test_dnd_silences_mentions_too():
    r = Recipient("u", dnd_start="11:00", dnd_end="13:00", mentioned=True)
    assert rules.skip_reason(r, NOON_UTC) == "dnd"


def test_time_and_zone_validation():
    assert rules.parse_hhmm("07:30") == 450
    for bad in ("7:30", "24:00", "12:60", "", "12:00:00"):
        assert rules.parse_hhmm(bad) is None
    assert rules.valid_timezone("Europe/Paris") and rules.valid_timezone("")
    assert not rules.valid_timezone("Europe/Atlantis")
    assert not rules.valid_timezone("../../etc/passwd")


def test_full_preview_has_sender_and_text():
    n = rules.notification("full", sender="Alice", chat_title="", is_group=False,
                           message_type="text", text="hi there", count=1)
    assert n == {"title": "Alice", "body": "hi there"}
    g = rules.notification("full", sender="Alice", chat_title="Team", is_group=True,
                           message_type="text", text="hi", count=1, mentioned=True)
    assert g == {"title": "Team", "body": "[Mentioned you] Alice: hi"}


def test_sender_preview_never_has_text():
    n = rules.notification("sender", sender="Alice", chat_title="Team", is_group=True,
                           message_type="text", text="secret", count=1)
    assert "secret" not in str(n) and n["body"] == "Alice sent a message"
    d = rules.notification("sender", sender="Alice", chat_title="", is_group=False,
                           message_type="text", text="secret", count=3)
    assert d == {"title": "Alice", "body": "3 new messages"}


def test_none_preview_says_only_that_something_came():
    n = rules.notification("none", sender="Alice", chat_title="Team", is_group=True,
                           message_type="text", text="secret", count=1)
    assert n == {"title": "Parley", "body": "You have a new message"}
    assert rules.notification("none", sender="A", chat_title="", is_group=False,
                              message_type="text", text="x", count=4)["body"] == \
        "You have 4 new messages"


def test_coalesced_count_and_media_labels():
    n = rules.notification("full", sender="Alice", chat_title="", is_group=False,
                           message_type="image", text="", count=3)
    assert n["body"] == "[3 messages] [Photo]"
    long = rules.summary("text", "x" * 500)
    assert len(long) == rules.BODY_LIMIT and long.endswith("…")


def test_recalled_follow_up():
    assert rules.recalled_notification("full", sender="Alice", chat_title="",
                                       is_group=False)["body"] == "Alice recalled a message"
    assert rules.recalled_notification("none", sender="Alice", chat_title="",
                                       is_group=False) == {"title": "Parley",
                                                           "body": "A message was recalled"}


def test_coalescing_window():
    now = NOON_UTC
    assert rules.due_at(now, None, 5) == now
    assert rules.due_at(now, now - timedelta(seconds=2), 5) == now + timedelta(seconds=3)
    assert rules.due_at(now, now - timedelta(seconds=10), 5) == now
    assert rules.due_at(now, now - timedelta(seconds=2), 0) == now


def test_badge_counts_unmuted_chats_only_and_drops_are_sent():
    assert rules.badge({"a": 3, "b": 2, "c": 0}, muted=["b"]) == 3
    assert rules.should_send_badge(1, 3) and not rules.should_send_badge(3, 3)
    assert not rules.should_send_badge(4, 3)


def test_backoff_doubles_and_honours_retry_after():
    assert [rules.backoff(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert rules.backoff(1, retry_after=30) == 30
    assert rules.backoff(5, retry_after=1) == 32
    assert rules.backoff(40) == 3600


def _msg(mid: int, sender: str, to: tuple[str, ...]) -> dict:
    return {"message_id": mid, "sender_id": sender, "recipients": to}


def test_notifying_counts_what_others_sent_and_names_the_newest():
    chat = ("ann", "bob", "cat")
    msgs = [_msg(1, "ann", chat), _msg(2, "bob", chat), _msg(3, "ann", chat)]
    out = rules.notifying(msgs)
    assert {u: (m["message_id"], n) for u, (m, n) in out.items()} == {
        "ann": (2, 1),  # her own messages never notify her; the newest is bob's
        "bob": (3, 2),
        "cat": (3, 3),
    }


def test_notifying_follows_the_audience_as_it_changes():
    before, after = ("ann", "bob"), ("ann", "bob", "dan")  # dan joined between messages
    msgs = [_msg(1, "ann", before), _msg(2, "bob", before), _msg(3, "ann", after),
            _msg(4, "bob", before)]  # sent with an audience read before the join
    out = rules.notifying(msgs)
    assert {u: (m["message_id"], n) for u, (m, n) in out.items()} == {
        "ann": (4, 2), "bob": (3, 2), "dan": (3, 1)}


def test_notifying_leaves_out_whom_nothing_notifies():
    assert rules.notifying([_msg(1, "ann", ("ann",))]) == {}
    assert rules.notifying([_msg(1, "ann", ("ann", "bob")), _msg(2, "bob", ("bob",))]) == {
        "bob": (_msg(1, "ann", ("ann", "bob")), 1)}
