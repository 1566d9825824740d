"""Crash-safe file primitives: write to a temporary name, fsync, rename; checksums; erasing removed data;
names read from a gallery's own files checked to stay inside it; private file modes."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

import numpy as np

from ..errors import CorruptGalleryError

TMP_SUFFIX = ".tmp"
#: A new gallery's folder: only its owner can read it (biometric data); ``GROUP_DIR_MODE`` on request.
PRIVATE_DIR_MODE = 0o700
GROUP_DIR_MODE = 0o750


def file_mode(root: Path) -> int:
    """The mode of every file written in gallery ``root``: its folder's read/write bits (0700 -> 0600)."""
    return stat.S_IMODE(os.stat(root).st_mode) & 0o660


def make_dir(path: Path, root: Path) -> None:
    """Create ``path`` (a folder inside ``root``) with the same mode as ``root``."""
    path = Path(path)
    if not path.is_dir():
        mode = stat.S_IMODE(os.stat(root).st_mode) & 0o770
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)


def gallery_file(root: Path, name: object, field: str, source: Path | str, *, under: Optional[str] = None) -> Path:
    """The path of ``name``, a file name read from ``field`` of the gallery's file ``source``, checked first.

    A name from a gallery's files is untrusted: it must be relative, without ``..``, inside ``under``
    (a folder of the gallery) when given, resolve inside ``root``, and name a regular file, never a
    symlink. Otherwise a :class:`CorruptGalleryError` names the field, and nothing is touched.
    """
    def bad(why: str) -> CorruptGalleryError:
        return CorruptGalleryError(f"{source}: {field} {name!r} {why}; the file was edited or damaged")

    if not isinstance(name, str) or not name:
        raise bad("is not a file name")
    pure = PurePosixPath(name)
    if pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise bad("is an absolute path")
    if "\\" in name:
        raise bad("holds a backslash")
    if any(part in ("..", ".") for part in pure.parts) or "\0" in name:
        raise bad("leaves the gallery folder")
    if under is not None and (len(pure.parts) != 2 or pure.parts[0] != under):
        raise bad(f"is not a file of the gallery's {under}/ folder")
    root = Path(root)
    path = root.joinpath(*pure.parts)
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        raise bad("leaves the gallery folder")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(st.st_mode):
        raise bad("is a symlink or not a regular file")
    return path


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


def write_atomic(path: Path, write: Callable[[Path], None], *, mode: Optional[int] = None) -> None:
    """Call ``write(tmp_path)``, then rename the result onto ``path``, so readers see the old or the new file.

    A crash at any point leaves at worst a stray ``*.tmp`` file, never a half-written ``path``.
    ``mode`` (e.g. :func:`file_mode`) is set before the rename, so the file never appears with another.
    """
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes, *, mode: Optional[int] = None) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data), mode=mode)


def save_npy(path: Path, x: np.ndarray) -> None:
    """Write ``x`` as a ``.npy`` that ``np.load`` (and its mmap) reads, with the data written by Python.

    ``np.save`` hands a real file to ``ndarray.tofile``, which turns a Ctrl-C that lands inside it
    into a ``TypeError``; written here, the interrupt stays a ``KeyboardInterrupt``.
    """
    x = np.ascontiguousarray(x)
    if x.dtype.hasobject:
        raise TypeError(f"{path}: cannot store an object array as .npy")
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(x))
        f.write(memoryview(x.reshape(-1)).cast("B"))


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
    firmware or a snapshot keeps elsewhere. It never follows a symlink: a link is unlinked, its target
    left alone.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError:  # a symlink (ELOOP), or something that is not a file
        if os.path.islink(path):
            path.unlink()
            return
        raise
    with os.fdopen(fd, "r+b") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode):
            zeros = b"\0" * (1 << 20)
            left = st.st_size
            while left > 0:
                n = min(left, len(zeros))
                f.write(zeros[:n])
                left -= n
            f.flush()
            os.fsync(f.fileno())
    path.unlink()
