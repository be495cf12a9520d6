"""Password hashing and token primitives (no database access here)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2id above OWASP's minimum (m=19 MiB, t=2, p=1).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024 + 1024, parallelism=1, type=Type.ID)
# Verified against when the account does not exist, so unknown users cost the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

JWT_ALGORITHM = "HS256"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# argon2 is slow and memory-hard on purpose (memory_cost above, per hash). On
# the event loop, a burst of sign-ins would freeze every socket of the
# process; so hashing runs in this pool (argon2-cffi releases the GIL), and the pool's size is the bound
# on concurrent hashes: one core is left to the event loop, and further
# sign-ins queue here instead of multiplying CPU and memory.
HASH_WORKERS = max(1, min(8, _cores() - 1))
_pool = ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="parley-argon2")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> tuple[bool, bool]:
    """Return (matches, needs_rehash). Always does the same amount of work."""
    try:
        _hasher.verify(password_hash or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    if password_hash is None:
        return False, False
    return True, _hasher.check_needs_rehash(password_hash)


async def hash_password_async(password: str) -> str:
    """hash_password off the event loop (bounded by HASH_WORKERS)."""
    return await asyncio.get_running_loop().run_in_executor(_pool, hash_password, password)


async def verify_password_async(password_hash: str | None, password: str) -> tuple[bool, bool]:
    """verify_password off the event loop (bounded by HASH_WORKERS)."""
    return await asyncio.get_running_loop().run_in_executor(
        _pool, verify_password, password_hash, password)


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """Refresh tokens are random 256-bit strings: a plain SHA-256 is enough at rest."""
    return hashlib.sha256(token.encode()).hexdigest()


def code_digest(secret_key: str, target: str, purpose: str, code: str) -> str:
    """Six digits are guessable offline, so the digest is keyed by the server secret."""
    msg = f"{purpose}\x00{target}\x00{code}".encode()
    return hmac.new(secret_key.encode(), msg, hashlib.sha256).hexdigest()


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def encode_access_token(secret_key: str, user_id: str, session_id: str, ttl: int) -> str:
    now = int(time.time())
    payload = {
        "sub": user_id,
        "sid": session_id,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, secret_key, algorithm=JWT_ALGORITHM)


def decode_access_token(secret_key: str, token: str) -> dict | None:
    """Claims of a valid token, or None. The algorithm is pinned: `alg: none`
    and RS/HS confusion are rejected by PyJWT."""
    try:
        claims = jwt.decode(
            token,
            secret_key,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "sid", "exp", "iat", "jti"]},
        )
    except jwt.PyJWTError:
        return None
    if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("sid"), str):
        return None
    return claims


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
