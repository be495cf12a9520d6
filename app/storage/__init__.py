"""Media object storage: one interface, a local-disk and an S3 backend.

Public API::

    new_key(suffix="") -> str            # "ab/cd/<uuid hex><suffix>", server-generated
    derive_key(key, tag) -> str          # f"{key}.{tag}", e.g. thumbnails
    validate_key(key) -> str             # InvalidKey on "..", "/abs", odd characters
    parse_range(header, size) -> (start, end) | None   # HTTP Range → inclusive range
    storage_from_url(url, *, default_root=None) -> Storage   # MEDIA_STORAGE_URL

    class Storage:
        open_writer(key, *, max_size=None, content_type=None) -> ObjectWriter
            # async with …: await w.write(chunk); w.size; abort on error (nothing left)
        async put_file(key, path, *, content_type=None) -> int
        async open_range(key, start=0, end=None) -> RangeStream  # async iterator of bytes
        async read_bytes(key) -> bytes
        async size(key) -> int;  async exists(key) -> bool;  async delete(key) -> None
        local_path(key) -> Path | None      # only LocalStorage (for sendfile)
        async aclose()

    LocalStorage(root, *, fsync=True)
    S3Storage(bucket, endpoint_url=None, region=None, access_key=None, secret_key=None,
              *, key_prefix="", create_bucket=False, part_size=8 MiB, ...)

Errors: StorageError (base) → InvalidKey, ObjectNotFound, RangeNotSatisfiable;
writers raise app.media.errors.TooLarge past ``max_size``.
No web-framework imports here.
"""

from .base import (
    InvalidKey,
    ObjectNotFound,
    ObjectWriter,
    RangeNotSatisfiable,
    RangeStream,
    Storage,
    StorageError,
    TooLarge,
    derive_key,
    new_key,
    parse_range,
    resolve_range,
    validate_key,
)
from .local import LocalStorage
from .url import storage_from_url


def __getattr__(name: str):
    # S3Storage imports aioboto3 (slow-ish); load it only when asked for
    if name == "S3Storage":
        from .s3 import S3Storage

        return S3Storage
    raise AttributeError(name)


__all__ = [
    "InvalidKey", "LocalStorage", "ObjectNotFound", "ObjectWriter", "RangeNotSatisfiable",
    "RangeStream", "S3Storage", "Storage", "StorageError", "TooLarge", "derive_key",
    "new_key", "parse_range", "resolve_range", "storage_from_url", "validate_key",
]
