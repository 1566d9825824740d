"""A photo build on Ray writes the gallery a local build writes, and resumes like one."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from builds import copied_photos, interrupt_after_shards
from gallery import Gallery
from gallery.cli import main
from gallery.distributed import embedding

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "faces"
pytestmark = [pytest.mark.skipif(not FACES.is_dir(), reason=f"the shared real photos are not at {FACES}"),
              pytest.mark.timeout(300)]


def vectors_by_source(g: Gallery) -> dict:
    ids, labels = g.records()
    sources = {}
    for r in g._store.iter_records(g.manifest.shards, columns=["id", "source", "face_index"]):
        sources.update({int(i): (s, int(f)) for i, s, f in zip(r.ids, r.sources, r.face_index)})
    vectors = g.vectors_of(ids)
    return {sources[int(i)]: (label, v) for i, label, v in zip(ids, labels, vectors)}


@pytest.fixture(scope="module")
def local_build(tmp_path_factory):
    return Gallery.from_photos(FACES / "gallery", tmp_path_factory.mktemp("local") / "g", faces="all", workers=1,
                               progress=False)


def test_a_ray_build_equals_the_local_build(ray_cluster, local_build, tmp_path):
    g = Gallery.from_photos(FACES / "gallery", tmp_path / "g", faces="all", engine="ray", progress=False)
    assert g.last_report["summary"] == local_build.last_report["summary"]
    assert [e["source"] for e in g.last_report["sources"]] == [e["source"] for e in local_build.last_report["sources"]]
    ours, theirs = vectors_by_source(g), vectors_by_source(local_build)
    assert ours.keys() == theirs.keys() and len(ours) >= 9
    for key, (label, v) in ours.items():
        assert label == theirs[key][0]
        assert float(v @ theirs[key][1]) >= 0.99999, key
    g.verify()


CHILD = """
import sys, ray
ray.init(address=sys.argv[3], log_to_driver=False)
from gallery import Gallery
Gallery.from_photos(sys.argv[1], sys.argv[2], rows_per_shard=1, engine="ray", progress=False)
"""


def test_a_killed_ray_build_resumes(ray_cluster, local_build, tmp_path):
    """SIGKILL a Ray build's driver (joined to this session's cluster) after a few one-row shards; the
    rerun embeds only the rest, and the gallery answers like the local one."""
    photos = copied_photos(FACES / "gallery", tmp_path / "photos", 4)
    root = tmp_path / "g"
    address = ray_cluster.get_runtime_context().gcs_address
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(photos), str(root), address], stderr=subprocess.PIPE)
    interrupt_after_shards(child, root, 4, signal.SIGKILL, timeout=200)
    assert not (root / "manifest.json").exists()
    written = len(json.loads((root / "journal.json").read_text())["shards"])
    g = Gallery.from_photos(photos, root, rows_per_shard=1, engine="ray", progress=False)
    summary = g.last_report["summary"]
    assert summary["resumed"] >= written >= 4 and summary["images"] == 36 and summary["enrolled"] == 36
    (a,) = g.search_images(FACES / "probes" / "obama1.jpg")
    (b,) = local_build.search_images(FACES / "probes" / "obama1.jpg")
    assert a.faces[0].identity == b.faces[0].identity == "obama"
    assert abs(a.faces[0].result.best.score - b.faces[0].result.best.score) < 1e-5


def test_cli_build_on_ray_then_query_on_shards(ray_cluster, tmp_path):
    runner = CliRunner()
    out = tmp_path / "g"
    built = runner.invoke(main, ["build", str(FACES / "gallery"), "-o", str(out), "--engine", "ray"])
    assert built.exit_code == 0, built.output
    assert "enrolled" in built.output
    answer = runner.invoke(main, ["query", str(FACES / "probes" / "obama1.jpg"), "-g", str(out), "--engine", "ray",
                                  "--shards", "2", "--json"])
    assert answer.exit_code == 0, answer.output
    face = json.loads(answer.output.splitlines()[-1])["faces"][0]
    assert face["identity"] == "obama"


#: A few photos for the CNN detector, which takes about a second a photo on a CPU.
CNN_PHOTOS = ["kit_harington/john2.jpeg", "obama/obama2.jpg", "rose_leslie/img2.jpg", "biden/biden2.jpg"]


def test_auto_is_hog_on_a_cluster_without_gpus(ray_cluster):
    assert embedding.cluster_detector({"method": "auto", "landmarks": 68}) == {"method": "hog", "landmarks": 68}
    assert embedding.cluster_detector({"method": "cnn", "device": "cuda:3"}) == {"method": "cnn"}


def test_the_cnn_detects_in_the_encoder_actors_as_a_local_build_does(ray_cluster, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    for name in CNN_PHOTOS:
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FACES / "gallery" / name, photos / name)
    local = Gallery.from_photos(photos, tmp_path / "local", faces="all", detector="cnn", workers=0, progress=False)

    def no_alignment_tasks(*args, **kwargs):
        raise AssertionError("the CNN build aligned in Ray tasks instead of the encoder actors")

    monkeypatch.setattr(embedding, "_align_in_tasks", no_alignment_tasks)
    g = Gallery.from_photos(photos, tmp_path / "ray", faces="all", detector="cnn", engine="ray", progress=False)
    assert g.last_report["detector"] == local.last_report["detector"] == {"method": "cnn"}
    assert g.last_report["sources"] == local.last_report["sources"]
    assert g.last_report["summary"]["enrolled"] >= len(CNN_PHOTOS)
    ours, theirs = vectors_by_source(g), vectors_by_source(local)
    assert ours.keys() == theirs.keys()
    for key, (label, v) in ours.items():
        assert label == theirs[key][0]
        assert float(v @ theirs[key][1]) >= 0.99999, key
