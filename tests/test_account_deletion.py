"""Account deletion: deactivation at once, grace period, cancel by signing in,
erasure seen from a contact and from a group, the erasure job's lock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.models.accounts import AuthSession, OAuthIdentity, User
from app.models.contacts import Contact, ContactRequest
from app.models.media import Media
from app.models.messaging import Message
from app.models.push import PushSubscription
from app.services import contacts as contacts_svc
from app.services import conversations as convs
from app.services import erasure, groups, messaging, read_cache
from tests.factories import make_contacts, make_user

API = "/api/v1"


async def api(client, method, path, who=None, json=None):
    headers = who.headers if who else {}
    r = await client.request(method, f"{API}{path}", json=json, headers=headers)
    body = await r.json() if r.status != 204 else None
    return r.status, body


async def say(deps, who, cid, text):
    return await messaging.send_message(deps, who.user_id, messaging.SendIn(
        conversation_id=cid, client_msg_id=uuid.uuid4().hex, text=text))


async def make_due(user_id: str) -> None:
    await User.filter(id=user_id).update(erase_after=datetime.now(UTC) - timedelta(seconds=1))


async def test_delete_needs_the_password_and_deactivates_at_once(client, deps):
    ann = await make_user(deps, "Ann")
    bob = await make_user(deps, "Bob")
    carl = await make_user(deps, "Carl")
    await contacts_svc.send_request(deps, carl.user_id, contacts_svc.RequestIn(
        user_id=ann.user_id, message="hi"))
    status, err = await api(client, "DELETE", "/me", ann, {})
    assert status == 400 and err["error"]["code"] == "invalid"
    status, err = await api(client, "DELETE", "/me", ann, {"password": "wrong password!"})
    assert status == 400 and err["error"]["details"] == {"field": "password"}
    assert (await api(client, "GET", "/me", ann))[0] == 200  # nothing happened

    status, body = await api(client, "DELETE", "/me", ann, {"password": ann.password})
    assert status == 202
    erase_after = datetime.fromisoformat(body["erase_after"])
    assert timedelta(days=6, hours=23) < erase_after - datetime.now(UTC) <= timedelta(days=7)
    # Sessions ended, requests dropped, invisible in search.
    assert (await api(client, "GET", "/me", ann))[0] == 401
    assert not await AuthSession.filter(user_id=ann.user_id, revoked_at=None).exists()
    assert not await ContactRequest.filter(to_user_id=ann.user_id).exists()
    for q in (ann.email, ann.username):
        status, found = await api(client, "GET", f"/users/search?q={q}", bob)
        assert status == 200 and found["users"] == [], q
    row = await User.get(id=ann.user_id)
    assert row.deactivated_at is not None and row.erased_at is None
    # Nobody can send them new requests while the deletion is pending.
    status, err = await api(client, "POST", "/contacts/requests", bob, {"user_id": ann.user_id})
    assert status == 404, err


async def test_signing_in_during_the_grace_period_cancels(client, deps):
    ann = await make_user(deps, "Ann")
    assert (await api(client, "DELETE", "/me", ann, {"password": ann.password}))[0] == 202
    status, tokens = await api(client, "POST", "/auth/login",
                               json={"login": ann.email, "password": ann.password})
    assert status == 200 and tokens["deletion_cancelled"] is True
    row = await User.get(id=ann.user_id)
    assert row.deactivated_at is None and row.erase_after is None
    # Nothing is erased later, and a normal sign-in says nothing.
    await erasure.erase_due(deps)
    assert (await User.get(id=ann.user_id)).erased_at is None
    status, tokens = await api(client, "POST", "/auth/login",
                               json={"login": ann.email, "password": ann.password})
    assert status == 200 and "deletion_cancelled" not in tokens


async def test_erasure_seen_from_a_contact_and_from_a_group(client, deps):
    ann = await make_user(deps, "Ann")
    bob = await make_user(deps, "Bob")
    cat = await make_user(deps, "Cat")
    await make_contacts(deps, ann, bob)
    await make_contacts(deps, ann, cat)
    direct, _ = await convs.get_or_create_direct(deps, bob.user_id, ann.user_id)
    await say(deps, ann, str(direct.id), "hello bob")
    gid = (await groups.create_group(deps, ann.user_id, groups.CreateIn(
        name="Team", member_ids=[bob.user_id, cat.user_id])))["id"]
    await groups.update_member(deps, ann.user_id, gid, cat.user_id,
                               groups.MemberPatch(role="admin"))
    await say(deps, ann, gid, "hello team")
    lonely = await Media.create(id=uuid.uuid4(), uploader_id=ann.user_id, kind="file",
                                mime="text/plain", size=1, name="x.txt", storage_key="aa/bb/x")

    assert (await api(client, "DELETE", "/me", ann, {"password": ann.password}))[0] == 202
    assert await erasure.erase_due(deps) == 0  # not due yet
    await make_due(ann.user_id)
    assert await erasure.erase_due(deps) == 1

    # From the contact: the profile is gone, the history is kept from "Deleted account".
    status, body = await api(client, "GET", f"/users/{ann.user_id}", bob)
    assert status == 200 and body["user"]["display_name"] == "Deleted account"
    assert body["user"]["username"] != ann.username and body["user"]["bio"] == ""
    status, listed = await api(client, "GET", "/contacts", bob)
    assert ann.user_id not in str(listed)
    assert not await Contact.filter(contact_id=ann.user_id).exists()
    status, page = await api(client, "GET", f"/conversations/{direct.id}/messages", bob)
    texts = [(m["sender_id"], m["text"]) for m in page["messages"]]
    assert (ann.user_id, "hello bob") in texts
    # From the group: ownership passed to the admin, Ann is no longer a member.
    status, group = await api(client, "GET", f"/groups/{gid}", bob)
    assert status == 200 and group["group"]["owner_id"] == cat.user_id, group
    members = [m["user"]["id"] for m in group["group"]["members"]]
    assert ann.user_id not in members and set(members) == {bob.user_id, cat.user_id}
    # No way back in, nothing left to find her by.
    status, _ = await api(client, "POST", "/auth/login",
                          json={"login": ann.email, "password": ann.password})
    assert status == 401
    assert (await api(client, "GET", f"/users/search?q={ann.email}", bob))[1]["users"] == []
    row = await User.get(id=ann.user_id)
    assert row.email is None and row.password_hash is None and row.erased_at is not None
    assert not await Media.filter(id=lonely.id).exists()  # only she could see it
    # A new account may take the address again.
    again = await make_user(deps, "Ann2", email=ann.email)
    assert again.user_id != ann.user_id


@pytest.mark.parametrize("settings_overrides", [{"erase_messages_on_delete": True}])
async def test_erase_messages_on_delete_leaves_tombstones(client, deps):
    ann = await make_user(deps, "Ann")
    bob = await make_user(deps, "Bob")
    await make_contacts(deps, ann, bob)
    direct, _ = await convs.get_or_create_direct(deps, bob.user_id, ann.user_id)
    await say(deps, ann, str(direct.id), "forget me")
    await say(deps, bob, str(direct.id), "bob stays")
    assert (await api(client, "DELETE", "/me", ann, {"password": ann.password}))[0] == 202
    await make_due(ann.user_id)
    await erasure.erase_due(deps)
    mine = await Message.filter(sender_id=ann.user_id).exclude(type="system")
    assert mine and all(m.text == "" and m.recalled_at is not None for m in mine), [(m.type, m.text, m.recalled_at, m.data) for m in mine]
    status, page = await api(client, "GET", f"/conversations/{direct.id}/messages", bob)
    assert "forget me" not in str(page) and "bob stays" in str(page)


async def test_the_erasure_job_runs_in_one_process_at_a_time(deps):
    assert await erasure.acquire_lock("erase-due-test", "p1", 60)
    assert not await erasure.acquire_lock("erase-due-test", "p2", 60)
    assert await erasure.acquire_lock("erase-due-test", "p1", 60)  # renewal
    await erasure.release_lock("erase-due-test", "p1")
    assert await erasure.acquire_lock("erase-due-test", "p2", 0.001)
    # An expired lease (a crashed holder) is taken over.
    import asyncio

    await asyncio.sleep(0.01)
    assert await erasure.acquire_lock("erase-due-test", "p3", 60)
    await erasure.release_lock("erase-due-test", "p3")
    # While another process holds the job's lock, a run does nothing.
    assert await erasure.acquire_lock("erase-due", "other", 60)
    assert await erasure.run_erasure_job(deps, "me") is None
    await erasure.release_lock("erase-due", "other")
    assert await erasure.run_erasure_job(deps, "me") == 0


def test_erase_due_on_the_command_line(tmp_path):
    """`python -m app erase-due` beside a running server (whose own job waits an hour)."""
    import json as _json
    import urllib.request

    from tests.test_cli import env_for, run
    from tests.test_data_keys import KEY_A, login, register, wait_healthy

    db = f"sqlite://{tmp_path / 'e.db'}"
    env = env_for(db, DATA_KEYS=KEY_A, ACCOUNT_DELETE_GRACE_DAYS="0",
                  ERASURE_INTERVAL_SECONDS="3600")
    run(["-m", "app", "migrate"], env)
    import subprocess
    import sys

    from app.config import ROOT
    from tests.test_cli import free_port

    port = free_port()
    log = open(tmp_path / "e.log", "w+")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, log)
        ann = register(base, "erase-me@example.org")
        req = urllib.request.Request(f"{base}/api/v1/me", method="DELETE",
                                     data=_json.dumps({"password": "correct horse battery"})
                                     .encode(), headers={
                                         "Content-Type": "application/json",
                                         "Authorization": f"Bearer {ann['access_token']}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 202
        out = run(["-m", "app", "erase-due"], env)
        assert out.stdout == "erased 1 account\n", out.stdout
        assert login(base, "erase-me@example.org")[0] == 401
        assert run(["-m", "app", "erase-due"], env).stdout == "erased 0 accounts\n"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


async def test_deactivation_removes_push_devices_and_erasure_the_identities(client, deps):
    ann = await make_user(deps, "Ann")
    r = await client.post(f"{API}/push/subscriptions", headers=ann.headers,
                          json={"kind": "fcm", "token": "fcm:" + "x" * 150})
    assert r.status == 201
    await OAuthIdentity.create(id=uuid.uuid4(), user_id=ann.user_id, provider="github",
                               subject="4242")
    assert (await api(client, "DELETE", "/me", ann, {"password": ann.password}))[0] == 202
    assert not await PushSubscription.filter(user_id=ann.user_id).exists()
    assert await OAuthIdentity.filter(user_id=ann.user_id).exists()  # cancel still possible
    await make_due(ann.user_id)
    assert await erasure.erase_due(deps) == 1
    assert not await OAuthIdentity.filter(user_id=ann.user_id).exists()


async def test_an_account_without_password_or_address_confirms_by_a_recent_sign_in(client, deps):
    ann = await make_user(deps, "Ann")
    # As an account made by another provider: no password, no email, no phone.
    user = await User.get(id=ann.user_id)
    user.email = None
    await User.filter(id=ann.user_id).update(password_hash=None, email_enc=None, email_bidx=None,
                                             legacy_email=None)
    read_cache.clear_all()  # written behind the services' backs: nobody dropped it
    status, err = await api(client, "DELETE", "/me", ann, {"password": "anything at all"})
    assert status == 400 and err["error"]["details"] == {"field": "password"}
    # Signed in long ago: the deletion is refused until the person signs in again.
    await AuthSession.filter(user_id=ann.user_id).update(
        created_at=datetime.now(UTC) - timedelta(hours=1))
    read_cache.clear_all()
    status, err = await api(client, "DELETE", "/me", ann, {})
    assert status == 400 and err["error"]["code"] == "invalid"
    await AuthSession.filter(user_id=ann.user_id).update(created_at=datetime.now(UTC))
    read_cache.clear_all()
    status, body = await api(client, "DELETE", "/me", ann, {})
    assert status == 202, body
    assert (await User.get(id=ann.user_id)).deactivated_at is not None
