"""Build a :class:`~app.storage.base.Storage` from a URL (``MEDIA_STORAGE_URL``).

Local filesystem
    ``file:///var/lib/parley/media``   absolute path
    ``/var/lib/parley/media``          plain path (relative paths are relative to the
                                       working directory)
    Query options: ``fsync=0`` — do not flush file and directories at every commit
    (faster uploads; an upload acknowledged just before a power cut or kernel crash
    can be missing or empty after it). The default flushes.

S3-compatible object store
    ``s3://[ACCESS_KEY:SECRET_KEY@]BUCKET[/PREFIX][?OPTIONS]``

    ``endpoint=http://127.0.0.1:9000``  server URL (omit for AWS; path-style
                                        addressing is used when set)
    ``region=us-east-1``                default: ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
                                        env, else ``us-east-1``
    ``create_bucket=1``                 create the bucket on first use if missing
    ``part_size=8388608``               multipart part size in bytes (≥ 5 MiB)
    ``addressing=path|virtual|auto``    override the addressing style
    ``timeout=10``                      seconds to connect and to wait for each read
                                        of an answer, per attempt (3 attempts): an S3
                                        that stops answering fails an upload or a
                                        download (503) within about three times this
    ``/PREFIX``                         optional key prefix inside the bucket

    Credentials: the URL userinfo (percent-encode ``/``, ``+``, ``@``, ``:`` in the
    secret) or, when absent, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
    ``AWS_SESSION_TOKEN`` and the rest of the standard AWS credential chain.

Examples::

    MEDIA_STORAGE_URL=file:///srv/parley/media
    MEDIA_STORAGE_URL=s3://parley-media?endpoint=http://127.0.0.1:9000&create_bucket=1
    MEDIA_STORAGE_URL=s3://AKIA...:wJalr...@parley-media/prod?region=eu-central-1
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .base import Storage

_TRUE = {"1", "true", "yes", "on"}


def _flag(q: dict[str, list[str]], name: str, default: bool = False) -> bool:
    v = q.get(name)
    return default if not v else v[-1].strip().lower() in _TRUE


def storage_from_url(url: str, *, default_root: str | os.PathLike | None = None) -> Storage:
    """Create the storage backend described by ``url`` (see module docstring).

    An empty ``url`` uses ``LocalStorage(default_root)`` when ``default_root`` is given
    (e.g. the ``MEDIA_ROOT`` setting), else raises ``ValueError``.
    """
    from .local import LocalStorage

    url = (url or "").strip()
    if not url:
        if default_root is None:
            raise ValueError("empty storage URL")
        return LocalStorage(default_root)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    q = parse_qs(parts.query)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("file:// storage URLs must be local (file:///abs/path)")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError("file:// storage URLs need an absolute path")
        return LocalStorage(Path(path), fsync=_flag(q, "fsync", default=True))
    if scheme == "s3":
        from .s3 import DEFAULT_PART_SIZE, DEFAULT_TIMEOUT, S3Storage

        bucket = parts.hostname
        if not bucket:
            raise ValueError("s3:// URL needs a bucket: s3://BUCKET[/PREFIX]")
        access = unquote(parts.username) if parts.username else None
        secret = unquote(parts.password) if parts.password else None
        if access is None:
            access = os.environ.get("AWS_ACCESS_KEY_ID") or None
            secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or None
        token = None
        if parts.username is None:
            token = os.environ.get("AWS_SESSION_TOKEN") or None

        def opt(name: str) -> str | None:
            v = q.get(name)
            return v[-1] if v else None

        region = (opt("region") or os.environ.get("AWS_REGION")
                  or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
        addressing = opt("addressing")
        if addressing not in (None, "path", "virtual", "auto"):
            raise ValueError(f"bad addressing style {addressing!r}")
        return S3Storage(
            bucket, opt("endpoint"), region, access, secret, session_token=token,
            key_prefix=unquote(parts.path).strip("/"),
            create_bucket=_flag(q, "create_bucket"),
            part_size=int(opt("part_size") or DEFAULT_PART_SIZE),
            addressing_style=addressing,
            timeout=float(opt("timeout") or DEFAULT_TIMEOUT),
        )
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return LocalStorage(Path(url).expanduser())
    raise ValueError(f"unsupported storage URL scheme {parts.scheme!r}")
