"""Crash-safe file replacement: write a temp file, fsync it, rename it, fsync the folder.

After a crash at any point the destination holds either the old or the new
content in full, never a mix; a leftover `*.tmp` is ignored and later removed.
The one file writer of the project: checkpoints, the ONNX cache, the feature
cache and the FAISS snapshots all go through it. The temp file is created by
the writer itself (never ``mkstemp``, whose 0600 mode would survive the rename),
so every file gets the umask's mode and a model or index written by one user
can be read by another (a container's non-root user, a shared folder). Standard
library only; it lives in ``index/``, which imports nothing of ``model/``, so
both packages can use it.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

TMP_SUFFIX = ".tmp"
T = TypeVar("T")


def fsync_path(path: Path) -> None:
    """Flush a file's data to disk; on a directory, make a rename or unlink inside it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_with(path: Path, write: Callable[[Path], T]) -> T:
    """Let `write(tmp_path)` produce the file, then move it into place atomically; returns
    what `write` returned (a checksum taken as the bytes went by, for instance)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        result = write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return result


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def file_crc32(path: Path, chunk_size: int = 1 << 24) -> int:
    """CRC32 of a whole file, read in 16 MiB chunks."""
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            crc = zlib.crc32(chunk, crc)
    return crc
