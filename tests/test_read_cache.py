"""The read cache (app/services/read_cache.py) in one process: what it serves
without the database, and that every write path drops what it changed.
Two processes: tests/test_cluster.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.errors import Unauthorized
from app.fanout import RecordingFanout
from app.services import accounts, contacts, erasure, presence, read_cache
from tests.factories import make_user
from tests.statements import statements_of_this_task


async def auth_of(deps, person) -> accounts.Auth:
    return await accounts.authenticate(deps, person.access_token)


async def statements_for(coro) -> tuple[int, object]:
    with statements_of_this_task() as tally:
        result = await coro
    return tally.sent, result


async def test_a_known_session_is_checked_without_the_database(deps):
    alice = await make_user(deps, "alice")
    read_cache.clear_all()
    n, first = await statements_for(auth_of(deps, alice))
    assert n >= 1
    n, again = await statements_for(auth_of(deps, alice))
    assert n == 0
    assert again.user_id == first.user_id == alice.user_id
    assert again.session.id == first.session.id
    # Each hit is a fresh object: a caller changing its copy changes nobody else's.
    again.user.display_name = "changed in memory"
    assert (await auth_of(deps, alice)).user.display_name == "alice"


async def test_profile_lookups_are_cached_and_fresh_after_an_edit(deps):
    alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
    a = await auth_of(deps, alice)
    await accounts.get_user(deps, a, bob.user_id)
    n, card = await statements_for(accounts.get_user(deps, a, bob.user_id))
    assert n == 0 and card["display_name"] == "bob"
    b = await auth_of(deps, bob)
    await accounts.update_profile(deps, b, accounts.ProfilePatch(display_name="Bobby",
                                                                 bio="hi"))
    card = await accounts.get_user(deps, a, bob.user_id)
    assert (card["display_name"], card["bio"]) == ("Bobby", "hi")
    assert (await auth_of(deps, bob)).user.display_name == "Bobby"


async def test_settings_changes_are_seen_by_the_next_request(deps):
    alice = await make_user(deps, "alice")
    a = await auth_of(deps, alice)
    assert a.user.last_seen_visibility == "contacts"
    await contacts.update_settings(deps, a.user, contacts.SettingsPatch(
        last_seen_visibility="nobody", push_enabled=False))
    fresh = (await auth_of(deps, alice)).user
    assert fresh.last_seen_visibility == "nobody" and fresh.push_enabled is False


async def test_avatar_password_and_presence_writes_drop_the_user(deps):
    alice = await make_user(deps, "alice")
    a = await auth_of(deps, alice)
    await accounts.user_by_id(alice.user_id)  # cached
    await accounts.clear_avatar(deps, a)
    assert read_cache.USERS.get(alice.user_id) is None
    await accounts.user_by_id(alice.user_id)
    seen = datetime.now(UTC)
    await presence._WentOffline(deps)([alice.user_id])
    user = await accounts.user_by_id(alice.user_id)
    assert user.last_seen_at is not None and user.last_seen_at >= seen.replace(microsecond=0)
    await accounts.user_by_id(alice.user_id)
    await accounts.set_password(deps, user, "another good password")
    assert read_cache.USERS.get(alice.user_id) is None


@pytest.mark.parametrize("how", ["logout", "end_session", "password_change"])
async def test_a_revoked_session_is_refused_at_once(deps, how):
    alice = await make_user(deps, "alice")
    other = await accounts.login(deps, accounts.LoginIn(login=alice.email,
                                                        password=alice.password),
                                 accounts.Client(ip="127.0.0.1", device="phone"))
    victim = await auth_of(deps, alice)
    await auth_of(deps, alice)  # cached now
    assert read_cache.SESSIONS.get(str(victim.session.id)) is not None
    keeper = await accounts.authenticate(deps, other["access_token"])
    if how == "logout":
        await accounts.logout(deps, victim)
    elif how == "end_session":
        await accounts.end_session(deps, keeper, str(victim.session.id))
    else:
        await accounts.change_password(deps, keeper, accounts.PasswordChangeIn(
            current_password=alice.password, new_password="a brand new password"),
            accounts.Client(ip="127.0.0.1"))
    with pytest.raises(Unauthorized):
        await auth_of(deps, alice)
    assert (await accounts.authenticate(deps, other["access_token"])).session.id == \
        keeper.session.id


async def test_a_deletion_request_ends_cached_sessions(deps):
    alice = await make_user(deps, "alice")
    a = await auth_of(deps, alice)
    await erasure.request_deletion(deps, a, erasure.DeleteAccountIn(password=alice.password))
    with pytest.raises(Unauthorized):
        await auth_of(deps, alice)
    assert (await accounts.user_by_id(alice.user_id)).deactivated_at is not None


async def test_every_write_also_tells_the_other_processes(deps):
    alice = await make_user(deps, "alice")
    recording = RecordingFanout()
    real, deps.fanout = deps.fanout, recording
    try:
        a = await auth_of(deps, alice)
        await accounts.update_profile(deps, a, accounts.ProfilePatch(bio="new"))
        await accounts.logout(deps, a)
    finally:
        deps.fanout = real
    assert recording.invalidated == [("user", (alice.user_id,)),
                                     ("session", (str(a.session.id),))]
    # The drop goes out before the disconnect, in the same order on the queue.
    assert recording.disconnected == [str(a.session.id)]


def test_a_read_that_overlapped_a_drop_stores_nothing():
    cache = read_cache.ReadCache("t", size=2, ttl=60)
    token = cache.token()
    cache.drop(["k"])  # the change committed while the read was under way
    cache.put("k", "stale", token)
    assert cache.get("k") is None
    cache.put("k", "fresh", cache.token())
    assert cache.get("k") == "fresh"
    for key in ("a", "b"):  # bounded: the least recently used goes
        cache.put(key, key, cache.token())
    assert cache.get("k") is None and len(cache) == 2


def test_entries_expire():
    cache = read_cache.ReadCache("t", size=10, ttl=-1)
    cache.put("k", "v", cache.token())
    assert cache.get("k") is None


@pytest.mark.parametrize("settings_overrides", [{"cache": False}])
async def test_cache_false_reads_the_database_every_time(deps):
    alice = await make_user(deps, "alice")
    try:
        await auth_of(deps, alice)
        n, _ = await statements_for(auth_of(deps, alice))
        assert n >= 1
        assert len(read_cache.SESSIONS) == 0
    finally:
        read_cache.configure(True)


async def test_a_socket_reconnecting_after_going_offline_needs_no_statement(deps):
    alice = await make_user(deps, "alice")
    await accounts.authenticate_session(deps, alice.access_token)
    # Going offline writes last_seen_at: the user's row is dropped, the session's is not.
    await presence._WentOffline(deps)([alice.user_id])
    assert read_cache.USERS.get(alice.user_id) is None
    n, session = await statements_for(accounts.authenticate_session(deps, alice.access_token))
    assert n == 0 and str(session.user_id) == alice.user_id


async def test_erasure_and_a_cancelled_deletion_drop_the_user(deps):
    alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
    a = await auth_of(deps, alice)
    await erasure.request_deletion(deps, a, erasure.DeleteAccountIn(password=alice.password))
    assert (await accounts.user_by_id(alice.user_id)).deactivated_at is not None  # cached
    # Signing in again cancels the deletion.
    await accounts.login(deps, accounts.LoginIn(login=alice.email, password=alice.password),
                         accounts.Client(ip="127.0.0.1", device="test"))
    assert (await accounts.user_by_id(alice.user_id)).deactivated_at is None
    assert (await accounts.user_by_id(bob.user_id)).display_name == "bob"  # cached
    await erasure.erase_account(deps, bob.user_id)
    gone = await accounts.user_by_id(bob.user_id)
    assert gone.erased_at is not None and gone.display_name != "bob"
