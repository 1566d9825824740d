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


def _strings(ds, path: Path, error: type) -> np.ndarray:
    try:
        return np.asarray(ds.asstr()[()], dtype=object)
    except UnicodeDecodeError:
        for row, raw in enumerate(ds[()].reshape(-1)):
            try:
                bytes(raw).decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{path}: dataset {ds.name.lstrip('/')!r} row {row} holds text that is not UTF-8 "
                            f"({e.reason} at byte {e.start})") from None
        raise error(f"{path}: dataset {ds.name.lstrip('/')!r} holds text that is not UTF-8") from None


_KIND_NAMES = {"T": "text", "f": "float", "i": "integer", "u": "integer"}


def _dataset(f, name: str, path: Path, error: type, *, kinds: str, ndim: int, like=None):
    """Dataset ``name`` of ``f``, checked to be a dataset (not a group) of ``ndim`` dimensions, of a dtype kind
    in ``kinds`` ("T" for text) and with as many rows as dataset ``like``; else ``error`` naming file and dataset."""
    h5py = _h5py()
    obj = f.get(name)
    if obj is None:
        raise error(f"{path}: no dataset {name!r} (datasets: {', '.join(f.keys())})")
    if not isinstance(obj, h5py.Dataset):
        raise error(f"{path}: {name!r} is an HDF5 {type(obj).__name__.lower()}, not a dataset")
    kind = "T" if h5py.check_string_dtype(obj.dtype) is not None or obj.dtype.kind == "S" else obj.dtype.kind
    if kind not in kinds or obj.ndim != ndim or (ndim == 2 and obj.shape[1] == 0):
        expected = " or ".join(dict.fromkeys(_KIND_NAMES[k] for k in kinds))
        raise error(f"{path}: dataset {name!r} has shape {obj.shape} and dtype {obj.dtype}, "
                    f"expected {'(n,)' if ndim == 1 else '(n, d)'} {expected}")
    if like is not None and obj.shape[0] != like.shape[0]:
        raise error(f"{path}: dataset {name!r} has {obj.shape[0]} rows, but {like.name.lstrip('/')!r} has {like.shape[0]}")
    return obj


def read_records(path: Path, columns: Optional[Sequence[str]] = None) -> Records:
    h5py = _h5py()
    want = set(columns) if columns else {"id", "identity", "source", "face_index", "model", "vector"}
    bad = CorruptGalleryError
    try:
        with h5py.File(path, "r") as f:
            ids = _dataset(f, "id", path, bad, kinds="iu", ndim=1)
            n = ids.shape[0]
            get = lambda name, **kw: _dataset(f, name, path, bad, like=ids, **kw)  # noqa: E731
            return Records(
                ids=ids[()].astype(np.int64) if "id" in want else np.zeros(n, np.int64),
                identities=_strings(get("identity", kinds="T", ndim=1), path, bad) if "identity" in want else np.full(n, "", dtype=object),
                sources=_strings(get("source", kinds="T", ndim=1), path, bad) if "source" in want else np.full(n, "", dtype=object),
                face_index=get("face_index", kinds="iu", ndim=1)[()].astype(np.int32) if "face_index" in want else np.zeros(n, np.int32),
                vectors=get("vector", kinds="f", ndim=2)[()].astype(np.float32) if "vector" in want else np.empty((n, 0), np.float32),
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
    bad = InvalidInputError
    with f:
        for name in (vector_column, label_column) if labels_required else (vector_column,):
            if name not in f:
                raise InvalidInputError(
                    f"{path}: no dataset {name!r} (datasets: {', '.join(f.keys())}); name it with --vector-column/--label-column"
                )
        try:
            vds = _dataset(f, vector_column, path, bad, kinds="fiu", ndim=2)
            vectors = vds[()]
            labels = None
            if label_column in f:
                ds = _dataset(f, label_column, path, bad, kinds="Tiu", ndim=1, like=vds)
                labels = _strings(ds, path, bad) if ds.dtype.kind in "OSU" else ds[()].astype(object)
            sources = None
            if source_column and source_column in f:
                sources = _strings(_dataset(f, source_column, path, bad, kinds="T", ndim=1, like=vds), path, bad)
        except OSError as e:  # a damaged chunk surfaces only when it is read
            raise InvalidInputError(f"{path}: cannot read HDF5 data ({e})") from None
    return vectors, labels, sources
