"""ShardStore: writes, reads, verifies and compacts shards; it knows no file format itself.

A shard is a records file in the gallery's format (Parquet or HDF5: ids, identities, sources, face
indices, model, vectors) plus the same rows' vectors as a raw float32 ``.npy`` that is memory-mapped
for exact re-ranking, so the index never needs a full float copy in RAM.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from ..errors import CorruptGalleryError, InvalidInputError
from ..types import IdMap, Records
from . import hdf5, parquet
from .files import gallery_file, make_dir, save_npy, sha256_file, write_atomic
from .manifest import MANIFEST_NAME, SHARD_DIR, ShardInfo

LOG = logging.getLogger(__name__)

FORMATS = {"parquet": parquet, "hdf5": hdf5}


def shard_format_module(name: str):
    try:
        return FORMATS[name]
    except KeyError:
        raise InvalidInputError(f"unknown shard format {name!r}; choose one of: {', '.join(FORMATS)}") from None


class VectorTable:
    """Random access to stored vectors by record id, through memory-mapped shard files.

    ``only`` restricts it to some record ids (a shard of a sharded gallery), so its id -> row map
    grows with the ids it serves, not with every id of the gallery.
    """

    def __init__(self, ids: list[np.ndarray], mats: list[np.ndarray], dim: int, only: Optional[np.ndarray] = None):
        self.dim = dim
        self._mats = mats
        self._offsets = np.cumsum([0] + [len(i) for i in ids])
        all_ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
        capacity = int(all_ids.max(initial=-1)) + 1
        rows = np.arange(len(all_ids))
        if only is not None:
            keep = np.isin(all_ids, only)
            all_ids, rows = all_ids[keep], rows[keep]
        self._row_of = IdMap(all_ids, rows, capacity)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def nbytes(self) -> int:
        """RAM of the id -> row map (the vectors themselves stay on disk, memory-mapped)."""
        return self._row_of.nbytes

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Global row of each id, -1 where the id is not stored (or not served)."""
        return self._row_of[ids].astype(np.int64)

    def locate(self, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each memory-mapped ``(rows, d)`` float32 matrix holding some of ``ids``, with the row of every id
        in it: an array shaped like ``ids``, -1 where that id is in another matrix or not stored."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = self.positions(ids.reshape(-1)).reshape(ids.shape)
        shard = np.searchsorted(self._offsets, pos, side="right") - 1
        shard[pos < 0] = -1
        for s in np.flatnonzero(np.bincount(shard.reshape(-1) + 1, minlength=len(self._mats) + 1)[1:]):
            yield self._mats[s], np.where(shard == s, pos - self._offsets[s], -1)

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Vectors of ``ids`` (any shape), zeros where an id is -1 or unknown; shape ids.shape + (d,)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros(ids.shape + (self.dim,), dtype=np.float32)
        for mat, rows in self.locate(ids):
            inside = rows >= 0
            out[inside] = mat[rows[inside]]
        return out


class ShardStore:
    """The shards of one gallery folder, in one format."""

    def __init__(self, root: Path, shard_format: str = "parquet"):
        self.root = Path(root)
        self.format = shard_format
        self._fmt = shard_format_module(shard_format)
        self.dir = self.root / SHARD_DIR

    def _path(self, name: str) -> Path:
        """The path of a shard file the manifest names, checked to stay inside the gallery's shards/."""
        return gallery_file(self.root, name, "shards[].file", self.root / MANIFEST_NAME, under=SHARD_DIR)

    def write_shard(self, records: Records, seq: int, *, mode: Optional[int] = None) -> ShardInfo:
        """Write ``records`` as shard number ``seq``: each file under a temporary name, then renamed."""
        make_dir(self.dir, self.root)
        stem = f"{SHARD_DIR}/shard-{seq:06d}"
        file, vectors_file = stem + self._fmt.EXTENSION, stem + ".vectors.npy"
        vectors = np.ascontiguousarray(records.vectors, dtype=np.float32)
        write_atomic(self._path(vectors_file), lambda tmp: save_npy(tmp, vectors), mode=mode)
        write_atomic(self._path(file), lambda tmp: self._fmt.write_records(tmp, records), mode=mode)
        ids = np.asarray(records.ids, dtype=np.int64)
        return ShardInfo(
            file=file,
            rows=len(records),
            sha256=sha256_file(self._path(file)),
            vectors_file=vectors_file,
            vectors_sha256=sha256_file(self._path(vectors_file)),
            first_id=int(ids.min()),
            last_id=int(ids.max()),
        )

    def read(self, info: ShardInfo, columns: Optional[Sequence[str]] = None) -> Records:
        path = self._path(info.file)
        if not path.is_file():
            raise CorruptGalleryError(f"{path}: shard named in the manifest is missing")
        records = self._fmt.read_records(path, columns)
        if len(records) != info.rows:
            raise CorruptGalleryError(f"{path}: holds {len(records)} rows, the manifest says {info.rows}")
        return records

    def iter_records(self, shards: Iterable[ShardInfo], columns: Optional[Sequence[str]] = None) -> Iterator[Records]:
        for info in shards:
            yield self.read(info, columns)

    def labels(self, shards: Sequence[ShardInfo]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per shard, the record ids and identity labels of its rows, without reading vectors."""
        ids, identities = [], []
        for r in self.iter_records(shards, columns=["id", "identity"]):
            ids.append(r.ids)
            identities.append(r.identities)
        return ids, identities

    def all_labels(self, shards: Sequence[ShardInfo]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Per shard the record ids (what :meth:`vectors` takes), then every record id and identity label in storage order."""
        id_lists, label_lists = self.labels(shards)
        ids = np.concatenate(id_lists) if id_lists else np.empty(0, np.int64)
        labels = np.concatenate(label_lists) if label_lists else np.empty(0, dtype=object)
        return id_lists, ids, labels

    def vectors(self, shards: Sequence[ShardInfo], dim: int, ids: Optional[Sequence[np.ndarray]] = None,
                only: Optional[np.ndarray] = None) -> VectorTable:
        """Memory-map every shard's vectors; ``ids`` per shard may be passed when already read, ``only``
        restricts the table to those record ids."""
        mats, id_lists = [], []
        for i, info in enumerate(shards):
            path = self._path(info.vectors_file)
            try:
                mat = np.load(path, mmap_mode="r")
            except EOFError:
                raise CorruptGalleryError(f"{path}: cannot memory-map shard vectors (the file is empty or truncated)") from None
            except (OSError, ValueError) as e:
                raise CorruptGalleryError(f"{path}: cannot memory-map shard vectors ({e})") from None
            if mat.shape != (info.rows, dim) or mat.dtype != np.float32:
                raise CorruptGalleryError(f"{path}: shape {mat.shape} {mat.dtype}, expected ({info.rows}, {dim}) float32")
            if not mat.flags["C_CONTIGUOUS"]:  # an edited header: re-ranking reads rows in place
                raise CorruptGalleryError(f"{path}: vectors stored in Fortran order, expected rows one after another")
            mats.append(mat)
            id_lists.append(ids[i] if ids is not None else self.read(info, columns=["id"]).ids)
        return VectorTable(id_lists, mats, dim, only=only)

    def verify(self, shards: Sequence[ShardInfo]) -> None:
        """Recompute every checksum; raise naming the first file that does not match."""
        for info in shards:
            for name, expected in ((info.file, info.sha256), (info.vectors_file, info.vectors_sha256)):
                path = self._path(name)
                if not path.is_file():
                    raise CorruptGalleryError(f"{path}: missing")
                if sha256_file(path) != expected:
                    raise CorruptGalleryError(f"{path}: checksum mismatch; the file was changed or damaged")

    def check_ids(self, shards: Sequence[ShardInfo], next_id: int) -> None:
        """Cross-check what the manifest says of each shard's ids against its rows: within its
        [first_id, last_id], each id once in the whole gallery, every id below ``next_id``."""
        seen: list[np.ndarray] = []
        for info in shards:
            ids = self.read(info, columns=["id"]).ids
            path = self._path(info.file)
            if len(ids) and (int(ids.min()) != info.first_id or int(ids.max()) != info.last_id):
                raise CorruptGalleryError(f"{path}: ids {int(ids.min())}..{int(ids.max())}, the manifest says "
                                          f"{info.first_id}..{info.last_id}")
            if len(ids) and int(ids.max()) >= next_id:
                raise CorruptGalleryError(f"{path}: holds id {int(ids.max())}, at or above the manifest's next_id {next_id}")
            seen.append(ids)
        all_ids = np.concatenate(seen) if seen else np.empty(0, np.int64)
        if len(np.unique(all_ids)) != len(all_ids):
            raise CorruptGalleryError(f"{self.root}: some record ids are stored in more than one shard")

    def is_intact(self, info: ShardInfo) -> bool:
        try:
            self.verify([info])
        except CorruptGalleryError:
            return False
        return True

    def rewrite_without(self, info: ShardInfo, remove_ids: np.ndarray, seq: int, *,
                        mode: Optional[int] = None) -> Optional[ShardInfo]:
        """Write a copy of shard ``info`` without ``remove_ids`` as shard ``seq``; None if no row is left."""
        records = self.read(info)
        keep = ~np.isin(records.ids, remove_ids)
        if keep.all():
            return info
        if not keep.any():
            return None
        return self.write_shard(records.take(keep), seq, mode=mode)

    def files_of(self, shards: Iterable[ShardInfo]) -> set[str]:
        return {name for s in shards for name in (s.file, s.vectors_file)}
