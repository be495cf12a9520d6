"""Uploaded media and where it was sent. Rules live in app/services/media.py."""

from tortoise import fields
from tortoise.models import Model


class Media(Model):
    # One stored upload. Bytes live in the storage backend under `storage_key`
    # (server-generated); `name` is the sanitised user file name, metadata only.

    id = fields.UUIDField(primary_key=True)
    uploader = fields.ForeignKeyField(
        "models.User", related_name="media", null=True, on_delete=fields.SET_NULL
    )
    kind = fields.CharField(max_length=8)  # image | voice | video | file
    mime = fields.CharField(max_length=128)  # sniffed type the object is served with
    size = fields.BigIntField()  # bytes stored (re-encoded size for images)
    name = fields.CharField(max_length=255)
    storage_key = fields.CharField(max_length=512)
    thumb_key = fields.CharField(max_length=512, null=True)  # image thumbnail / video poster
    inline = fields.BooleanField(default=False)  # may be shown inline (validated media)
    width = fields.IntField(null=True)
    height = fields.IntField(null=True)
    duration_ms = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    # Last time someone attached it to a message send (guards the orphan sweep).
    last_attached_at = fields.DatetimeField(null=True)
    # True once a stored message is known to carry it: never an orphan again.
    kept = fields.BooleanField(default=False)

    class Meta:
        table = "media"
        indexes = (("kept", "created_at"), ("uploader_id",))  # quota: bytes per uploader


class MediaAttachment(Model):
    # A message send that carried the media. Points at the message through its
    # idempotency key (sender, client_msg_id), which is UNIQUE on messages, because
    # the message row does not exist yet when the attachment is checked.

    id = fields.BigIntField(primary_key=True)
    media = fields.ForeignKeyField(
        "models.Media", related_name="attachments", on_delete=fields.CASCADE
    )
    conversation_id = fields.UUIDField()
    sender_id = fields.UUIDField()
    client_msg_id = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "media_attachments"
        unique_together = (("media", "sender_id", "client_msg_id"),)
        indexes = (("media_id", "conversation_id"),)
