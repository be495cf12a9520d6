"""Encryption at rest: the data key ring, encrypted values and blind indexes.

`DATA_KEYS` is a key ring, "id:base64key,id:base64key", the first key current:
new values are encrypted with it, the others are only read (during and before
`python -m app rotate-keys`). Without DATA_KEYS a ring is generated into
var/data_keys for local use, like the secret key.

Each key is 32 random bytes; two sub-keys are derived from it (HKDF-SHA256):
one for AES-256-GCM, one for the blind index (HMAC-SHA256 of the normalised
value), so an index reveals nothing a ciphertext would not.

Stored forms (both carry the key id, so a row says which key it needs):
- value: "<kid>:<base64url(nonce 12 bytes | ciphertext | tag)>"
- blind index: "<kid>:<hex hmac>"
The field name is the AES-GCM associated data and part of the HMAC input: a
ciphertext or index copied to another column does not verify there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.config import local_secret_file

KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
NONCE_BYTES = 12
CHECK_LABEL = b"parley data key check"


class KeyError_(ValueError):
    """A key ring that cannot be used; the message says what to fix."""


class DecryptError(Exception):
    """A stored value whose key is missing or which does not verify under it."""


def _derive(key: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(key)


@dataclass
class DataKey:
    kid: str
    raw: bytes
    aead: AESGCM = field(init=False, repr=False)
    index_key: bytes = field(init=False, repr=False)
    check: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.aead = AESGCM(_derive(self.raw, b"parley aes-256-gcm"))
        self.index_key = _derive(self.raw, b"parley blind index")
        # Stored in data_keys so a wrong key is caught at start-up, not by
        # serving undecryptable rows.
        self.check = hmac.new(_derive(self.raw, CHECK_LABEL), CHECK_LABEL,
                              hashlib.sha256).hexdigest()


class KeyRing:
    def __init__(self, keys: list[DataKey]) -> None:
        if not keys:
            raise KeyError_("DATA_KEYS holds no key")
        self.keys = {k.kid: k for k in keys}
        if len(self.keys) != len(keys):
            raise KeyError_("DATA_KEYS names a key id twice")
        self.current = keys[0]

    @property
    def ids(self) -> list[str]:
        return list(self.keys)

    # --- values ---------------------------------------------------------

    def encrypt(self, field_name: str, plaintext: str) -> str:
        return self.encrypt_bytes(field_name, plaintext.encode())

    def encrypt_bytes(self, field_name: str, data: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.current.aead.encrypt(nonce, data, field_name.encode())
        return f"{self.current.kid}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, field_name: str, stored: str) -> str:
        kid, _, body = stored.partition(":")
        key = self.keys.get(kid)
        if key is None:
            raise DecryptError(f"value encrypted with data key {kid!r}, which is not in DATA_KEYS")
        try:
            blob = base64.urlsafe_b64decode(body)
            return key.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:],
                                    field_name.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise DecryptError(f"a {field_name} value does not decrypt with data key "
                               f"{kid!r}") from None

    @staticmethod
    def key_id_of(stored: str | None) -> str | None:
        return stored.partition(":")[0] if stored else None

    # --- blind indexes --------------------------------------------------

    def blind_index(self, field_name: str, normalised: str, key: DataKey | None = None) -> str:
        key = key or self.current
        digest = hmac.new(key.index_key, f"{field_name}\x00{normalised}".encode(),
                          hashlib.sha256).hexdigest()
        return f"{key.kid}:{digest}"

    def blind_indexes(self, field_name: str, normalised: str) -> list[str]:
        """The value's index under every key in the ring: rows not yet
        rotated are found as well as rotated ones."""
        return [self.blind_index(field_name, normalised, k) for k in self.keys.values()]


def parse_keys(spec: str) -> KeyRing:
    keys = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        kid, sep, b64 = part.partition(":")
        if not sep or not KEY_ID_RE.match(kid):
            raise KeyError_("DATA_KEYS entries look like id:base64key (id: letters, digits, "
                            "- or _, at most 16), separated by commas")
        try:
            # Standard or URL-safe alphabet, padding optional.
            std = b64.replace("-", "+").replace("_", "/")
            raw = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise KeyError_(f"DATA_KEYS key {kid!r} is not valid base64") from None
        if len(raw) != 32:
            raise KeyError_(f"DATA_KEYS key {kid!r} must be 32 bytes (base64 of 32 random "
                            f"bytes), not {len(raw)}")
        keys.append(DataKey(kid, raw))
    return KeyRing(keys)


def new_key_spec(kid: str) -> str:
    return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def local_data_keys(var_dir: Path) -> str:
    """var/data_keys, created on first use (local runs only; production sets DATA_KEYS)."""
    return local_secret_file(var_dir / "data_keys", lambda: new_key_spec("local1"))


# --- the process's ring ---------------------------------------------------

_rings: dict[str, KeyRing] = {}
_active: KeyRing | None = None


def ring_for(spec: str) -> KeyRing:
    """The parsed ring for a DATA_KEYS value; empty: the local ring in var/."""
    if not spec:
        from app.config import VAR_DIR

        spec = local_data_keys(VAR_DIR)
    ring = _rings.get(spec)
    if ring is None:
        ring = _rings[spec] = parse_keys(spec)
    return ring


def activate(ring: KeyRing) -> None:
    """The ring models and services encrypt and look up with (set at start-up)."""
    global _active
    _active = ring


def active() -> KeyRing:
    if _active is None:
        from app.config import load_settings

        activate(ring_for(load_settings().data_keys))
    return _active  # type: ignore[return-value]
