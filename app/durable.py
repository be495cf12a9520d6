"""Flushing to the disk what a caller is about to acknowledge or depend on."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(d: str | os.PathLike) -> None:
    """Flush a directory's entries (a file created, linked or renamed into it)."""
    fd = os.open(Path(d), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(d: str | os.PathLike) -> list[Path]:
    """Create `d` and its missing parents; the directories that gained an entry
    (the parents of those found missing, deepest first), for the caller to
    flush. A directory another writer creates meanwhile still counts: its
    entry may not be on the disk yet."""
    missing = []
    p = Path(d)
    while not p.exists():
        missing.append(p)
        p = p.parent
    for m in reversed(missing):
        m.mkdir(exist_ok=True)
    return [m.parent for m in missing]
