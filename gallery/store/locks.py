"""Who may touch a gallery folder when: one writer at a time, and readers a writer waits for.

Writers hold an exclusive ``flock`` on ``.lock`` for a whole change; the lock file names the holder's
pid, so a second writer can say who it waits for. A killed writer's lock is released by the kernel.
Readers hold a shared lock on ``.readers`` while they open a generation (read its manifest, then load
the files it names); a commit takes it exclusively before it erases the files the new generation no
longer names, so no reader is left holding a name whose file was just erased.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from ..errors import GalleryLockedError

LOCK_NAME = ".lock"
READERS_NAME = ".readers"
#: How often a waiting writer tries the lock again.
POLL_SECONDS = 0.05

#: Lock descriptors this process holds. A forked child (a photo worker) closes its copies at once:
#: flock belongs to the open file, so a child outliving a killed writer would otherwise keep the lock.
_LOCK_FDS: set[int] = set()


def _drop_inherited_locks() -> None:
    for fd in list(_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _LOCK_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


def _flock(fd: int, how: int, wait: float) -> bool:
    """Take ``how`` on ``fd``, trying for up to ``wait`` seconds (None: as long as it takes)."""
    if wait is None:
        fcntl.flock(fd, how)
        return True
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def writer_lock(root: Path, *, wait: float = 0.0, mode: int = 0o600) -> Iterator[None]:
    """Hold the gallery's writer lock; wait up to ``wait`` seconds for it, then fail naming the holder."""
    path = Path(root) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, mode)
    _LOCK_FDS.add(fd)
    try:
        if not _flock(fd, fcntl.LOCK_EX, wait):
            waited = f" after waiting {wait:g} s" if wait else ""
            raise GalleryLockedError(f"{root}: {_holder(path)} is changing this gallery{waited}; "
                                     "wait for it to finish (--wait SECONDS) and try again")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        os.close(os.open(Path(root) / READERS_NAME, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, mode))  # for readers
        yield
    finally:
        _LOCK_FDS.discard(fd)
        os.close(fd)


@contextlib.contextmanager
def reading(root: Path) -> Iterator[None]:
    """Held while a reader opens a generation, so a commit does not erase the files it is opening.

    A reader that cannot open the lock file (a read-only copy, an old gallery) goes on without it; it
    still re-reads the manifest once if a file went missing under it.
    """
    try:
        fd = os.open(Path(root) / READERS_NAME, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def no_readers(root: Path, *, wait: float, mode: int = 0o600) -> Iterator[bool]:
    """Exclude readers that are opening the gallery, waiting up to ``wait`` seconds; yields whether it did."""
    fd = os.open(Path(root) / READERS_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, mode)
    try:
        yield _flock(fd, fcntl.LOCK_EX, wait)
    finally:
        os.close(fd)
