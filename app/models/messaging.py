from tortoise import fields
from tortoise.models import Model


class Conversation(Model):
    id = fields.UUIDField(primary_key=True)
    type = fields.CharField(max_length=8)  # direct | group
    # "<user uuid>:<user uuid>" sorted: makes direct get-or-create race-free.
    direct_key = fields.CharField(max_length=80, null=True, unique=True)
    title = fields.CharField(max_length=64, default="")
    announcement = fields.TextField(default="")
    only_admins_can_send = fields.BooleanField(default=False)
    members_can_invite = fields.BooleanField(default=True)
    members_can_pin = fields.BooleanField(default=False, db_default=False)  # groups: else owner/admins only
    last_seq = fields.BigIntField(default=0)
    last_message_at = fields.DatetimeField(null=True)
    # Advanced by every change to a stored message (recall, edit, reactions, pin):
    # the device's change cursor in `sync` (docs/protocol.md, "Changes").
    change_seq = fields.BigIntField(default=0, db_default=0)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    dissolved_at = fields.DatetimeField(null=True)
    avatar_key = fields.CharField(max_length=64, null=True)  # groups: see User.avatar_key

    class Meta:
        table = "conversations"


class Membership(Model):
    id = fields.BigIntField(primary_key=True)
    conversation = fields.ForeignKeyField(
        "models.Conversation", related_name="memberships", on_delete=fields.CASCADE
    )
    user = fields.ForeignKeyField("models.User", related_name="memberships", on_delete=fields.CASCADE)
    role = fields.CharField(max_length=8, default="member")  # owner | admin | member
    read_seq = fields.BigIntField(default=0)
    # Highest seq any device of this member acked as received (never moves back).
    delivered_seq = fields.BigIntField(default=0, db_default=0)
    # History visible to this member: seq in (visible_from_seq, left_seq].
    visible_from_seq = fields.BigIntField(default=0)
    left_seq = fields.BigIntField(null=True)
    joined_at = fields.DatetimeField(auto_now_add=True)
    left_at = fields.DatetimeField(null=True)
    muted_until = fields.DatetimeField(null=True)  # group moderation: cannot send
    notifications_muted = fields.BooleanField(default=False)  # "mute chat" on my side
    # Bumped whenever anything the member sees in the list changes; sync cursor helper.
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "memberships"
        unique_together = (("conversation", "user"),)
        indexes = (("user_id", "left_at"),)


class Message(Model):
    id = fields.BigIntField(primary_key=True)
    conversation = fields.ForeignKeyField(
        "models.Conversation", related_name="messages", on_delete=fields.CASCADE
    )
    seq = fields.BigIntField()
    sender = fields.ForeignKeyField(
        "models.User", related_name="sent_messages", null=True, on_delete=fields.SET_NULL
    )
    client_msg_id = fields.CharField(max_length=64, null=True)
    # text | image | voice | video | file | system | chat_record | contact_card | location
    type = fields.CharField(max_length=16)
    text = fields.TextField(default="")
    reply_to_id = fields.BigIntField(null=True)
    data = fields.JSONField(null=True)  # system event payload, mentions, media snapshot
    created_at = fields.DatetimeField(auto_now_add=True)
    recalled_at = fields.DatetimeField(null=True)
    # The conversation's change_seq of this message's latest change (NULL: never
    # changed since it was sent); `sync` returns held messages changed after a cursor.
    change_seq = fields.BigIntField(null=True)

    class Meta:
        table = "messages"
        unique_together = (("conversation", "seq"), ("sender", "client_msg_id"))
        indexes = (("conversation_id", "change_seq"),)


class HiddenMessage(Model):
    # "Delete for me": the message stays for everyone else.

    id = fields.BigIntField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="hidden_messages", on_delete=fields.CASCADE)
    message = fields.ForeignKeyField("models.Message", related_name="hidden_by", on_delete=fields.CASCADE)
    conversation_id = fields.UUIDField()

    class Meta:
        table = "hidden_messages"
        unique_together = (("user", "message"),)
        indexes = (("user_id", "conversation_id"),)
