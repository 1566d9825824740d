"""Precomputed embeddings with labels come in from Parquet, HDF5, or .npy with a labels file."""

import numpy as np
import pytest

from gallery import InvalidInputError
from gallery.store import read_labelled_vectors, write_labelled_vectors
from gallery.store.imports import read_query_vectors


@pytest.fixture
def xy(rng):
    return rng.standard_normal((12, 5)).astype(np.float32), [f"id{i % 4}" for i in range(12)]


@pytest.mark.parametrize("name", ["v.parquet", "v.h5", "v.hdf5"])
def test_parquet_and_hdf5(tmp_path, xy, name):
    x, y = xy
    write_labelled_vectors(tmp_path / name, x, y)
    data = read_labelled_vectors(tmp_path / name)
    assert np.array_equal(data.vectors, x) and list(data.identities) == y


def test_npy_with_text_or_csv_labels(tmp_path, xy):
    x, y = xy
    np.save(tmp_path / "v.npy", x)
    (tmp_path / "labels.txt").write_text("\n".join(y) + "\n")
    (tmp_path / "labels.csv").write_text("path,identity\n" + "".join(f"p{i},{lab}\n" for i, lab in enumerate(y)))
    for labels in ("labels.txt", "labels.csv"):
        data = read_labelled_vectors(tmp_path / "v.npy", labels=tmp_path / labels)
        assert np.array_equal(data.vectors, x) and list(data.identities) == y


def test_custom_column_names(tmp_path, xy):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = xy
    pq.write_table(pa.table({"emb": list(x), "who": y}), tmp_path / "c.parquet")
    data = read_labelled_vectors(tmp_path / "c.parquet", vector_column="emb", label_column="who")
    assert np.allclose(data.vectors, x) and list(data.identities) == y


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (lambda p, x, y: np.save(p / "v.npy", x), {"path": "v.npy"}, "a .npy file holds no labels"),
        (lambda p, x, y: (p / "v.txt").write_text("x"), {"path": "v.txt"}, "unknown suffix '.txt'"),
        (lambda p, x, y: write_labelled_vectors(p / "v.parquet", x, y), {"path": "v.parquet", "label_column": "name"}, "no column 'name'"),
        (lambda p, x, y: write_labelled_vectors(p / "v.h5", x, y), {"path": "v.h5", "vector_column": "emb"}, "no dataset 'emb'"),
        (lambda p, x, y: (p / "v.parquet").write_bytes(b"not parquet"), {"path": "v.parquet"}, "not a readable Parquet file"),
        (lambda p, x, y: None, {"path": "missing.parquet"}, "file not found"),
    ],
)
def test_errors_name_the_file(tmp_path, xy, make, kwargs, message):
    make(tmp_path, *xy)
    path = tmp_path / kwargs.pop("path")
    with pytest.raises(InvalidInputError) as e:
        read_labelled_vectors(path, **kwargs)
    assert str(path) in str(e.value) and message in str(e.value)


def test_query_vectors_need_no_labels(tmp_path, xy):
    x, _ = xy
    np.save(tmp_path / "q.npy", x)
    assert read_query_vectors(tmp_path / "q.npy").identities is None
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"vector": list(x)}), tmp_path / "q.parquet")
    data = read_query_vectors(tmp_path / "q.parquet")
    assert data.identities is None and np.allclose(data.vectors, x)
