"""The manifest round-trips, refuses newer formats, and names the folder when something is wrong."""

import json

import pytest

from gallery import CorruptGalleryError, FormatVersionError, GalleryNotFoundError
from gallery.store.manifest import FORMAT_VERSION, MANIFEST_SCHEMA, IndexInfo, Manifest, ShardInfo, read_manifest, write_manifest


def sample_manifest():
    m = Manifest(model="m", dim=8, shard_format="hdf5", rows_per_shard=10, next_id=12, next_file=3,
                 model_fingerprint="fp-1")
    m.shards.append(ShardInfo("shards/shard-000000.h5", 12, "a" * 64, "shards/shard-000000.vectors.npy", "b" * 64, 0, 11))
    m.index = IndexInfo("index/index-000002.faiss", "c" * 64, "ivfpq", "IVF16,PQ8x4fs", 12, 7,
                        {"nlist": 16, "pq_m": 8, "nprobe": 4, "rerank": 4})
    m.thresholds["open_set"] = {"value": 0.4}
    return m


def test_round_trip_keeps_every_field(tmp_path):
    m = sample_manifest()
    write_manifest(tmp_path, m)
    back = read_manifest(tmp_path)
    assert back == m  # dataclass equality: every field, shards and index included
    assert back.to_json() == m.to_json()
    assert (back.model, back.dim, back.model_fingerprint, back.shard_format) == ("m", 8, "fp-1", "hdf5")
    assert back.shards[0].last_id == 11 and back.index.params["nprobe"] == 4 and back.index.trained_on == 7
    assert back.count == 12


def test_each_commit_bumps_the_generation(tmp_path):
    m = sample_manifest()
    write_manifest(tmp_path, m)
    assert read_manifest(tmp_path).generation == 1
    write_manifest(tmp_path, read_manifest(tmp_path))
    assert read_manifest(tmp_path).generation == 2


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    write_manifest(tmp_path, sample_manifest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    assert json.loads((tmp_path / "manifest.json").read_text())["format_version"] == FORMAT_VERSION


def test_every_written_field_is_in_the_schema(tmp_path):
    write_manifest(tmp_path, sample_manifest())
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert set(data) <= set(MANIFEST_SCHEMA["properties"])
    assert set(MANIFEST_SCHEMA["required"]) <= set(data)
    assert data["metric"] == "cosine"


def test_newer_format_is_refused_with_the_fix(tmp_path):
    data = sample_manifest().to_json()
    data["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(FormatVersionError) as e:
        read_manifest(tmp_path)
    assert str(e.value) == (
        f"{tmp_path / 'manifest.json'}: manifest format {FORMAT_VERSION + 1} is newer than this gallery release "
        f"supports ({FORMAT_VERSION}); upgrade gallery to read it"
    )


def test_the_current_format_is_read(tmp_path):
    data = sample_manifest().to_json()
    assert data["format_version"] == FORMAT_VERSION
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert read_manifest(tmp_path).format_version == FORMAT_VERSION


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"format_version": 1}', "malformed manifest"),
        ('{"format_version": "1"}', "no integer format_version"),
        ("{}", "no integer format_version"),
    ],
)
def test_damaged_manifest_is_corrupt_and_names_the_file(tmp_path, text, message):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(CorruptGalleryError, match=message) as e:
        read_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in str(e.value)


def test_manifest_that_is_not_utf8_is_corrupt(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b'{"format_version": 1, "model": "\xff\xfe"}')
    with pytest.raises(CorruptGalleryError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_manifest_with_a_damaged_shard_entry_is_corrupt(tmp_path):
    data = sample_manifest().to_json()
    del data["shards"][0]["sha256"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CorruptGalleryError, match="malformed manifest"):
        read_manifest(tmp_path)


def test_missing_gallery(tmp_path):
    with pytest.raises(GalleryNotFoundError, match="no such gallery folder"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(GalleryNotFoundError, match="not a gallery \\(no manifest.json\\)"):
        read_manifest(tmp_path)
    with pytest.raises(FileNotFoundError):  # callers may catch the builtin
        read_manifest(tmp_path / "nope")
