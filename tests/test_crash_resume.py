"""A build killed at any point leaves the previous gallery readable, and running it again resumes.

These tests start real builds in child processes (80k x 64 vectors in 5000-row shards) and stop them
once the journal lists a few shards: with SIGKILL (a crash) and with SIGINT (Ctrl-C).
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from builds import interrupt_after_shards
from gallery import Gallery, GalleryNotFoundError
from gallery.synthetic import synthetic_gallery

pytestmark = pytest.mark.slow

ROWS = 80_000
DIM = 64
ROWS_PER_SHARD = 5_000

CHILD = f"""
import logging, sys
import numpy as np
from gallery import Gallery
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
x = np.load(sys.argv[1]); labels = np.load(sys.argv[2])
mode, root = sys.argv[3], sys.argv[4]
if mode == "add":
    Gallery.open(root).add_vectors(x, labels, progress=False)
else:
    Gallery.from_vectors(x, labels, root, rows_per_shard={ROWS_PER_SHARD}, overwrite=(mode == "overwrite"), progress=False)
"""


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    data = synthetic_gallery(ROWS // 2, 2, DIM, genuine=0.7, seed=3)
    np.save(folder / "x.npy", data.vectors)
    np.save(folder / "labels.npy", data.identities.astype(str))
    yield folder / "x.npy", folder / "labels.npy", data
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def root(tmp_path):
    """The gallery folder; removed afterwards (each test leaves some 80 MB)."""
    yield tmp_path / "g"
    shutil.rmtree(tmp_path / "g", ignore_errors=True)


@pytest.fixture(scope="module")
def previous():
    """A small gallery's worth of vectors of the same dimension, to exist before the big change."""
    return synthetic_gallery(1000, 2, DIM, genuine=0.7, seed=8)


def start(big, mode, root):
    x, labels, _ = big
    return subprocess.Popen([sys.executable, "-c", CHILD, str(x), str(labels), mode, str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_to_completion(big, mode, root) -> str:
    child = start(big, mode, root)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    return err


def file_identity(root: Path, journal: dict) -> dict:
    """(inode, mtime) of every file the journal names: unchanged means reused, not rewritten."""
    out = {}
    for s in journal["shards"]:
        for name in (s["file"], s["vectors_file"]):
            st = os.stat(root / name)
            out[name] = (st.st_ino, st.st_mtime_ns)
    return out


def resumed_rows(stderr: str) -> int:
    marker = "resuming an interrupted enrolment: "
    assert marker in stderr, stderr
    return int(stderr.split(marker)[1].split(" rows")[0])


def assert_no_leftovers(root: Path, g: Gallery) -> None:
    named = {n for s in g.manifest.shards for n in (s.file, s.vectors_file)}
    assert {f"shards/{p.name}" for p in (root / "shards").iterdir()} == named
    assert [f"index/{p.name}" for p in (root / "index").iterdir()] == [g.manifest.index.file]
    assert not (root / "journal.json").exists()


def assert_finds_its_own_vectors(g: Gallery, data, rows) -> None:
    results = g.search(data.vectors[rows], k=1)
    assert [r.matches[0].identity for r in results] == list(data.identities[rows])
    assert all(r.matches[0].score == pytest.approx(1.0, abs=1e-5) for r in results)


SAMPLE = np.arange(0, ROWS, 3_989)  # rows from every part of the input, early and late shards alike


def name(value):
    return value.name if isinstance(value, signal.Signals) else str(value)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=name)
def test_interrupted_first_build_leaves_no_gallery_and_rerunning_resumes(big, root, sig):
    journal, err = interrupt_after_shards(start(big, "new", root), root, 3, sig)
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err
    with pytest.raises(GalleryNotFoundError):
        Gallery.open(root)
    before = file_identity(root, journal)

    err = run_to_completion(big, "new", root)
    assert resumed_rows(err) == sum(s["rows"] for s in journal["shards"]) >= 3 * ROWS_PER_SHARD
    assert file_identity(root, journal) == before  # written before the interruption, reused as they were
    g = Gallery.open(root)
    g.verify()
    assert len(g) == ROWS and len(g.identities) == ROWS // 2
    assert [s.file for s in g.manifest.shards[: len(journal["shards"])]] == [s["file"] for s in journal["shards"]]
    ids, labels = g.records()
    assert np.array_equal(ids, np.arange(ROWS)) and list(labels[::997]) == list(big[2].identities[::997])
    assert_finds_its_own_vectors(g, big[2], SAMPLE)
    assert_no_leftovers(root, g)


@pytest.mark.parametrize(
    "mode, sig",
    [("overwrite", signal.SIGKILL), ("overwrite", signal.SIGINT), ("add", signal.SIGKILL), ("add", signal.SIGINT)],
    ids=name,
)
def test_interrupted_change_keeps_the_previous_gallery_and_rerunning_resumes(big, root, previous, mode, sig):
    Gallery.from_vectors(previous.vectors, previous.identities, root, rows_per_shard=ROWS_PER_SHARD, progress=False)
    queries = np.r_[previous.vectors[:10], big[2].vectors[:10]]
    expected = [r.to_dict() for r in Gallery.open(root).search(queries, k=3)]
    manifest = (root / "manifest.json").read_bytes()

    journal, err = interrupt_after_shards(start(big, mode, root), root, 3, sig)
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err
    assert (root / "manifest.json").read_bytes() == manifest
    g = Gallery.open(root)
    g.verify()
    assert len(g) == len(previous.vectors)
    assert [r.to_dict() for r in g.search(queries, k=3)] == expected  # exactly the previous answers

    before = file_identity(root, journal)
    err = run_to_completion(big, mode, root)
    assert resumed_rows(err) == sum(s["rows"] for s in journal["shards"]) >= 3 * ROWS_PER_SHARD
    assert file_identity(root, journal) == before
    g = Gallery.open(root)
    g.verify()
    assert_finds_its_own_vectors(g, big[2], SAMPLE)
    if mode == "add":
        assert len(g) == ROWS + len(previous.vectors)
        assert_finds_its_own_vectors(g, previous, np.arange(0, len(previous.vectors), 97))
        assert g.manifest.index.trained_on == 0 and g.manifest.index.ntotal == len(g)
    else:
        assert len(g) == ROWS and not set(previous.identities) & set(g.identities)
    assert_no_leftovers(root, g)


def test_a_different_build_after_an_interruption_starts_afresh_and_erases_its_files(big, root, previous, caplog):
    journal, _ = interrupt_after_shards(start(big, "new", root), root, 3, signal.SIGKILL)
    first_kept = np.load(root / journal["shards"][0]["vectors_file"])[0].tobytes()
    caplog.set_level("INFO", logger="gallery")
    g = Gallery.from_vectors(previous.vectors, previous.identities, root, rows_per_shard=ROWS_PER_SHARD, progress=False)
    assert "resuming" not in caplog.text
    assert len(g) == len(previous.vectors) and set(g.identities) == set(previous.identities)
    assert_no_leftovers(root, g)
    blob = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
    assert first_kept not in blob  # the interrupted build's vectors are gone from the folder
    assert_finds_its_own_vectors(g, previous, np.arange(0, len(previous.vectors), 50))
