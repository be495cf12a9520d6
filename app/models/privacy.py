"""Data protection: data keys in use, job locks and data exports.
Rules live in app/services/dataprot.py, app/services/erasure.py and app/services/export.py."""

from tortoise import fields
from tortoise.models import Model


class DataKeyRecord(Model):
    # A data key that has encrypted something. `check` proves at start-up that
    # the configured key with this id is the same key (app/crypto.py); a key
    # still needed (retired_at empty) must be configured.

    kid = fields.CharField(max_length=16, primary_key=True)
    check = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)
    retired_at = fields.DatetimeField(null=True)  # rotate-keys finished: no data needs it

    class Meta:
        table = "data_keys"


class JobLock(Model):
    # One holder at a time for a job every process schedules (erasures, export
    # clean-up); a lease, so a crashed holder's lock expires.

    name = fields.CharField(max_length=64, primary_key=True)
    holder = fields.CharField(max_length=64)
    expires_at = fields.DatetimeField()

    class Meta:
        table = "job_locks"


class DataExport(Model):
    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="exports",
                                  on_delete=fields.CASCADE)
    status = fields.CharField(max_length=8, default="pending")  # pending|building|ready|failed
    storage_key = fields.CharField(max_length=512, null=True)
    size = fields.BigIntField(null=True)
    error = fields.CharField(max_length=200, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    claimed_at = fields.DatetimeField(null=True)  # a process started building it
    ready_at = fields.DatetimeField(null=True)

    class Meta:
        table = "data_exports"
        indexes = (("user_id", "created_at"), ("status", "created_at"))
