"""The send rules (app/services/send_rules.py), one by one, on facts built in memory:
no database, no server. The end-to-end behaviour of the same rules is covered by
test_messaging, test_contacts, test_groups and test_richer_messages."""

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from app.errors import DomainError, Forbidden, Invalid, NotContact, NotFound, YouBlocked
from app.services import send_rules as rules

AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CID = uuid.uuid4()
UID = uuid.uuid4()
PEER = uuid.uuid4()


def payload(**over):
    base = {"type": "text", "text": "hi", "reply_to": None, "media_id": None, "mentions": [],
            "mention_all": False, "contact_card": None, "location": None}
    base.update(over)
    return SimpleNamespace(**base)


def row(**over):
    """One row of the facts statement (sql._FACTS_COLUMNS): a plain group member."""
    base = {"mid": 7, "role": "member", "visible_from_seq": 0, "muted_until": None,
            "read_seq": 0, "type": "group", "dissolved_at": None, "only_admins_can_send": False,
            "members_version": None, "peer_id": None, "i_blocked": False,
            "they_blocked": False, "they_have_me": False, "peer_allows_strangers": False}
    base.update(over)
    return base


def direct(**over):
    return row(type="direct", peer_id=PEER, **over)


def code(exc: DomainError) -> str:
    return exc.code


# --- validate ------------------------------------------------------------------


def test_plain_text_is_only_text_without_extras():
    assert rules.is_plain_text(payload())
    for extra in ({"type": "image"}, {"reply_to": "1"}, {"mentions": ["x"]},
                  {"mention_all": True}, {"contact_card": object()}, {"location": object()}):
        assert not rules.is_plain_text(payload(**extra)), extra


def test_plain_text_is_stripped_and_bounded():
    assert rules.plain_text("  hello \n", 10) == "hello"
    assert rules.plain_text("x" * 10, 10) == "x" * 10
    with pytest.raises(Invalid) as e:
        rules.plain_text("x" * 11, 10)
    assert e.value.details == {"field": "text"} and "10 characters" in e.value.message


@pytest.mark.parametrize("blank", ["", "   ", "\n\t", "\u200b"])
def test_plain_text_cannot_be_blank(blank):
    with pytest.raises(Invalid) as e:
        rules.plain_text(blank, 100)
    assert e.value.message == "Message text cannot be empty."


def test_caption_only_on_images_and_videos():
    assert rules.caption("image", "  a cat ", 100) == "a cat"
    assert rules.caption("video", "clip", 100) == "clip"
    assert rules.caption("voice", "   ", 100) == ""  # blank: no caption, fine anywhere
    for kind in ("voice", "file"):
        with pytest.raises(Invalid) as e:
            rules.caption(kind, "words", 100)
        assert e.value.message == "Only images and videos take a caption."


def test_caption_is_bounded():
    with pytest.raises(Invalid) as e:
        rules.caption("image", "x" * 11, 10)
    assert e.value.message == "Caption too long." and e.value.details == {"field": "text"}


def test_media_id_needs_a_media_type():
    rules.check_no_media_id(payload())
    with pytest.raises(Invalid) as e:
        rules.check_no_media_id(payload(media_id="5"))
    assert e.value.details == {"field": "media_id"}


@pytest.mark.parametrize("field_name", ["contact_card", "location"])
def test_typed_content_needs_its_type(field_name):
    rules.typed_fields(payload())
    with pytest.raises(Invalid) as e:
        rules.typed_fields(payload(**{field_name: object()}))
    assert e.value.details == {"field": field_name}
    assert e.value.message == f"{field_name} needs type {field_name!r}."


def test_typed_fields_checks_media_id_first():
    with pytest.raises(Invalid) as e:
        rules.typed_fields(payload(media_id="5", location=object()))
    assert e.value.details == {"field": "media_id"}


# --- facts ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, row(mid=None), row(dissolved_at=AT)])
def test_facts_need_an_active_membership_of_a_live_conversation(bad):
    with pytest.raises(NotFound) as e:
        rules.facts_of_row(CID, UID, bad)
    assert e.value.message == rules.NO_SUCH_CONVERSATION


def test_facts_read_the_row():
    f = rules.facts_of_row(CID, UID, direct(i_blocked=1, peer_allows_strangers=1))
    assert f.conversation_type == "direct" and f.peer_id == str(PEER)
    assert f.contact_facts() == {"i_blocked": True, "they_blocked": False,
                                 "they_have_me": False, "they_allow_strangers": True}
    g = rules.facts_of_row(CID, UID, row(role="admin", muted_until=str(AT),
                                         only_admins_can_send=1, visible_from_seq=4))
    assert g.peer_id is None and g.role == "admin" and g.only_admins_can_send is True
    assert g.muted_until == AT  # SQLite hands back text


# --- rules ---------------------------------------------------------------------


def direct_facts(**over) -> dict:
    base = {"i_blocked": False, "they_blocked": False, "they_have_me": True,
            "they_allow_strangers": False}
    base.update(over)
    return base


def test_direct_contact_may_send():
    rules.check_direct(**direct_facts())


def test_direct_stranger_may_send_when_they_allow_strangers():
    rules.check_direct(**direct_facts(they_have_me=False, they_allow_strangers=True))


def test_direct_stranger_is_refused():
    with pytest.raises(NotContact):
        rules.check_direct(**direct_facts(they_have_me=False))


def test_direct_my_block_says_so():
    with pytest.raises(YouBlocked) as e:
        rules.check_direct(**direct_facts(i_blocked=True))
    assert "unblock" in e.value.message


def test_direct_their_block_looks_like_not_being_a_contact():
    with pytest.raises(NotContact) as blocked:
        rules.check_direct(**direct_facts(they_blocked=True, they_allow_strangers=True))
    with pytest.raises(NotContact) as stranger:
        rules.check_direct(**direct_facts(they_have_me=False))
    assert (code(blocked.value), blocked.value.message) == \
        (code(stranger.value), stranger.value.message)


def test_mute_holds_until_it_ends():
    rules.check_not_muted(None, AT)
    rules.check_not_muted(AT, AT)  # ends at that instant
    rules.check_not_muted(AT - timedelta(seconds=1), AT)
    until = AT + timedelta(seconds=1)
    with pytest.raises(Forbidden) as e:
        rules.check_not_muted(until, AT)
    assert e.value.details == {"muted_until": until.isoformat()}


def test_group_member_may_send():
    rules.check_group(role="member", muted_until=None, only_admins_can_send=False, at=AT)


def test_group_muted_member_is_refused():
    with pytest.raises(Forbidden) as e:
        rules.check_group(role="admin", muted_until=AT + timedelta(hours=1),
                          only_admins_can_send=False, at=AT)
    assert "muted" in e.value.message


@pytest.mark.parametrize(("role", "allowed"), [("member", False), ("admin", True),
                                               ("owner", True)])
def test_group_admins_only(role, allowed):
    if allowed:
        rules.check_group(role=role, muted_until=None, only_admins_can_send=True, at=AT)
    else:
        with pytest.raises(Forbidden) as e:
            rules.check_group(role=role, muted_until=None, only_admins_can_send=True, at=AT)
        assert "owner and admins" in e.value.message


def test_may_send_applies_the_direct_rule_to_direct_chats():
    rules.check_may_send(rules.facts_of_row(CID, UID, direct(they_have_me=True)), AT)
    with pytest.raises(NotContact):
        rules.check_may_send(rules.facts_of_row(CID, UID, direct()), AT)
    # A direct chat whose peer is gone has no contact facts: nothing to refuse on.
    rules.check_may_send(rules.facts_of_row(CID, UID, row(type="direct")), AT)


def test_may_send_applies_the_group_rules_to_groups_only():
    muted = {"muted_until": AT + timedelta(minutes=1)}
    with pytest.raises(Forbidden):
        rules.check_may_send(rules.facts_of_row(CID, UID, row(**muted)), AT)
    with pytest.raises(Forbidden):
        rules.check_may_send(rules.facts_of_row(CID, UID, row(only_admins_can_send=True)), AT)
    # Group settings stored on a direct chat do not apply to it.
    rules.check_may_send(rules.facts_of_row(
        CID, UID, direct(they_have_me=True, only_admins_can_send=True, **muted)), AT)


def test_mentions_only_in_groups():
    with pytest.raises(Invalid) as e:
        rules.check_mentions(conversation_type="direct", role="member", mentions=["a"],
                             mention_all=False, members={"a"})
    assert e.value.details == {"field": "mentions"}


def test_mention_all_needs_an_admin():
    with pytest.raises(Forbidden):
        rules.check_mentions(conversation_type="group", role="member", mentions=[],
                             mention_all=True, members=None)
    assert rules.check_mentions(conversation_type="group", role="admin", mentions=[],
                                mention_all=True, members=None) == \
        {"mentions": [], "mention_all": True}


def test_mentions_must_be_members():
    assert rules.check_mentions(conversation_type="group", role="member", mentions=["a", "b"],
                                mention_all=False, members={"a", "b", "c"}) == \
        {"mentions": ["a", "b"], "mention_all": False}
    with pytest.raises(Invalid) as e:
        rules.check_mentions(conversation_type="group", role="member", mentions=["a", "z"],
                             mention_all=False, members={"a"})
    assert e.value.details == {"field": "mentions", "user_ids": ["z"]}


def test_reply_target_must_be_visible():
    rules.check_reply_target(5, 4)
    for seq in (None, 4, 1):
        with pytest.raises(Invalid) as e:
            rules.check_reply_target(seq, 4)
        assert e.value.details == {"field": "reply_to"}


# --- the writer's check --------------------------------------------------------


def test_judge_queued_send_refuses_non_members_and_applies_the_rules():
    item = SimpleNamespace(conversation_id=CID, sender_id=UID)
    rules.judge_queued_send(item, row())
    with pytest.raises(NotFound):
        rules.judge_queued_send(item, row(mid=None))
    with pytest.raises(NotContact):
        rules.judge_queued_send(item, direct())
    with pytest.raises(Forbidden):
        rules.judge_queued_send(item, row(muted_until=datetime.now(UTC) + timedelta(hours=1)))
