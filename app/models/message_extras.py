"""What people do to a stored message: reactions, edits, pins. Rules live in
app/services/message_changes.py."""

from tortoise import fields
from tortoise.models import Model


class MessageReaction(Model):
    # One emoji of one user on one message (a set per user and message).

    id = fields.BigIntField(primary_key=True)
    message = fields.ForeignKeyField(
        "models.Message", related_name="reactions", on_delete=fields.CASCADE
    )
    user = fields.ForeignKeyField("models.User", related_name="reactions",
                                  on_delete=fields.CASCADE)
    emoji = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "message_reactions"
        unique_together = (("message", "user", "emoji"),)


class MessageVersion(Model):
    # The text a message had before an edit; only its sender may read these.

    id = fields.BigIntField(primary_key=True)
    message = fields.ForeignKeyField(
        "models.Message", related_name="versions", on_delete=fields.CASCADE
    )
    text = fields.TextField()
    data = fields.JSONField(null=True)  # mentions as they were
    # When this text was written (the send, or the edit that made it).
    written_at = fields.DatetimeField()
    replaced_at = fields.DatetimeField()

    class Meta:
        table = "message_versions"
        indexes = (("message_id", "id"),)


class Pin(Model):
    # A pinned message of a conversation (at most MAX_PINS per conversation).

    id = fields.BigIntField(primary_key=True)
    conversation = fields.ForeignKeyField(
        "models.Conversation", related_name="pins", on_delete=fields.CASCADE
    )
    message = fields.OneToOneField("models.Message", related_name="pin",
                                   on_delete=fields.CASCADE)
    pinned_by = fields.ForeignKeyField("models.User", related_name="pins", null=True,
                                       on_delete=fields.SET_NULL)
    pinned_at = fields.DatetimeField()

    class Meta:
        table = "pins"
        indexes = (("conversation_id", "pinned_at"),)
