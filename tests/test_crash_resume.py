"""A build killed at any point leaves the previous gallery readable, and running it again resumes.

These tests start real build processes and kill them (SIGKILL, and SIGINT as Ctrl-C does).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gallery import Gallery, GalleryNotFoundError
from gallery.synthetic import synthetic_gallery

pytestmark = pytest.mark.slow

ROWS = 300_000
ROWS_PER_SHARD = 1_000

CHILD = """
import logging, sys
import numpy as np
from gallery import Gallery
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
x = np.load(sys.argv[1]); labels = np.load(sys.argv[2])
mode, root = sys.argv[3], sys.argv[4]
if mode == "add":
    Gallery.open(root).add_vectors(x, labels, progress=False)
else:
    Gallery.from_vectors(x, labels, root, rows_per_shard={rps}, overwrite=(mode == "overwrite"), progress=False)
""".format(rps=ROWS_PER_SHARD)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    data = synthetic_gallery(ROWS // 3, 3, 32, genuine=0.7, seed=3)
    np.save(d / "x.npy", data.vectors)
    np.save(d / "labels.npy", data.identities.astype(str))
    return d / "x.npy", d / "labels.npy", data


def start(big, mode, root):
    x, labels, _ = big
    return subprocess.Popen([sys.executable, "-c", CHILD, str(x), str(labels), mode, str(root)],
                            stderr=subprocess.PIPE, text=True)


def run(big, mode, root) -> str:
    child = start(big, mode, root)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    return err


def interrupt_after_shards(child, root: Path, shards: int, sig) -> tuple[dict, str]:
    """Wait until the build has journaled ``shards`` shards, then send ``sig``; return that journal and stderr."""
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            journal = json.loads((root / "journal.json").read_text())
        except (FileNotFoundError, ValueError):
            journal = {"shards": []}
        if len(journal["shards"]) >= shards:
            child.send_signal(sig)
            _, err = child.communicate(timeout=60)
            assert (root / "journal.json").is_file(), "the build finished before it could be interrupted"
            return journal, err
        assert child.poll() is None, child.stderr.read()
        time.sleep(0.01)
    raise AssertionError("the build wrote no shards in time")


def shard_inodes(root: Path, journal: dict) -> dict:
    return {s["file"]: os.stat(root / s["file"]).st_ino for s in journal["shards"]}


def test_killed_first_build_leaves_no_gallery_and_resumes(big, tmp_path):
    root = tmp_path / "g"
    journal, _ = interrupt_after_shards(start(big, "new", root), root, 5, signal.SIGKILL)
    with pytest.raises(GalleryNotFoundError):
        Gallery.open(root)
    inodes = shard_inodes(root, journal)
    err = run(big, "new", root)
    done = int(err.split("resuming an interrupted enrolment: ")[1].split(" rows")[0])
    assert done >= 5 * ROWS_PER_SHARD
    assert shard_inodes(root, journal) == inodes  # the shards written before the kill were kept, not rewritten
    g = Gallery.open(root)
    g.verify()
    _, _, data = big
    assert len(g) == ROWS and not (root / "journal.json").exists()
    assert [r.matches[0].identity for r in g.search(data.vectors[::50000], k=1)] == list(data.identities[::50000])


@pytest.mark.parametrize("mode, sig", [("overwrite", signal.SIGKILL), ("add", signal.SIGINT)])
def test_interrupted_change_keeps_the_previous_gallery(big, tmp_path, mode, sig):
    root = tmp_path / "g"
    before = synthetic_gallery(500, 2, 32, genuine=0.7, seed=8)
    Gallery.from_vectors(before.vectors, before.identities, root, progress=False)
    expected = [r.to_dict() for r in Gallery.open(root).search(before.vectors[:20], k=3)]
    manifest = (root / "manifest.json").read_bytes()

    child = start(big, mode, root)
    journal, err = interrupt_after_shards(child, root, 3, sig)
    assert child.returncode != 0
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err
    assert (root / "manifest.json").read_bytes() == manifest
    g = Gallery.open(root)
    g.verify()
    assert [r.to_dict() for r in g.search(before.vectors[:20], k=3)] == expected

    inodes = shard_inodes(root, journal)
    err = run(big, mode, root)
    assert "resuming an interrupted enrolment" in err
    assert shard_inodes(root, journal) == inodes
    g = Gallery.open(root)
    assert len(g) == ROWS + (len(before.vectors) if mode == "add" else 0)
    assert {p.name for p in (root / "shards").iterdir()} == {
        Path(n).name for s in g.manifest.shards for n in (s.file, s.vectors_file)
    }  # nothing left over from the interrupted run or the replaced gallery
