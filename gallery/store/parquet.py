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


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or (pa.types.is_dictionary(t) and _is_text(t.value_type))


def _is_vector(t: pa.DataType) -> bool:
    lists = pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
    return lists and (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type))


#: A shard's columns: what each must hold, and the check of its Arrow type.
SHARD_COLUMNS = {
    "id": ("integers", pa.types.is_integer),
    "identity": ("strings", _is_text),
    "source": ("strings", _is_text),
    "face_index": ("integers", pa.types.is_integer),
    "model": ("strings", _is_text),
    "vector": ("lists of floats", _is_vector),
}


def _one_line(e: Exception) -> str:
    """Arrow's messages may run over several lines (a schema dump); keep the first."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _vectors_of(column: pa.ChunkedArray | pa.Array, path, error: type = InvalidInputError, name: str = "vector") -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not _is_vector(column.type):
        raise error(f"{path}: column {name!r} has type {column.type}, expected a list of floats")
    if column.null_count:
        raise error(f"{path}: column {name!r} has {column.null_count} missing rows")
    if pa.types.is_fixed_size_list(column.type):
        d = column.type.list_size
        values = column.flatten().to_numpy(zero_copy_only=False)
        if values.size != len(column) * d:
            raise error(f"{path}: column {name!r} has missing values inside its rows")
        return values.astype(np.float32, copy=False).reshape(-1, d)
    rows = column.to_pylist()
    lengths = {len(r) for r in rows}
    if len(lengths) > 1 or any(v is None for r in rows for v in r):
        raise error(f"{path}: column {name!r} has missing values or rows of different lengths {sorted(lengths)}")
    return np.asarray(rows, dtype=np.float32)


def read_records(path: Path, columns: Optional[Sequence[str]] = None) -> Records:
    """Read a shard written by :func:`write_records`; ``columns`` may skip ``vector`` for a fast label read.

    A shard is a gallery file, untrusted once written: a missing column, a column of the wrong type or
    with missing values raises :class:`CorruptGalleryError` naming the file and the column.
    """
    want = list(columns) if columns else list(SHARD_COLUMNS)
    damaged = lambda what: CorruptGalleryError(f"{path}: cannot read Parquet shard: {what}")  # noqa: E731
    try:
        schema = pq.read_schema(path)
        for name in want:
            holds, check = SHARD_COLUMNS[name]
            if name not in schema.names:
                raise damaged(f"no column {name!r} (columns: {', '.join(schema.names)})")
            if not check(schema.field(name).type):
                raise damaged(f"column {name!r} has type {schema.field(name).type}, expected {holds}")
        table = pq.read_table(path, columns=want)
        for name in want:
            if table.column(name).null_count:
                raise damaged(f"column {name!r} has {table.column(name).null_count} missing values")
        n = table.num_rows
        get = lambda name, fill: table.column(name).to_numpy(zero_copy_only=False) if name in want else fill  # noqa: E731
        vectors = _vectors_of(table.column("vector"), path, CorruptGalleryError) if "vector" in want else np.empty((n, 0), np.float32)
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
        raise CorruptGalleryError(f"{path}: cannot read Parquet shard ({_one_line(e)})") from None


def read_labelled_vectors(
    path: Path, *, vector_column: str, label_column: str, source_column: Optional[str], labels_required: bool = True
):
    """Read user-supplied embeddings: (vectors, labels or None, sources or None) from any Parquet file."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise InvalidInputError(f"{path}: not a readable Parquet file ({_one_line(e)})") from None
    names = schema.names
    has_labels = label_column in names
    for col in (vector_column, label_column) if labels_required else (vector_column,):
        if col not in names:
            raise InvalidInputError(f"{path}: no column {col!r} (columns: {', '.join(names)}); name it with --vector-column/--label-column")
    cols = [vector_column] + ([label_column] if has_labels else [])
    cols += [source_column] if source_column and source_column in names else []
    for col in cols[1:]:
        t = schema.field(col).type
        if not (_is_text(t) or (col == label_column and pa.types.is_integer(t))):
            raise InvalidInputError(f"{path}: column {col!r} has type {t}, expected " + ("strings or integers" if col == label_column else "strings"))
    try:
        table = pq.read_table(path, columns=cols)
    except (pa.ArrowException, OSError) as e:
        raise InvalidInputError(f"{path}: cannot read Parquet data ({_one_line(e)})") from None
    vectors = _vectors_of(table.column(vector_column), path, name=vector_column)
    labels = table.column(label_column).to_numpy(zero_copy_only=False).astype(object) if has_labels else None
    sources = None
    if source_column and source_column in names:
        sources = table.column(source_column).to_numpy(zero_copy_only=False).astype(object)
    return vectors, labels, sources
