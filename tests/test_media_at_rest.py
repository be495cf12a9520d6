"""Media encrypted at rest: ciphertext on disk (uploads, thumbnails), range
requests decrypting only the chunks they touch, tampering detected, key
rotation of files, and S3 server-side encryption recorded by the S3 endpoint."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from app import crypto
from app.models.media import Media
from app.services import media as media_service
from app.storage import LocalStorage, storage_from_url
from app.storage.encrypted import (
    CHUNK,
    HEADER_SIZE,
    MAGIC,
    READ_CHUNKS,
    TAG,
    CorruptObject,
    EncryptedLocalStorage,
)
from tests import media_samples as samples
from tests.factories import make_user
from tests.s3_server import moto_server
from tests.test_media_api import API, uploaded

KEY_A = crypto.new_key_spec("ma")
KEY_B = crypto.new_key_spec("mb")


def stored_file(settings, key: str) -> Path:
    return Path(settings.media_root).joinpath(*key.split("/"))


async def test_uploads_and_thumbnails_are_ciphertext_on_disk(client, deps, settings, tmp_path):
    ann = await make_user(deps, "Ann")
    data = os.urandom(5 * CHUNK + 1234)
    marker = b"PLAINTEXT-MARKER-" * 100
    data = data[:1000] + marker + data[1000 + len(marker):]
    media = await uploaded(client, ann, data, name="blob.bin")
    row = await Media.get(id=media["id"])
    raw = stored_file(settings, row.storage_key).read_bytes()
    assert raw.startswith(MAGIC) and marker not in raw and data[:4096] not in raw
    assert len(raw) == HEADER_SIZE + len(data) + 6 * TAG  # 6 chunks, one tag each
    # The API serves the plaintext, whole and in ranges (also across chunk borders).
    r = await client.get(f"{API}/media/{media['id']}/content", headers=ann.headers)
    assert r.status == 200 and await r.read() == data
    for rng, want in (("bytes=70000-140000", data[70000:140001]),
                      (f"bytes={CHUNK - 1}-{CHUNK}", data[CHUNK - 1:CHUNK + 1]),
                      ("bytes=-10", data[-10:]),
                      (f"bytes={len(data) - 1}-", data[-1:])):
        r = await client.get(f"{API}/media/{media['id']}/content",
                             headers={**ann.headers, "Range": rng})
        assert r.status == 206, rng
        assert await r.read() == want, rng
        assert r.headers["Content-Range"].endswith(f"/{len(data)}")
    r = await client.get(f"{API}/media/{media['id']}/content",
                         headers={**ann.headers, "Range": f"bytes={len(data)}-"})
    assert r.status == 416
    # An image: the re-encoded file and its thumbnail are both encrypted.
    png = samples.make_png(tmp_path / "p.png", size=(600, 400)).read_bytes()
    image = await uploaded(client, ann, png, name="p.png", kind="image")
    row = await Media.get(id=image["id"])
    assert row.thumb_key
    for key in (row.storage_key, row.thumb_key):
        assert stored_file(settings, key).read_bytes().startswith(MAGIC)
    r = await client.get(f"{API}/media/{image['id']}/thumbnail", headers=ann.headers)
    assert r.status == 200 and (await r.read())[:3] in (b"\xff\xd8\xff", b"\x89PN", b"RIF")


async def test_a_range_decrypts_only_its_chunks_and_tampering_is_caught(tmp_path):
    st = EncryptedLocalStorage(tmp_path / "m", ring=crypto.parse_keys(KEY_A))
    data = os.urandom(4 * CHUNK + 10)
    async with st.open_writer("aa/bb/obj") as w:
        for i in range(0, len(data), 10_000):
            await w.write(data[i:i + 10_000])
    assert await st.size("aa/bb/obj") == len(data)
    path = tmp_path / "m" / "aa" / "bb" / "obj"
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE + 5] ^= 1  # damage chunk 0 only
    path.write_bytes(bytes(raw))
    # Chunk 3 alone is read and verified: the damage elsewhere does not matter.
    stream = await st.open_range("aa/bb/obj", 3 * CHUNK + 5, 3 * CHUNK + 100)
    assert await stream.read_all() == data[3 * CHUNK + 5:3 * CHUNK + 101]
    with pytest.raises(CorruptObject):
        await (await st.open_range("aa/bb/obj", 0, 10)).read_all()
    # Dropping the final chunk is caught too (the last chunk is marked as last).
    async with st.open_writer("aa/bb/two") as w:
        await w.write(data)
    two = tmp_path / "m" / "aa" / "bb" / "two"
    two.write_bytes(two.read_bytes()[:HEADER_SIZE + 4 * (CHUNK + TAG)])
    with pytest.raises(CorruptObject):
        await (await st.open_range("aa/bb/two", 0, None)).read_all()
    # Another key does not open it.
    other = EncryptedLocalStorage(tmp_path / "m", ring=crypto.parse_keys(
        "ma:" + crypto.new_key_spec("x").split(":", 1)[1]))
    async with st.open_writer("aa/bb/three") as w:
        await w.write(b"secret")
    with pytest.raises(CorruptObject):
        await other.read_bytes("aa/bb/three")
    # Empty and exactly-one-chunk objects round-trip.
    for name, body in (("empty", b""), ("one", data[:CHUNK])):
        async with st.open_writer(f"aa/bb/{name}") as w:
            await w.write(body)
        assert await st.read_bytes(f"aa/bb/{name}") == body
        assert await st.size(f"aa/bb/{name}") == len(body)


async def test_ranges_over_several_read_batches_and_a_download_closed_midway(tmp_path):
    st = EncryptedLocalStorage(tmp_path / "m", ring=crypto.parse_keys(KEY_A))
    batch = READ_CHUNKS * CHUNK
    data = os.urandom(2 * batch + 3 * CHUNK + 77)
    async with st.open_writer("aa/bb/big") as w:
        await w.write(data)
    # Whole, and ranges starting mid-chunk that cross batch borders, end in the last
    # (short) chunk or end exactly on a batch border.
    for start, end in ((0, None), (CHUNK + 3, batch + 5), (batch - 1, 2 * batch),
                       (5, batch - 1), (batch + 17, len(data) - 1), (len(data) - 80, None)):
        stream = await st.open_range("aa/bb/big", start, end)
        stop = len(data) if end is None else end + 1
        assert await stream.read_all() == data[start:stop], (start, end)
    # A reader that stops after the first piece (a client gone mid-download): the
    # read-ahead already running finishes before the file is closed, and the stream
    # gives nothing more.
    stream = await st.open_range("aa/bb/big", 0, None)
    first = await stream.__anext__()
    assert bytes(first) == data[:len(first)] and len(first) == batch
    await stream.aclose()
    await stream.aclose()
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    # Damage in a later batch is reported when that batch is reached, not before.
    path = tmp_path / "m" / "aa" / "bb" / "big"
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE + (READ_CHUNKS + 1) * (CHUNK + TAG) + 9] ^= 1
    path.write_bytes(bytes(raw))
    stream = await st.open_range("aa/bb/big", 0, None)
    assert bytes(await stream.__anext__()) == data[:batch]
    with pytest.raises(CorruptObject):
        await stream.__anext__()
    await stream.aclose()


async def test_rotation_encrypts_old_plaintext_and_rekeys_files(tmp_path):
    root = tmp_path / "m"
    plain = LocalStorage(root)  # files from before encryption
    data = os.urandom(3 * CHUNK)
    await plain.put_file("aa/cc/legacy", _tmp_file(tmp_path, data))
    old = EncryptedLocalStorage(root, ring=crypto.parse_keys(KEY_A))
    async with old.open_writer("aa/cc/under-a") as w:
        await w.write(data[:1000])
    assert await old.read_bytes("aa/cc/legacy") == data  # plaintext still served
    spool = root / ".spool" / "job1"
    spool.mkdir(parents=True)
    (spool / "upload").write_bytes(b"being processed")  # the pipeline's working file
    new = EncryptedLocalStorage(root, ring=crypto.parse_keys(f"{KEY_B},{KEY_A}"))
    seen = []
    done, failed = await new.rotate_all(progress=lambda *a: seen.append(a))
    assert (done, failed) == (2, 0) and seen[-1] == ("media files", 2, 2)
    for key, body in (("aa/cc/legacy", data), ("aa/cc/under-a", data[:1000])):
        raw = (root / key).read_bytes()
        assert raw.startswith(MAGIC) and raw[8:10] == b"mb"
        assert await new.read_bytes(key) == body
    assert await new.rotate_all() == (0, 0)  # resumable: nothing left
    assert (spool / "upload").read_bytes() == b"being processed"  # left alone
    only_b = EncryptedLocalStorage(root, ring=crypto.parse_keys(KEY_B))
    assert await only_b.read_bytes("aa/cc/legacy") == data


async def test_encrypted_writes_and_their_rotation_are_flushed(tmp_path, settings, flushed):
    """What the app builds for local media flushes every commit (the upload's
    ack follows it), and rotation flushes its rename: once rotation is done the
    old key may be retired, and a file whose rename was lost would need it."""
    built = media_service.build_storage(settings)
    assert isinstance(built, EncryptedLocalStorage) and built.fsync
    st = EncryptedLocalStorage(tmp_path / "m", ring=crypto.parse_keys(KEY_A))
    assert st.fsync
    async with st.open_writer("aa/dd/file") as w:
        await w.write(b"sealed")
    flushed.clear()
    rotated = EncryptedLocalStorage(st.root, ring=crypto.parse_keys(f"{KEY_B},{KEY_A}"))
    assert await rotated.rotate_all() == (1, 0)
    assert flushed[-1] == str(st.root / "aa" / "dd"), flushed


def _tmp_file(tmp_path, data: bytes) -> Path:
    p = tmp_path / f"src-{uuid.uuid4().hex}"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("sse,kms", [("AES256", ""), ("aws:kms", "alias/parley-media")])
async def test_s3_objects_are_written_with_server_side_encryption(tmp_path, monkeypatch,
                                                                  sse, kms):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    from tests.conftest import make_settings

    with moto_server() as endpoint:
        url = f"s3://sse-{uuid.uuid4().hex[:8]}?endpoint={endpoint}&create_bucket=1" \
              "&part_size=5242880"
        settings = make_settings(f"sqlite://{tmp_path / 'x.db'}", tmp_path,
                                 media_storage_url=url, s3_sse=sse, s3_sse_kms_key_id=kms)
        st = media_service.build_storage(settings)
        try:
            async with st.open_writer("aa/dd/small") as w:
                await w.write(b"hello")
            async with st.open_writer("aa/dd/big") as w:  # multipart
                await w.write(os.urandom(6 * 1024 * 1024))
            client = await st._client()
            for key in ("aa/dd/small", "aa/dd/big"):
                head = await client.head_object(Bucket=st.bucket, Key=st._name(key))
                assert head["ServerSideEncryption"] == sse, head
                if kms:
                    assert kms in head.get("SSEKMSKeyId", ""), head
            assert await st.read_bytes("aa/dd/small") == b"hello"
        finally:
            await st.aclose()
    assert storage_from_url  # the same URL parser as the server's
