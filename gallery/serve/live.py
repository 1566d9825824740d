"""The gallery a running service answers from: searches share it, a change has it to itself.

A :class:`~gallery.Gallery` object is not made for threads: a change rewrites its state in place, and
``remove`` zero-fills, at its commit, the superseded shard files that searches of the old generation
read through memory maps. So every search holds the read side of a :class:`ReadWriteLock` while it
touches the gallery, and every change (enrol, remove, calibrate) holds the write side from its start
to its commit. A change begins once the searches in flight are done; searches that arrive meanwhile
wait and then see the new generation. No search sees half a change, a committed change is visible to
the next search, and every answer names the generation it was computed on.

Work that needs no gallery (decoding photos, finding and encoding faces) is done before the lock is
taken, so a change waits for index lookups only, and a search waits for a change's writes only.

A change committed by another process (``gallery add`` on the same folder) is picked up before the
next request, by reopening the gallery under the write side.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

import numpy as np

from ..gallery import Gallery
from ..store.manifest import manifest_path
from .rwlock import ReadWriteLock

T = TypeVar("T")


@dataclass(frozen=True)
class IdentityTable:
    """Enrolled identities of one generation, sorted, with their record counts and first record ids."""

    generation: int
    names: np.ndarray
    counts: np.ndarray
    first_record: np.ndarray

    def page(self, offset: int, limit: int, prefix: str = "") -> tuple[int, list[dict]]:
        """Identities ``offset .. offset + limit`` (of those starting with ``prefix``), and how many there are."""
        lo, hi = 0, len(self.names)
        if prefix:
            lo = int(np.searchsorted(self.names, prefix, side="left"))
            hi = int(np.searchsorted(self.names, prefix + "\U0010ffff", side="left"))
        rows = range(lo + offset, min(hi, lo + offset + limit))
        out = [{"identity": str(self.names[i]), "records": int(self.counts[i]), "first_record": int(self.first_record[i])}
               for i in rows]
        return hi - lo, out


def _manifest_stamp(root: Path) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(manifest_path(root))
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


class LiveGallery:
    """One gallery folder, opened for a service that searches it from many threads and changes it from some.

    >>> live = LiveGallery("my-gallery")                                   # doctest: +SKIP
    >>> with live.reading() as g:                                          # doctest: +SKIP
    ...     results, generation = g.search(x, k=5), g.manifest.generation
    >>> removed, generation = live.change(lambda g: g.remove(["alice"]))  # doctest: +SKIP
    """

    def __init__(self, root: Path | str, *, gpu: Optional[bool] = None):
        self.root = Path(root)
        self._gpu = gpu
        self._lock = ReadWriteLock()
        self._stamp = _manifest_stamp(self.root)
        self._gallery = Gallery.open(self.root, gpu=gpu)
        self._encoder = None
        self._encoder_mutex = threading.Lock()
        self._table: Optional[IdentityTable] = None
        self._table_mutex = threading.Lock()
        self._thumbnail_mutex = threading.Lock()  # Gallery.thumbnail fills its caches lazily

    # ------------------------------------------------------------------ reading

    @contextlib.contextmanager
    def reading(self) -> Iterator[Gallery]:
        """The current gallery, unchanged for as long as the block runs."""
        if _manifest_stamp(self.root) != self._stamp:
            with self._lock.writing():
                self._pick_up_outside_change()
        with self._lock.reading():
            yield self._gallery

    @property
    def generation(self) -> int:
        with self.reading() as g:
            return g.manifest.generation

    def encoder(self):
        """The gallery's photo encoder, loaded once (it does not change while the model stays the same).

        Raises :class:`~gallery.errors.ModelMismatchError` for a gallery of vectors, which has none.
        """
        with self.reading() as g:
            fingerprint = g.manifest.model_fingerprint
            with self._encoder_mutex:
                if self._encoder is None or self._encoder.fingerprint != fingerprint:
                    self._encoder = g.encoder()
                return self._encoder

    def identity_table(self) -> IdentityTable:
        """The identities of the current generation (computed once per generation)."""
        with self.reading() as g:
            generation = g.manifest.generation
            with self._table_mutex:
                if self._table is None or self._table.generation != generation:
                    ids, labels = g.records()
                    names, first, counts = np.unique(labels.astype(str), return_index=True, return_counts=True)
                    self._table = IdentityTable(generation, names, counts, ids[first])
                return self._table

    def thumbnail(self, record_id: int, size: int) -> Optional[np.ndarray]:
        """The face of one record cropped from its source photo, or None when there is none."""
        with self.reading() as g, self._thumbnail_mutex:
            return g.thumbnail(record_id, size)

    # ------------------------------------------------------------------ changing

    def change(self, apply: Callable[[Gallery], T], *, reopen: bool = False) -> tuple[T, int]:
        """Run ``apply(gallery)`` with no search in flight; returns its result and the generation it committed.

        ``reopen`` opens the gallery afresh afterwards, for changes that do not refresh the object
        they were made through.
        """
        with self._lock.writing():
            self._pick_up_outside_change()
            try:
                result = apply(self._gallery)
            finally:
                if reopen:
                    self._reopen()
                else:
                    self._stamp = _manifest_stamp(self.root)
            return result, self._gallery.manifest.generation

    def _pick_up_outside_change(self) -> None:
        """Reopen when another process has committed since (call with the write side held)."""
        if _manifest_stamp(self.root) != self._stamp:
            self._reopen()

    def _reopen(self) -> None:
        stamp = _manifest_stamp(self.root)  # before opening: a commit during the open is seen next time
        self._gallery = Gallery.open(self.root, gpu=self._gpu)
        self._stamp = stamp
