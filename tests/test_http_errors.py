"""Every error is JSON `{"error": {"code", "message", "details"?}}`: never a 500
for bad input, never a traceback in a body."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid

import jwt
import pytest

from tests.cluster_helpers import database_refusing
from tests.conftest import TEST_DATABASE_URL
from tests.factories import make_user

API = "/api/v1"
BODY = {"email": "a@example.org", "password": "correct horse battery", "display_name": "A"}


async def assert_error(resp, status: int, code: str) -> dict:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    body = json.loads(text)
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) <= {"code", "message", "details"} and {"code", "message"} <= set(err), err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in text and 'File "' not in text
    assert resp.headers.get("X-Request-Id")
    return err


async def test_malformed_json(client):
    for raw in (b"{", b"{'a': 1}", b"nul", b"\xff\xfe", b'{"email": "a@example.org",}'):
        r = await client.post(f"{API}/auth/register", data=raw,
                              headers={"Content-Type": "application/json"})
        await assert_error(r, 400, "invalid")


async def test_wrong_shapes_and_types(client):
    for body in ([], "text", 5, None, [BODY],
                 {**BODY, "password": 12345678},
                 {**BODY, "display_name": ["A"]},
                 {**BODY, "email": {"x": 1}}):
        r = await client.post(f"{API}/auth/register", json=body)
        await assert_error(r, 400, "invalid")


async def test_wrong_type_names_the_field(client):
    r = await client.post(f"{API}/auth/login", json={"login": "x", "password": 5})
    err = await assert_error(r, 400, "invalid")
    assert err["details"] == {"field": "password"}


async def test_unknown_fields_are_refused(client, deps):
    r = await client.post(f"{API}/auth/register", json={**BODY, "is_admin": True})
    err = await assert_error(r, 400, "invalid")
    assert "is_admin" in err["message"]
    p = await make_user(deps)
    r = await client.patch(f"{API}/me", headers=p.headers, json={"id": str(uuid.uuid4())})
    await assert_error(r, 400, "invalid")


async def test_wrong_content_type(client):
    raw = json.dumps(BODY).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "text/html", "application/xml"):
        r = await client.post(f"{API}/auth/register", data=raw, headers={"Content-Type": ctype})
        await assert_error(r, 400, "invalid")
    # A form post, as a cross-site page could send.
    r = await client.post(f"{API}/auth/login", data={"login": "x", "password": "y"})
    await assert_error(r, 400, "invalid")
    # charset parameters and +json types are fine.
    r = await client.post(f"{API}/auth/register", data=raw,
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status == 201


async def test_oversize_bodies_are_413(client):
    big = {**BODY, "display_name": "x" * 9000}  # register caps bodies at 8 KiB
    r = await client.post(f"{API}/auth/register", json=big)
    err = await assert_error(r, 413, "too_large")
    assert err["details"] == {"limit": 8 * 1024}

    # Without Content-Length (chunked), the cap holds while reading.
    async def chunks():
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 1000):
            yield payload[i:i + 1000]

    r = await client.post(f"{API}/auth/register", data=chunks(),
                          headers={"Content-Type": "application/json"})
    await assert_error(r, 413, "too_large")

    # Smaller caps on smaller routes.
    r = await client.post(f"{API}/auth/refresh", json={"refresh_token": "x" * 5000})
    await assert_error(r, 413, "too_large")
    # Beyond the server-wide limit too.
    r = await client.post(f"{API}/auth/login", data=b"x" * (2 * 1024**2),
                          headers={"Content-Type": "application/json"})
    await assert_error(r, 413, "too_large")


async def test_chunked_body_under_the_cap_is_read_whole(client):
    payload = json.dumps({**BODY, "display_name": "y" * 60}).encode()

    async def chunks():
        for i in range(0, len(payload), 7):
            yield payload[i:i + 7]

    r = await client.post(f"{API}/auth/register", data=chunks(),
                          headers={"Content-Type": "application/json"})
    assert r.status == 201, await r.text()
    assert (await r.json())["user"]["display_name"] == "y" * 60


async def test_unknown_route_is_404_json(client):
    for path in ("/nope", f"{API}/nope", f"{API}/users/a/b", "/api/v2/me"):
        r = await client.get(path)
        await assert_error(r, 404, "not_found")


async def test_wrong_method_is_405_json(client):
    r = await client.get(f"{API}/auth/login")
    await assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["Allow"]
    r = await client.put(f"{API}/me")
    await assert_error(r, 405, "method_not_allowed")
    assert {"GET", "PATCH", "DELETE"} <= {m.strip() for m in r.headers["Allow"].split(",")}


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_bad_tokens_are_401_never_500(client, deps, settings):
    p = await make_user(deps)
    claims = jwt.decode(p.access_token, options={"verify_signature": False})
    key = settings.secret_key
    now = int(time.time())
    tokens = [
        "",
        "a.b.c",
        "." * 3,
        "x" * 5000,
        jwt.encode({**claims, "exp": now - 5}, key, algorithm="HS256"),
        jwt.encode(claims, "another-secret-key-that-is-long-enough-1234", algorithm="HS256"),
        jwt.encode(claims, None, algorithm="none"),
        _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(claims) + ".",
        jwt.encode(claims, key, algorithm="HS512"),
        jwt.encode({**claims, "sid": "not-a-uuid"}, key, algorithm="HS256"),
        jwt.encode({**claims, "sid": 5}, key, algorithm="HS256"),
        jwt.encode({**claims, "sid": str(uuid.uuid4())}, key, algorithm="HS256"),
        jwt.encode({**claims, "sub": str(uuid.uuid4())}, key, algorithm="HS256"),
        jwt.encode({k: v for k, v in claims.items() if k != "exp"}, key, algorithm="HS256"),
        jwt.encode({k: v for k, v in claims.items() if k != "sid"}, key, algorithm="HS256"),
        p.access_token + "x",
    ]
    for token in tokens:
        r = await client.get(f"{API}/me", headers={"Authorization": f"Bearer {token}"})
        await assert_error(r, 401, "unauthorized")
    # The genuine token still works: the checks above are not blanket refusals.
    r = await client.get(f"{API}/me", headers=p.headers)
    assert r.status == 200


async def test_handler_crash_is_500_internal_without_traceback(settings, aiohttp_client):
    from app.server import create_app

    app = create_app(settings, generate_schemas=True)

    async def boom(request):
        raise RuntimeError("secret internals: /etc/parley password=hunter2")

    app.router.add_get("/boom", boom)
    client = await aiohttp_client(app)
    r = await client.get("/boom")
    err = await assert_error(r, 500, "internal")
    text = await r.text()
    assert "hunter2" not in text and "RuntimeError" not in text and "internals" not in text
    assert "details" not in err
    # The server keeps serving.
    r = await client.get("/healthz")
    assert r.status == 200


async def test_request_id_is_echoed(client):
    r = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["X-Request-Id"] == "abc-123"
    r = await client.get("/healthz")
    assert len(r.headers["X-Request-Id"]) == 32


# --- hostile input: each gets 400 invalid, and the log has no traceback -------

DEEP = 10_000
BIG = 10**30  # beyond 64 bits


def assert_no_traceback(caplog) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [(r.name, r.getMessage()) for r in bad]


async def _direct_chat(deps):
    from app.services import conversations as convs
    from tests.factories import make_contacts

    a, b = await make_user(deps), await make_user(deps)
    await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return a, b, str(conv.id)


async def test_deeply_nested_json_is_invalid(client, deps, caplog):
    p, _b, cid = await _direct_chat(deps)
    # Login decodes straight into its struct (and caps bodies at 8 KiB).
    for raw in (b"[" * 3000 + b"]" * 3000, b'{"login": ' + b"[" * 3000 + b"]" * 3000 + b"}"):
        r = await client.post(f"{API}/auth/login", data=raw,
                              headers={"Content-Type": "application/json"})
        await assert_error(r, 400, "invalid")
    # Sending reads a free-form body (an object) first.
    for raw in (b'{"text": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
                b'{"mentions": ' + b"[" * DEEP + b"]" * DEEP + b"}"):
        r = await client.post(f"{API}/conversations/{cid}/messages", data=raw,
                              headers={**p.headers, "Content-Type": "application/json"})
        err = await assert_error(r, 400, "invalid")
        assert "nested too deeply" in err["message"], err
    assert_no_traceback(caplog)


async def test_invalid_utf8_in_json_is_invalid(client, deps, caplog):
    p, _b, cid = await _direct_chat(deps)
    for raw in (b'{"login": "\xff\xfe", "password": "x"}',
                b'{"login": "a\xed\xa0\x80b", "password": "x"}',  # an encoded surrogate
                b'{"\xc3": 1}'):
        r = await client.post(f"{API}/auth/login", data=raw,
                              headers={"Content-Type": "application/json"})
        err = await assert_error(r, 400, "invalid")
        assert "utf-8" in err["message"].lower(), err
    r = await client.post(f"{API}/conversations/{cid}/messages",
                          data=b'{"client_msg_id": "x", "text": "\xc3\x28"}',
                          headers={**p.headers, "Content-Type": "application/json"})
    await assert_error(r, 400, "invalid")
    assert_no_traceback(caplog)


async def test_integers_beyond_64_bits_are_invalid(client, deps, caplog):
    p, _b, cid = await _direct_chat(deps)
    urls = [
        f"{API}/conversations/{cid}/messages?before_seq={BIG}",
        f"{API}/conversations/{cid}/messages?before_seq={2**63}",
        f"{API}/conversations/{cid}/messages?limit={BIG}",
        f"{API}/conversations/{cid}/messages/{BIG}/readers",
    ]
    for url in urls:
        r = await client.get(url, headers=p.headers)
        await assert_error(r, 400, "invalid")
    sends = [{"client_msg_id": uuid.uuid4().hex, "text": "hi", "reply_to": str(BIG)},
             {"client_msg_id": uuid.uuid4().hex, "text": "hi", "reply_to": BIG},
             {"client_msg_id": uuid.uuid4().hex, "text": "hi", "reply_to": str(2**63)}]
    for body in sends:
        r = await client.post(f"{API}/conversations/{cid}/messages", json=body, headers=p.headers)
        err = await assert_error(r, 400, "invalid")
        assert err.get("details", {}).get("field") == "reply_to", err
    for action in ("accept", "reject"):
        r = await client.post(f"{API}/contacts/requests/{BIG}/{action}", headers=p.headers)
        await assert_error(r, 400, "invalid")
    # The largest 64-bit id is well-formed: it is simply not there.
    r = await client.get(f"{API}/conversations/{cid}/messages/{2**63 - 1}/readers",
                         headers=p.headers)
    await assert_error(r, 404, "not_found")
    assert_no_traceback(caplog)


def _multipart(filename_bytes: bytes, boundary: str = "parleyboundary") -> bytes:
    return (b"--" + boundary.encode() + b"\r\n"
            b'Content-Disposition: form-data; name="file"; filename="' + filename_bytes + b'"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
            b"hello\r\n--" + boundary.encode() + b"--\r\n")


async def test_control_characters_in_multipart_filename(client, deps, caplog):
    p = await make_user(deps)
    headers = {**p.headers, "Content-Type": "multipart/form-data; boundary=parleyboundary"}
    names = [b"a\x00b.txt", b"\x01\x02\x1f.txt", b"x\x7f\x1b[31m.txt", b"\x00", b"\xff\xfe.txt",
             b"evil\xe2\x80\xaetxt.exe", b"a\tb\x0bc.txt"]
    for raw in names:
        r = await client.post(f"{API}/media", data=_multipart(raw), headers=headers)
        text = await r.text()
        assert r.status in (201, 400), (raw, r.status, text)
        if r.status == 201:
            name = json.loads(text)["media"]["name"]
            assert name and not any(ord(c) < 32 or ord(c) == 0x7F or 0x202A <= ord(c) <= 0x202E
                                    for c in name), (raw, name)
        else:
            await assert_error(r, 400, "invalid")
    assert_no_traceback(caplog)


async def test_nul_in_path_or_query(client, deps, caplog):
    p = await make_user(deps)
    for url in (f"{API}/users/search?q=a%00b", f"{API}/media/x/content?exp=1%00&sig=x",
                f"{API}/conversations?cursor=%00"):
        r = await client.get(url, headers=p.headers)
        await assert_error(r, 400, "invalid")
    # In the path it is a malformed id: 404 like the others.
    for url in (f"{API}/groups/invites/a%00b", f"{API}/users/%00",
                f"{API}/contacts/requests/1%00/accept"):
        r = await client.request("POST" if url.endswith("accept") else "GET", url,
                                 headers=p.headers)
        await assert_error(r, 404, "not_found")
    assert_no_traceback(caplog)


async def test_search_and_login_with_terms_no_username_can_be(client, deps, caplog):
    """A search or login term that cannot be a username is not looked up as one
    (the ORM refused over-long values with an exception: 500)."""
    p = await make_user(deps)
    for q in ("𝐓𝐡𝐞 𝐪𝐮𝐢𝐜𝐤 𝐛𝐫𝐨𝐰𝐧 𝐟𝐨𝐱 𝐣𝐮𝐦𝐩𝐬 𝐨𝐯𝐞𝐫 𝐭𝐡𝐞 𝐥𝐚𝐳𝐲 𝐝𝐨𝐠", "a" * 200, "李" * 40):
        r = await client.get(f"{API}/users/search", params={"q": q}, headers=p.headers)
        assert r.status == 200 and (await r.json())["users"] == [], await r.text()
        r = await client.post(f"{API}/auth/login", json={"login": q, "password": "x" * 8})
        await assert_error(r, 401, "invalid_credentials")
    r = await client.get(f"{API}/users/search", params={"q": p.username}, headers=p.headers)
    assert [u["id"] for u in (await r.json())["users"]] == [p.user_id]


async def test_overlong_invite_token_is_not_found(client, deps, caplog):
    p = await make_user(deps)
    r = await client.get(f"{API}/groups/invites/{'a' * 300}", headers=p.headers)
    await assert_error(r, 404, "not_found")
    r = await client.post(f"{API}/groups/join", json={"token": "a" * 300}, headers=p.headers)
    await assert_error(r, 400, "invalid")
    assert_no_traceback(caplog)


async def test_times_at_the_edge_of_the_calendar(client, deps, caplog):
    """Year 1 at +14:00 is before year 1 in UTC: converting it overflows."""
    from app.services import groups

    p, friend, _cid = await _direct_chat(deps)
    for when in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        cursor = base64.urlsafe_b64encode(f"{when}|{uuid.uuid4()}".encode()).decode()
        r = await client.get(f"{API}/conversations", params={"cursor": cursor}, headers=p.headers)
        await assert_error(r, 400, "invalid")
    g = await groups.create_group(deps, p.user_id,
                                  groups.CreateIn(name="g", member_ids=[friend.user_id]))
    for when in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                 "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        r = await client.patch(f"{API}/groups/{g['id']}/members/{friend.user_id}",
                               json={"muted_until": when}, headers=p.headers)
        assert r.status in (200, 400), (when, r.status, await r.text())
        if "14:00" in when:  # not a date in UTC
            await assert_error(r, 400, "invalid")
    assert_no_traceback(caplog)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL not set")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_database_outage_is_503_unavailable_and_passes(client, deps, database_url):
    """The database going away is not a bug: the client is told to retry
    (docs/api.md, 503 unavailable), and once it is back the same request works."""
    ann = await make_user(deps, "Ann")
    async with database_refusing(database_url):
        r = await client.patch(f"{API}/me", json={"display_name": "Ann B"}, headers=ann.headers)
        err = await assert_error(r, 503, "unavailable")
        assert err["message"] == "The database is unavailable; retry shortly."
    metrics = await (await client.get("/metrics")).text()
    assert 'parley_http_unavailable_total{dependency="database"} 1.0' in metrics
    for _ in range(50):  # the pool replaces the connections it lost, one per failure
        r = await client.patch(f"{API}/me", json={"display_name": "Ann B"}, headers=ann.headers)
        if r.status != 503:
            break
        await asyncio.sleep(0.05)
    assert r.status == 200, await r.text()
    assert (await r.json())["user"]["display_name"] == "Ann B"
