"""A change works on the gallery as it is under the writer lock, never on a stale copy, and erases only
what no manifest names, once readers opening the previous generation are done."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from gallery import Gallery
from gallery.errors import CorruptGalleryError, GalleryError, GalleryLockedError
from gallery.store import read_manifest
from gallery.store.change import GalleryChange
from gallery.store.locks import reading, writer_lock
from gallery.synthetic import synthetic_gallery


@pytest.fixture
def data():
    return synthetic_gallery(200, 2, 32, genuine=0.7, seed=5)


@pytest.fixture
def root(tmp_path, data):
    Gallery.from_vectors(data.vectors, data.identities, tmp_path / "g", rows_per_shard=100, progress=False)
    return tmp_path / "g"


def hold_writer_lock(root, *, seconds: float) -> subprocess.Popen:
    """Another process that holds the gallery's writer lock for ``seconds`` (it is holding it on return)."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from gallery.store.locks import writer_lock
        with writer_lock({str(root)!r}):
            print("locked", flush=True)
            time.sleep({seconds})
        """)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def folder_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_second_writer_is_refused_naming_the_holder(root, data):
    with writer_lock(root):
        with pytest.raises(GalleryLockedError, match=f"{root}: process {os.getpid()} is changing this gallery; wait"):
            Gallery.open(root).add_vectors(data.vectors[:1], ["late"])
    assert len(Gallery.open(root)) == 400


def test_a_second_writer_waits_for_the_lock_when_asked(root, data):
    child = hold_writer_lock(root, seconds=1.5)
    t = time.monotonic()
    with pytest.raises(GalleryLockedError, match=r"after waiting 0\.2 s"):
        Gallery.open(root, wait=0.2).add_vectors(data.vectors[:1], ["impatient"])
    Gallery.open(root, wait=30).add_vectors(data.vectors[:1], ["patient"])
    assert time.monotonic() - t >= 1.0 and child.wait(10) == 0
    assert "patient" in Gallery.open(root).identities and "impatient" not in Gallery.open(root).identities


def test_a_killed_writers_lock_is_recovered(root, data):
    child = hold_writer_lock(root, seconds=60)
    child.kill()
    child.wait()
    Gallery.open(root).add_vectors(data.vectors[:1], ["after"])
    assert len(Gallery.open(root)) == 401


def test_a_long_lived_object_adds_on_top_of_what_others_committed(root, data):
    stale, other = Gallery.open(root), Gallery.open(root)
    other.add_vectors(data.vectors[:30], ["other"] * 30)
    ids = stale.add_vectors(data.vectors[30:40], ["stale"] * 10)
    g = Gallery.open(root)
    assert len(g) == 440 and len(set(g.records()[0].tolist())) == 440
    assert ids.tolist() == list(range(430, 440))
    g.verify()


def test_rebuild_index_from_a_stale_object_keeps_what_others_added(root, data):
    stale, other = Gallery.open(root), Gallery.open(root)
    other.add_vectors(data.vectors[:30], ["newcomer"] * 30)
    stale.rebuild_index("flat")
    g = Gallery.open(root)
    assert len(g) == 430 and g.manifest.index.ntotal == 430 and stale.manifest.index.ntotal == 430
    g.verify()
    (r,) = g.search(data.vectors[:1], k=2)
    assert {m.identity for m in r.matches} >= {"newcomer"}


def test_remove_from_a_stale_object_decides_on_the_current_gallery(root, data):
    stale, other = Gallery.open(root), Gallery.open(root)
    other.add_vectors(data.vectors[:2], ["latecomer"] * 2)
    assert stale.remove(["latecomer"]) == 2
    other.remove([str(data.identities[0])])
    with pytest.raises(GalleryError, match="no such identities"):
        stale.remove([str(data.identities[0])])
    Gallery.open(root).verify()


def test_a_commit_keeps_the_old_files_while_a_reader_is_opening_them(root, data):
    old_index = read_manifest(root).index.file
    victim = str(data.identities[0])
    child = subprocess.Popen([sys.executable, "-c", f"from gallery import Gallery; Gallery.open({str(root)!r}).remove([{victim!r}])"],
                             stderr=subprocess.PIPE, text=True)
    with reading(root):  # a reader is half-way through opening the current generation
        deadline = time.monotonic() + 60
        while read_manifest(root).index.file == old_index:
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
            time.sleep(0.02)
        time.sleep(0.3)
        assert (root / old_index).is_file(), "the superseded index was erased under an opening reader"
    assert child.wait(60) == 0, child.stderr.read()
    assert not (root / old_index).exists()
    assert victim not in Gallery.open(root).identities


def test_a_reader_whose_generation_vanishes_reads_the_new_one(root, data, monkeypatch):
    """A reader without the readers' lock (a read-only copy) re-reads once if a commit swapped the files."""
    g = Gallery.open(root)
    other = Gallery.open(root)
    real = read_manifest
    calls = []

    def racing_read(path):  # the reader reads the manifest, then a writer commits before it opens the files
        m = real(path)
        if not calls:
            calls.append(1)
            other.remove([str(data.identities[1])])
        return m

    monkeypatch.setattr("gallery.gallery.read_manifest", racing_read)
    monkeypatch.setattr("gallery.gallery.reading", lambda root: open(os.devnull))
    g._reload()
    assert str(data.identities[1]) not in g.identities and len(g) == 398


def test_strays_and_interrupted_journals_are_erased_by_the_next_change(root, data):
    (root / "shards" / "shard-999999.vectors.npy").write_bytes(b"left by a killed writer")
    (root / "index" / "index-999999.faiss").write_bytes(b"half an index")
    (root / "manifest.json.tmp").write_text("{")
    Gallery.open(root).add_vectors(data.vectors[:1], ["one"])
    assert not (root / "shards" / "shard-999999.vectors.npy").exists()
    assert not (root / "index" / "index-999999.faiss").exists() and not (root / "manifest.json.tmp").exists()
    Gallery.open(root).verify()


def test_a_refused_change_touches_no_file(root, data):
    (root / "shards" / "shard-999999.vectors.npy").write_bytes(b"left by a killed writer")
    before = folder_bytes(root)
    with pytest.raises(GalleryError, match="cannot be mixed in"):
        Gallery.open(root).add_vectors(data.vectors[:1], ["x"], model="arcface")
    with pytest.raises(GalleryError, match="no such identities"):
        Gallery.open(root).remove(["nobody"])
    assert folder_bytes(root) == {k: v for k, v in before.items()}


def test_a_dropped_shard_entry_is_refused_before_anything_is_erased(root, data):
    manifest = json.loads((root / "manifest.json").read_text())
    dropped = manifest["shards"].pop(0)
    (root / "manifest.json").write_text(json.dumps(manifest))
    before = folder_bytes(root)
    with pytest.raises(CorruptGalleryError, match="index.ntotal is 400 but the shards hold 300 records"):
        Gallery.open(root)
    with pytest.raises(CorruptGalleryError, match="index.ntotal is 400 but the shards hold 300 records"):
        with GalleryChange(root, operation="test"):
            pass
    assert folder_bytes(root) == before and (root / dropped["file"]).is_file()


def test_a_dropped_shard_entry_with_a_matching_count_fails_open_and_verify(root, data):
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["shards"].pop(0)
    manifest["index"]["ntotal"] = 300
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptGalleryError, match="holds 400 vectors, the shards 300 records"):
        Gallery.open(root)


def test_verify_finds_a_shard_the_manifest_does_not_name(root, data):
    (root / "shards" / "shard-000777.parquet").write_bytes((root / "shards" / "shard-000000.parquet").read_bytes())
    with pytest.raises(CorruptGalleryError, match="shard-000777.parquet: on disk but not named in the manifest"):
        Gallery.open(root).verify()


def test_verify_cross_checks_each_shards_ids_against_the_manifest(root, data):
    """Two shard entries that name each other's files (with their checksums) pass every checksum."""
    manifest = json.loads((root / "manifest.json").read_text())
    a, b = manifest["shards"][0], manifest["shards"][1]
    for key in ("file", "sha256", "vectors_file", "vectors_sha256"):
        a[key], b[key] = b[key], a[key]
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptGalleryError, match=r"ids 100\.\.199, the manifest says 0\.\.99"):
        Gallery.open(root).verify()


def test_the_commit_refuses_an_index_that_disagrees_with_the_shards(root, data):
    with pytest.raises(GalleryError, match="would commit 400 records with an index of 399; nothing was committed"):
        with GalleryChange(root, operation="test") as change:
            change.manifest.index.ntotal = 399
            change.commit()
    assert read_manifest(root).index.ntotal == 400
