"""The manifest round-trips, refuses newer formats, and names the folder when something is wrong."""

import json

import pytest

from gallery import CorruptGalleryError, FormatVersionError, GalleryNotFoundError
from gallery.calibration import Calibration
from gallery.store.manifest import FORMAT_VERSION, MANIFEST_SCHEMA, IndexInfo, Manifest, ShardInfo, read_manifest, write_manifest

CALIBRATION = Calibration(value=0.4, target_fpir=1e-3, achieved_fpir=1e-3, fnir=None, model="m", gallery_identities=5,
                          n_mated=3, n_nonmated=9, protocol="probes", tail=None, created=1.0)


def sample_manifest():
    m = Manifest(model="m", dim=8, shard_format="hdf5", rows_per_shard=10, next_id=12, next_file=3,
                 model_fingerprint="fp-1")
    m.shards.append(ShardInfo("shards/shard-000000.h5", 12, "a" * 64, "shards/shard-000000.vectors.npy", "b" * 64, 0, 11))
    m.index = IndexInfo("index/index-000002.faiss", "c" * 64, "ivfpq", "IVF16,PQ8x4fs", 12, 7,
                        {"nlist": 16, "pq_m": 8, "nprobe": 4, "rerank": 4})
    m.thresholds["open_set"] = CALIBRATION.to_json()
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
        ('{"format_version": 1}', "model is missing"),
        ('{"format_version": true}', "no integer format_version"),
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


def test_manifest_with_a_damaged_shard_entry_names_the_field(tmp_path):
    data = sample_manifest().to_json()
    del data["shards"][0]["sha256"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CorruptGalleryError) as e:
        read_manifest(tmp_path)
    assert str(e.value) == f"{tmp_path / 'manifest.json'}: shards[0].sha256 is missing; the file was edited or damaged"


@pytest.mark.parametrize("key", ["nlist", "pq_m", "nprobe", "rerank"])
@pytest.mark.parametrize("value, why", [(None, "None"), (0, "0"), ("delete", "missing")])
def test_an_ivfpq_entry_without_the_cells_or_codes_it_was_built_with_is_corrupt(tmp_path, key, value, why):
    data = sample_manifest().to_json()
    if value == "delete":
        del data["index"]["params"][key]
    else:
        data["index"]["params"][key] = value
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CorruptGalleryError) as e:
        read_manifest(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'manifest.json'}: index.params.{key} is {why}")


def test_an_ivfpq_entry_may_leave_the_search_knobs_to_their_defaults(tmp_path):
    data = sample_manifest().to_json()
    data["index"]["params"].update(recheck_nprobe=None, shortlist=None)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert read_manifest(tmp_path).index.params["nlist"] == 16


def test_the_stored_calibration_reads_back_as_written(tmp_path):
    write_manifest(tmp_path, sample_manifest())
    assert Calibration.from_json(read_manifest(tmp_path).thresholds["open_set"]) == CALIBRATION


def test_a_manifest_is_checked_without_a_folder_too():
    """``from_json`` alone (no root) checks every field; only the disk checks of file names need a folder."""
    m = sample_manifest()
    data = m.to_json()
    assert Manifest.from_json(data) == m
    data["rows_per_shard"] = 0
    with pytest.raises(CorruptGalleryError) as e:
        Manifest.from_json(data, path="g/manifest.json")
    assert str(e.value) == "g/manifest.json: rows_per_shard is 0, expected an integer >= 1; the file was edited or damaged"


def test_optional_fields_an_older_manifest_lacks_take_their_defaults(tmp_path):
    data = sample_manifest().to_json()
    for key in ("generation", "next_file", "index", "thresholds", "created", "updated", "metric"):
        del data[key]
    del data["model"]["fingerprint"], data["model"]["spec"]
    m = Manifest.from_json(data)
    assert (m.generation, m.next_file, m.index, m.thresholds, m.model_fingerprint) == (0, 0, None, {}, None)


def test_missing_gallery(tmp_path):
    with pytest.raises(GalleryNotFoundError, match="no such gallery folder"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(GalleryNotFoundError, match="not a gallery \\(no manifest.json\\)"):
        read_manifest(tmp_path)
    with pytest.raises(FileNotFoundError):  # callers may catch the builtin
        read_manifest(tmp_path / "nope")
