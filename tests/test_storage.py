"""Behavioural tests shared by LocalStorage and S3Storage (moto in server mode)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path

import pytest

from app.media.errors import TooLarge
from app.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    RangeNotSatisfiable,
    Storage,
    derive_key,
    new_key,
    parse_range,
    storage_from_url,
    validate_key,
)
from app.storage.s3 import MIN_PART_SIZE, S3Storage
from tests import s3_server

MIB = 1024 * 1024


@pytest.fixture(scope="session")
def moto_server():
    """A real HTTP S3 endpoint: ``python -m moto.server`` on a free loopback port."""
    with s3_server.moto_server() as url:
        yield url


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(params=["local", "s3"])
async def storage(request, tmp_path):
    if request.param == "local":
        st: Storage = LocalStorage(tmp_path / "media")
    else:
        request.getfixturevalue("aws_env")
        endpoint = request.getfixturevalue("moto_server")
        bucket = "t-" + uuid.uuid4().hex[:12]
        st = storage_from_url(f"s3://{bucket}?endpoint={endpoint}&create_bucket=1"
                              f"&part_size={MIN_PART_SIZE}")
        assert isinstance(st, S3Storage)
    try:
        yield st
    finally:
        await st.aclose()


def _payload(n: int) -> bytes:
    # deterministic, non-repeating-ish content so ranges are distinguishable
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:n])


async def _read_all(st: Storage, key: str) -> bytes:
    return await (await st.open_range(key, 0, None)).read_all()


async def _write_chunks(st: Storage, key: str, data: bytes, chunk: int = 64 * 1024) -> int:
    async with st.open_writer(key) as w:
        for i in range(0, len(data), chunk):
            await w.write(data[i:i + chunk])
    return w.size


# ------------------------------------------------------------------------- keys


def test_new_key_shape_and_validation():
    k = new_key(".jpg")
    a, b, name = k.split("/")
    assert len(a) == 2 and len(b) == 2 and name.startswith(a + b) and name.endswith(".jpg")
    assert validate_key(k) == k
    assert new_key() != new_key()
    assert derive_key(k, "thumb.jpg") == k + ".thumb.jpg"


@pytest.mark.parametrize("bad", [
    "", "..", "../etc/passwd", "ab/../../etc/passwd", "/etc/passwd", "ab//cd", "ab/cd/",
    "ab\\cd", "ab/./cd", ".hidden", "ab/.x", "a b", "ab/cd%2f..", "é", "ab\x00cd",
    "a/" * 10 + "x", "x" * 600, "ab/cd/" + "y" * 129,
])
def test_validate_key_rejects(bad):
    with pytest.raises(InvalidKey):
        validate_key(bad)


def test_new_key_rejects_bad_suffix():
    with pytest.raises(InvalidKey):
        new_key("/../x")


@pytest.mark.parametrize("header,size,expected", [
    (None, 100, None),
    ("bytes=0-9", 100, (0, 9)),
    ("bytes=10-", 100, (10, 99)),
    ("bytes=-10", 100, (90, 99)),
    ("bytes=-1000", 100, (0, 99)),
    ("bytes=90-1000", 100, (90, 99)),
    ("items=0-1", 100, None),
    ("bytes=0-1,5-6", 100, None),   # multi-range: ignored → full 200 response
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0", "bytes=5-1"])
def test_parse_range_unsatisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


# ------------------------------------------------------------------ behaviour


async def test_streamed_write_roundtrip(storage):
    key = new_key(".bin")
    data = _payload(300_000)
    assert not await storage.exists(key)
    assert await _write_chunks(storage, key, data, chunk=7777) == len(data)
    assert await storage.exists(key)
    assert await storage.size(key) == len(data)
    assert await storage.read_bytes(key) == data


async def test_multipart_write_large_object(storage):
    # > 2 parts at the 5 MiB minimum part size: exercises S3 multipart upload
    key = new_key()
    data = _payload(11 * MIB + 12345)
    async with storage.open_writer(key) as w:
        for i in range(0, len(data), MIB):
            await w.write(data[i:i + MIB])
    assert w.size == len(data)
    if isinstance(storage, S3Storage):
        assert [p["PartNumber"] for p in w._parts] == [1, 2, 3]
    assert await storage.size(key) == len(data)
    got = await storage.read_bytes(key)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    # a range across the part boundary
    s = await storage.open_range(key, 5 * MIB - 10, 5 * MIB + 9)
    assert await s.read_all() == data[5 * MIB - 10:5 * MIB + 10]


async def test_empty_object(storage):
    key = new_key()
    async with storage.open_writer(key) as w:
        pass
    assert w.size == 0
    assert await storage.size(key) == 0
    assert await storage.read_bytes(key) == b""
    with pytest.raises(RangeNotSatisfiable):
        await storage.open_range(key, 1, 5)


async def test_ranges(storage):
    key = new_key()
    data = _payload(1000)
    await _write_chunks(storage, key, data, chunk=333)

    first = await storage.open_range(key, 0, 9)
    assert (first.start, first.end, first.length, first.total_size) == (0, 9, 10, 1000)
    assert await first.read_all() == data[:10]

    middle = await storage.open_range(key, 400, 599)
    assert (middle.start, middle.end, middle.total_size) == (400, 599, 1000)
    assert await middle.read_all() == data[400:600]

    # suffix range (last 100 bytes), via the HTTP header helper and directly
    start, end = parse_range("bytes=-100", await storage.size(key))
    suffix = await storage.open_range(key, start, end)
    assert await suffix.read_all() == data[-100:]
    suffix2 = await storage.open_range(key, None, 100)
    assert (suffix2.start, suffix2.end) == (900, 999)
    assert await suffix2.read_all() == data[-100:]

    to_end = await storage.open_range(key, 990)
    assert await to_end.read_all() == data[990:]

    clamped = await storage.open_range(key, 995, 5000)
    assert clamped.end == 999
    assert await clamped.read_all() == data[995:]

    with pytest.raises(RangeNotSatisfiable):
        await storage.open_range(key, 1000, None)
    with pytest.raises(RangeNotSatisfiable):
        await storage.open_range(key, 10, 5)


async def test_range_stream_can_be_closed_early(storage):
    key = new_key()
    data = _payload(2 * MIB)
    await _write_chunks(storage, key, data, chunk=MIB)
    async with await storage.open_range(key, 0, None) as stream:
        first = await stream.__anext__()
        assert data.startswith(first)
    # the storage is still usable afterwards
    assert await storage.read_bytes(key) == data


async def test_delete(storage):
    key = new_key()
    await _write_chunks(storage, key, b"hello")
    await storage.delete(key)
    assert not await storage.exists(key)
    with pytest.raises(ObjectNotFound):
        await storage.size(key)
    with pytest.raises(ObjectNotFound):
        await storage.open_range(key, 0, None)
    await storage.delete(key)  # idempotent


async def test_missing_object(storage):
    key = new_key()
    assert not await storage.exists(key)
    with pytest.raises(ObjectNotFound):
        await storage.read_bytes(key)


class Boom(Exception):
    pass


@pytest.mark.parametrize("amount", [1000, 6 * MIB])
async def test_abort_on_error_leaves_nothing(storage, tmp_path, amount):
    key = new_key()
    with pytest.raises(Boom):
        async with storage.open_writer(key) as w:
            await w.write(_payload(amount))
            raise Boom()
    assert w.closed
    assert not await storage.exists(key)
    await _assert_no_leftovers(storage)


async def test_abort_keeps_previous_version(storage):
    key = new_key()
    await _write_chunks(storage, key, b"version-1")
    with pytest.raises(Boom):
        async with storage.open_writer(key) as w:
            await w.write(b"version-2-partial")
            raise Boom()
    assert await storage.read_bytes(key) == b"version-1"
    await _write_chunks(storage, key, b"version-3")
    assert await storage.read_bytes(key) == b"version-3"


async def test_max_size_aborts_with_too_large(storage):
    key = new_key()
    with pytest.raises(TooLarge) as ei:
        async with storage.open_writer(key, max_size=10_000) as w:
            for _ in range(20):
                await w.write(b"x" * 1000)
    assert ei.value.code == "too_large" and ei.value.details["limit"] == "bytes"
    assert not await storage.exists(key)
    await _assert_no_leftovers(storage)


async def test_manual_writer_protocol(storage):
    key = new_key()
    w = await storage.open_writer(key)
    await w.write(b"abc")
    await w.write(b"def")
    assert not await storage.exists(key)  # not visible before commit
    await w.commit()
    assert await storage.read_bytes(key) == b"abcdef"

    w2 = await storage.open_writer(new_key())
    await w2.write(b"zzz")
    await w2.abort()
    await w2.abort()
    await _assert_no_leftovers(storage, allow={key})


async def test_put_file(storage, tmp_path):
    src = tmp_path / "src.bin"
    data = _payload(200_000)
    src.write_bytes(data)
    key = new_key(".bin")
    assert await storage.put_file(key, src, content_type="application/octet-stream") == len(data)
    assert src.read_bytes() == data  # source untouched
    assert await storage.read_bytes(key) == data


async def test_operations_reject_tampered_keys(storage):
    for bad in ("../escape", "/etc/passwd", "ab/../../x", "ab/%2e%2e/x"):
        with pytest.raises(InvalidKey):
            storage.open_writer(bad)
        with pytest.raises(InvalidKey):
            await storage.open_range(bad, 0, None)
        with pytest.raises(InvalidKey):
            await storage.size(bad)
        with pytest.raises(InvalidKey):
            await storage.exists(bad)
        with pytest.raises(InvalidKey):
            await storage.delete(bad)
        with pytest.raises(InvalidKey):
            storage.local_path(bad)


async def test_concurrent_writers(storage):
    keys = [new_key() for _ in range(8)]
    blobs = [_payload(50_000 + i) for i in range(8)]
    await asyncio.gather(*(_write_chunks(storage, k, b, 4096) for k, b in zip(keys, blobs,
                                                                                 strict=True)))
    for k, b in zip(keys, blobs, strict=True):
        assert await storage.read_bytes(k) == b


async def _assert_no_leftovers(st: Storage, allow: set[str] = frozenset()) -> None:
    if isinstance(st, LocalStorage):
        files = sorted(p.relative_to(st.root).as_posix()
                       for p in st.root.rglob("*") if p.is_file())
        assert files == sorted(allow)
    else:
        assert isinstance(st, S3Storage)
        client = await st._client()
        uploads = await client.list_multipart_uploads(Bucket=st.bucket)
        assert not uploads.get("Uploads")
        listing = await client.list_objects_v2(Bucket=st.bucket)
        assert sorted(o["Key"] for o in listing.get("Contents", [])) == sorted(allow)


# -------------------------------------------------------------- backend specifics


async def test_local_path_and_atomic_file(tmp_path):
    st = LocalStorage(tmp_path / "m")
    key = new_key(".txt")
    p = st.local_path(key)
    assert p is not None and p.is_relative_to(st.root)
    async with st.open_writer(key) as w:
        await w.write(b"partial")
        # not yet at its final place, and the temp file is not addressable by any key
        assert not p.exists()
        temps = list(p.parent.iterdir())
        assert len(temps) == 1 and temps[0].name.startswith(".")
        with pytest.raises(InvalidKey):
            validate_key(f"{key.rsplit('/', 1)[0]}/{temps[0].name}")
    assert p.read_bytes() == b"partial"


@pytest.mark.parametrize("url", ["file://{root}", "{root}", ""])
async def test_a_local_commit_flushes_the_file_and_each_directory_it_changed(
        tmp_path, flushed, url):
    """The media row is committed, and the upload acknowledged, right after the
    object's commit returns: the file must outlive a power cut as the row does.
    That takes a flush of the file, of the directory it was renamed into, and of
    the directories that gained a new subdirectory for it."""
    root = tmp_path / "media"
    st = storage_from_url(url.format(root=root), default_root=root)
    key = new_key(".txt")
    async with st.open_writer(key) as w:
        await w.write(b"durable")
    top, sub, name = key.split("/")
    base = str(st.root)
    assert len(flushed) == 4, flushed
    assert flushed[0].startswith(f"{base}/{top}/{sub}/.{name}.")  # the file, before its rename
    assert flushed[1:] == [f"{base}/{top}/{sub}", f"{base}/{top}", base]
    flushed.clear()
    await st.put_file(f"{top}/{sub}/second", _source(tmp_path, b"again"))
    assert len(flushed) == 2 and flushed[1:] == [f"{base}/{top}/{sub}"]  # no new directory


async def test_a_local_store_opted_out_of_flushing_flushes_nothing(tmp_path, flushed):
    st = storage_from_url(f"file://{tmp_path}/media?fsync=0")
    async with st.open_writer(new_key()) as w:
        await w.write(b"fast")
    assert flushed == []


def _source(tmp_path, data: bytes) -> Path:
    p = tmp_path / f"src-{uuid.uuid4().hex}"
    p.write_bytes(data)
    return p


async def test_local_symlink_escape_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"top secret")
    st = LocalStorage(tmp_path / "m")
    (st.root / "ab").mkdir()
    (st.root / "ab" / "cd").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKey):
        await st.open_range("ab/cd/secret", 0, None)
    with pytest.raises(InvalidKey):
        async with st.open_writer("ab/cd/newfile") as w:
            await w.write(b"x")
    assert not (outside / "newfile").exists()


async def test_s3_has_no_local_path(moto_server, aws_env):
    st = S3Storage("whatever", moto_server)
    assert st.local_path(new_key()) is None
    await st.aclose()


async def test_s3_userinfo_credentials_and_prefix(moto_server, aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    st = storage_from_url(f"s3://AK%3AID:se%2Fcret@prefixed/tenant-1?endpoint={moto_server}"
                          "&create_bucket=true&region=us-east-1")
    assert isinstance(st, S3Storage) and st.key_prefix == "tenant-1/"
    creds = await st._session.get_credentials()
    assert (creds.access_key, creds.secret_key) == ("AK:ID", "se/cret")
    key = new_key()
    try:
        await _write_chunks(st, key, b"prefixed!")
        client = await st._client()
        head = await client.head_object(Bucket="prefixed", Key=f"tenant-1/{key}")
        assert head["ContentLength"] == 9
    finally:
        await st.aclose()


async def test_s3_that_stops_answering_fails_within_its_timeout(moto_server, aws_env):
    """Packets to S3 go unanswered (nothing refuses, nothing resets): a write and
    a read fail as StorageError (503 at the API) after the URL's `timeout` per
    attempt, not after botocore's minute; once S3 answers, both work again."""
    import time

    from app.storage import StorageError
    from tests.cluster_helpers import TcpProxy

    proxy = TcpProxy(int(moto_server.rpartition(":")[2]))
    await proxy.start()
    st = storage_from_url(f"s3://t-{uuid.uuid4().hex[:12]}?endpoint=http://127.0.0.1:"
                          f"{proxy.port}&create_bucket=1&timeout=1")
    try:
        assert isinstance(st, S3Storage)
        key = new_key()
        await _write_chunks(st, key, b"before")
        proxy.freeze()
        for attempt in (lambda: _write_chunks(st, new_key(), b"during"),
                        lambda: _read_all(st, key)):
            started = time.monotonic()
            with pytest.raises(StorageError):
                await attempt()
            # Three attempts of one second each, and botocore's short backoffs.
            assert time.monotonic() - started < 10
        proxy.thaw()
        assert await _read_all(st, key) == b"before"
        await _write_chunks(st, new_key(), b"after")
    finally:
        proxy.thaw()
        await st.aclose()
        await proxy.close()


def test_storage_from_url_variants(tmp_path, monkeypatch):
    st = storage_from_url(f"file://{tmp_path}/a?fsync=1")
    assert isinstance(st, LocalStorage) and st.root == (tmp_path / "a").resolve() and st.fsync
    assert not storage_from_url(f"file://{tmp_path}/a?fsync=0").fsync
    st = storage_from_url(str(tmp_path / "b"))
    assert isinstance(st, LocalStorage) and st.root == (tmp_path / "b").resolve()
    st = storage_from_url("", default_root=tmp_path / "c")
    assert isinstance(st, LocalStorage)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "envkey")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    s3 = storage_from_url("s3://bkt?endpoint=http://127.0.0.1:9&part_size=6291456")
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.endpoint_url, s3.region, s3.part_size) == (
        "bkt", "http://127.0.0.1:9", "eu-west-3", 6 * MIB)
    assert s3.timeout == 10 and storage_from_url("s3://b?timeout=2.5").timeout == 2.5
    for bad in ("ftp://x/y", "file://remotehost/x", "s3://", "s3://b?part_size=100", "",
                "s3://b?timeout=0", "s3://b?timeout=soon"):
        with pytest.raises(ValueError):
            storage_from_url(bad)


def test_storage_modules_are_framework_free():
    root = Path(__file__).resolve().parent.parent / "app"
    for pkg in ("media", "storage"):
        for f in (root / pkg).glob("*.py"):
            text = f.read_text()
            assert "import aiohttp" not in text and "from aiohttp" not in text, f

