"""State of the deployment itself, shared by every server process through the database."""

from tortoise import fields
from tortoise.models import Model


class ServerSecret(Model):
    """A generated secret every process must agree on (`secret_key` when
    SECRET_KEY is not configured: app/services/server_secrets.py)."""

    name = fields.CharField(max_length=64, primary_key=True)
    value = fields.TextField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "server_secrets"
