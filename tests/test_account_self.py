"""Own account: password change, email/phone change with codes, avatars (own and
group) through the media pipeline, new-device announcements."""

from __future__ import annotations

import io
import logging
import re

import pytest
from PIL import Image

from app.models.accounts import User
from tests.factories import connect, make_contacts, make_user
from tests.media_samples import GPS_MARKER, make_jpeg_with_exif
from tests.test_codes import Mailbox, smtp  # noqa: F401  (fixture)

API = "/api/v1"
PASSWORD = "correct horse battery"
CODE_RE = re.compile(r"\b(\d{6})\b")


@pytest.fixture
def settings_overrides(smtp):  # noqa: F811
    return {"smtp_url": smtp.url}


async def login(client, login_name, password=PASSWORD, device="laptop"):
    return await client.post(f"{API}/auth/login",
                             json={"login": login_name, "password": password, "device": device})


async def err(resp, status, code):
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == code, body
    return body["error"]


# --- password -------------------------------------------------------------------


async def test_password_change_ends_every_other_session(client, deps):
    ann = await make_user(deps, "ann")
    other = await (await login(client, ann.email, device="phone")).json()
    other_h = {"Authorization": f"Bearer {other['access_token']}"}
    assert (await client.get(f"{API}/me", headers=other_h)).status == 200

    r = await client.post(f"{API}/me/password", headers=ann.headers,
                          json={"current_password": "wrong one!", "new_password": "n3w password!"})
    await err(r, 401, "invalid_credentials")
    r = await client.post(f"{API}/me/password", headers=ann.headers,
                          json={"new_password": "n3w password!"})
    await err(r, 400, "invalid")
    r = await client.post(f"{API}/me/password", headers=ann.headers,
                          json={"current_password": PASSWORD, "new_password": "n3w password!"})
    assert r.status == 200, await r.text()

    # The device that changed it stays signed in; the other one is out, refresh too.
    assert (await client.get(f"{API}/me", headers=ann.headers)).status == 200
    await err(await client.get(f"{API}/me", headers=other_h), 401, "unauthorized")
    r = await client.post(f"{API}/auth/refresh", json={"refresh_token": other["refresh_token"]})
    await err(r, 401, "unauthorized")
    await err(await login(client, ann.email), 401, "invalid_credentials")
    assert (await login(client, ann.email, "n3w password!")).status == 200


# --- email and phone --------------------------------------------------------------


async def test_email_change_needs_a_code_from_the_new_address_and_tells_the_old(client, deps,
                                                                                 smtp):  # noqa: F811
    ann = await make_user(deps, "ann", email="ann@example.org")
    await make_user(deps, "bob", email="bob@example.org")
    r = await client.post(f"{API}/me/email", headers=ann.headers, json={"email": "Ann2@Example.org"})
    assert r.status == 202, await r.text()
    assert smtp.to("ann2@example.org") and not smtp.to("ann@example.org")
    code = smtp.last_code("ann2@example.org")

    bad = "000000" if code != "000000" else "111111"
    r = await client.post(f"{API}/me/email", headers=ann.headers,
                          json={"email": "ann2@example.org", "code": bad})
    await err(r, 400, "invalid_code")
    assert (await User.get(id=ann.user_id)).email == "ann@example.org"

    r = await client.post(f"{API}/me/email", headers=ann.headers,
                          json={"email": "ann2@example.org", "code": code})
    assert r.status == 200, await r.text()
    assert (await r.json())["user"]["email"] == "ann2@example.org"
    notice = smtp.to("ann@example.org")
    assert len(notice) == 1
    assert "changed" in notice[0].get_body(preferencelist=("plain",)).get_content()
    assert (await login(client, "ann2@example.org")).status == 200

    # A code cannot be reused, and another person's address stays theirs.
    r = await client.post(f"{API}/me/email", headers=ann.headers,
                          json={"email": "bob@example.org"})
    assert r.status == 202
    code = smtp.last_code("bob@example.org")
    r = await client.post(f"{API}/me/email", headers=ann.headers,
                          json={"email": "bob@example.org", "code": code})
    await err(r, 409, "email_taken")
    r = await client.post(f"{API}/me/email", headers=ann.headers, json={"email": "not-an-email"})
    await err(r, 400, "invalid")


async def test_phone_change_with_code(client, deps, caplog):
    caplog.set_level(logging.WARNING, logger="parley.codes")
    ann = await make_user(deps, "ann", phone="+14155550111")
    r = await client.post(f"{API}/me/phone", headers=ann.headers, json={"phone": "+1 415 555 0122"})
    assert r.status == 202, await r.text()
    sent = [rec.getMessage() for rec in caplog.records if "+14155550122" in rec.getMessage()]
    code = CODE_RE.search(sent[-1]).group(1)
    r = await client.post(f"{API}/me/phone", headers=ann.headers,
                          json={"phone": "+14155550122", "code": code})
    assert r.status == 200, await r.text()
    assert (await r.json())["user"]["phone"] == "+14155550122"
    # The old number was told (development log sender: the notice is logged).
    assert any("+14155550111" in rec.getMessage() and "phone_changed" in rec.getMessage()
               for rec in caplog.records)


# --- avatars ----------------------------------------------------------------------


def _jpeg_bytes(tmp_path, size=(1000, 700)) -> bytes:
    return make_jpeg_with_exif(tmp_path / "photo.jpg", size).read_bytes()


async def test_avatar_is_reencoded_square_in_three_sizes_without_exif(client, deps, tmp_path):
    ann = await make_user(deps, "ann")
    bob = await make_user(deps, "bob")
    r = await client.put(f"{API}/me/avatar", headers=ann.headers, data=_jpeg_bytes(tmp_path))
    assert r.status == 200, await r.text()
    user = (await r.json())["user"]
    urls = user["avatar_urls"]
    assert set(urls) == {"64", "160", "640"} and user["avatar_url"] == urls["160"]
    for size, url in urls.items():
        got = await client.get(url)  # no token: avatars are public
        assert got.status == 200
        assert got.headers["Content-Type"] == "image/jpeg"
        data = await got.read()
        assert GPS_MARKER.encode() not in data and b"SpyCam" not in data
        img = Image.open(io.BytesIO(data))
        assert img.format == "JPEG" and img.size == (int(size), int(size))
        assert not img.getexif()
    # The EXIF turn was applied before the crop: the stored picture is 1000x700
    # with red left, so the displayed one has red on top.
    img = Image.open(io.BytesIO(await (await client.get(urls["640"])).read())).convert("RGB")
    r_top, _, b_top = img.getpixel((320, 10))
    r_bottom, _, b_bottom = img.getpixel((320, 630))
    assert r_top > 200 and b_top < 60 and b_bottom > 200 and r_bottom < 60

    # Everyone who sees Ann sees the avatar.
    got = await (await client.get(f"{API}/users/{ann.user_id}", headers=bob.headers)).json()
    assert got["user"]["avatar_url"] == urls["160"]
    await make_contacts(deps, ann, bob)
    contacts = await (await client.get(f"{API}/contacts", headers=bob.headers)).json()
    assert [c["user"]["avatar_url"] for c in contacts["contacts"]] == [urls["160"]]

    # A new picture replaces the old files; removing clears the URLs.
    r = await client.put(f"{API}/me/avatar", headers=ann.headers, data=_jpeg_bytes(tmp_path))
    new_urls = (await r.json())["user"]["avatar_urls"]
    assert new_urls != urls
    assert (await client.get(urls["64"])).status == 404
    r = await client.delete(f"{API}/me/avatar", headers=ann.headers)
    assert (await r.json())["user"]["avatar_url"] is None
    assert (await client.get(new_urls["64"])).status == 404


async def test_avatar_refuses_what_is_not_a_picture(client, deps, tmp_path):
    ann = await make_user(deps, "ann")
    html = b"<!DOCTYPE html><html><script>alert(1)</script></html>"
    await err(await client.put(f"{API}/me/avatar", headers=ann.headers, data=html), 400,
              "invalid_media")
    await err(await client.put(f"{API}/me/avatar", headers=ann.headers, data=b""), 400,
              "invalid_media")
    await err(await client.put(f"{API}/me/avatar", headers=ann.headers,
                               data=b"\x89PNG\r\n\x1a\n" + b"\0" * 100), 400, "invalid_media")
    await err(await client.put(f"{API}/me/avatar", data=_jpeg_bytes(tmp_path)), 401,
              "unauthorized")
    assert (await User.get(id=ann.user_id)).avatar_key is None
    for bad in ("zz", "0" * 32 + "/../x"):
        assert (await client.get(f"{API}/avatars/{bad}/64.jpg")).status == 404
    assert (await client.get(f"{API}/avatars/{'0' * 32}/65.jpg")).status == 404
    assert (await client.get(f"{API}/avatars/{'0' * 32}/64.jpg")).status == 404


async def test_avatar_as_multipart_file(client, deps, tmp_path):
    import aiohttp

    ann = await make_user(deps, "ann")
    form = aiohttp.FormData()
    form.add_field("file", _jpeg_bytes(tmp_path, (300, 300)), filename="me.jpg",
                   content_type="image/jpeg")
    r = await client.put(f"{API}/me/avatar", headers=ann.headers, data=form)
    assert r.status == 200, await r.text()
    img = Image.open(io.BytesIO(await (await client.get(
        (await r.json())["user"]["avatar_urls"]["640"])).read()))
    assert img.size == (300, 300)  # never scaled up


async def test_group_avatar_for_owners_and_admins_only(client, deps, tmp_path, base_url):
    owner = await make_user(deps, "owner")
    member = await make_user(deps, "member")
    await make_contacts(deps, owner, member)
    r = await client.post(f"{API}/groups", headers=owner.headers,
                          json={"name": "Team", "member_ids": [member.user_id]})
    gid = (await r.json())["conversation"]["id"]
    await err(await client.put(f"{API}/groups/{gid}/avatar", headers=member.headers,
                               data=_jpeg_bytes(tmp_path)), 403, "forbidden")
    sock = await connect(base_url, member.access_token)
    r = await client.put(f"{API}/groups/{gid}/avatar", headers=owner.headers,
                         data=_jpeg_bytes(tmp_path))
    assert r.status == 200, await r.text()
    group = (await r.json())["group"]
    assert group["avatar_urls"]["64"].endswith("/64.jpg")
    # The members' chat lists hear of it at once.
    try:
        await sock.log.wait_for("conversation:updated",
                                where=lambda s: s.get("avatar_url") == group["avatar_url"])
    finally:
        await sock.disconnect()
    got = await client.get(group["avatar_urls"]["64"])
    assert got.status == 200 and Image.open(io.BytesIO(await got.read())).size == (64, 64)
    convs = await (await client.get(f"{API}/conversations", headers=member.headers)).json()
    assert [c["avatar_url"] for c in convs["conversations"]
            if c["type"] == "group"] == [group["avatar_url"]]
    r = await client.delete(f"{API}/groups/{gid}/avatar", headers=owner.headers)
    assert (await r.json())["group"]["avatar_url"] is None
    other = await make_user(deps, "stranger")
    await err(await client.put(f"{API}/groups/{gid}/avatar", headers=other.headers,
                               data=_jpeg_bytes(tmp_path)), 404, "not_found")


# --- new devices ------------------------------------------------------------------


async def test_sign_in_from_a_new_device_is_announced_and_listed(client, deps, base_url):
    ann = await make_user(deps, "ann")
    sock = await connect(base_url, ann.access_token)
    try:
        r = await login(client, ann.email, device="Ann's iPhone")
        assert r.status == 200
        [event] = await sock.log.wait_for("security:new_session")
        session = event["session"]
        assert session["device"] == "Ann's iPhone" and session["ip"] == "127.0.0.1"
        assert session["created_at"]
        # The same device again is not news.
        assert (await login(client, ann.email, device="Ann's iPhone")).status == 200
        assert (await login(client, ann.email, device="Work PC")).status == 200
        events = await sock.log.wait_for("security:new_session", 2)
        assert [e["session"]["device"] for e in events] == ["Ann's iPhone", "Work PC"]
    finally:
        await sock.disconnect()
    r = await client.get(f"{API}/auth/sessions", headers=ann.headers)
    sessions = (await r.json())["sessions"]
    assert sorted(s["device"] for s in sessions) == ["Ann's iPhone", "Ann's iPhone", "Work PC",
                                                      "test"]
    assert all(s["ip"] == "127.0.0.1" and s["last_used_at"] for s in sessions)
