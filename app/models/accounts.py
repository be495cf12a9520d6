from tortoise import fields
from tortoise.models import Model


class User(Model):
    id = fields.UUIDField(primary_key=True)
    username = fields.CharField(max_length=32, unique=True)
    email = fields.CharField(max_length=254, null=True, unique=True)
    phone = fields.CharField(max_length=20, null=True, unique=True)
    password_hash = fields.CharField(max_length=255, null=True)
    display_name = fields.CharField(max_length=64)
    bio = fields.CharField(max_length=280, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    last_seen_at = fields.DatetimeField(null=True)
    # Privacy settings (contacts issue); defaults follow WeChat.
    allow_strangers = fields.BooleanField(default=False)
    send_read_receipts = fields.BooleanField(default=True)
    last_seen_visibility = fields.CharField(max_length=16, default="contacts")
    discoverable_by_email = fields.BooleanField(default=True)
    discoverable_by_phone = fields.BooleanField(default=True)
    language = fields.CharField(max_length=16, default="")
    # Push notifications (app/services/push_rules.py): off, preview mode, do-not-disturb.
    push_enabled = fields.BooleanField(default=True)
    push_preview = fields.CharField(max_length=8, default="full")  # full | sender | none
    dnd_start = fields.CharField(max_length=5, null=True)  # "HH:MM" local time
    dnd_end = fields.CharField(max_length=5, null=True)
    timezone = fields.CharField(max_length=64, default="")  # IANA name; empty: UTC
    # Avatar objects live in media storage under avatars/<avatar_key>/<size>.jpg;
    # a new upload gets a new key, so its URLs can be cached for good.
    avatar_key = fields.CharField(max_length=64, null=True)

    class Meta:
        table = "users"


class AuthSession(Model):
    # One signed-in device. Access tokens carry its id (`sid`) so revoking it
    # stops them at once.

    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="sessions", on_delete=fields.CASCADE)
    device = fields.CharField(max_length=200, default="")
    ip = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    last_used_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "auth_sessions"
        indexes = (("user_id", "revoked_at"),)


class RefreshToken(Model):
    # Every refresh token ever issued, hashed. A token that was already
    # rotated and comes back means it leaked: the whole session is revoked.

    id = fields.BigIntField(primary_key=True)
    session = fields.ForeignKeyField(
        "models.AuthSession", related_name="refresh_tokens", on_delete=fields.CASCADE
    )
    token_hash = fields.CharField(max_length=64, unique=True)
    expires_at = fields.DatetimeField()
    rotated_at = fields.DatetimeField(null=True)

    class Meta:
        table = "refresh_tokens"


class VerificationCode(Model):
    id = fields.BigIntField(primary_key=True)
    target = fields.CharField(max_length=254)  # normalised email or E.164 phone
    purpose = fields.CharField(max_length=20)
    code_hash = fields.CharField(max_length=64)
    expires_at = fields.DatetimeField()
    attempts = fields.SmallIntField(default=0)
    consumed_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "verification_codes"
        indexes = (("target", "purpose", "created_at"),)


class OAuthIdentity(Model):
    # An account at an OAuth/OpenID Connect provider that signs in to one Parley
    # account. (provider, subject) is the provider's stable id for the person,
    # never their email address.

    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="identities",
                                  on_delete=fields.CASCADE)
    provider = fields.CharField(max_length=64)  # the OAUTH_PROVIDERS key, e.g. "github"
    subject = fields.CharField(max_length=255)  # sub, GitHub id, WeChat unionid/openid
    display_name = fields.CharField(max_length=128, default="")  # shown in the linked list
    created_at = fields.DatetimeField(auto_now_add=True)
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "oauth_identities"
        unique_together = (("provider", "subject"),)
        indexes = (("user_id",),)


class OAuthFlow(Model):
    # One browser sign-in (or link) in progress: what the callback must find
    # again (state, PKCE verifier, nonce, the browser it started in), then the
    # one-time code the page exchanges for its tokens. Secrets are stored as
    # digests; every step can be used once.

    id = fields.BigIntField(primary_key=True)
    state_hash = fields.CharField(max_length=64, unique=True)
    binder_hash = fields.CharField(max_length=64)  # digest of the browser cookie
    provider = fields.CharField(max_length=64)
    purpose = fields.CharField(max_length=8)  # login | link
    user = fields.ForeignKeyField("models.User", related_name="oauth_flows", null=True,
                                  on_delete=fields.CASCADE)  # who links (purpose link)
    code_verifier = fields.CharField(max_length=128)
    nonce = fields.CharField(max_length=64)
    return_to = fields.CharField(max_length=512, default="/")
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    handoff_hash = fields.CharField(max_length=64, null=True, unique=True)
    handoff_user_id = fields.UUIDField(null=True)
    handoff_expires_at = fields.DatetimeField(null=True)
    handoff_used_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "oauth_flows"
        indexes = (("expires_at",),)
