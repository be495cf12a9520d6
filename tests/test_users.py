"""Profiles: GET/PATCH /me, GET /users/{id}, exact-match user search."""

from __future__ import annotations

import uuid

from app.models.accounts import User
from tests.factories import make_user

API = "/api/v1"
PUBLIC_KEYS = {"id", "username", "display_name", "bio", "avatar_url", "avatar_urls"}


async def assert_error(resp, status: int, code: str) -> dict:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == code, body
    return body["error"]


async def test_get_me_returns_the_private_profile(client, deps):
    p = await make_user(deps, "Ann", email="ann@example.org", phone="+14155550101", username="ann")
    r = await client.get(f"{API}/me", headers=p.headers)
    assert r.status == 200
    user = (await r.json())["user"]
    assert user["id"] == p.user_id
    assert user["username"] == "ann"
    assert user["email"] == "ann@example.org"
    assert user["phone"] == "+14155550101"
    assert user["display_name"] == "Ann"
    assert user["bio"] == ""
    assert user["created_at"]
    assert "password_hash" not in user


async def test_me_needs_a_token(client):
    for method in ("get", "patch"):
        r = await getattr(client, method)(f"{API}/me")
        await assert_error(r, 401, "unauthorized")


async def test_patch_me_updates_and_persists(client, deps):
    p = await make_user(deps)
    r = await client.patch(f"{API}/me", headers=p.headers,
                           json={"display_name": "  Bea B.  ", "username": "bea_b", "bio": "hi 你好"})
    assert r.status == 200, await r.text()
    user = (await r.json())["user"]
    assert (user["display_name"], user["username"], user["bio"]) == ("Bea B.", "bea_b", "hi 你好")
    # Partial update leaves the rest alone; an empty patch changes nothing.
    r = await client.patch(f"{API}/me", headers=p.headers, json={"bio": ""})
    assert (await r.json())["user"]["username"] == "bea_b"
    r = await client.patch(f"{API}/me", headers=p.headers, json={})
    assert r.status == 200
    r = await client.get(f"{API}/me", headers=p.headers)
    user = (await r.json())["user"]
    assert (user["display_name"], user["username"], user["bio"]) == ("Bea B.", "bea_b", "")
    # The new username signs in.
    r = await client.post(f"{API}/auth/login", json={"login": "bea_b", "password": p.password})
    assert r.status == 200


async def test_patch_me_validation(client, deps):
    p = await make_user(deps, username="carl")
    cases = [
        ({"display_name": ""}, "display_name"),
        ({"display_name": "   "}, "display_name"),
        ({"display_name": "x" * 65}, "display_name"),
        ({"display_name": 5}, "display_name"),
        ({"username": "Carl"}, "username"),
        ({"username": "ab"}, "username"),
        ({"username": "a" * 33}, "username"),
        ({"username": "with space"}, "username"),
        ({"bio": "x" * 281}, "bio"),
        ({"bio": None, "email": "x@example.org"}, None),  # email is not editable here
        ({"password_hash": "x"}, None),
    ]
    for body, field in cases:
        r = await client.patch(f"{API}/me", headers=p.headers, json=body)
        err = await assert_error(r, 400, "invalid")
        if field:
            assert err["details"]["field"] == field, (body, err)
    r = await client.get(f"{API}/me", headers=p.headers)
    assert (await r.json())["user"]["username"] == "carl"


async def test_username_taken_is_409(client, deps):
    await make_user(deps, username="dana")
    p = await make_user(deps, username="dave")
    r = await client.patch(f"{API}/me", headers=p.headers, json={"username": "dana"})
    err = await assert_error(r, 409, "username_taken")
    assert err["details"] == {"field": "username"}
    # Keeping one's own name is not a conflict.
    r = await client.patch(f"{API}/me", headers=p.headers, json={"username": "dave"})
    assert r.status == 200


async def test_get_user_by_id(client, deps):
    p = await make_user(deps)
    q = await make_user(deps, "Quinn", username="quinn", phone="+14155550102")
    r = await client.get(f"{API}/users/{q.user_id}", headers=p.headers)
    assert r.status == 200
    user = (await r.json())["user"]
    # Someone else's profile is public fields only: no email or phone.
    assert set(user) == PUBLIC_KEYS
    assert user == {"id": q.user_id, "username": "quinn", "display_name": "Quinn", "bio": "",
                    "avatar_url": None, "avatar_urls": None}

    for bad in (str(uuid.uuid4()), "not-a-uuid", "1", "%00", "x" * 300):
        r = await client.get(f"{API}/users/{bad}", headers=p.headers)
        await assert_error(r, 404, "not_found")

    r = await client.get(f"{API}/users/{q.user_id}")
    await assert_error(r, 401, "unauthorized")


async def search(client, who, q: str) -> list:
    r = await client.get(f"{API}/users/search", params={"q": q}, headers=who.headers)
    assert r.status == 200, await r.text()
    return (await r.json())["users"]


async def test_search_is_exact_match_on_username_email_or_phone(client, deps):
    me = await make_user(deps)
    t = await make_user(deps, "Tom", username="tom_t", email="tom@example.org", phone="+14155550103")
    for q in ("tom_t", "TOM_T", " tom_t ", "tom@example.org", "Tom@Example.org",
              "+14155550103", "+1 415-555-0103"):
        found = await search(client, me, q)
        assert [u["id"] for u in found] == [t.user_id], q
        assert set(found[0]) == PUBLIC_KEYS
    for q in ("tom", "tom_", "om_t", "example.org", "@example.org", "tom@example", "+1415555",
              "4155550103", "", "   ", "%", "_", "*", "x" * 300, "Tom"):
        assert await search(client, me, q) == [], q


async def test_search_without_q_or_token(client, deps):
    me = await make_user(deps)
    r = await client.get(f"{API}/users/search", headers=me.headers)
    assert r.status == 200
    assert await r.json() == {"users": []}
    r = await client.get(f"{API}/users/search", params={"q": me.username})
    await assert_error(r, 401, "unauthorized")


async def test_search_honours_discoverability(client, deps):
    me = await make_user(deps)
    u = await make_user(deps, username="ursula", email="ursula@example.org", phone="+14155550104")
    await User.filter(id=u.user_id).update(discoverable_by_email=False)
    assert await search(client, me, "ursula@example.org") == []
    assert len(await search(client, me, "+14155550104")) == 1
    assert len(await search(client, me, "ursula")) == 1  # usernames are always findable

    await User.filter(id=u.user_id).update(discoverable_by_email=True, discoverable_by_phone=False)
    assert len(await search(client, me, "ursula@example.org")) == 1
    assert await search(client, me, "+14155550104") == []
    # One always finds oneself.
    assert len(await search(client, u, "+14155550104")) == 1


async def test_all_digit_username_is_found_and_signs_in(client, deps):
    me = await make_user(deps)
    d = await make_user(deps, username="12345678")
    assert [x["id"] for x in await search(client, me, "12345678")] == [d.user_id]
    r = await client.post(f"{API}/auth/login", json={"login": "12345678", "password": d.password})
    assert r.status == 200
    assert (await r.json())["user"]["id"] == d.user_id
