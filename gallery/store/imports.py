"""Reading precomputed embeddings with identity labels from Parquet, HDF5, or ``.npy`` plus a labels file."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InvalidInputError
from . import hdf5, parquet
from .files import save_npy

PARQUET_SUFFIXES = {".parquet", ".pq"}
HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf"}


@dataclass
class LabelledVectors:
    vectors: np.ndarray
    identities: Optional[np.ndarray]
    sources: Optional[np.ndarray]


def _utf8_text(path: Path) -> str:
    """The text of a user's file, or an error naming the first byte that is not UTF-8 (and its line)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of the first label
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InvalidInputError(
            f"{path}: not UTF-8 text: byte {e.start} (line {line}) is 0x{data[e.start]:02x}; save the file as UTF-8"
        ) from None


def read_labels_file(path: Path, *, label_column: str = "identity") -> np.ndarray:
    """Labels from a text file (one per line) or a CSV with a header naming ``label_column``."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: labels file not found")
    text = _utf8_text(path)
    if path.suffix.lower() == ".csv":
        try:
            rows = list(csv.DictReader(text.splitlines()))
        except csv.Error as e:
            raise InvalidInputError(f"{path}: not a readable CSV file ({e})") from None
        if not rows:
            raise InvalidInputError(f"{path}: CSV has no rows")
        if label_column not in rows[0]:
            raise InvalidInputError(f"{path}: no column {label_column!r} (columns: {', '.join(map(str, rows[0]))})")
        for i, r in enumerate(rows):
            if r[label_column] is None:
                raise InvalidInputError(f"{path}: data row {i + 1} has no {label_column!r} value (too few fields)")
        return np.asarray([r[label_column] for r in rows], dtype=object)
    return np.asarray([line.strip() for line in text.splitlines() if line.strip()], dtype=object)


def read_labelled_vectors(
    path: Path,
    *,
    labels: Optional[Path] = None,
    vector_column: str = "vector",
    label_column: str = "identity",
    source_column: Optional[str] = "source",
) -> LabelledVectors:
    """Load embeddings and labels from ``path``; the format comes from its suffix.

    ``.npy`` holds an (n, d) float matrix and needs ``labels``; Parquet and HDF5 hold both, in the
    columns (or datasets) named by ``vector_column`` and ``label_column``.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if labels is None:
            raise InvalidInputError(f"{path}: a .npy file holds no labels; pass a labels file (--labels labels.txt)")
        try:
            vectors = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"{path}: not a readable .npy matrix ({e})") from None
        return LabelledVectors(vectors, read_labels_file(labels, label_column=label_column), None)
    reader = parquet if suffix in PARQUET_SUFFIXES else hdf5 if suffix in HDF5_SUFFIXES else None
    if reader is None:
        raise InvalidInputError(f"{path}: unknown suffix {suffix!r}; use .parquet, .h5/.hdf5, or .npy with --labels")
    vectors, identities, sources = reader.read_labelled_vectors(
        path, vector_column=vector_column, label_column=label_column, source_column=source_column
    )
    if labels is not None:
        identities = read_labels_file(labels, label_column=label_column)
    return LabelledVectors(np.asarray(vectors), identities, sources)


def write_labelled_vectors(path: Path, vectors: np.ndarray, identities, *, model: str = "") -> None:
    """Write embeddings with labels in the format of ``path``'s suffix (for exports and examples)."""
    from ..types import Records

    path = Path(path)
    n = len(vectors)
    records = Records(
        ids=np.arange(n, dtype=np.int64),
        identities=np.asarray(identities, dtype=object),
        sources=np.full(n, "", dtype=object),
        face_index=np.zeros(n, np.int32),
        vectors=np.asarray(vectors, dtype=np.float32),
        model=model,
    )
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        parquet.write_records(path, records)
    elif suffix in HDF5_SUFFIXES:
        hdf5.write_records(path, records)
    elif suffix == ".npy":
        save_npy(path, records.vectors)
        path.with_suffix(".labels.txt").write_text("\n".join(map(str, identities)) + "\n", encoding="utf-8")
    else:
        raise InvalidInputError(f"{path}: unknown suffix {suffix!r}; use .parquet, .h5/.hdf5 or .npy")


def read_query_vectors(path: Path, *, vector_column: str = "vector", label_column: str = "identity") -> LabelledVectors:
    """Query vectors from ``.npy``, Parquet or HDF5; labels are read when the file has them (else None)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return LabelledVectors(np.load(path, allow_pickle=False), None, None)
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"{path}: not a readable .npy matrix ({e})") from None
    reader = parquet if suffix in PARQUET_SUFFIXES else hdf5 if suffix in HDF5_SUFFIXES else None
    if reader is None:
        raise InvalidInputError(f"{path}: unknown suffix {suffix!r}; use .npy, .parquet or .h5/.hdf5")
    vectors, labels, _ = reader.read_labelled_vectors(
        path, vector_column=vector_column, label_column=label_column, source_column=None, labels_required=False
    )
    return LabelledVectors(np.asarray(vectors), labels, None)
