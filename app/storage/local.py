"""Local-filesystem backend: objects are files under ``root`` (``MEDIA_ROOT``).

Writes go to a hidden temp file in the target directory (``.<name>.<random>.part``,
which is not a valid key and so can never be read back through the API) and are
``os.replace``-d into place on commit: readers see the old object or the new one, never
a partial one. With ``fsync`` (the default) a commit also flushes the file, then its
directory and every directory the write created, before it returns: the caller records
the object in the database and acknowledges it next, so the object must outlive a power
cut or a kernel crash as the database row does. ``fsync=False`` leaves that to the
kernel's write-back (the file can be missing or empty after such a crash).

File I/O runs in worker threads (``asyncio.to_thread``) so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path

from app.durable import fsync_dir, make_dirs

from .base import (
    DEFAULT_CHUNK_SIZE,
    InvalidKey,
    ObjectNotFound,
    ObjectWriter,
    RangeStream,
    Storage,
    StorageError,
    resolve_range,
    validate_key,
)

COPY_BLOCK = 4 * 1024 * 1024  # put_file's reads: few, large, in one worker thread


class _LocalWriter(ObjectWriter):
    def __init__(self, storage: LocalStorage, key: str, max_size: int | None):
        super().__init__(key, max_size)
        self._storage = storage
        self._final = storage._path(key)
        self._tmp = self._final.with_name(f".{self._final.name}.{secrets.token_hex(8)}.part")
        self._f = None
        self._new_entries: list[Path] = []

    async def _start(self) -> None:
        def _open():
            self._new_entries = make_dirs(self._final.parent)
            self._storage._check_inside(self._final.parent)
            return open(self._tmp, "xb")

        try:
            self._f = await asyncio.to_thread(_open)
        except OSError as e:
            raise StorageError(f"cannot create {self.key}: {e}") from e

    async def _write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._f.write, chunk)

    def _copy_in(self, src) -> int:
        shutil.copyfileobj(src, self._f, COPY_BLOCK)
        return self._f.tell()

    async def _commit(self) -> None:
        fsync = self._storage.fsync

        def _finish():
            f, self._f = self._f, None
            try:
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            finally:
                f.close()
            os.replace(self._tmp, self._final)
            if fsync:
                fsync_dir(self._final.parent)
                for d in self._new_entries:
                    fsync_dir(d)

        await asyncio.to_thread(_finish)

    async def _abort(self) -> None:
        def _cleanup():
            f, self._f = self._f, None
            if f is not None:
                f.close()
            try:
                self._tmp.unlink(missing_ok=True)
            except NotADirectoryError:
                pass  # its directory could not be made: nothing was written

        await asyncio.to_thread(_cleanup)


class _LocalRange(RangeStream):
    def __init__(self, f, start: int, stop: int, total: int, chunk_size: int):
        self._f = f
        self._pos = start
        self._stop = stop
        self._chunk = chunk_size
        self.start, self.end, self.total_size = start, stop - 1, total

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if self._f is None or self._pos >= self._stop:
            await self.aclose()
            raise StopAsyncIteration
        n = min(self._chunk, self._stop - self._pos)
        data = await asyncio.to_thread(os.pread, self._f.fileno(), n, self._pos)
        if not data:  # file shrank underneath us
            await self.aclose()
            raise StopAsyncIteration
        self._pos += len(data)
        return data

    async def aclose(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            f.close()


class LocalStorage(Storage):
    """Objects stored as files below ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike, *, fsync: bool = True,
                 chunk_size: int = DEFAULT_CHUNK_SIZE):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _check_inside(self, p: Path) -> None:
        # defence in depth against symlinks planted inside the root
        if not p.resolve().is_relative_to(self.root):
            raise InvalidKey("storage key escapes the storage root")

    def _path(self, key: str) -> Path:
        p = self.root.joinpath(*validate_key(key).split("/"))
        if not p.is_relative_to(self.root):  # cannot happen with a valid key
            raise InvalidKey("storage key escapes the storage root")
        return p

    def local_path(self, key: str) -> Path | None:
        """Path of the object file (it may not exist). Use it for ``sendfile``."""
        p = self._path(key)
        if p.parent.exists():
            self._check_inside(p.parent)
        return p

    def open_writer(self, key: str, *, max_size: int | None = None,
                    content_type: str | None = None) -> ObjectWriter:
        return _LocalWriter(self, key, max_size)

    async def put_file(self, key: str, path: str | os.PathLike, *,
                       content_type: str | None = None) -> int:
        """Copy ``path`` in (temp file + atomic rename); the source is left untouched."""
        return await _LocalWriter(self, key, None).copy_in(path)

    async def open_range(self, key: str, start: int | None = 0,
                         end: int | None = None) -> RangeStream:
        p = self._path(key)

        def _open():
            try:
                f = open(p, "rb")
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
                raise ObjectNotFound(key) from e
            try:
                self._check_inside(p)
                return f, os.fstat(f.fileno()).st_size
            except BaseException:
                f.close()
                raise

        f, size = await asyncio.to_thread(_open)
        try:
            s, stop = resolve_range(start, end, size)
        except BaseException:
            f.close()
            raise
        return _LocalRange(f, s, stop, size, self.chunk_size)

    async def size(self, key: str) -> int:
        p = self._path(key)
        try:
            st = await asyncio.to_thread(p.stat)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise ObjectNotFound(key) from e
        if not p.is_file():
            raise ObjectNotFound(key)
        return st.st_size

    async def exists(self, key: str) -> bool:
        p = self._path(key)
        return await asyncio.to_thread(p.is_file)

    async def delete(self, key: str) -> None:
        p = self._path(key)

        def _rm():
            # fan-out directories are kept: pruning them would race with writers
            try:
                p.unlink()
            except (FileNotFoundError, NotADirectoryError):
                pass

        await asyncio.to_thread(_rm)

