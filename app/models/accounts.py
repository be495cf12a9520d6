from tortoise import fields
from tortoise.models import Model

from app import crypto

_UNSET = object()


class User(Model):
    id = fields.UUIDField(primary_key=True)
    username = fields.CharField(max_length=32, unique=True)
    # Email and phone are stored encrypted (app/crypto.py) with a blind index
    # for exact lookups; read and set them through the `email` / `phone`
    # properties, look them up through app.services.accounts (find_by_email…).
    email_enc = fields.TextField(null=True)
    email_bidx = fields.CharField(max_length=96, null=True, unique=True)
    phone_enc = fields.TextField(null=True)
    phone_bidx = fields.CharField(max_length=96, null=True, unique=True)
    # Plaintext columns of databases made before encryption; `python -m app
    # rotate-keys` moves them into the encrypted columns and empties them.
    legacy_email = fields.CharField(max_length=254, null=True, unique=True, source_field="email")
    legacy_phone = fields.CharField(max_length=20, null=True, unique=True, source_field="phone")
    password_hash = fields.CharField(max_length=255, null=True)
    display_name = fields.CharField(max_length=64)
    bio = fields.CharField(max_length=280, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    last_seen_at = fields.DatetimeField(null=True)
    # Privacy settings; defaults follow WeChat.
    allow_strangers = fields.BooleanField(default=False)
    send_read_receipts = fields.BooleanField(default=True)
    last_seen_visibility = fields.CharField(max_length=16, default="contacts")
    discoverable_by_email = fields.BooleanField(default=True)
    discoverable_by_phone = fields.BooleanField(default=True)
    language = fields.CharField(max_length=16, default="")
    # Push notifications (app/services/push_rules.py): off, preview mode, do-not-disturb.
    push_enabled = fields.BooleanField(default=True, db_default=True)
    push_preview = fields.CharField(max_length=8, default="full", db_default="full")  # full | sender | none
    dnd_start = fields.CharField(max_length=5, null=True)  # "HH:MM" local time
    dnd_end = fields.CharField(max_length=5, null=True)
    timezone = fields.CharField(max_length=64, default="", db_default="")  # IANA name; empty: UTC
    # Avatar objects live in media storage under avatars/<avatar_key>/<size>.jpg;
    # a new upload gets a new key, so its URLs can be cached for good.
    avatar_key = fields.CharField(max_length=64, null=True)
    # Account deletion: signed out and hidden from deactivated_at, erased at erase_after
    # unless the person signs in again before.
    deactivated_at = fields.DatetimeField(null=True)
    erase_after = fields.DatetimeField(null=True)
    # Erased: what stays is this row as "Deleted account", so the messages kept
    # in other people's conversations still have a sender.
    erased_at = fields.DatetimeField(null=True)

    class Meta:
        table = "users"
        indexes = (("erase_after",),)  # the erasure job's due accounts

    # Columns a change of email / phone writes (save(update_fields=...)).
    EMAIL_FIELDS = ("email_enc", "email_bidx", "legacy_email")
    PHONE_FIELDS = ("phone_enc", "phone_bidx", "legacy_phone")

    def __init__(self, **kwargs) -> None:
        email = kwargs.pop("email", _UNSET)
        phone = kwargs.pop("phone", _UNSET)
        super().__init__(**kwargs)
        if email is not _UNSET:
            self.email = email
        if phone is not _UNSET:
            self.phone = phone

    def _read(self, name: str) -> str | None:
        stored = getattr(self, f"{name}_enc")
        if stored:
            return crypto.active().decrypt(f"users.{name}", stored)
        return getattr(self, f"legacy_{name}")

    def _write(self, name: str, value: str | None) -> None:
        """`value` must already be normalised (app.services.identity)."""
        ring = crypto.active()
        setattr(self, f"{name}_enc", ring.encrypt(f"users.{name}", value) if value else None)
        setattr(self, f"{name}_bidx", ring.blind_index(f"users.{name}", value) if value else None)
        setattr(self, f"legacy_{name}", None)

    @property
    def email(self) -> str | None:
        return self._read("email")

    @email.setter
    def email(self, value: str | None) -> None:
        self._write("email", value)

    @property
    def phone(self) -> str | None:
        return self._read("phone")

    @phone.setter
    def phone(self, value: str | None) -> None:
        self._write("phone", value)


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
    # Blind index of the normalised email or E.164 phone (app/crypto.py), never the address.
    target = fields.CharField(max_length=254)
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
