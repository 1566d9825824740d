"""Precomputed embeddings with labels come in from Parquet, HDF5, or .npy with a labels file."""

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gallery import InvalidInputError
from gallery.store import read_labelled_vectors, write_labelled_vectors
from gallery.store.imports import read_labels_file, read_query_vectors


@pytest.fixture
def xy(rng):
    return rng.standard_normal((12, 5)).astype(np.float32), [f"id{i % 4}" for i in range(12)]


@pytest.mark.parametrize("name", ["v.parquet", "v.pq", "v.h5", "v.hdf5"])
def test_files_written_by_gallery_read_back(tmp_path, xy, name):
    x, y = xy
    write_labelled_vectors(tmp_path / name, x, y)
    data = read_labelled_vectors(tmp_path / name)
    assert np.array_equal(data.vectors, x) and list(data.identities) == y


def test_parquet_from_another_tool_with_list_vectors_and_sources(tmp_path, xy):
    x, y = xy
    sources = [f"img/{i}.jpg" for i in range(12)]
    pq.write_table(pa.table({"vector": [list(map(float, r)) for r in x], "identity": y, "source": sources}),
                   tmp_path / "v.parquet")
    data = read_labelled_vectors(tmp_path / "v.parquet")
    assert data.vectors.shape == (12, 5) and np.allclose(data.vectors, x)
    assert list(data.identities) == y and list(data.sources) == sources


def test_hdf5_from_another_tool_with_byte_string_labels(tmp_path, xy):
    x, y = xy
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("vector", data=x.astype(np.float64))
        f.create_dataset("identity", data=np.array(y, dtype="S"))
    data = read_labelled_vectors(tmp_path / "v.h5")
    assert np.allclose(data.vectors, x) and list(data.identities) == y and data.sources is None


def test_hdf5_with_integer_labels(tmp_path, xy):
    x, _ = xy
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("vector", data=x)
        f.create_dataset("identity", data=np.arange(12) % 3)
    assert list(read_labelled_vectors(tmp_path / "v.h5").identities) == [i % 3 for i in range(12)]


def test_npy_with_text_labels(tmp_path, xy):
    x, y = xy
    np.save(tmp_path / "v.npy", x)
    (tmp_path / "labels.txt").write_text("\n".join(y) + "\n\n")  # a trailing blank line is not a label
    data = read_labelled_vectors(tmp_path / "v.npy", labels=tmp_path / "labels.txt")
    assert np.array_equal(data.vectors, x) and list(data.identities) == y and data.sources is None


def test_npy_with_csv_labels(tmp_path, xy):
    x, y = xy
    np.save(tmp_path / "v.npy", x)
    (tmp_path / "labels.csv").write_text("path,identity\n" + "".join(f"p{i},{lab}\n" for i, lab in enumerate(y)))
    data = read_labelled_vectors(tmp_path / "v.npy", labels=tmp_path / "labels.csv")
    assert np.array_equal(data.vectors, x) and list(data.identities) == y


def test_csv_label_column_can_be_named(tmp_path, xy):
    _, y = xy
    (tmp_path / "labels.csv").write_text("who,path\n" + "".join(f"{lab},p{i}\n" for i, lab in enumerate(y)))
    assert list(read_labels_file(tmp_path / "labels.csv", label_column="who")) == y


def test_a_labels_file_overrides_the_labels_inside_parquet(tmp_path, xy):
    x, y = xy
    write_labelled_vectors(tmp_path / "v.parquet", x, y)
    (tmp_path / "other.txt").write_text("\n".join(f"new{i}" for i in range(12)))
    data = read_labelled_vectors(tmp_path / "v.parquet", labels=tmp_path / "other.txt")
    assert list(data.identities) == [f"new{i}" for i in range(12)]


def test_custom_column_names(tmp_path, xy):
    x, y = xy
    pq.write_table(pa.table({"emb": list(x), "who": y}), tmp_path / "c.parquet")
    data = read_labelled_vectors(tmp_path / "c.parquet", vector_column="emb", label_column="who")
    assert np.allclose(data.vectors, x) and list(data.identities) == y


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (lambda p, x, y: np.save(p / "v.npy", x), {"path": "v.npy"}, "a .npy file holds no labels; pass a labels file"),
        (lambda p, x, y: (p / "v.txt").write_text("x"), {"path": "v.txt"}, "unknown suffix '.txt'"),
        (lambda p, x, y: (p / "v").write_text("x"), {"path": "v"}, "unknown suffix ''"),
        (lambda p, x, y: write_labelled_vectors(p / "v.parquet", x, y), {"path": "v.parquet", "label_column": "name"},
         "no column 'name' (columns: id, identity, source, face_index, model, vector)"),
        (lambda p, x, y: write_labelled_vectors(p / "v.parquet", x, y), {"path": "v.parquet", "vector_column": "emb"},
         "no column 'emb'"),
        (lambda p, x, y: write_labelled_vectors(p / "v.h5", x, y), {"path": "v.h5", "vector_column": "emb"}, "no dataset 'emb'"),
        (lambda p, x, y: write_labelled_vectors(p / "v.h5", x, y), {"path": "v.h5", "label_column": "name"}, "no dataset 'name'"),
        (lambda p, x, y: (p / "v.parquet").write_bytes(b"not parquet"), {"path": "v.parquet"}, "not a readable Parquet file"),
        (lambda p, x, y: (p / "v.h5").write_bytes(b"not hdf5"), {"path": "v.h5"}, "not a readable HDF5 file"),
        (lambda p, x, y: (p / "v.npy").write_bytes(b"not npy"), {"path": "v.npy", "labels": "v.txt"}, "not a readable .npy matrix"),
        (lambda p, x, y: None, {"path": "missing.parquet"}, "file not found"),
    ],
)
def test_errors_name_the_file(tmp_path, xy, make, kwargs, message):
    make(tmp_path, *xy)
    path = tmp_path / kwargs.pop("path")
    if "labels" in kwargs:
        kwargs["labels"] = tmp_path / kwargs["labels"]
        kwargs["labels"].write_text("a\n")
    with pytest.raises(InvalidInputError) as e:
        read_labelled_vectors(path, **kwargs)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


@pytest.mark.parametrize("labels", ["nope.txt", "nope.csv"])
def test_missing_labels_file_is_named(tmp_path, xy, labels):
    x, _ = xy
    np.save(tmp_path / "v.npy", x)
    with pytest.raises(InvalidInputError) as e:
        read_labelled_vectors(tmp_path / "v.npy", labels=tmp_path / labels)
    assert str(e.value) == f"{tmp_path / labels}: labels file not found"


def test_csv_labels_without_the_label_column_are_named(tmp_path, xy):
    x, y = xy
    np.save(tmp_path / "v.npy", x)
    (tmp_path / "labels.csv").write_text("path,person\n" + "".join(f"p{i},{lab}\n" for i, lab in enumerate(y)))
    with pytest.raises(InvalidInputError) as e:
        read_labelled_vectors(tmp_path / "v.npy", labels=tmp_path / "labels.csv")
    assert str(e.value) == f"{tmp_path / 'labels.csv'}: no column 'identity' (columns: path, person)"


def test_empty_csv_labels_are_named(tmp_path):
    (tmp_path / "labels.csv").write_text("path,identity\n")
    with pytest.raises(InvalidInputError, match="labels.csv: CSV has no rows"):
        read_labels_file(tmp_path / "labels.csv")


def test_ragged_list_vectors_are_refused(tmp_path):
    pq.write_table(pa.table({"vector": [[1.0, 2.0], [3.0]], "identity": ["a", "b"]}), tmp_path / "r.parquet")
    with pytest.raises(InvalidInputError, match="rows of different lengths"):
        read_labelled_vectors(tmp_path / "r.parquet")


def test_query_vectors_need_no_labels(tmp_path, xy):
    x, _ = xy
    np.save(tmp_path / "q.npy", x)
    assert read_query_vectors(tmp_path / "q.npy").identities is None
    pq.write_table(pa.table({"vector": list(x)}), tmp_path / "q.parquet")
    data = read_query_vectors(tmp_path / "q.parquet")
    assert data.identities is None and np.allclose(data.vectors, x)


def test_a_byte_order_mark_is_not_part_of_the_first_label(tmp_path, xy):
    _, y = xy
    (tmp_path / "labels.csv").write_bytes(b"\xef\xbb\xbfidentity\n" + "".join(f"{lab}\n" for lab in y).encode())
    assert list(read_labels_file(tmp_path / "labels.csv")) == y


def test_labels_that_are_not_utf8_name_the_byte_and_line(tmp_path):
    (tmp_path / "labels.txt").write_bytes("zoë\nchloé\n".encode("cp1252"))
    with pytest.raises(InvalidInputError) as e:
        read_labels_file(tmp_path / "labels.txt")
    assert str(e.value) == f"{tmp_path / 'labels.txt'}: not UTF-8 text: byte 2 (line 1) is 0xeb; save the file as UTF-8"


def test_a_csv_row_without_a_label_is_named(tmp_path):
    (tmp_path / "labels.csv").write_text("path,identity\np0,a\np1\n")
    with pytest.raises(InvalidInputError, match=r"labels.csv: data row 2 has no 'identity' value"):
        read_labels_file(tmp_path / "labels.csv")


@pytest.mark.parametrize(
    "table, message",
    [
        ({"vector": [["a", "b"], ["c", "d"]], "identity": ["a", "b"]}, "column 'vector' has type list<element: string>, expected a list of floats"),
        ({"vector": [[1.0, None], [3.0, 4.0]], "identity": ["a", "b"]}, "column 'vector' has missing values"),
        ({"vector": [[1.0, 2.0], None], "identity": ["a", "b"]}, "column 'vector' has 1 missing rows"),
        ({"vector": [[1.0, 2.0], [3.0, 4.0]], "identity": [["a"], ["b"]]}, "column 'identity' has type list<element: string>, expected strings or integers"),
        ({"vector": [[1.0, 2.0], [3.0, 4.0]], "identity": ["a", "b"], "source": [1, 2]}, "column 'source' has type int64, expected strings"),
    ],
    ids=["vectors-of-text", "a-missing-value", "a-missing-row", "labels-of-lists", "sources-of-numbers"],
)
def test_a_parquet_file_with_columns_of_the_wrong_type_is_named(tmp_path, table, message):
    pq.write_table(pa.table(table), tmp_path / "v.parquet")
    with pytest.raises(InvalidInputError) as e:
        read_labelled_vectors(tmp_path / "v.parquet")
    assert str(e.value).startswith(f"{tmp_path / 'v.parquet'}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_hdf5_vectors_that_are_a_group_are_named(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_group("vector")
        f.create_dataset("identity", data=np.array([b"a"]))
    with pytest.raises(InvalidInputError) as e:
        read_query_vectors(tmp_path / "v.h5")
    assert str(e.value) == f"{tmp_path / 'v.h5'}: 'vector' is an HDF5 group, not a dataset"
