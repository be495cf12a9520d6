"""Contacts, friend requests and blocks. Rules live in app/services/contacts.py."""

from tortoise import fields
from tortoise.models import Model


class ContactRequest(Model):
    # A friend request with its greeting. Expiry is computed from `expires_at`.

    id = fields.BigIntField(primary_key=True)
    from_user = fields.ForeignKeyField(
        "models.User", related_name="contact_requests_sent", on_delete=fields.CASCADE
    )
    to_user = fields.ForeignKeyField(
        "models.User", related_name="contact_requests_received", on_delete=fields.CASCADE
    )
    message = fields.CharField(max_length=200, default="")
    status = fields.CharField(max_length=10, default="pending")  # pending|accepted|rejected|expired
    # "<from uuid>:<to uuid>" while pending, NULL afterwards: at most one pending
    # request per direction, race-free (NULLs never collide in a UNIQUE index).
    pending_key = fields.CharField(max_length=80, null=True, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    expires_at = fields.DatetimeField()
    responded_at = fields.DatetimeField(null=True)

    class Meta:
        table = "contact_requests"
        indexes = (("to_user_id", "status"), ("from_user_id", "status"))


class Contact(Model):
    # One side of a friendship: `owner` has `contact` in their list. Deleting is
    # one-sided (WeChat): the other row may stay.

    id = fields.BigIntField(primary_key=True)
    owner = fields.ForeignKeyField("models.User", related_name="contacts", on_delete=fields.CASCADE)
    contact = fields.ForeignKeyField(
        "models.User", related_name="contact_of", on_delete=fields.CASCADE
    )
    remark = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "contacts"
        unique_together = (("owner", "contact"),)
        indexes = (("contact_id",),)


class Block(Model):
    id = fields.BigIntField(primary_key=True)
    blocker = fields.ForeignKeyField("models.User", related_name="blocks", on_delete=fields.CASCADE)
    blocked = fields.ForeignKeyField(
        "models.User", related_name="blocked_by", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "blocks"
        unique_together = (("blocker", "blocked"),)
        indexes = (("blocked_id",),)
