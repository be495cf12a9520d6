"""Media over the real server: upload → send → download, caps, spoofing, access,
ranges, the S3 backend and the orphan sweep. Every file is generated here."""

from __future__ import annotations

import io
import os
import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from app.models.media import Media
from app.models.messaging import Message
from app.services import conversations as convs
from app.services import media as media_service
from app.storage import StorageError
from tests import media_samples as samples
from tests.factories import call, connect, make_contacts, make_user
from tests.s3_server import ACCESS_KEY, SECRET_KEY, moto_server

API = "/api/v1"


# --- helpers ---------------------------------------------------------------------


async def chat_between(deps, a, b) -> str:
    await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    return str(conv.id)


async def upload(client, person, data: bytes, name: str = "upload.bin", kind: str | None = None,
                 content_type: str = "application/octet-stream"):
    form = aiohttp.FormData(quote_fields=False)  # raw names, as browsers send them
    if kind is not None:
        form.add_field("kind", kind)
    form.add_field("file", data, filename=name, content_type=content_type)
    return await client.post(f"{API}/media", data=form, headers=person.headers)


async def upload_chunked(client, person, data: bytes, name: str = "upload.bin",
                         kind: str | None = None, chunk: int = 4096):
    """Multipart without Content-Length (chunked transfer): only streaming caps apply."""
    boundary = "----parley" + uuid.uuid4().hex
    head = b""
    if kind is not None:
        head += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\n"
                 f"{kind}\r\n").encode()
    head += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
             f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def body():
        yield head
        for i in range(0, len(data), chunk):
            yield data[i:i + chunk]
        yield tail

    headers = {**person.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    return await client.post(f"{API}/media", data=body(), headers=headers)


async def uploaded(client, person, data: bytes, **kw) -> dict:
    resp = await upload(client, person, data, **kw)
    body = await resp.json()
    assert resp.status == 201, body
    return body["media"]


async def send_media(client, person, cid: str, media_id: str, type_: str, text: str = ""):
    payload = {"client_msg_id": uuid.uuid4().hex, "type": type_, "media_id": media_id}
    if text:
        payload["text"] = text
    return await client.post(f"{API}/conversations/{cid}/messages", json=payload,
                             headers=person.headers)


async def sent(client, person, cid, media_id, type_, text="") -> dict:
    resp = await send_media(client, person, cid, media_id, type_, text)
    body = await resp.json()
    assert resp.status == 201, body
    return body["message"]


async def error_code(resp) -> str:
    return (await resp.json())["error"]["code"]


def stored_files(settings) -> list[Path]:
    """Every object in local media storage (the spool excluded)."""
    root = Path(settings.media_root)
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and ".spool" not in p.parts]


async def plain_bytes(deps, settings, path: Path) -> bytes:
    """A stored file's content as served: files are encrypted at rest."""
    key = path.relative_to(Path(settings.media_root)).as_posix()
    return await media_service.storage_of(deps).read_bytes(key)


def inside_media_root(settings, path: Path) -> bool:
    return path.resolve().is_relative_to(Path(settings.media_root).resolve())


def spool_leftovers(settings) -> list[Path]:
    spool = Path(settings.media_root) / ".spool"
    return list(spool.rglob("*")) if spool.exists() else []


def noise_png(size=(120, 120)) -> bytes:
    img = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


# --- each kind end to end -----------------------------------------------------------


async def test_image_end_to_end_reencoded_without_exif(deps, client, base_url, tmp_path,
                                                       settings):
    alice, bob = await make_user(deps, "alice"), await make_user(deps, "bob")
    cid = await chat_between(deps, alice, bob)
    original = samples.make_jpeg_with_exif(tmp_path / "photo.jpg").read_bytes()
    m = await uploaded(client, alice, original, name="holiday photo.jpeg", kind="image",
                       content_type="image/jpeg")
    # Orientation 6 applied: stored 200x100 becomes 100x200.
    assert (m["kind"], m["mime"], m["width"], m["height"]) == ("image", "image/jpeg", 100, 200)
    assert m["name"] == "holiday photo.jpg" and m["duration_ms"] is None
    assert m["url"].startswith(f"{API}/media/{m['id']}/content?exp=")
    assert m["thumbnail_url"].startswith(f"{API}/media/{m['id']}/thumbnail?exp=")

    b = await connect(base_url, bob.access_token)
    a = await connect(base_url, alice.access_token)
    try:
        ack = await call(a, "message:send", {
            "conversation_id": cid, "client_msg_id": "img-1", "type": "image",
            "media_id": m["id"], "text": " look! "})
        assert ack["ok"], ack
        got = (await b.log.wait_for("message:new"))[0]
    finally:
        await a.disconnect()
        await b.disconnect()
    assert got["type"] == "image" and got["text"] == "look!"
    media = got["media"]
    assert {k: media[k] for k in ("id", "kind", "mime", "size", "name", "width", "height",
                                  "duration_ms")} == {
        k: m[k] for k in ("id", "kind", "mime", "size", "name", "width", "height",
                          "duration_ms")}
    # The stored message keeps no links: they are signed at every read.
    row = await Message.get(id=int(got["id"]))
    assert "url" not in row.data["media"] and "thumbnail_url" not in row.data["media"]

    # Bob downloads through the signed link alone (as an <img src> would).
    resp = await client.get(media["url"])
    assert resp.status == 200
    data = await resp.read()
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Disposition"].startswith("inline;")
    assert len(data) == media["size"] and data != original
    assert samples.GPS_MARKER.encode() not in data and b"SpyCam" not in data
    img = Image.open(io.BytesIO(data))
    assert img.size == (100, 200) and not img.getexif()
    top, bottom = img.convert("RGB").getpixel((50, 20)), img.convert("RGB").getpixel((50, 180))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200  # red turned to the top

    resp = await client.get(media["thumbnail_url"])
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(await resp.read()))
    assert thumb.format == "JPEG" and max(thumb.size) <= 320

    # History signs fresh links for the reader.
    resp = await client.get(f"{API}/conversations/{cid}/messages", headers=bob.headers)
    hist = (await resp.json())["messages"]
    assert hist[-1]["media"]["url"].startswith(f"{API}/media/{m['id']}/content?exp=")


async def test_voice_end_to_end_identical_bytes_and_ranges(deps, client, tmp_path):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    original = samples.make_audio(tmp_path / "v.ogg", "ogg", seconds=1.5).read_bytes()
    # No kind: an Ogg/Opus file is a voice note by its bytes.
    m = await uploaded(client, alice, original, name="voice.ogg")
    assert m["kind"] == "voice" and m["mime"] == "audio/ogg" and m["size"] == len(original)
    assert abs(m["duration_ms"] - 1500) <= 100 and m["thumbnail_url"] is None
    msg = await sent(client, alice, cid, m["id"], "voice")
    assert msg["media"]["duration_ms"] == m["duration_ms"]

    # Bob with his bearer token, no signature.
    url = f"{API}/media/{m['id']}/content"
    resp = await client.get(url, headers=bob.headers)
    assert resp.status == 200 and await resp.read() == original
    assert resp.headers["Content-Type"] == "audio/ogg"
    assert resp.headers["Accept-Ranges"] == "bytes"

    resp = await client.get(url, headers={**bob.headers, "Range": "bytes=10-99"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 10-99/{len(original)}"
    assert await resp.read() == original[10:100]
    resp = await client.get(url, headers={**bob.headers, "Range": "bytes=-50"})
    assert resp.status == 206 and await resp.read() == original[-50:]
    resp = await client.get(url, headers={**bob.headers, "Range": f"bytes={len(original)}-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(original)}"


async def test_video_end_to_end_with_poster(deps, client, tmp_path):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    original = samples.make_video(tmp_path / "clip.mp4", "mp4", size=(160, 120),
                                  seconds=1.0, audio=True).read_bytes()
    m = await uploaded(client, alice, original, name="clip.mp4")  # probed: it has video
    assert (m["kind"], m["mime"], m["width"], m["height"]) == ("video", "video/mp4", 160, 120)
    assert abs(m["duration_ms"] - 1000) <= 150 and m["size"] == len(original)
    msg = await sent(client, alice, cid, m["id"], "video", text="our cat")
    assert msg["text"] == "our cat"

    resp = await client.get(msg["media"]["url"])
    assert resp.status == 200 and await resp.read() == original
    assert resp.headers["Content-Type"] == "video/mp4"
    resp = await client.get(f"{API}/media/{m['id']}/thumbnail", headers=bob.headers)
    assert resp.status == 200
    poster = Image.open(io.BytesIO(await resp.read()))
    assert poster.format == "JPEG" and poster.size == (160, 120)


async def test_file_end_to_end_is_an_attachment_with_a_safe_name(deps, client, tmp_path,
                                                                 settings):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    original = samples.make_pdf(tmp_path / "doc.pdf").read_bytes()
    m = await uploaded(client, alice, original, name="../../etc/passwd\u202e.pdf",
                       content_type="text/html")
    assert (m["kind"], m["mime"], m["size"]) == ("file", "application/pdf", len(original))
    assert m["name"] == "passwd.pdf" and m["thumbnail_url"] is None
    msg = await sent(client, alice, cid, m["id"], "file")

    resp = await client.get(msg["media"]["url"])
    assert resp.status == 200 and await resp.read() == original
    assert resp.headers["Content-Type"] == "application/pdf"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="passwd.pdf"'
    # Stored under a server-generated key: the user's name went nowhere near the disk.
    files = stored_files(settings)
    assert len(files) == 1 and "passwd" not in str(files[0])
    assert inside_media_root(settings, files[0])
    assert await plain_bytes(deps, settings, files[0]) == original
    assert original not in files[0].read_bytes()  # ciphertext at rest
    assert not list(Path(settings.media_root).parent.rglob("passwd*"))
    assert spool_leftovers(settings) == []


async def test_windows_and_hidden_names_are_metadata_only(deps, client, tmp_path):
    alice = await make_user(deps)
    for raw, expected in [("..\\..\\boot.ini", "boot.ini"), ("....", "file"),
                          (".htaccess", "htaccess"), ("a/b/c:d.txt", "c_d.txt")]:
        m = await uploaded(client, alice, b"just some text\n", name=raw)
        assert m["name"] == expected, raw
        resp = await client.get(m["url"])
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        assert resp.headers["Content-Type"] == "text/plain"


# --- caps -------------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{
    "max_image_bytes": 2000, "max_voice_bytes": 1500, "max_video_bytes": 10_000_000,
    "max_file_bytes": 50_000,
}])
async def test_caps_per_kind_while_streaming(deps, client, tmp_path, settings):
    alice = await make_user(deps)
    png = noise_png()
    assert len(png) > 20_000
    # Unknown kind: the largest cap applies until the bytes are sniffed, then the image cap.
    resp = await upload_chunked(client, alice, png, name="big.png")
    body = await resp.json()
    assert resp.status == 413, body
    assert body["error"]["code"] == "too_large"
    assert body["error"]["details"] == {"limit": "bytes", "max": 2000}
    # Claimed as a file the same bytes are a document: the file cap applies, and passes.
    m = await uploaded(client, alice, png, name="big.png", kind="file")
    assert (m["kind"], m["mime"]) == ("file", "image/png")
    # Voice vs video is known only after probing: then the voice cap applies.
    voice = samples.make_audio(tmp_path / "v.webm", "webm", seconds=1.0).read_bytes()
    assert len(voice) > 1500
    resp = await upload_chunked(client, alice, voice, name="v.webm")
    body = await resp.json()
    assert resp.status == 413 and body["error"]["details"]["max"] == 1500
    # A file over the file cap, streamed: refused once 50 000 bytes have passed.
    resp = await upload_chunked(client, alice, os.urandom(120_000), name="x.bin")
    assert resp.status == 413 and (await resp.json())["error"]["details"]["max"] == 50_000
    assert await Media.all().count() == 1
    assert len(stored_files(settings)) == 1
    assert spool_leftovers(settings) == []


@pytest.mark.parametrize("settings_overrides", [{"max_file_bytes": 1000,
                                                 "max_image_bytes": 1000,
                                                 "max_voice_bytes": 1000,
                                                 "max_video_bytes": 1000}])
async def test_content_length_over_cap_is_refused_before_reading(deps, client, settings):
    alice = await make_user(deps)
    resp = await upload(client, alice, os.urandom(300_000), name="x.bin", kind="file")
    body = await resp.json()
    assert resp.status == 413 and body["error"]["code"] == "too_large"
    assert body["error"]["details"] == {"limit": "bytes", "max": 1000}
    # ?kind= in the query is checked before the body is touched too.
    form = aiohttp.FormData()
    form.add_field("file", os.urandom(300_000), filename="x.bin")
    resp = await client.post(f"{API}/media?kind=video", data=form, headers=alice.headers)
    assert resp.status == 413
    assert await Media.all().count() == 0 and stored_files(settings) == []


@pytest.mark.parametrize("settings_overrides", [{"max_voice_ms": 500}])
async def test_voice_longer_than_the_limit_is_too_large(deps, client, tmp_path, settings):
    alice = await make_user(deps)
    voice = samples.make_audio(tmp_path / "v.ogg", "ogg", seconds=2.0).read_bytes()
    resp = await upload(client, alice, voice, name="v.ogg", kind="voice")
    body = await resp.json()
    assert resp.status == 413 and body["error"]["details"]["limit"] == "duration"
    assert await Media.all().count() == 0 and stored_files(settings) == []


async def test_decompression_bomb_is_refused(deps, client, tmp_path, settings):
    alice = await make_user(deps)
    bomb = samples.make_png_bomb(tmp_path / "bomb.png").read_bytes()
    assert len(bomb) < 2_000_000
    resp = await upload(client, alice, bomb, name="cute.png", kind="image")
    body = await resp.json()
    assert resp.status == 413 and body["error"]["code"] == "too_large"
    assert body["error"]["details"]["limit"] == "pixels"
    # Even without a claim: it starts like a PNG, so it is decoded as one (header only).
    resp = await upload(client, alice, bomb, name="cute.png")
    assert resp.status == 413
    assert await Media.all().count() == 0 and stored_files(settings) == []
    assert spool_leftovers(settings) == []


# --- spoofing ------------------------------------------------------------------------


async def test_html_renamed_png_is_never_an_image(deps, client, tmp_path):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    html = samples.make_html_as_png(tmp_path / "cat.png").read_bytes()
    resp = await upload(client, alice, html, name="cat.png", kind="image",
                        content_type="image/png")
    assert resp.status == 400 and await error_code(resp) == "invalid_media"
    # No claim: name and Content-Type are ignored; it is an opaque file.
    m = await uploaded(client, alice, html, name="cat.png", content_type="image/png")
    assert (m["kind"], m["mime"]) == ("file", "application/octet-stream")
    resp = await send_media(client, alice, cid, m["id"], "image")
    assert resp.status == 400 and await error_code(resp) == "invalid"
    msg = await sent(client, alice, cid, m["id"], "file")
    resp = await client.get(msg["media"]["url"])
    assert resp.status == 200 and await resp.read() == html
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in resp.headers["Content-Security-Policy"]


async def test_svg_and_polyglots(deps, client, tmp_path):
    alice = await make_user(deps)
    svg = samples.make_svg(tmp_path / "logo.svg").read_bytes()
    resp = await upload(client, alice, svg, name="logo.svg", kind="image",
                        content_type="image/svg+xml")
    assert resp.status == 400 and await error_code(resp) == "invalid_media"
    m = await uploaded(client, alice, svg, name="logo.svg", content_type="image/svg+xml")
    assert (m["kind"], m["mime"]) == ("file", "application/octet-stream")
    resp = await client.get(m["url"])
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert resp.headers["Content-Type"] != "image/svg+xml"
    # GIF magic followed by a script: it claims to be a GIF by its bytes, and is not one.
    poly = samples.make_gif_html_polyglot(tmp_path / "p.gif").read_bytes()
    for kind in (None, "image"):
        resp = await upload(client, alice, poly, name="p.gif", kind=kind)
        assert resp.status == 400 and await error_code(resp) == "invalid_media"
    # A real GIF with HTML appended is re-encoded: the appended bytes are gone.
    gif = samples.make_gif(tmp_path / "g.gif", trailer=b"<script>alert(1)</script>")
    m = await uploaded(client, alice, gif.read_bytes(), name="g.gif")
    assert m["kind"] == "image" and m["name"] == "g.jpg"
    resp = await client.get(m["url"])
    assert b"<script>" not in await resp.read()
    # Audio claimed as video, video claimed as voice: refused.
    voice = samples.make_audio(tmp_path / "v.ogg", "ogg").read_bytes()
    resp = await upload(client, alice, voice, kind="video")
    assert resp.status == 400 and await error_code(resp) == "invalid_media"
    clip = samples.make_video(tmp_path / "c.webm", "webm").read_bytes()
    resp = await upload(client, alice, clip, kind="voice")
    assert resp.status == 400 and await error_code(resp) == "invalid_media"


async def test_bad_upload_requests(deps, client):
    alice = await make_user(deps)
    resp = await client.post(f"{API}/media", data=b"x")
    assert resp.status == 401
    resp = await client.post(f"{API}/media", json={"file": "x"}, headers=alice.headers)
    assert resp.status == 400 and await error_code(resp) == "invalid"
    resp = await upload(client, alice, b"data", kind="sticker")
    assert resp.status == 400 and (await resp.json())["error"]["details"] == {"field": "kind"}
    resp = await upload(client, alice, b"", name="empty.txt")
    assert resp.status == 400 and await error_code(resp) == "invalid_media"
    form = aiohttp.FormData()
    form.add_field("other", "x")
    resp = await client.post(f"{API}/media", data=form, headers=alice.headers)
    assert resp.status == 400


# --- access -----------------------------------------------------------------------


async def test_downloads_need_membership_or_a_valid_link(deps, client, settings, tmp_path):
    alice, bob, carol = [await make_user(deps) for _ in range(3)]
    cid = await chat_between(deps, alice, bob)
    m = await uploaded(client, alice, samples.make_pdf(tmp_path / "d.pdf").read_bytes(),
                       name="d.pdf")
    content = f"{API}/media/{m['id']}/content"
    # Before it is sent, only the uploader sees it.
    assert (await client.get(content, headers=alice.headers)).status == 200
    assert (await client.get(content, headers=bob.headers)).status == 404
    assert (await client.get(f"{API}/media/{m['id']}", headers=bob.headers)).status == 404
    await sent(client, alice, cid, m["id"], "file")
    assert (await client.get(content, headers=bob.headers)).status == 200
    resp = await client.get(f"{API}/media/{m['id']}", headers=bob.headers)
    assert (await resp.json())["media"]["url"].startswith(content + "?exp=")

    # Carol is in no conversation where it was sent.
    resp = await client.get(content, headers=carol.headers)
    assert resp.status == 404 and await error_code(resp) == "not_found"
    assert (await client.get(f"{API}/media/{m['id']}", headers=carol.headers)).status == 404
    # No credentials at all.
    resp = await client.get(content)
    assert resp.status == 401
    # Tampered signature, link for another variant, link for another media.
    url = m["url"]
    sig = url.rsplit("sig=", 1)[1]
    bad = url[: -len(sig)] + ("A" if sig[0] != "A" else "B") + sig[1:]
    resp = await client.get(bad)
    assert resp.status == 403 and await error_code(resp) == "forbidden"
    resp = await client.get(url.replace("/content?", "/thumbnail?"))
    assert resp.status == 403
    other = await uploaded(client, alice, b"other\n", name="o.txt")
    resp = await client.get(url.replace(m["id"], other["id"]))
    assert resp.status == 403
    resp = await client.get(url.replace("exp=", "exp=9"))
    assert resp.status == 403
    # A link names its user: Alice's link does not pass as Carol's.
    resp = await client.get(url.replace(f"u={alice.user_id}", f"u={carol.user_id}"))
    assert resp.status == 403
    # A correctly signed but expired link.
    past = int(time.time()) - 5
    expired = media_service.signed_url(settings, m["id"], "content", alice.user_id, exp=past)
    resp = await client.get(expired)
    assert resp.status == 403 and await error_code(resp) == "link_expired"
    # Unknown ids look the same as forbidden ones.
    resp = await client.get(f"{API}/media/{uuid.uuid4()}/content", headers=alice.headers)
    assert resp.status == 404
    resp = await client.get(f"{API}/media/not-a-uuid/content", headers=alice.headers)
    assert resp.status == 404


async def test_attach_rules_and_forwarding(deps, client, tmp_path):
    alice, bob, carol = [await make_user(deps) for _ in range(3)]
    ab = await chat_between(deps, alice, bob)
    bc = await chat_between(deps, bob, carol)
    m = await uploaded(client, alice, samples.make_pdf(tmp_path / "d.pdf").read_bytes())
    # Bob cannot attach Alice's upload before he has seen it.
    resp = await send_media(client, bob, bc, m["id"], "file")
    assert resp.status == 404 and (await resp.json())["error"]["details"] == {
        "field": "media_id"}
    resp = await send_media(client, alice, ab, m["id"], "image")  # type must equal kind
    assert resp.status == 400 and (await resp.json())["error"]["details"]["field"] == "type"
    resp = await send_media(client, alice, ab, str(uuid.uuid4()), "file")
    assert resp.status == 404
    resp = await client.post(f"{API}/conversations/{ab}/messages", headers=alice.headers,
                             json={"client_msg_id": "x1", "type": "file"})
    assert resp.status == 400 and (await resp.json())["error"]["details"] == {
        "field": "media_id"}
    resp = await send_media(client, alice, ab, m["id"], "file", text="caption")
    assert resp.status == 400  # only images and videos take a caption
    await sent(client, alice, ab, m["id"], "file")
    assert (await client.get(f"{API}/media/{m['id']}/content",
                             headers=carol.headers)).status == 404
    # Bob forwards it to Carol: the same media id, nothing copied.
    fwd = await sent(client, bob, bc, m["id"], "file")
    assert fwd["media"]["id"] == m["id"]
    assert (await client.get(f"{API}/media/{m['id']}/content",
                             headers=carol.headers)).status == 200
    assert await Media.all().count() == 1


async def test_recalled_message_no_longer_grants_access(deps, client, base_url, tmp_path):
    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    m = await uploaded(client, alice, b"secret notes\n", name="n.txt")
    msg = await sent(client, alice, cid, m["id"], "file")
    url = f"{API}/media/{m['id']}/content"
    assert (await client.get(url, headers=bob.headers)).status == 200
    a = await connect(base_url, alice.access_token)
    try:
        ack = await call(a, "message:recall", {"message_id": msg["id"]})
        assert ack["ok"], ack
    finally:
        await a.disconnect()
    assert (await client.get(url, headers=bob.headers)).status == 404
    assert (await client.get(url, headers=alice.headers)).status == 200
    resp = await client.get(f"{API}/conversations/{cid}/messages", headers=bob.headers)
    assert "media" not in (await resp.json())["messages"][-1]


# --- orphans --------------------------------------------------------------------------


async def test_orphans_are_deleted_attached_media_kept(deps, client, tmp_path, settings):
    alice, bob, carol = [await make_user(deps) for _ in range(3)]
    cid = await chat_between(deps, alice, bob)
    img = await uploaded(client, alice, samples.make_png(tmp_path / "a.png").read_bytes(),
                         name="a.png")
    kept = await uploaded(client, alice, b"keep me\n", name="k.txt")
    # An attempt that fails (Carol is not Alice's contact) does not make it attached.
    failed = await uploaded(client, alice, b"never delivered\n", name="f.txt")
    conv, _ = await convs.get_or_create_direct(deps, alice.user_id, carol.user_id)
    resp = await send_media(client, alice, str(conv.id), failed["id"], "file")
    assert resp.status == 403, await resp.json()
    await sent(client, alice, cid, kept["id"], "file")
    assert len(stored_files(settings)) == 4  # image + thumbnail + two files

    # Fresh uploads are not orphans yet.
    assert await media_service.delete_orphans(deps, timedelta(hours=1)) == 0
    assert len(stored_files(settings)) == 4
    # Past the TTL (0 here) the two never sent are gone, files and all.
    assert await media_service.delete_orphans(deps, 0) == 2
    assert {str(x.id) for x in await Media.all()} == {kept["id"]}
    files = stored_files(settings)
    assert len(files) == 1 and await plain_bytes(deps, settings, files[0]) == b"keep me\n"
    resp = await client.get(f"{API}/media/{img['id']}/content", headers=alice.headers)
    assert resp.status == 404
    assert (await client.get(img["url"])).status == 404
    # The kept one is never reconsidered, and still downloads.
    assert await media_service.delete_orphans(deps, 0) == 0
    resp = await client.get(f"{API}/media/{kept['id']}/content", headers=bob.headers)
    assert resp.status == 200 and await resp.read() == b"keep me\n"


# --- S3 backend --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_server() as url:
        yield url


class TestS3Backend:
    @pytest.fixture
    def settings_overrides(self, s3_endpoint):
        bucket = "media-" + uuid.uuid4().hex[:12]
        return {"media_storage_url": f"s3://{ACCESS_KEY}:{SECRET_KEY}@{bucket}/parley"
                                     f"?endpoint={s3_endpoint}&create_bucket=1"}

    async def test_end_to_end_on_s3(self, deps, client, tmp_path, settings):
        storage = media_service.storage_of(deps)
        assert type(storage).__name__ == "S3Storage"
        alice, bob = await make_user(deps), await make_user(deps)
        cid = await chat_between(deps, alice, bob)
        voice = samples.make_audio(tmp_path / "v.m4a", "m4a", seconds=1.0).read_bytes()
        m = await uploaded(client, alice, voice, name="v.m4a")
        assert (m["kind"], m["mime"]) == ("voice", "audio/mp4")
        msg = await sent(client, alice, cid, m["id"], "voice")
        resp = await client.get(msg["media"]["url"])
        assert resp.status == 200 and await resp.read() == voice
        assert resp.headers["Content-Type"] == "audio/mp4"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        url = f"{API}/media/{m['id']}/content"
        resp = await client.get(url, headers={**bob.headers, "Range": "bytes=100-199"})
        assert resp.status == 206 and await resp.read() == voice[100:200]
        assert resp.headers["Content-Range"] == f"bytes 100-199/{len(voice)}"
        resp = await client.get(url, headers={**bob.headers, "Range": "bytes=-10"})
        assert resp.status == 206 and await resp.read() == voice[-10:]
        resp = await client.get(url, headers={**bob.headers,
                                              "Range": f"bytes={len(voice) + 5}-"})
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{len(voice)}"

        img = await uploaded(client, alice, samples.make_png(tmp_path / "a.png", alpha=True)
                             .read_bytes(), name="a.png")
        assert img["mime"] == "image/png"
        resp = await client.get(img["thumbnail_url"])
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
        Image.open(io.BytesIO(await resp.read())).verify()
        row = await Media.get(id=img["id"])
        assert await storage.exists(row.storage_key) and await storage.exists(row.thumb_key)
        # Nothing went to the local media root.
        assert stored_files(settings) == []

        assert await media_service.delete_orphans(deps, 0) == 1
        assert not await storage.exists(row.storage_key)
        assert not await storage.exists(row.thumb_key)
        resp = await client.get(f"{API}/media/{m['id']}/content", headers=bob.headers)
        assert resp.status == 200 and await resp.read() == voice


class TestS3Outage:
    """S3 behind a proxy that can stop passing bytes without refusing."""

    @pytest.fixture
    async def s3_proxy(self, s3_endpoint):
        from tests.cluster_helpers import TcpProxy

        proxy = TcpProxy(int(s3_endpoint.rpartition(":")[2]))
        await proxy.start()
        yield proxy
        proxy.thaw()
        await proxy.close()

    @pytest.fixture
    def settings_overrides(self, s3_proxy):
        bucket = "media-" + uuid.uuid4().hex[:12]
        return {"media_storage_url": f"s3://{ACCESS_KEY}:{SECRET_KEY}@{bucket}/parley"
                                     f"?endpoint=http://127.0.0.1:{s3_proxy.port}"
                                     "&create_bucket=1&timeout=1"}

    async def test_an_s3_that_stops_answering_is_503_within_seconds(self, deps, client,
                                                                     s3_proxy, tmp_path):
        alice, bob = await make_user(deps), await make_user(deps)
        cid = await chat_between(deps, alice, bob)
        document = samples.make_pdf(tmp_path / "doc.pdf").read_bytes()
        m = await uploaded(client, alice, document, name="doc.pdf")
        msg = await sent(client, alice, cid, m["id"], "file")

        s3_proxy.freeze()
        for request in (lambda: upload(client, alice, document, name="doc.pdf"),
                        lambda: client.get(msg["media"]["url"])):
            started = time.monotonic()
            r = await request()
            body = await r.json()
            assert r.status == 503 and body["error"]["code"] == "unavailable", body
            assert time.monotonic() - started < 15  # timeout=1: six seconds at most

        s3_proxy.thaw()
        assert (await uploaded(client, alice, document, name="doc.pdf"))["kind"] == "file"
        r = await client.get(msg["media"]["url"])
        assert r.status == 200 and await r.read() == document


# --- per-user upload limits and quota ---------------------------------------------------


async def _rate_limited(resp, window: int) -> None:
    body = await resp.json()
    assert resp.status == 429, body
    assert body["error"]["code"] == "rate_limited"
    assert 0 < int(resp.headers["Retry-After"]) <= window


@pytest.mark.parametrize("settings_overrides", [{"upload_rate_limit": "2/86400"}])
async def test_uploads_per_day_are_counted(deps, client):
    alice, bob = await make_user(deps), await make_user(deps)
    for _ in range(2):
        await uploaded(client, alice, b"plain text file\n", name="a.txt")
    await _rate_limited(await upload(client, alice, b"third\n", name="c.txt"), 86400)
    await uploaded(client, bob, b"bob's own budget\n", name="b.txt")


@pytest.mark.parametrize("settings_overrides", [{"upload_bytes_per_day": 10_000}])
async def test_upload_bytes_per_day_are_counted(deps, client):
    alice = await make_user(deps)
    await uploaded(client, alice, b"x" * 6000, name="a.txt")
    await _rate_limited(await upload(client, alice, b"y" * 6000, name="b.txt"), 86400)
    # The refused upload was not kept.
    assert await Media.filter(uploader_id=alice.user_id).count() == 1


@pytest.mark.parametrize("settings_overrides", [{"media_quota_bytes": 10_000}])
async def test_stored_bytes_quota(deps, client):
    alice = await make_user(deps)
    first = await uploaded(client, alice, b"x" * 6000, name="a.txt")
    await _rate_limited(await upload(client, alice, b"y" * 6000, name="b.txt"), 10**6)
    await uploaded(client, alice, b"z" * 3000, name="c.txt")  # still fits
    # Full: refused before the body is read.
    await _rate_limited(await upload(client, alice, b"w" * 2000, name="d.txt"), 10**6)
    assert await Media.filter(uploader_id=alice.user_id).count() == 2
    # Space comes back when an upload is deleted (the orphan sweep).
    await Media.filter(id=first["id"]).delete()
    await uploaded(client, alice, b"v" * 2000, name="e.txt")


# --- links die with access ----------------------------------------------------------------


async def test_links_stop_working_after_a_recall(deps, client, base_url):
    """Recall is Parley's delete-for-everyone: links issued before it die with it."""
    from app.services import messaging

    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    m = await uploaded(client, alice, b"secret notes\n", name="n.txt")
    bob_sock = await connect(base_url, bob.access_token)
    try:
        msg = await sent(client, alice, cid, m["id"], "file")
        (live,) = await bob_sock.log.wait_for("message:new")
    finally:
        await bob_sock.disconnect()
    bob_link = live["media"]["url"]
    assert f"u={bob.user_id}" in bob_link  # signed for Bob, not a bearer link for anyone
    alice_link = msg["media"]["url"]
    assert (await client.get(bob_link)).status == 200
    await messaging.recall(deps, alice.user_id, messaging.MessageRef(message_id=msg["id"]))
    resp = await client.get(bob_link)
    assert resp.status == 404 and await error_code(resp) == "not_found"
    assert (await client.get(alice_link)).status == 200  # the uploader keeps her upload


@pytest.mark.parametrize("how", ["kick", "leave"])
async def test_links_stop_working_for_a_member_who_is_removed_or_leaves(deps, client, how,
                                                                         tmp_path):
    from app.services import groups

    alice, bob, carol = [await make_user(deps) for _ in range(3)]
    await make_contacts(deps, alice, bob)
    await make_contacts(deps, alice, carol)
    conv = await groups.create_group(deps, alice.user_id, groups.CreateIn(
        name="g", member_ids=[bob.user_id, carol.user_id]))
    png = samples.make_png(tmp_path / "p.png").read_bytes()
    m = await uploaded(client, alice, png, name="p.png")
    await sent(client, alice, conv["id"], m["id"], "image")
    links = {}
    for p in (bob, carol):
        resp = await client.get(f"{API}/media/{m['id']}", headers=p.headers)
        links[p.user_id] = (await resp.json())["media"]
        for variant in ("url", "thumbnail_url"):
            assert (await client.get(links[p.user_id][variant])).status == 200
    if how == "kick":
        await groups.remove_member(deps, alice.user_id, conv["id"], bob.user_id)
    else:
        await groups.leave(deps, bob.user_id, conv["id"])
    for variant in ("url", "thumbnail_url"):
        assert (await client.get(links[bob.user_id][variant])).status == 404
        assert (await client.get(links[carol.user_id][variant])).status == 200
    # Nor by token.
    assert (await client.get(f"{API}/media/{m['id']}/content",
                             headers=bob.headers)).status == 404


@pytest.mark.parametrize("settings_overrides", [{"media_decode_memory": 1_000_000}])
async def test_image_over_the_decode_budget_is_refused_before_decoding(deps, client, tmp_path):
    alice = await make_user(deps)
    png = samples.make_png(tmp_path / "p.png", size=(800, 600)).read_bytes()
    resp = await upload(client, alice, png, name="p.png")
    body = await resp.json()
    assert resp.status == 413 and body["error"]["code"] == "too_large"
    assert body["error"]["details"] == {"limit": "decode_memory", "max": 1_000_000}
    assert await Media.all().count() == 0


async def test_links_stop_working_after_delete_for_me(deps, client):
    from app.services import messaging

    alice, bob = await make_user(deps), await make_user(deps)
    cid = await chat_between(deps, alice, bob)
    m = await uploaded(client, alice, b"notes\n", name="n.txt")
    msg = await sent(client, alice, cid, m["id"], "file")
    resp = await client.get(f"{API}/conversations/{cid}/messages", headers=bob.headers)
    bob_link = (await resp.json())["messages"][-1]["media"]["url"]
    assert f"u={bob.user_id}" in bob_link and (await client.get(bob_link)).status == 200
    await messaging.delete_for_me(deps, bob.user_id, messaging.MessageRef(message_id=msg["id"]))
    assert (await client.get(bob_link)).status == 404
    assert (await client.get(msg["media"]["url"])).status == 200  # Alice's is hers


async def test_a_disk_that_fills_at_the_spools_last_flush_is_a_storage_failure(tmp_path):
    """A full disk may show only when closing the spool flushes its last
    block; that too is the storage's outage (503), not a bug (500)."""
    path = tmp_path / "upload"
    path.symlink_to("/dev/full")  # takes the open and buffered writes, fails the flush

    async def body():
        yield b"x" * 100

    with pytest.raises(StorageError, match="cannot spool an upload"):
        await media_service._spool(body(), path)


async def test_a_media_storage_outage_is_503_unavailable(deps, client, tmp_path, settings):
    """The media volume gone (here: a file where its directory was) is not a
    bug: both paths of an upload, streamed into storage or spooled and
    processed first, tell the client to retry (docs/api.md, 503 unavailable)."""
    alice = await make_user(deps)
    root = Path(settings.media_root)
    _volume_gone(root)
    document = samples.make_pdf(tmp_path / "doc.pdf").read_bytes()
    for data, name in ((document, "doc.pdf"), (noise_png(), "photo.png")):
        r = await upload(client, alice, data, name=name)
        body = await r.json()
        assert r.status == 503, body
        assert body["error"] == {"code": "unavailable",
                                 "message": "The media storage is unavailable; retry shortly."}
    assert await Media.all().count() == 0
    metrics = await (await client.get("/metrics")).text()
    assert 'parley_http_unavailable_total{dependency="media_storage"} 2.0' in metrics
    os.unlink(root)  # the volume is back
    assert (await uploaded(client, alice, document, name="doc.pdf"))["kind"] == "file"


def _volume_gone(root: Path) -> None:
    shutil.rmtree(root)
    root.write_bytes(b"")
