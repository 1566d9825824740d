"""Parquet shards: the only module that imports pyarrow. Vectors are a fixed-size list of float32."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CorruptGalleryError, InvalidInputError
from ..types import Records

EXTENSION = ".parquet"


def write_records(path: Path, records: Records) -> None:
    n, d = records.vectors.shape
    flat = pa.array(np.ascontiguousarray(records.vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    table = pa.table(
        {
            "id": pa.array(records.ids, type=pa.int64()),
            "identity": pa.array(list(records.identities), type=pa.string()),
            "source": pa.array(list(records.sources), type=pa.string()),
            "face_index": pa.array(records.face_index, type=pa.int32()),
            "model": pa.array([records.model] * n, type=pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, d),
        }
    )
    pq.write_table(table, path, compression="zstd")


def _vectors_of(column: pa.ChunkedArray | pa.Array, path) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        d = column.type.list_size
        values = column.flatten().to_numpy(zero_copy_only=False)
        return values.astype(np.float32, copy=False).reshape(-1, d)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        rows = column.to_pylist()
        lengths = {len(r) for r in rows if r is not None}
        if None in rows or len(lengths) > 1:
            raise InvalidInputError(f"{path}: vector column has missing rows or rows of different lengths {sorted(lengths)}")
        return np.asarray(rows, dtype=np.float32)
    raise InvalidInputError(f"{path}: vector column has type {column.type}; expected a list of floats")


def read_records(path: Path, columns: Optional[Sequence[str]] = None) -> Records:
    """Read a shard written by :func:`write_records`; ``columns`` may skip ``vector`` for a fast label read."""
    want = list(columns) if columns else ["id", "identity", "source", "face_index", "model", "vector"]
    try:
        table = pq.read_table(path, columns=want)
        n = table.num_rows
        get = lambda name, fill: table.column(name).to_numpy(zero_copy_only=False) if name in want else fill  # noqa: E731
        vectors = _vectors_of(table.column("vector"), path) if "vector" in want else np.empty((n, 0), np.float32)
        model = table.column("model")[0].as_py() if "model" in want and n else ""
        return Records(
            ids=get("id", np.zeros(n, np.int64)).astype(np.int64, copy=False),
            identities=get("identity", np.full(n, "", dtype=object)).astype(object),
            sources=get("source", np.full(n, "", dtype=object)).astype(object),
            face_index=get("face_index", np.zeros(n, np.int32)).astype(np.int32, copy=False),
            vectors=vectors,
            model=model,
        )
    # A damaged page can decode into invalid UTF-8 or a wrong vector type, which surface only on conversion.
    except (pa.ArrowException, OSError, ValueError) as e:
        raise CorruptGalleryError(f"{path}: cannot read Parquet shard ({e})") from None


def read_labelled_vectors(
    path: Path, *, vector_column: str, label_column: str, source_column: Optional[str], labels_required: bool = True
):
    """Read user-supplied embeddings: (vectors, labels or None, sources or None) from any Parquet file."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise InvalidInputError(f"{path}: not a readable Parquet file ({e})") from None
    names = schema.names
    has_labels = label_column in names
    for col in (vector_column, label_column) if labels_required else (vector_column,):
        if col not in names:
            raise InvalidInputError(f"{path}: no column {col!r} (columns: {', '.join(names)}); name it with --vector-column/--label-column")
    cols = [vector_column] + ([label_column] if has_labels else [])
    cols += [source_column] if source_column and source_column in names else []
    table = pq.read_table(path, columns=cols)
    vectors = _vectors_of(table.column(vector_column), path)
    labels = table.column(label_column).to_numpy(zero_copy_only=False).astype(object) if has_labels else None
    sources = None
    if source_column and source_column in names:
        sources = table.column(source_column).to_numpy(zero_copy_only=False).astype(object)
    return vectors, labels, sources
