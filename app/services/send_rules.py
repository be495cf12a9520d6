"""Every rule a new message must pass, as plain functions on facts already read.

The send pipeline (app/services/messaging.py, `send_message`) reads top to bottom:

1. validate: the payload's shape (messaging.SendIn), then the text rules here
   (`plain_text`, `caption`, `typed_fields`);
2. facts: one row per send, read by one statement (app/services/sql.py,
   `_FACTS_COLUMNS`), turned into `SendFacts` here (`facts_of_row`);
3. rules: `check_may_send` (the direct-chat rule `check_direct` or the group rule
   `check_group`), and for richer messages `check_mentions` and
   `check_reply_target`;
4. write: the message writer (app/services/message_writer/) reads the facts
   under the conversation's lock and calls `judge_queued_send`, so a change
   committed before the message got its seq is honoured by it;
5. fan-out: messaging.publish_written.

Nothing here awaits or touches the database: the writer calls these functions
inside its transaction (on SQLite while it holds the one connection), where a
query would wait on the writer itself. The current time is an argument, so
each rule is a function of its inputs alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from app.clock import now
from app.errors import Forbidden, Invalid, NotContact, NotFound, YouBlocked
from app.models.messaging import Conversation, Membership
from app.services.sql import as_datetime
from app.validation import is_blank

NO_SUCH_CONVERSATION = "No such conversation."
MEDIA_TYPES = ("image", "voice", "video", "file")
TYPED_TYPES = ("contact_card", "location")


# --- 1. validate -------------------------------------------------------------


def is_plain_text(data) -> bool:
    """A text message with no reply, mentions or typed content: the common case,
    which needs no facts before the writer."""
    return (data.type == "text" and data.reply_to is None and not data.mentions
            and not data.mention_all and data.contact_card is None and data.location is None)


def plain_text(text: str, max_length: int) -> str:
    """The text of a text message: stripped, not blank, at most max_length."""
    text = text.strip()
    if is_blank(text):
        raise Invalid("Message text cannot be empty.", details={"field": "text"})
    if len(text) > max_length:
        raise Invalid(f"Message text is limited to {max_length} characters.",
                      details={"field": "text"})
    return text


def caption(type_: str, text: str, max_length: int) -> str:
    """The caption of a media message: images and videos only, may be empty."""
    text = text.strip()
    if is_blank(text):
        text = ""
    if text and type_ not in ("image", "video"):
        raise Invalid("Only images and videos take a caption.", details={"field": "text"})
    if len(text) > max_length:
        raise Invalid("Caption too long.", details={"field": "text"})
    return text


def check_no_media_id(data) -> None:
    if data.media_id is not None:
        raise Invalid("media_id needs a media message type.", details={"field": "media_id"})


def typed_fields(data) -> None:
    """A text message carries neither media nor typed content."""
    check_no_media_id(data)
    if data.contact_card is not None or data.location is not None:
        field_name = "contact_card" if data.contact_card is not None else "location"
        raise Invalid(f"{field_name} needs type {field_name!r}.",
                      details={"field": field_name})


# --- 2. facts ----------------------------------------------------------------


class SendFacts:
    """What a send is judged on: one row of the facts statement (sql.py,
    `_FACTS_COLUMNS`; column names there), read as plain values. `membership` (a
    Membership with its Conversation, built in memory) is made only when asked
    for: mentions and replies need it, a direct text message does not."""

    __slots__ = ("conversation_id", "user_id", "row", "conversation_type", "peer_id",
                 "_membership")

    def __init__(self, conversation_id: uuid.UUID, user_id: uuid.UUID, row: Mapping) -> None:
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.row = row
        self.conversation_type = row["type"]
        peer = row["peer_id"]
        self.peer_id = str(peer) if peer is not None else None
        self._membership: Membership | None = None

    def contact_facts(self) -> dict:
        """Direct chats: the block/contact/privacy facts between the two, as
        `check_direct` takes them."""
        row = self.row
        return {"i_blocked": bool(row["i_blocked"]), "they_blocked": bool(row["they_blocked"]),
                "they_have_me": bool(row["they_have_me"]),
                "they_allow_strangers": bool(row["peer_allows_strangers"])}

    @property
    def role(self) -> str:
        return self.row["role"]

    @property
    def muted_until(self) -> datetime | None:
        return as_datetime(self.row["muted_until"])

    @property
    def only_admins_can_send(self) -> bool:
        return bool(self.row["only_admins_can_send"])

    @property
    def membership(self) -> Membership:
        if self._membership is None:
            row = self.row
            conv = Conversation(id=self.conversation_id, type=row["type"],
                                only_admins_can_send=self.only_admins_can_send)
            m = Membership(id=row["mid"], conversation_id=self.conversation_id,
                           user_id=self.user_id, role=row["role"],
                           visible_from_seq=row["visible_from_seq"], read_seq=row["read_seq"],
                           muted_until=self.muted_until)
            m.conversation = conv
            self._membership = m
        return self._membership


def facts_of_row(conversation_id: uuid.UUID, user_id: uuid.UUID,
                 row: Mapping | None) -> SendFacts:
    """The facts of a fetched row; NotFound unless the user is an active member of
    a live conversation (strangers and unknown ids get the same answer)."""
    if row is None or row["mid"] is None or row["dissolved_at"] is not None:
        raise NotFound(NO_SUCH_CONVERSATION)
    return SendFacts(conversation_id, user_id, row)


# --- 3. rules ----------------------------------------------------------------


def check_direct(*, i_blocked: bool, they_blocked: bool, they_have_me: bool,
                 they_allow_strangers: bool) -> None:
    """A direct message: refused when I blocked them (I can undo that), or when I
    am not in their contacts and they do not allow strangers. Their block gets
    the same `not_contact` answer as not being their contact, so it is never
    revealed."""
    if i_blocked:
        raise YouBlocked("You blocked this person; unblock them to send messages.")
    if they_blocked:
        raise NotContact()
    if they_have_me or they_allow_strangers:
        return
    raise NotContact()


def check_not_muted(muted_until: datetime | None, at: datetime) -> None:
    if muted_until is not None and muted_until > at:
        raise Forbidden("You are muted in this group.",
                        details={"muted_until": muted_until.isoformat()})


def check_group(*, role: str, muted_until: datetime | None, only_admins_can_send: bool,
                at: datetime) -> None:
    """A group message: refused while the member is muted, and from plain members
    when only admins may send."""
    check_not_muted(muted_until, at)
    if only_admins_can_send and role == "member":
        raise Forbidden("Only the group's owner and admins can send messages here.")


def check_may_send(facts: SendFacts, at: datetime) -> None:
    """Who may post here: the contact rule (direct) or the group rules. A direct
    chat whose peer is gone (deleted account) has no contact facts to judge."""
    if facts.conversation_type == "direct":
        if facts.peer_id is not None:
            check_direct(**facts.contact_facts())
    elif facts.conversation_type == "group":
        check_group(role=facts.role, muted_until=facts.muted_until,
                    only_admins_can_send=facts.only_admins_can_send, at=at)


def check_mentions(*, conversation_type: str, role: str, mentions: list[str],
                   mention_all: bool, members: set[str] | None) -> dict:
    """Typed mention data for a message ({"mentions": [...], "mention_all": bool}).
    `mentions` is deduplicated, `members` the group's current member ids (only
    needed when someone is mentioned by name)."""
    if conversation_type != "group":
        raise Invalid("Mentions are only supported in group chats.",
                      details={"field": "mentions"})
    if mention_all and role == "member":
        raise Forbidden("Only the group's owner and admins can mention everyone.")
    if mentions:
        bad = [i for i in mentions if i not in (members or ())]
        if bad:
            raise Invalid("You can only mention members of this group.",
                          details={"field": "mentions", "user_ids": bad})
    return {"mentions": mentions, "mention_all": bool(mention_all)}


def check_reply_target(target_seq: int | None, visible_from_seq: int) -> None:
    """A reply quotes a message of this conversation the sender can see
    (`target_seq` None: no such message in this conversation)."""
    if target_seq is None or target_seq <= visible_from_seq:
        raise Invalid("reply_to is not a message of this conversation.",
                      details={"field": "reply_to"})


# --- 4. the writer's check -----------------------------------------------------


def judge_queued_send(item, row: Mapping | None) -> None:
    """The message writer's Judge: runs in its transaction on the facts read under
    the conversation's lock (`item` is a message_writer.NewMessage)."""
    check_may_send(facts_of_row(item.conversation_id, item.sender_id, row), now())
