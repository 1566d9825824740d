"""Crash-safe file primitives: write to a temporary name, fsync, rename; checksums; erasing removed data."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

TMP_SUFFIX = ".tmp"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, then rename the result onto ``path``, so readers see the old or the new file.

    A crash at any point leaves at worst a stray ``*.tmp`` file, never a half-written ``path``.
    """
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def erase_file(path: Path) -> None:
    """Overwrite a file with zeros before unlinking it, so removed biometric data is not left in its blocks.

    This defeats reading the old file back through the filesystem; it cannot reach copies an SSD's
    firmware or a snapshot keeps elsewhere.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    with open(path, "r+b") as f:
        zeros = b"\0" * (1 << 20)
        left = size
        while left > 0:
            n = min(left, len(zeros))
            f.write(zeros[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
