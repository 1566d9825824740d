"""Shards round-trip every column in both formats, detect damage, and serve vectors by record id."""

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gallery import CorruptGalleryError
from gallery.store.shards import ShardStore, VectorTable
from gallery.types import Records

FORMATS = ["parquet", "hdf5"]


def records(n=50, d=8, first_id=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return Records(
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        identities=np.asarray([f"person-{i % 7}-\u00e9" for i in range(n)], dtype=object),
        sources=np.asarray([f"photos/p{i}.jpg" if i % 5 else "" for i in range(n)], dtype=object),
        face_index=(np.arange(n) % 3).astype(np.int32),
        vectors=x,
        model="test-model",
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_column_round_trips(tmp_path, fmt):
    store = ShardStore(tmp_path, fmt)
    r = records()
    info = store.write_shard(r, 0)
    assert (info.rows, info.first_id, info.last_id) == (50, 100, 149)
    assert info.file.endswith(".parquet" if fmt == "parquet" else ".h5") and info.vectors_file.endswith(".vectors.npy")
    back = store.read(info)
    assert back.ids.dtype == np.int64 and np.array_equal(back.ids, r.ids)
    assert back.face_index.dtype == np.int32 and np.array_equal(back.face_index, r.face_index)
    assert list(back.identities) == list(r.identities) and list(back.sources) == list(r.sources)
    assert back.vectors.dtype == np.float32 and np.array_equal(back.vectors, r.vectors)
    assert back.model == "test-model"
    side = np.load(tmp_path / info.vectors_file)
    assert side.dtype == np.float32 and np.array_equal(side, r.vectors)


@pytest.mark.parametrize("fmt", FORMATS)
def test_labels_can_be_read_without_vectors(tmp_path, fmt):
    store = ShardStore(tmp_path, fmt)
    r = records()
    info = store.write_shard(r, 0)
    labels_only = store.read(info, columns=["id", "identity"])
    assert labels_only.vectors.shape == (50, 0)
    assert list(labels_only.identities) == list(r.identities) and np.array_equal(labels_only.ids, r.ids)


def test_parquet_vectors_are_fixed_size_float32_lists(tmp_path):
    info = ShardStore(tmp_path, "parquet").write_shard(records(d=8), 0)
    schema = pq.read_schema(tmp_path / info.file)
    kind = schema.field("vector").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == 8 and kind.value_type == pa.float32()
    assert schema.field("id").type == pa.int64() and schema.field("identity").type == pa.string()
    assert schema.field("face_index").type == pa.int32()


def test_hdf5_shard_holds_one_dataset_per_column(tmp_path):
    r = records(d=8)
    info = ShardStore(tmp_path, "hdf5").write_shard(r, 0)
    with h5py.File(tmp_path / info.file, "r") as f:
        assert set(f.keys()) == {"id", "identity", "source", "face_index", "vector"}
        assert f["vector"].shape == (50, 8) and f["vector"].dtype == np.float32
        assert f.attrs["model"] == "test-model"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_shard_is_corrupt_and_named(tmp_path, fmt, keep):
    store = ShardStore(tmp_path, fmt)
    info = store.write_shard(records(), 0)
    path = tmp_path / info.file
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    with pytest.raises(CorruptGalleryError, match=str(path)):
        store.read(info)


@pytest.mark.parametrize("fmt", FORMATS)
def test_shard_replaced_by_garbage_is_corrupt(tmp_path, fmt):
    store = ShardStore(tmp_path, fmt)
    info = store.write_shard(records(), 0)
    (tmp_path / info.file).write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(CorruptGalleryError, match="cannot read"):
        store.read(info)


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_shard_file_is_corrupt(tmp_path, fmt):
    store = ShardStore(tmp_path, fmt)
    info = store.write_shard(records(), 0)
    (tmp_path / info.file).unlink()
    with pytest.raises(CorruptGalleryError, match="shard named in the manifest is missing"):
        store.read(info)


def test_shard_with_fewer_rows_than_the_manifest_says_is_corrupt(tmp_path):
    store = ShardStore(tmp_path, "parquet")
    info = store.write_shard(records(), 0)
    other = store.write_shard(records(n=10), 1)
    (tmp_path / info.file).write_bytes((tmp_path / other.file).read_bytes())
    with pytest.raises(CorruptGalleryError, match="holds 10 rows, the manifest says 50"):
        store.read(info)


def test_parquet_shard_of_a_foreign_layout_is_corrupt(tmp_path):
    """A readable Parquet file whose vector column is not a list of floats is damage, not bad user input."""
    store = ShardStore(tmp_path, "parquet")
    info = store.write_shard(records(n=3), 0)
    table = pq.read_table(tmp_path / info.file).set_column(5, "vector", pa.array(["a", "b", "c"]))
    pq.write_table(table, tmp_path / info.file)
    with pytest.raises(CorruptGalleryError, match="cannot read Parquet shard"):
        store.read(info)


def test_any_damaged_byte_of_a_parquet_shard_reads_back_or_raises_corrupt(tmp_path):
    """Flip each byte of a tiny shard in turn: reading either succeeds or raises CorruptGalleryError, never
    a pyarrow or decoding error (those surface from damaged pages only when columns are converted)."""
    store = ShardStore(tmp_path, "parquet")
    info = store.write_shard(records(n=6, d=4), 0)
    path = tmp_path / info.file
    original = path.read_bytes()
    outcomes = {"read": 0, "corrupt": 0}
    for i in range(len(original)):
        damaged = bytearray(original)
        damaged[i] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            store.read(info)
            outcomes["read"] += 1
        except CorruptGalleryError:
            outcomes["corrupt"] += 1
    assert outcomes["corrupt"] > 0 and sum(outcomes.values()) == len(original)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_vectors_file_is_corrupt(tmp_path, fmt):
    store = ShardStore(tmp_path, fmt)
    info = store.write_shard(records(), 0)
    path = tmp_path / info.vectors_file
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CorruptGalleryError, match=str(path)):
        store.vectors([info], 8)


def test_vectors_file_in_fortran_order_is_corrupt(tmp_path):
    """The re-rank reads rows in place, so a header edited to column order is refused, naming the file."""
    store = ShardStore(tmp_path, "parquet")
    info = store.write_shard(records(d=8), 0)
    path = tmp_path / info.vectors_file
    np.save(path, np.asfortranarray(np.load(path)))
    with pytest.raises(CorruptGalleryError, match=f"{path}: vectors stored in Fortran order"):
        store.vectors([info], 8)


def test_vectors_file_of_the_wrong_shape_is_corrupt(tmp_path):
    store = ShardStore(tmp_path, "parquet")
    info = store.write_shard(records(d=8), 0)
    np.save(tmp_path / info.vectors_file, np.zeros((50, 4), np.float32))
    with pytest.raises(CorruptGalleryError, match=r"shape \(50, 4\) float32, expected \(50, 8\) float32"):
        store.vectors([info], 8)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("which", ["file", "vectors_file"])
@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_verify_detects_one_changed_byte(tmp_path, fmt, which, where):
    store = ShardStore(tmp_path, fmt)
    info = store.write_shard(records(), 0)
    store.verify([info])
    assert store.is_intact(info)
    path = tmp_path / getattr(info, which)
    data = bytearray(path.read_bytes())
    pos = int(len(data) * where) if where != -1 else len(data) - 1
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptGalleryError, match=f"{path}: checksum mismatch"):
        store.verify([info])
    assert not store.is_intact(info)


def test_verify_reports_a_missing_file(tmp_path):
    store = ShardStore(tmp_path, "parquet")
    info = store.write_shard(records(), 0)
    (tmp_path / info.vectors_file).unlink()
    with pytest.raises(CorruptGalleryError, match="missing"):
        store.verify([info])


def test_gather_returns_the_rows_of_shuffled_ids_across_shards(tmp_path):
    store = ShardStore(tmp_path, "parquet")
    parts = [records(30, first_id=0, seed=1), records(20, first_id=40, seed=2), records(25, first_id=70, seed=3)]
    infos = [store.write_shard(p, s) for s, p in enumerate(parts)]
    table = store.vectors(infos, 8)
    assert len(table) == 75
    by_id = {int(i): v for p in parts for i, v in zip(p.ids, p.vectors)}
    ids = np.random.default_rng(4).permutation(list(by_id))
    got = table.gather(ids)
    assert got.shape == (75, 8) and got.dtype == np.float32
    assert np.array_equal(got, np.stack([by_id[int(i)] for i in ids]))
    repeated = np.array([71, 3, 71, 45, 3])  # repeats come back at every position they are asked for
    assert np.array_equal(table.gather(repeated), np.stack([by_id[int(i)] for i in repeated]))


def test_gather_returns_zeros_for_unknown_ids_and_keeps_the_shape(tmp_path):
    store = ShardStore(tmp_path, "parquet")
    a, b = records(30, first_id=0, seed=1), records(20, first_id=40, seed=2)
    table = store.vectors([store.write_shard(a, 0), store.write_shard(b, 1)], 8)
    want = np.array([[45, 3], [-1, 29], [999, 40], [35, -7]])  # -1 (missing), 999 (beyond), 35 (in a gap)
    got = table.gather(want)
    assert got.shape == (4, 2, 8)
    assert np.array_equal(got[0, 0], b.vectors[5]) and np.array_equal(got[0, 1], a.vectors[3])
    assert np.array_equal(got[1, 1], a.vectors[29]) and np.array_equal(got[2, 1], b.vectors[0])
    for q, j in [(1, 0), (2, 0), (3, 0), (3, 1)]:
        assert not got[q, j].any()
    assert list(table.positions(np.array([0, 40, 35, 999, -1]))) == [0, 30, -1, -1, -1]


def test_locate_names_the_matrix_and_row_of_each_id():
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    table = VectorTable([np.array([4, 2, 0]), np.array([9, 7, 5, 3, 1, 8, 6])], [x[:3], x[3:]], 4)
    want = np.array([[2, 9, -1], [6, 11, 0]])
    found = list(table.locate(want))
    assert [len(mat) for mat, _ in found] == [3, 7]
    np.testing.assert_array_equal(found[0][1], [[1, -1, -1], [-1, -1, 2]])
    np.testing.assert_array_equal(found[1][1], [[-1, 0, -1], [6, -1, -1]])
    assert list(table.locate(np.array([11, -1]))) == []


def test_gather_with_ids_stored_out_of_order():
    table = VectorTable([np.array([7, 3, 5, 1])], [np.eye(4, dtype=np.float32)], 4)
    assert np.array_equal(table.gather(np.array([1, 7, 4])), np.eye(4, dtype=np.float32)[[3, 0]].tolist() + [[0] * 4])


def test_empty_table_gathers_zeros():
    table = VectorTable([], [], 3)
    assert len(table) == 0 and not table.gather(np.array([0, 5])).any()


@pytest.mark.parametrize("fmt", FORMATS)
def test_rewrite_without_removes_rows_and_keeps_the_rest(tmp_path, fmt):
    store = ShardStore(tmp_path, fmt)
    r = records()
    info = store.write_shard(r, 0)
    new = store.rewrite_without(info, np.array([100, 149, 7]), 1)
    back = store.read(new)
    assert list(back.ids) == list(range(101, 149)) and new.file != info.file
    assert np.array_equal(back.vectors, r.vectors[1:49]) and list(back.identities) == list(r.identities[1:49])
    assert (new.first_id, new.last_id, new.rows) == (101, 148, 48)
    assert store.rewrite_without(info, np.array([5]), 2) is info
    assert store.rewrite_without(info, r.ids, 3) is None


def test_a_table_restricted_to_some_ids_serves_only_those_and_stores_them_sparsely():
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    ids = [np.arange(0, 5), np.arange(5, 10)]
    table = VectorTable(ids, [x[:5], x[5:]], 4, only=np.array([8, 2]))
    assert np.array_equal(table.gather(np.array([2, 8])), x[[2, 8]])
    assert np.array_equal(table.gather(np.array([3, -1, 99])), np.zeros((3, 4), np.float32))
    whole = VectorTable(ids, [x[:5], x[5:]], 4)
    assert np.array_equal(whole.gather(np.arange(10)), x)


@pytest.mark.parametrize("capacity", [1_000, 1_000_000])
def test_an_id_map_answers_every_id_dense_or_sparse(rng, capacity):
    from gallery.types import IdMap

    ids = rng.choice(capacity, size=500, replace=False)
    values = rng.integers(0, 100, size=500)
    table = IdMap(ids, values, capacity)
    assert table.dense == (capacity == 1_000)  # sparse when it holds a small part of the id range
    assert table.nbytes <= (4 * capacity if table.dense else 16 * 500)
    probe = np.concatenate([ids[::7], rng.integers(-5, capacity + 100, size=300), [-1, capacity]])
    where = {int(i): int(v) for i, v in zip(ids, values)}
    assert np.array_equal(table[probe], [where.get(int(i), -1) for i in probe])
