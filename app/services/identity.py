"""Normalising the identifiers people sign in with: email, phone, username."""

from __future__ import annotations

import re
import secrets
import string

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from app.errors import Invalid

_USERNAME_ALPHABET = string.ascii_lowercase + string.digits
_USERNAME_RE = re.compile(r"^[a-z0-9_]{3,32}$")  # app.validation.Username


def normalise_email(raw: str) -> str:
    try:
        info = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise Invalid(f"Not a valid email address: {exc}", details={"field": "email"}) from None
    # Addresses are unique case-insensitively: nobody expects Bob@ and bob@ to differ.
    return info.normalized.lower()


def normalise_phone(raw: str) -> str:
    """E.164. Numbers must carry their country code (+86…, +1…)."""
    try:
        number = phonenumbers.parse(raw.strip(), None)
    except phonenumbers.NumberParseException:
        raise Invalid(
            "Not a valid phone number; include the country code, e.g. +8613800138000.",
            details={"field": "phone"},
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise Invalid("Not a valid phone number.", details={"field": "phone"})
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def classify_login(raw: str) -> tuple[str, str]:
    """('email'|'phone'|'username', normalised value) for a free-form login."""
    value = raw.strip()
    if "@" in value:
        return "email", normalise_email(value)
    if value.startswith("+") or (value.isdigit() and len(value) > 6):
        return "phone", normalise_phone(value if value.startswith("+") else "+" + value)
    return "username", value.lower()


def login_candidates(raw: str) -> list[tuple[str, str]]:
    """Every (field, normalised value) a free-form login or search term may mean.

    Usernames may be all digits, so "12345678" is both a possible phone number
    and a possible username; invalid readings are simply left out.
    """
    value = raw.strip()
    out: list[tuple[str, str]] = []
    try:
        out.append(classify_login(value))
    except Invalid:
        pass
    username = value.lower()
    if "@" not in value and not value.startswith("+") and ("username", username) not in out \
            and _USERNAME_RE.match(username):
        # Only what could be a username (the Username pattern) is looked up as one.
        out.append(("username", username))
    return [(kind, v) for kind, v in out if kind != "username" or _USERNAME_RE.match(v)]


def random_username() -> str:
    return "u_" + "".join(secrets.choice(_USERNAME_ALPHABET) for _ in range(10))
