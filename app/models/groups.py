"""Group chats: invite links and @-mentions. Rules live in app/services/groups.py.

The group itself is a Conversation (type "group") and its people are Memberships.
"""

from tortoise import fields
from tortoise.models import Model


class GroupInvite(Model):
    # A join link. Usable while not revoked, not expired and `uses < max_uses`.

    id = fields.BigIntField(primary_key=True)
    token = fields.CharField(max_length=64, unique=True)
    conversation = fields.ForeignKeyField(
        "models.Conversation", related_name="invites", on_delete=fields.CASCADE
    )
    created_by = fields.ForeignKeyField(
        "models.User", related_name="group_invites", on_delete=fields.CASCADE
    )
    max_uses = fields.IntField(null=True)  # None: unlimited
    uses = fields.IntField(default=0)
    expires_at = fields.DatetimeField(null=True)  # None: never
    revoked_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "group_invites"
        indexes = (("conversation_id",),)


class MessageMention(Model):
    # One row per (message, mentioned user); `user` is NULL for @all.
    #
    # Written in the same transaction as the message, so "mentions of me after my
    # read_seq" is one indexed count.

    id = fields.BigIntField(primary_key=True)
    message = fields.ForeignKeyField(
        "models.Message", related_name="mention_rows", on_delete=fields.CASCADE
    )
    conversation_id = fields.UUIDField()
    seq = fields.BigIntField()
    user = fields.ForeignKeyField(
        "models.User", related_name="mentioned_in", null=True, on_delete=fields.CASCADE
    )

    class Meta:
        table = "message_mentions"
        indexes = (("conversation_id", "user_id", "seq"),)
