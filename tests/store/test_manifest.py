"""The manifest round-trips, refuses newer formats, and names the folder when something is wrong."""

import json

import pytest

from gallery import CorruptGalleryError, FormatVersionError, GalleryNotFoundError
from gallery.store.manifest import FORMAT_VERSION, MANIFEST_SCHEMA, IndexInfo, Manifest, ShardInfo, read_manifest, write_manifest


def sample_manifest():
    m = Manifest(model="m", dim=8, shard_format="hdf5", rows_per_shard=10, next_id=12, next_file=3)
    m.shards.append(ShardInfo("shards/shard-000000.h5", 12, "a" * 64, "shards/shard-000000.vectors.npy", "b" * 64, 0, 11))
    m.index = IndexInfo("index/index-000002.faiss", "c" * 64, "flat", "IDMap2,Flat", 12, 0, {"nprobe": 0})
    m.thresholds["open_set"] = {"value": 0.4}
    return m


def test_round_trip_and_generation(tmp_path):
    m = sample_manifest()
    write_manifest(tmp_path, m)
    back = read_manifest(tmp_path)
    assert back.to_json() == m.to_json()
    assert back.generation == 1 and back.count == 12
    write_manifest(tmp_path, back)
    assert read_manifest(tmp_path).generation == 2


def test_every_written_field_is_in_the_schema(tmp_path):
    write_manifest(tmp_path, sample_manifest())
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert set(data) <= set(MANIFEST_SCHEMA["properties"])
    assert set(MANIFEST_SCHEMA["required"]) <= set(data)


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


@pytest.mark.parametrize("text, message", [("{not json", "not valid JSON"), ("[]", "expected a JSON object"),
                                            ('{"format_version": 1}', "malformed manifest"), ("{}", "no integer format_version")])
def test_damaged_manifest(tmp_path, text, message):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(CorruptGalleryError, match=message):
        read_manifest(tmp_path)


def test_missing_gallery(tmp_path):
    with pytest.raises(GalleryNotFoundError, match="no such gallery folder"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(GalleryNotFoundError, match="not a gallery"):
        read_manifest(tmp_path)
