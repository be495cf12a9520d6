"""Push notification devices and the durable push outbox."""

from tortoise import fields
from tortoise.models import Model


class PushSubscription(Model):
    # One device that accepts pushes. It belongs to the auth session that
    # registered it: ending the session deletes it.

    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="push_subscriptions",
                                  on_delete=fields.CASCADE)
    session = fields.ForeignKeyField("models.AuthSession", related_name="push_subscriptions",
                                     on_delete=fields.CASCADE)
    kind = fields.CharField(max_length=8)  # webpush | fcm | apns
    # The Web Push endpoint URL, or the FCM / APNs device token.
    address = fields.TextField()
    # sha256 of "kind:address": one row per device, whatever the address length.
    address_hash = fields.CharField(max_length=64, unique=True)
    p256dh = fields.CharField(max_length=100, default="")  # Web Push keys (base64url)
    auth = fields.CharField(max_length=40, default="")
    environment = fields.CharField(max_length=10, default="")  # APNs: production | sandbox
    # The badge last sent to the device: a silent update goes out only when it drops.
    badge = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "push_subscriptions"
        indexes = (("user_id",), ("session_id",))


class PushOutbox(Model):
    # The next push owed to one device for one thread (a conversation, or
    # "badge" for silent badge updates). One row per (subscription, thread),
    # kept after sending: new messages of a chat update it in place, which is
    # how several messages coalesce into one notification.

    id = fields.BigIntField(primary_key=True)
    subscription = fields.ForeignKeyField("models.PushSubscription", related_name="outbox",
                                          on_delete=fields.CASCADE)
    user_id = fields.UUIDField()
    thread = fields.CharField(max_length=40)  # conversation id or "badge"
    kind = fields.CharField(max_length=8, default="message")  # message | recall | badge
    pending = fields.BooleanField(default=True)
    payload = fields.JSONField(null=True)  # what the device is told (already preview-filtered)
    message_id = fields.BigIntField(default=0)  # newest message this row announces
    sent_message_id = fields.BigIntField(default=0)  # newest one already delivered
    count = fields.IntField(default=0)  # messages announced since the user last read
    rev = fields.IntField(default=0)  # bumped on every update: a send in flight sees it
    attempts = fields.IntField(default=0)
    due_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    claimed_until = fields.DatetimeField(null=True)  # a worker's lease
    sent_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "push_outbox"
        unique_together = (("subscription", "thread"),)
        indexes = (("pending", "due_at"), ("user_id", "thread"))


class PushCheckpoint(Model):
    # How far the planner got: every message up to message_id (give or take
    # the few handed over out of order) is in the outbox. Start-up re-plans
    # what is above it, so pushes the planner held in memory survive a crash.

    id = fields.CharField(max_length=16, primary_key=True)  # "planner"
    message_id = fields.BigIntField(default=0)
    updated_at = fields.DatetimeField()

    class Meta:
        table = "push_checkpoint"
