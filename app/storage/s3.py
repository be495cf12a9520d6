"""S3-compatible backend (AWS S3, MinIO, Ceph RGW, Garage, moto …) using aioboto3.

* Streamed writes use a multipart upload: the writer buffers up to ``part_size`` bytes
  (≥ 5 MiB, the S3 minimum for every part but the last), uploads each full part as soon
  as it is complete and completes the upload on commit. An object smaller than one part
  is sent with a single ``PutObject``. On error/abort the multipart upload is aborted, so
  no partial object ever becomes visible.
* Ranged reads are ``GetObject`` with a ``Range`` header, streamed in chunks.
* One aiobotocore client is created lazily and reused; call :meth:`S3Storage.aclose`
  (or use ``async with``) on shutdown. The client is bound to the event loop that first
  used it: create one ``S3Storage`` per application/loop (e.g. in the app's cleanup
  context), not a module-level singleton shared across loops.
* ``key_prefix`` lets several deployments share a bucket; keys are validated before the
  prefix is added.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from .base import (
    DEFAULT_CHUNK_SIZE,
    InvalidKey,
    ObjectNotFound,
    ObjectWriter,
    RangeNotSatisfiable,
    RangeStream,
    Storage,
    StorageError,
    validate_key,
)

MIN_PART_SIZE = 5 * 1024 * 1024
DEFAULT_PART_SIZE = 8 * 1024 * 1024
# Seconds to connect, and to wait for each read of an answer, per attempt.
# botocore's 60 s would hold an upload or a download for minutes on an S3 that
# stops answering without refusing; S3 answers in milliseconds and keeps a slow
# CompleteMultipartUpload alive with whitespace.
DEFAULT_TIMEOUT = 10.0
ATTEMPTS = 3
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class _S3Writer(ObjectWriter):
    def __init__(self, storage: S3Storage, key: str, max_size: int | None,
                 content_type: str | None):
        super().__init__(key, max_size)
        self._s3 = storage
        self._name = storage._name(key)
        self._content_type = content_type
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict] = []

    def _extra(self) -> dict:
        extra = dict(self._s3.sse)  # server-side encryption (S3_SSE), on every object
        if self._content_type:
            extra["ContentType"] = self._content_type
        return extra

    async def _start(self) -> None:
        pass

    async def _upload_part(self, data: bytes) -> None:
        client = await self._s3._client()
        if self._upload_id is None:
            resp = await client.create_multipart_upload(
                Bucket=self._s3.bucket, Key=self._name, **self._extra())
            self._upload_id = resp["UploadId"]
        number = len(self._parts) + 1
        resp = await client.upload_part(Bucket=self._s3.bucket, Key=self._name,
                                        UploadId=self._upload_id, PartNumber=number,
                                        Body=data)
        self._parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    async def _write(self, chunk: bytes) -> None:
        self._buf += chunk
        size = self._s3.part_size
        while len(self._buf) >= size:
            with memoryview(self._buf) as mv:
                part = bytes(mv[:size])
            del self._buf[:size]
            await self._s3._call(self._upload_part(part), len(part))

    async def _commit(self) -> None:
        client = await self._s3._client()
        if self._upload_id is None:
            data, self._buf = bytes(self._buf), bytearray()
            await self._s3._call(client.put_object(
                Bucket=self._s3.bucket, Key=self._name, Body=data, **self._extra()),
                len(data))
            return
        if self._buf:
            data, self._buf = bytes(self._buf), bytearray()
            await self._s3._call(self._upload_part(data), len(data))
        # S3 may take a while to assemble a large object: its whole size counts.
        await self._s3._call(client.complete_multipart_upload(
            Bucket=self._s3.bucket, Key=self._name, UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts}), self.size)
        self._upload_id = None

    async def _abort(self) -> None:
        self._buf = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            client = await self._s3._client()
            with contextlib.suppress(ClientError, BotoCoreError, TimeoutError):
                async with self._s3.deadline():
                    await client.abort_multipart_upload(
                        Bucket=self._s3.bucket, Key=self._name, UploadId=upload_id)


class _S3Range(RangeStream):
    def __init__(self, body, start: int, end: int, total: int, chunk_size: int):
        self._body = body
        self._remaining = end - start + 1
        self._chunk = chunk_size
        self.start, self.end, self.total_size = start, end, total

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if self._body is None or self._remaining <= 0:
            await self.aclose()
            raise StopAsyncIteration
        try:
            data = await self._body.read(min(self._chunk, self._remaining))
        except Exception as e:
            await self.aclose()
            raise StorageError(f"read failed: {e}") from e
        if not data:
            await self.aclose()
            raise StopAsyncIteration
        self._remaining -= len(data)
        return data

    async def aclose(self) -> None:
        body, self._body = self._body, None
        if body is None:
            return
        # fully read: give the connection back to the pool; otherwise drop it
        if self._remaining <= 0:
            body.release()
        else:
            body.close()


class S3Storage(Storage):
    """Objects in an S3 bucket.

    ``endpoint_url`` is required for non-AWS servers (MinIO: ``http://127.0.0.1:9000``);
    path-style addressing is used whenever an endpoint is given. Credentials default to
    the usual boto chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` env, profile…)
    when not passed. ``create_bucket=True`` creates the bucket on first use if missing.
    """

    def __init__(self, bucket: str, endpoint_url: str | None = None,
                 region: str | None = None, access_key: str | None = None,
                 secret_key: str | None = None, *, session_token: str | None = None,
                 key_prefix: str = "", create_bucket: bool = False,
                 part_size: int = DEFAULT_PART_SIZE, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 addressing_style: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be ≥ {MIN_PART_SIZE} bytes (S3 minimum)")
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        if key_prefix:
            validate_key(key_prefix.strip("/"))
            key_prefix = key_prefix.strip("/") + "/"
        self.bucket = bucket
        self.endpoint_url = endpoint_url or None
        self.region = region or "us-east-1"
        self.key_prefix = key_prefix
        self.create_bucket = create_bucket
        self.part_size = part_size
        self.chunk_size = chunk_size
        self._session = aioboto3.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            aws_session_token=session_token, region_name=self.region)
        style = addressing_style or ("path" if self.endpoint_url else "auto")
        self._config = AioConfig(signature_version="s3v4", s3={"addressing_style": style},
                                 retries={"max_attempts": ATTEMPTS, "mode": "standard"},
                                 connect_timeout=timeout, read_timeout=timeout)
        self.timeout = timeout
        self._stack: contextlib.AsyncExitStack | None = None
        self._client_obj = None
        self._lock = asyncio.Lock()
        # ServerSideEncryption / SSEKMSKeyId for every object written (see set_sse).
        self.sse: dict = {}

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    def _name(self, key: str) -> str:
        return self.key_prefix + validate_key(key)

    async def _client(self):
        if self._client_obj is not None:
            return self._client_obj
        async with self._lock:
            if self._client_obj is None:
                stack = contextlib.AsyncExitStack()
                client = await stack.enter_async_context(self._session.client(
                    "s3", endpoint_url=self.endpoint_url, config=self._config))
                try:
                    if self.create_bucket:
                        await self._call(self._ensure_bucket(client))
                except BaseException:
                    await stack.aclose()
                    raise
                self._stack, self._client_obj = stack, client
        return self._client_obj

    async def _ensure_bucket(self, client) -> None:
        try:
            await client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as e:
            if _code(e) not in _NOT_FOUND:
                raise StorageError(f"bucket {self.bucket!r}: {e}") from e
        kwargs = {}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await client.create_bucket(Bucket=self.bucket, **kwargs)
        except ClientError as e:
            if _code(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageError(f"cannot create bucket {self.bucket!r}: {e}") from e

    def deadline(self, size: int = 0):
        """A whole call's limit, its retries included. aiohttp times reads only
        once a request's body is sent, so waiting for `100 Continue` or sending
        into a network that takes nothing has no other limit. A body gets
        `timeout` more per MiB: an upload slower than 1 MiB per `timeout`
        seconds fails."""
        return asyncio.timeout(self.timeout * (2 * ATTEMPTS + size / (1024 * 1024)))

    async def _call(self, coro, size: int = 0):
        """Await a boto call within its deadline, mapping errors to storage errors."""
        try:
            async with self.deadline(size):
                return await coro
        except ClientError as e:
            if _code(e) in _NOT_FOUND:
                raise ObjectNotFound(str(e)) from e
            raise StorageError(str(e)) from e
        except BotoCoreError as e:
            raise StorageError(str(e)) from e
        except TimeoutError as e:
            raise StorageError(f"S3 did not answer within {self.timeout:g} s") from e

    async def aclose(self) -> None:
        stack, self._stack, self._client_obj = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def open_writer(self, key: str, *, max_size: int | None = None,
                    content_type: str | None = None) -> ObjectWriter:
        return _S3Writer(self, key, max_size, content_type)

    async def open_range(self, key: str, start: int | None = 0,
                         end: int | None = None) -> RangeStream:
        name = self._name(key)
        if start is None:
            if end is None:
                start = 0
            elif end <= 0:
                raise RangeNotSatisfiable(await self.size(key))
        elif start < 0 or (end is not None and end < start):
            raise RangeNotSatisfiable(await self.size(key))
        kwargs = {}
        if start is None:
            kwargs["Range"] = f"bytes=-{end}"
        elif start != 0 or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
        client = await self._client()

        async def get():
            try:
                return await client.get_object(Bucket=self.bucket, Key=name, **kwargs)
            except ClientError as e:
                if _code(e) == "InvalidRange" or e.response.get(
                        "ResponseMetadata", {}).get("HTTPStatusCode") == 416:
                    raise RangeNotSatisfiable(await self.size(key)) from e
                raise

        resp = await self._call(get())
        length = int(resp.get("ContentLength") or 0)
        m = _CONTENT_RANGE_RE.fullmatch(resp.get("ContentRange") or "")
        if m:
            s, e_, total = int(m.group(1)), int(m.group(2)), m.group(3)
            total_size = int(total) if total != "*" else e_ + 1
        else:
            s, e_, total_size = 0, length - 1, length
        return _S3Range(resp["Body"], s, e_, total_size, self.chunk_size)

    async def _head(self, key: str) -> dict:
        client = await self._client()
        return await self._call(client.head_object(Bucket=self.bucket, Key=self._name(key)))

    async def size(self, key: str) -> int:
        try:
            return int((await self._head(key))["ContentLength"])
        except ObjectNotFound:
            raise ObjectNotFound(key) from None

    async def exists(self, key: str) -> bool:
        try:
            await self._head(key)
            return True
        except ObjectNotFound:
            return False

    async def delete(self, key: str) -> None:
        client = await self._client()
        try:
            await self._call(client.delete_object(Bucket=self.bucket, Key=self._name(key)))
        except ObjectNotFound:
            pass


__all__ = ["S3Storage", "MIN_PART_SIZE", "DEFAULT_PART_SIZE", "InvalidKey"]
