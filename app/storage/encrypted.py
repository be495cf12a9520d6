"""Local storage with every object encrypted at rest (chunked AES-256-GCM).

File layout::

    header (44 bytes): b"PARLEYE1" | key id (16, NUL-padded) | salt (16) | chunk size (4, BE)
    chunks: AES-GCM(chunk_i) = ciphertext | 16-byte tag, each `chunk size` plaintext
            bytes except the last (1..chunk size bytes; 0 for an empty object)

The file key is HKDF(data key, salt): a fresh key per file, so the nonce can
be the chunk index; the nonce's last byte marks the final chunk and the
header is the associated data, so chunks cannot be reordered, dropped,
truncated or moved to another file undetected. The plaintext size follows
from the file size, and a range read decrypts only the chunks it touches.

Files without the header are plaintext from before encryption: they are still
served, and `python -m app rotate-keys` (rotate_all) encrypts them, as it
re-encrypts files under an older key.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.durable import fsync_dir

from .base import (
    ObjectNotFound,
    ObjectWriter,
    RangeStream,
    StorageError,
    resolve_range,
)
from .local import COPY_BLOCK, LocalStorage, _LocalRange, _LocalWriter

MAGIC = b"PARLEYE1"
HEADER = struct.Struct(">8s16s16sI")
HEADER_SIZE = HEADER.size  # 44
TAG = 16
CHUNK = 64 * 1024
READ_CHUNKS = 32  # chunks decrypted per read (2 MiB)
WRITE_BATCH = 1024 * 1024  # bytes gathered before encrypting and writing


class CorruptObject(StorageError):
    """An encrypted object that does not verify (wrong key, damaged or altered file)."""


def _file_key(raw: bytes, salt: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                       info=b"parley media").derive(raw))


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def plain_size(file_size: int, chunk: int) -> int:
    body = file_size - HEADER_SIZE
    if body <= 0:
        return 0
    n = -(-body // (chunk + TAG))
    return body - n * TAG


class _Header:
    def __init__(self, raw: bytes):
        magic, kid, salt, chunk = HEADER.unpack(raw)
        if magic != MAGIC or not 0 < chunk <= 16 * 1024 * 1024:
            raise ValueError("not an encrypted object")
        self.raw = raw
        self.kid = kid.rstrip(b"\0").decode()
        self.salt = salt
        self.chunk = chunk


def _read_header(f) -> _Header | None:
    raw = os.pread(f.fileno(), HEADER_SIZE, 0)
    if len(raw) < HEADER_SIZE or not raw.startswith(MAGIC):
        return None
    try:
        return _Header(raw)
    except ValueError:
        return None


class _Sealer:
    """Encrypts a stream into chunks with the ring's current key."""

    def __init__(self, ring, chunk: int = CHUNK):
        key = ring.current
        salt = secrets.token_bytes(16)
        self.header = HEADER.pack(MAGIC, key.kid.encode().ljust(16, b"\0"), salt, chunk)
        self.aead = _file_key(key.raw, salt)
        self.chunk = chunk
        self.index = 0
        self.buf = bytearray()

    def feed(self, *pieces) -> bytearray:
        """The sealed chunks the pieces complete, in one buffer; one chunk is always
        held back so the last is known. Each piece is copied once (into the held
        plaintext) and each chunk sealed straight into the output (no joins)."""
        buf = self.buf
        for piece in pieces:
            buf += piece
        n = (len(buf) - 1) // self.chunk  # chunks surely not the last
        if n <= 0:
            return bytearray()
        step = self.chunk + TAG
        out = bytearray(n * step)
        with memoryview(buf) as src, memoryview(out) as dst:
            for i in range(n):
                self.aead.encrypt_into(_nonce(self.index, False),
                                       src[i * self.chunk:(i + 1) * self.chunk], self.header,
                                       dst[i * step:(i + 1) * step])
                self.index += 1
        del buf[:n * self.chunk]  # bytearray drops a prefix without moving the rest
        return out

    def finish(self) -> bytes:
        piece, self.buf = bytes(self.buf), bytearray()
        return self.aead.encrypt(_nonce(self.index, True), piece, self.header)


class _EncryptedWriter(_LocalWriter):
    def __init__(self, storage: EncryptedLocalStorage, key: str, max_size: int | None):
        super().__init__(storage, key, max_size)
        self._sealer = _Sealer(storage.ring(), storage.chunk)
        self._pending: list[bytes] = []
        self._pending_size = 0

    async def _start(self) -> None:
        await super()._start()
        await asyncio.to_thread(self._f.write, self._sealer.header)

    async def _write(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= WRITE_BATCH:  # one trip to the thread pool per WRITE_BATCH
            await asyncio.to_thread(self._seal_pending)

    def _copy_in(self, src) -> int:
        n = 0
        while block := src.read(COPY_BLOCK):
            n += len(block)
            sealed = self._sealer.feed(block)
            if sealed:
                self._f.write(sealed)
        return n

    def _seal_pending(self) -> None:
        pending, self._pending, self._pending_size = self._pending, [], 0
        sealed = self._sealer.feed(*pending)
        if sealed:
            self._f.write(sealed)

    async def _commit(self) -> None:
        def _finish():
            self._seal_pending()
            self._f.write(self._sealer.finish())

        await asyncio.to_thread(_finish)
        await super()._commit()


class _DecryptingRange(RangeStream):
    """Plaintext bytes start..stop-1, decrypting only the chunks that hold them."""

    def __init__(self, f, header: _Header, aead: AESGCM, start: int, stop: int, total: int):
        self._f = f
        self._h = header
        self._aead = aead
        self._pos = start
        self._stop = stop
        self._last_index = max(0, -(-total // header.chunk) - 1)
        self._ahead: tuple[int, asyncio.Future] | None = None
        self.start, self.end, self.total_size = start, stop - 1, total

    def __aiter__(self):
        return self

    def _chunk_at(self, index: int) -> bytes:
        return bytes(self._chunks(index, index))

    def _chunks(self, first: int, last: int) -> memoryview:
        """Chunks first..last: one pread, each chunk verified and decrypted straight
        into one buffer (no joining copies)."""
        size = self._h.chunk + TAG
        sealed = memoryview(os.pread(self._f.fileno(), size * (last - first + 1),
                                     HEADER_SIZE + first * size))
        n = len(sealed) // size
        tail = len(sealed) - n * size  # a final chunk shorter than the others
        plain = bytearray(n * self._h.chunk + max(0, tail - TAG))
        out = memoryview(plain)
        pos = 0
        try:
            for i in range(n + (1 if tail else 0)):
                index = first + i
                piece = sealed[i * size:(i + 1) * size]
                length = len(piece) - TAG
                self._aead.decrypt_into(_nonce(index, index == self._last_index), piece,
                                        self._h.raw, out[pos:pos + length])
                pos += length
        except (InvalidTag, ValueError):
            raise CorruptObject("stored media does not verify: damaged, altered or "
                                "encrypted with another key") from None
        return out[:pos]

    def _batch(self, pos: int) -> tuple[int, int]:
        """First and last chunk of the batch that starts at plaintext offset pos: up to
        READ_CHUNKS chunks, never past the range."""
        index = pos // self._h.chunk
        return index, min(index + READ_CHUNKS - 1, (self._stop - 1) // self._h.chunk)

    def _read_ahead(self, pos: int) -> None:
        """Decrypt the batch at pos in a worker thread while the caller sends the one
        it holds: the cipher and the socket write overlap instead of taking turns."""
        self._ahead = None
        if pos < self._stop and self._f is not None:
            self._ahead = (pos, asyncio.ensure_future(
                asyncio.to_thread(self._chunks, *self._batch(pos))))

    async def __anext__(self) -> bytes:
        if self._f is None or self._pos >= self._stop:
            await self.aclose()
            raise StopAsyncIteration
        if self._ahead is None or self._ahead[0] != self._pos:
            self._read_ahead(self._pos)
        # Shielded: a cancelled download leaves the read to finish in its thread, and
        # aclose closes the file only after it.
        plain = await asyncio.shield(self._ahead[1])
        offset = self._pos % self._h.chunk
        piece = plain[offset:offset + (self._stop - self._pos)]  # a view: no copy
        if not piece:
            await self.aclose()
            raise StopAsyncIteration
        self._pos += len(piece)
        self._read_ahead(self._pos)
        return piece

    async def aclose(self) -> None:
        f, self._f = self._f, None
        ahead, self._ahead = self._ahead, None
        if f is None:
            return
        if ahead is not None and not ahead[1].done():
            # The worker thread may be reading the file right now: close it when the
            # read ends, never under it (a reused descriptor would be read instead).
            def _close(task: asyncio.Future) -> None:
                if not task.cancelled():
                    task.exception()  # retrieved: a read-ahead nobody wants is no error
                f.close()

            ahead[1].add_done_callback(_close)
            return
        if ahead is not None and not ahead[1].cancelled():
            ahead[1].exception()
        f.close()


class EncryptedLocalStorage(LocalStorage):
    """LocalStorage whose files are encrypted with the data key ring (app/crypto.py)."""

    def __init__(self, root, *, ring=None, fsync: bool = True, chunk: int = CHUNK, **kw):
        super().__init__(root, fsync=fsync, **kw)
        self._ring = ring
        self.chunk = chunk

    def __repr__(self) -> str:
        return f"EncryptedLocalStorage({str(self.root)!r})"

    def ring(self):
        if self._ring is None:
            from app import crypto

            return crypto.active()
        return self._ring

    def local_path(self, key: str) -> Path | None:
        self._path(key)  # validates
        return None  # the file holds ciphertext: never sendfile it

    def open_writer(self, key: str, *, max_size: int | None = None,
                    content_type: str | None = None) -> ObjectWriter:
        return _EncryptedWriter(self, key, max_size)

    async def put_file(self, key, path, *, content_type=None) -> int:
        return await _EncryptedWriter(self, key, None).copy_in(path)

    def _open(self, key: str):
        p = self._path(key)
        try:
            f = open(p, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise ObjectNotFound(key) from e
        try:
            self._check_inside(p)
            size = os.fstat(f.fileno()).st_size
            return f, _read_header(f), size
        except BaseException:
            f.close()
            raise

    def _aead_for(self, header: _Header) -> AESGCM:
        key = self.ring().keys.get(header.kid)
        if key is None:
            raise CorruptObject(f"stored media needs data key {header.kid!r}, which is not "
                                "in DATA_KEYS")
        return _file_key(key.raw, header.salt)

    async def open_range(self, key: str, start: int | None = 0,
                         end: int | None = None) -> RangeStream:
        f, header, size = await asyncio.to_thread(self._open, key)
        try:
            if header is None:  # plaintext from before encryption
                s, stop = resolve_range(start, end, size)
                return _LocalRange(f, s, stop, size, self.chunk_size)
            total = plain_size(size, header.chunk)
            s, stop = resolve_range(start, end, total)
            return _DecryptingRange(f, header, self._aead_for(header), s, stop, total)
        except BaseException:
            f.close()
            raise

    async def size(self, key: str) -> int:
        def _size() -> int:
            f, header, size = self._open(key)
            f.close()
            return size if header is None else plain_size(size, header.chunk)

        return await asyncio.to_thread(_size)

    # --- rotate-keys ---------------------------------------------------------

    def _needs_rotation(self, path: Path, current: str) -> bool:
        with open(path, "rb") as f:
            header = _read_header(f)
        return header is None or header.kid != current

    def _reencrypt(self, path: Path) -> None:
        """Decrypt with whatever key the file names, encrypt with the current
        one into a temp file, swap atomically (readers keep the old inode)."""
        ring = self.ring()
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.part")
        with open(path, "rb") as src:
            header = _read_header(src)
            sealer = _Sealer(ring, self.chunk)
            try:
                with open(tmp, "xb") as out:
                    out.write(sealer.header)
                    if header is None:
                        while block := src.read(1024 * 1024):
                            out.write(sealer.feed(block))
                    else:
                        size = os.fstat(src.fileno()).st_size
                        total = plain_size(size, header.chunk)
                        rng = _DecryptingRange(src, header, self._aead_for(header), 0, total,
                                               total)
                        index = 0
                        while index * header.chunk < total:
                            out.write(sealer.feed(rng._chunk_at(index)))
                            index += 1
                    out.write(sealer.finish())
                    out.flush()
                    if self.fsync:
                        os.fsync(out.fileno())
                os.replace(tmp, path)
                if self.fsync:
                    # The rename too: once rotation is done the old key may be
                    # retired, and a file whose rename was lost would still need it.
                    fsync_dir(path.parent)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

    async def rotate_all(self, ring=None, *, progress=None) -> tuple[int, int]:
        """Every object under the root not under the current key; (done, failed)."""
        if ring is not None:
            self._ring = ring
        current = self.ring().current.kid
        files = await asyncio.to_thread(self._object_files)
        done = failed = 0
        for i, path in enumerate(files, 1):
            try:
                if await asyncio.to_thread(self._needs_rotation, path, current):
                    await asyncio.to_thread(self._reencrypt, path)
                    done += 1
            except FileNotFoundError:
                pass  # deleted meanwhile
            except Exception as exc:
                import logging

                logging.getLogger("parley.storage").error("cannot re-encrypt %s: %s",
                                                          path.relative_to(self.root), exc)
                failed += 1
            if progress and (i % 200 == 0 or i == len(files)):
                progress("media files", i, len(files))
        return done, failed

    def _object_files(self) -> list[Path]:
        """Stored objects only: hidden entries are temp files being written and the
        media pipeline's working directory (.spool), which must not be touched."""
        out = []
        for dirpath, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            out += [Path(dirpath) / n for n in names if not n.startswith(".")]
        return out
