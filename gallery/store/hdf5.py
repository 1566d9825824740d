"""HDF5 shards: the only module that imports h5py. One dataset per column, vectors as (n, d) float32."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import CorruptGalleryError, InvalidInputError
from ..types import Records

EXTENSION = ".h5"


def _h5py():
    import h5py

    return h5py


def write_records(path: Path, records: Records) -> None:
    h5py = _h5py()
    text = h5py.string_dtype(encoding="utf-8")
    with h5py.File(path, "w") as f:
        f.attrs["model"] = records.model
        f.create_dataset("id", data=np.asarray(records.ids, dtype=np.int64))
        f.create_dataset("identity", data=[str(s) for s in records.identities], dtype=text)
        f.create_dataset("source", data=[str(s) for s in records.sources], dtype=text)
        f.create_dataset("face_index", data=np.asarray(records.face_index, dtype=np.int32))
        f.create_dataset("vector", data=np.asarray(records.vectors, dtype=np.float32))


def _strings(ds) -> np.ndarray:
    return np.asarray(ds.asstr()[()], dtype=object)


def read_records(path: Path, columns: Optional[Sequence[str]] = None) -> Records:
    h5py = _h5py()
    want = set(columns) if columns else {"id", "identity", "source", "face_index", "model", "vector"}
    try:
        with h5py.File(path, "r") as f:
            n = f["id"].shape[0]
            return Records(
                ids=f["id"][()].astype(np.int64) if "id" in want else np.zeros(n, np.int64),
                identities=_strings(f["identity"]) if "identity" in want else np.full(n, "", dtype=object),
                sources=_strings(f["source"]) if "source" in want else np.full(n, "", dtype=object),
                face_index=f["face_index"][()].astype(np.int32) if "face_index" in want else np.zeros(n, np.int32),
                vectors=f["vector"][()].astype(np.float32) if "vector" in want else np.empty((n, 0), np.float32),
                model=str(f.attrs.get("model", "")),
            )
    except (OSError, KeyError) as e:
        raise CorruptGalleryError(f"{path}: cannot read HDF5 shard ({e})") from None


def read_labelled_vectors(
    path: Path, *, vector_column: str, label_column: str, source_column: Optional[str], labels_required: bool = True
):
    """Read user-supplied embeddings: (vectors, labels or None, sources or None) from datasets of an HDF5 file."""
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InvalidInputError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        for name in (vector_column, label_column) if labels_required else (vector_column,):
            if name not in f:
                raise InvalidInputError(
                    f"{path}: no dataset {name!r} (datasets: {', '.join(f.keys())}); name it with --vector-column/--label-column"
                )
        vectors = f[vector_column][()]
        labels = None
        if label_column in f:
            ds = f[label_column]
            labels = _strings(ds) if ds.dtype.kind in "OSU" else ds[()].astype(object)
        sources = _strings(f[source_column]) if source_column and source_column in f else None
    return vectors, labels, sources
