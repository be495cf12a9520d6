"""Accounts, sign-in, sessions and profiles."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from app import crypto, security
from app.clock import now
from app.deps import Deps
from app.errors import (
    Conflict,
    Invalid,
    InvalidCode,
    InvalidCredentials,
    NotFound,
    Unauthorized,
    conflict_on,
)
from app.models.accounts import AuthSession, RefreshToken, User
from app.ratelimit import Limit
from app.services import codes, read_cache
from app.services.avatars import avatar_url, avatar_urls
from app.services.identity import (
    login_candidates,
    normalise_email,
    normalise_phone,
    random_username,
)
from app.services.sql import select_joined
from app.validation import DisplayName, Id, Password, Payload, Username, clean_name


class RegisterIn(Payload):
    password: Password
    display_name: DisplayName
    email: str | None = None
    phone: str | None = None
    username: Username | None = None
    code: str | None = None  # required when REQUIRE_VERIFICATION=true
    device: str | None = None


class LoginIn(Payload):
    login: str
    password: str
    device: str | None = None


class RefreshIn(Payload):
    refresh_token: str


class PasswordChangeIn(Payload):
    new_password: Password
    current_password: str | None = None  # required when the account has a password


class EmailChangeIn(Payload):
    email: str
    code: str | None = None  # without: a code is sent to the new address


class PhoneChangeIn(Payload):
    phone: str
    code: str | None = None


class ProfilePatch(Payload):
    display_name: DisplayName | None = None
    username: Username | None = None
    bio: str | None = None


@dataclass
class Client:
    """Who is calling, as far as the transport knows: for sessions and throttling."""

    ip: str = ""
    device: str = ""


@dataclass
class Auth:
    user: User
    session: AuthSession

    @property
    def user_id(self) -> str:
        return str(self.user.id)


# --- serialisation (shared by REST and Socket.IO) ---------------------------


def public_user(user: User) -> dict:
    return {
        "id": str(user.id),
        "username": user.username,
        "display_name": user.display_name,
        "bio": user.bio,
        "avatar_url": avatar_url(user.avatar_key),
        "avatar_urls": avatar_urls(user.avatar_key),
    }


def private_user(user: User) -> dict:
    return {
        **public_user(user),
        "email": user.email,
        "phone": user.phone,
        "has_password": user.password_hash is not None,
        "created_at": user.created_at.isoformat(),
    }


# --- registration and sign-in ------------------------------------------------


async def register(deps: Deps, data: RegisterIn, client: Client) -> dict:
    # Counted before any work: per address, then against the server-wide ceiling
    # (which a spread-out botnet meets instead).
    s = deps.settings
    await deps.limiter.hit(f"register:ip:{client.ip}", Limit.parse(s.register_rate_limit))
    await deps.limiter.hit("register:all", Limit.parse(s.register_global_rate_limit))
    if not data.email and not data.phone:
        raise Invalid("Give an email address or a phone number.", details={"field": "email"})
    email = normalise_email(data.email) if data.email else None
    phone = normalise_phone(data.phone) if data.phone else None
    if deps.settings.require_verification:
        if not data.code:
            raise Invalid("A verification code is required.", details={"field": "code"})
        if email and phone:
            # Only what the code proves may be registered: an unverified second
            # address would be claimed unproven, and "phone_taken" would tell a
            # stranger whose phone has an account.
            raise Invalid("Register with the one email address or phone number the code "
                          "was sent to.", details={"field": "phone"})
        channel, target = ("email", email) if email else ("phone", phone)
        # Before any uniqueness check: without the code, a taken address and a
        # free one get the same answer.
        await codes.consume(deps, channel, target, "register", data.code)
    for field_name, value in (("email", email), ("phone", phone), ("username", data.username)):
        if value and await identity_taken(field_name, value):
            raise conflict_on(field_name)
    display_name = clean_name(data.display_name, "display_name")
    password_hash = await security.hash_password_async(data.password)
    for _attempt in range(5):
        username = data.username or random_username()
        try:
            user = await User.create(
                id=uuid.uuid4(),
                username=username,
                email=email,
                phone=phone,
                password_hash=password_hash,
                display_name=display_name,
            )
            break
        except IntegrityError:
            # A concurrent sign-up took a value between the check and the insert.
            for field_name, value in (("email", email), ("phone", phone), ("username", username)):
                if value and await identity_taken(field_name, value):
                    if field_name == "username" and not data.username:
                        break  # generated handle collided: try another
                    raise conflict_on(field_name) from None
            else:
                raise Conflict() from None
    else:
        raise Conflict("Could not allocate a username; try again.")
    return await issue_tokens(deps, user, Client(client.ip, data.device or client.device))


def identity_q(kind: str, value: str) -> Q:
    """Rows whose username / email / phone is exactly `value` (normalised).

    Email and phone go through the blind index under every key of the ring
    (rows not yet rotated are found too), and through the plaintext column a
    database made before encryption may still hold until `rotate-keys`.
    """
    if kind == "username":
        return Q(username=value)
    if kind not in ("email", "phone"):
        raise ValueError(kind)
    indexes = crypto.active().blind_indexes(f"users.{kind}", value)
    return Q(**{f"{kind}_bidx__in": indexes}) | Q(**{f"legacy_{kind}": value})


async def find_by(kind: str, value: str) -> User | None:
    """The account with this exact username, email or phone (normalised), or None."""
    return await User.filter(identity_q(kind, value)).first()


async def find_by_email(email: str) -> User | None:
    return await find_by("email", email)


async def find_by_phone(phone: str) -> User | None:
    return await find_by("phone", phone)


async def identity_taken(kind: str, value: str, *, except_user_id=None) -> bool:
    query = User.filter(identity_q(kind, value))
    if except_user_id is not None:
        query = query.exclude(id=except_user_id)
    return await query.exists()


async def find_by_login(login: str) -> User | None:
    for kind, value in login_candidates(login):
        user = await find_by(kind, value)
        if user is not None:
            return user
    return None


def _account_key(login: str) -> str:
    """One throttling bucket per account however its login is spelt
    ("+44 20 7946 0958" and "+442079460958" are the same phone)."""
    candidates = login_candidates(login)
    kind, value = candidates[0] if candidates else ("raw", login.strip().lower())
    return f"{kind}:{value}"


async def login(deps: Deps, data: LoginIn, client: Client) -> dict:
    limit = Limit.parse(deps.settings.login_rate_limit)
    await deps.limiter.hit(f"login:ip:{client.ip}", limit)
    user = await find_by_login(data.login)
    # Per account, not per spelling: email, phone and username share one bucket.
    account = f"user:{user.id}" if user else _account_key(data.login)
    await deps.limiter.hit(f"login:acct:{account}", limit)
    # Unknown users are verified against a dummy hash: same answer, same cost.
    ok, needs_rehash = await security.verify_password_async(
        user.password_hash if user else None, data.password)
    if not user or not ok:
        raise InvalidCredentials()
    if needs_rehash:
        user.password_hash = await security.hash_password_async(data.password)
        await user.save(update_fields=["password_hash"])
        await read_cache.changed(deps, "user", [user.id])
    return await issue_tokens(deps, user, Client(client.ip, data.device or client.device))


async def _throttle_code_use(deps: Deps, client: Client, channel: str, target: str) -> None:
    limit = Limit.parse(deps.settings.login_rate_limit)
    await deps.limiter.hit(f"login:ip:{client.ip}", limit)
    await deps.limiter.hit(f"login:acct:{channel}:{target}", limit)


async def login_with_code(deps: Deps, data: codes.CodeLoginIn, client: Client) -> dict:
    channel, target = codes.target_of(data.email, data.phone)
    await _throttle_code_use(deps, client, channel, target)
    await codes.consume(deps, channel, target, "login", data.code)
    user = await find_by(channel, target)
    if user is None:
        raise InvalidCredentials()
    return await issue_tokens(deps, user, Client(client.ip, data.device or client.device))


async def reset_password(deps: Deps, data: codes.PasswordResetIn, client: Client) -> None:
    channel, target = codes.target_of(data.email, data.phone)
    await _throttle_code_use(deps, client, channel, target)
    await codes.consume(deps, channel, target, "reset_password", data.code)
    user = await find_by(channel, target)
    if user is None:
        raise InvalidCode()
    await set_password(deps, user, data.new_password)
    await end_all_sessions(deps, user)


async def issue_tokens(deps: Deps, user: User, client: Client) -> dict:
    from app.services.erasure import cancel_deletion

    device = client.device[:200]
    known = await AuthSession.filter(user_id=user.id, device=device).exists()
    # Signing in during the grace period cancels a requested deletion; the
    # client tells the person so.
    cancelled = await cancel_deletion(user)
    if cancelled:
        await read_cache.changed(deps, "user", [user.id])
    session = await AuthSession.create(
        id=uuid.uuid4(), user=user, device=device, ip=client.ip[:64]
    )
    refresh = await _new_refresh_token(deps, session)
    if not known:
        # A device this account never signed in from: the person's other devices
        # hear of it at once (the new one has no socket yet).
        await deps.fanout.to_users([user.id], "security:new_session",
                                   {"session": _session_out(session, None)})
    response = _token_response(deps, user, session, refresh)
    if cancelled:
        response["deletion_cancelled"] = True
    return response


async def _new_refresh_token(deps: Deps, session: AuthSession) -> str:
    token = security.new_refresh_token()
    await RefreshToken.create(
        session=session,
        token_hash=security.token_digest(token),
        expires_at=now() + timedelta(seconds=deps.settings.refresh_token_ttl),
    )
    return token


def _token_response(deps: Deps, user: User, session: AuthSession, refresh: str) -> dict:
    ttl = deps.settings.access_token_ttl
    return {
        "user": private_user(user),
        "access_token": security.encode_access_token(
            deps.settings.secret_key, str(user.id), str(session.id), ttl
        ),
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": ttl,
    }


async def refresh(deps: Deps, data: RefreshIn) -> dict:
    row = await RefreshToken.get_or_none(
        token_hash=security.token_digest(data.refresh_token)
    ).select_related("session", "session__user")
    if row is None:
        raise Unauthorized("Unknown refresh token.")
    session = row.session
    if session.revoked_at is not None:
        raise Unauthorized("This session has ended; sign in again.")
    # Only one caller can rotate a token; anyone else presenting it holds a copy.
    rotated = await RefreshToken.filter(id=row.id, rotated_at=None).update(rotated_at=now())
    if not rotated:
        await _revoke(deps, session)
        raise Unauthorized("Refresh token was already used; the session has been ended.")
    if row.expires_at <= now():
        await _revoke(deps, session)
        raise Unauthorized("Refresh token expired; sign in again.")
    session.last_used_at = now()
    await session.save(update_fields=["last_used_at"])
    token = await _new_refresh_token(deps, session)
    return _token_response(deps, session.user, session, token)


# --- sessions ----------------------------------------------------------------


async def authenticate(deps: Deps, token: str | None) -> Auth:
    """Access token → Auth, checking the session still stands (revocation is immediate)."""
    session = await authenticate_session(deps, token)
    user = getattr(session, "_user_loaded", None) or await user_by_id(session.user_id)
    session.user = user
    return Auth(user=user, session=session)


async def authenticate_session(deps: Deps, token: str | None) -> AuthSession:
    """Access token → its standing session, without the user's row (a socket
    connect needs only the ids). From the read cache when there."""
    if not token:
        raise Unauthorized()
    claims = security.decode_access_token(deps.settings.secret_key, token)
    if claims is None:
        raise Unauthorized("Invalid or expired access token.")
    try:
        session_id = uuid.UUID(claims["sid"])
    except ValueError:
        raise Unauthorized("Invalid access token.") from None
    session = await _session_of(session_id)
    if session is None or session.revoked_at is not None or str(session.user_id) != claims["sub"]:
        raise Unauthorized("This session has ended; sign in again.")
    # Keep "last used" roughly right without a write on every request.
    if (now() - session.last_used_at).total_seconds() > 60:
        epoch = read_cache.SESSIONS.token()
        session.last_used_at = now()
        await session.save(update_fields=["last_used_at"])
        # Only this process's copy: "last used" a minute off elsewhere is harmless.
        read_cache.SESSIONS.put(str(session.id), read_cache.row_of(session), epoch)
    return session


async def _session_of(session_id: uuid.UUID) -> AuthSession | None:
    """Every socket connect and REST call comes here: from the read cache, else
    one statement that also brings the user's row (both cached then; the user's
    handed on as `_user_loaded`). A revoked session is never cached."""
    key = str(session_id)
    cached = read_cache.SESSIONS.get(key)
    if cached is not None:
        return read_cache.from_row(AuthSession, cached)
    tokens = read_cache.SESSIONS.token(), read_cache.USERS.token()
    found = await select_joined(AuthSession, "user", "id", session_id)
    if not found:
        return None
    session = found[0]
    user = session.user
    if session.revoked_at is None:
        read_cache.SESSIONS.put(key, read_cache.row_of(session), tokens[0])
        read_cache.USERS.put(str(session.user_id), read_cache.row_of(user), tokens[1])
    session._user_loaded = user
    return session


async def _revoke(deps: Deps, session: AuthSession) -> None:
    await AuthSession.filter(id=session.id, revoked_at=None).update(revoked_at=now())
    # Before the disconnect below: every process drops the session before its
    # sockets are closed, so none lets a reconnect in on a cached copy.
    await read_cache.changed(deps, "session", [session.id])
    from app.services.push import delete_subscriptions_for_session

    await delete_subscriptions_for_session(session.id)  # its devices stop getting pushes
    await deps.fanout.disconnect_session(session.id)


async def logout(deps: Deps, auth: Auth) -> None:
    await _revoke(deps, auth.session)


async def list_sessions(deps: Deps, auth: Auth) -> list[dict]:
    sessions = await AuthSession.filter(user_id=auth.user.id, revoked_at=None).order_by(
        "-last_used_at"
    )
    return [_session_out(s, auth.session.id) for s in sessions]


def _session_out(s: AuthSession, current_id) -> dict:
    return {
        "id": str(s.id),
        "device": s.device,
        "ip": s.ip,
        "created_at": s.created_at.isoformat(),
        "last_used_at": s.last_used_at.isoformat(),
        "current": s.id == current_id,
    }


async def end_session(deps: Deps, auth: Auth, session_id: str) -> None:
    session = await _own_session(auth, session_id)
    await _revoke(deps, session)


async def _own_session(auth: Auth, session_id: str) -> AuthSession:
    try:
        sid = uuid.UUID(session_id)
    except ValueError:
        raise NotFound("No such session.") from None
    session = await AuthSession.get_or_none(id=sid, user_id=auth.user.id, revoked_at=None)
    if session is None:
        raise NotFound("No such session.")
    return session


async def end_all_sessions(deps: Deps, user: User, keep=None) -> None:
    """After a password reset every device must sign in again (after a change,
    every device but the one that made it: `keep`)."""
    for session in await AuthSession.filter(user_id=user.id, revoked_at=None):
        if keep is None or session.id != keep:
            await _revoke(deps, session)


# --- profiles ----------------------------------------------------------------


async def update_profile(deps: Deps, auth: Auth, data: ProfilePatch) -> dict:
    user = auth.user
    changed = []
    if data.display_name is not None:
        name = clean_name(data.display_name, "display_name")
        user.display_name = name
        changed.append("display_name")
    if data.bio is not None:
        if len(data.bio) > 280:
            raise Invalid("Bio is at most 280 characters.", details={"field": "bio"})
        user.bio = data.bio
        changed.append("bio")
    if data.username is not None and data.username != user.username:
        if await User.filter(username=data.username).exists():
            raise conflict_on("username")
        user.username = data.username
        changed.append("username")
    if changed:
        try:
            await user.save(update_fields=changed)
        except IntegrityError:
            raise conflict_on("username") from None
        await read_cache.changed(deps, "user", [user.id])
    return private_user(user)


async def get_user(deps: Deps, auth: Auth, user_id: Id) -> dict:
    return public_user(await user_by_id(user_id))


async def user_by_id(user_id: str) -> User:
    """From the read cache when there (a fresh object either way)."""
    try:
        uid = uuid.UUID(str(user_id))
    except ValueError:
        raise NotFound("No such user.") from None
    key = str(uid)
    row = read_cache.USERS.get(key)
    if row is not None:
        return read_cache.from_row(User, row)
    token = read_cache.USERS.token()
    user = await User.get_or_none(id=uid)
    if user is None:
        raise NotFound("No such user.")
    read_cache.USERS.put(key, read_cache.row_of(user), token)
    return user


async def search_users(deps: Deps, auth: Auth, q: str) -> list[dict]:
    """Exact match only, on username, email or phone, so nobody can enumerate users.
    Email/phone matches honour the person's discoverability settings."""
    q = q.strip()
    if not q or len(q) > 254:
        return []
    found: dict[str, dict] = {}
    for kind, value in login_candidates(q):
        user = await find_by(kind, value)
        if user is None or str(user.id) in found or user.deactivated_at is not None:
            continue
        is_me = user.id == auth.user.id
        if kind == "email" and not user.discoverable_by_email and not is_me:
            continue
        if kind == "phone" and not user.discoverable_by_phone and not is_me:
            continue
        found[str(user.id)] = public_user(user)
    return list(found.values())


async def set_password(deps: Deps, user: User, new_password: str) -> None:
    user.password_hash = await security.hash_password_async(new_password)
    await user.save(update_fields=["password_hash"])
    await read_cache.changed(deps, "user", [user.id])



# --- own account: password, email, phone, avatar -------------------------------


async def change_password(deps: Deps, auth: Auth, data: PasswordChangeIn,
                          client: Client) -> None:
    """Ends every other session: whoever knew the old password is signed out."""
    user = auth.user
    limit = Limit.parse(deps.settings.login_rate_limit)
    await deps.limiter.hit(f"login:acct:user:{user.id}", limit)
    if user.password_hash is not None:
        if not data.current_password:
            raise Invalid("Give your current password.", details={"field": "current_password"})
        ok, _ = await security.verify_password_async(user.password_hash, data.current_password)
        if not ok:
            err = InvalidCredentials("The current password is wrong.")
            err.details = {"field": "current_password"}
            raise err
    await set_password(deps, user, data.new_password)
    await end_all_sessions(deps, user, keep=auth.session.id)


async def change_address(deps: Deps, auth: Auth, channel: str, raw: str, code: str | None,
                         client: Client) -> dict | None:
    """Two steps: without `code` a code goes to the new address (None is returned);
    with it the address is changed and the old one told."""
    target = normalise_email(raw) if channel == "email" else normalise_phone(raw)
    user = auth.user
    purpose = f"change_{channel}"
    if getattr(user, channel) == target:
        raise Invalid(f"That is already your {'email address' if channel == 'email' else 'phone number'}.",
                      details={"field": channel})
    if code is None:
        await codes.send_code(deps, channel, target, purpose, client.ip)
        return None
    await _throttle_code_use(deps, client, channel, target)
    # The code first: without it, whether an address is taken is not revealed.
    await codes.consume(deps, channel, target, purpose, code)
    holder = await find_by_login(target)
    if holder is not None and holder.id != user.id:
        raise conflict_on(channel)
    old = getattr(user, channel)
    setattr(user, channel, target)
    try:
        await user.save(update_fields=list(User.EMAIL_FIELDS if channel == "email"
                                           else User.PHONE_FIELDS))
    except IntegrityError:
        raise conflict_on(channel) from None
    await read_cache.changed(deps, "user", [user.id])
    if old:
        await codes.send_notice(deps, channel, old, f"{channel}_changed")
    return private_user(user)


async def set_avatar(deps: Deps, auth: Auth, chunks, content_length: int | None) -> dict:
    from app.services import avatars

    key = await avatars.store_avatar(deps, auth.user_id, chunks, content_length)
    old = auth.user.avatar_key
    auth.user.avatar_key = key
    await User.filter(id=auth.user.id).update(avatar_key=key)
    await read_cache.changed(deps, "user", [auth.user.id])
    await avatars.delete_avatar(deps, old)
    return private_user(auth.user)


async def clear_avatar(deps: Deps, auth: Auth) -> dict:
    from app.services import avatars

    old = auth.user.avatar_key
    auth.user.avatar_key = None
    await User.filter(id=auth.user.id).update(avatar_key=None)
    await read_cache.changed(deps, "user", [auth.user.id])
    await avatars.delete_avatar(deps, old)
    return private_user(auth.user)
