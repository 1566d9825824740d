"""Shards round-trip every column in both formats, detect damage, and serve vectors by record id."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from gallery import CorruptGalleryError
from gallery.store.shards import ShardStore, VectorTable
from gallery.types import Records


def records(n=50, d=8, first_id=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return Records(
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        identities=np.asarray([f"person-{i % 7}" for i in range(n)], dtype=object),
        sources=np.asarray([f"photos/p{i}.jpg" for i in range(n)], dtype=object),
        face_index=(np.arange(n) % 3).astype(np.int32),
        vectors=x,
        model="test-model",
    )


@pytest.mark.parametrize("fmt", ["parquet", "hdf5"])
def test_every_column_round_trips(tmp_path, fmt):
    store = ShardStore(tmp_path, fmt)
    r = records()
    info = store.write_shard(r, 0)
    assert (info.rows, info.first_id, info.last_id) == (50, 100, 149)
    back = store.read(info)
    assert np.array_equal(back.ids, r.ids) and np.array_equal(back.face_index, r.face_index)
    assert list(back.identities) == list(r.identities) and list(back.sources) == list(r.sources)
    assert np.array_equal(back.vectors, r.vectors) and back.model == "test-model"
    assert np.array_equal(np.load(tmp_path / info.vectors_file), r.vectors)
    labels_only = store.read(info, columns=["id", "identity"])
    assert labels_only.vectors.shape == (50, 0) and list(labels_only.identities) == list(r.identities)


def test_parquet_vectors_are_fixed_size_float32_lists(tmp_path):
    info = ShardStore(tmp_path, "parquet").write_shard(records(d=8), 0)
    import pyarrow as pa

    kind = pq.read_schema(tmp_path / info.file).field("vector").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == 8 and kind.value_type == pa.float32()


@pytest.mark.parametrize("fmt", ["parquet", "hdf5"])
def test_truncated_shard_is_reported_with_its_path(tmp_path, fmt):
    store = ShardStore(tmp_path, fmt)
    info = store.write_shard(records(), 0)
    path = tmp_path / info.file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptGalleryError, match=str(path)):
        store.read(info)


def test_verify_detects_one_changed_byte(tmp_path):
    store = ShardStore(tmp_path, "parquet")
    info = store.write_shard(records(), 0)
    store.verify([info])
    path = tmp_path / info.vectors_file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptGalleryError, match="checksum mismatch"):
        store.verify([info])
    assert not store.is_intact(info)


def test_vector_table_gathers_by_id_across_shards(tmp_path):
    store = ShardStore(tmp_path, "parquet")
    a, b = records(30, first_id=0, seed=1), records(20, first_id=40, seed=2)
    infos = [store.write_shard(a, 0), store.write_shard(b, 1)]
    table = store.vectors(infos, 8)
    want = np.array([[45, 3], [-1, 29], [999, 40]])
    got = table.gather(want)
    assert got.shape == (3, 2, 8)
    assert np.array_equal(got[0, 0], b.vectors[5]) and np.array_equal(got[0, 1], a.vectors[3])
    assert np.array_equal(got[1, 1], a.vectors[29]) and np.array_equal(got[2, 1], b.vectors[0])
    assert not got[1, 0].any() and not got[2, 0].any()  # -1 and unknown ids read as zeros


def test_vector_table_with_unsorted_ids():
    mats = [np.eye(4, dtype=np.float32)]
    table = VectorTable([np.array([7, 3, 5, 1])], mats, 4)
    assert np.array_equal(table.gather(np.array([1, 7])), np.eye(4, dtype=np.float32)[[3, 0]])


def test_rewrite_without_removes_rows_and_keeps_the_rest(tmp_path):
    store = ShardStore(tmp_path, "hdf5")
    r = records()
    info = store.write_shard(r, 0)
    new = store.rewrite_without(info, np.array([100, 149, 7]), 1)
    back = store.read(new)
    assert list(back.ids) == list(range(101, 149)) and new.file != info.file
    assert store.rewrite_without(info, np.array([5]), 2) is info
    assert store.rewrite_without(info, r.ids, 3) is None
