"""The per-connect path: authenticate builds the session and user straight from one row."""

import uuid

from app.models.accounts import AuthSession
from app.services import accounts
from tests.factories import make_user


async def test_session_row_equals_the_orm_lookup(deps):
    alice = await make_user(deps)
    sid = (await AuthSession.filter(user_id=alice.user_id).first()).id
    fast = await accounts._session_with_user(sid)
    orm = await AuthSession.get(id=sid).select_related("user")
    for f in AuthSession._meta.fields_map:
        if f != "user" and f in AuthSession._meta.db_fields | {"user_id"}:
            assert getattr(fast, f) == getattr(orm, f), f
    for f in orm.user._meta.db_fields:
        assert getattr(fast.user, f) == getattr(orm.user, f), f
    assert fast.user_id == orm.user_id and accounts.private_user(fast.user) == \
        accounts.private_user(orm.user)
    assert await accounts._session_with_user(uuid.uuid4()) is None


async def test_authenticate_checks_the_session(deps):
    alice = await make_user(deps)
    auth = await accounts.authenticate(deps, alice.access_token)
    assert auth.user_id == alice.user_id and auth.user.email == alice.email
    # "last used" is kept roughly right: an old mark is moved forward.
    old = accounts.now().replace(year=2020)
    await AuthSession.filter(id=auth.session.id).update(last_used_at=old)
    await accounts.authenticate(deps, alice.access_token)
    assert (await AuthSession.get(id=auth.session.id)).last_used_at > old
    await accounts.logout(deps, auth)
    for token in (alice.access_token, "garbage", None):
        try:
            await accounts.authenticate(deps, token)
        except accounts.Unauthorized:
            continue
        raise AssertionError("accepted")
