"""From photos to answers on real faces (../shared/faces): build, query, add, remove, reports, resume.

A probe passes only when the detector found its faces *and* the labelled people are decided at rank 1;
the unenrolled person must be answered unknown at the model's measured default threshold.
"""

import csv
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from builds import copied_photos, interrupt_after_shards
from gallery import Gallery
from gallery.cli import main
from gallery.errors import GalleryError, InvalidInputError, ModelMismatchError
from gallery.search import MODEL_THRESHOLDS
from gallery.store.reports import read_report

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "faces"
pytestmark = pytest.mark.skipif(not FACES.is_dir(), reason=f"the shared real photos are not at {FACES}")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """The shared gallery photos plus a corrupt JPEG, a text file and a stray top-level image."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    shutil.copytree(FACES / "gallery", root)
    good = (FACES / "gallery" / "obama" / "obama.jpg").read_bytes()
    (root / "obama" / "corrupt.jpg").write_bytes(good[: len(good) // 4])
    (root / "biden" / "notes.txt").write_text("not a photo")
    return root


@pytest.fixture(scope="module")
def built(photo_folder, tmp_path_factory):
    return Gallery.from_photos(photo_folder, tmp_path_factory.mktemp("g") / "gallery", workers=2, progress=False)


def labelled_probes():
    if not FACES.is_dir():
        return []
    with open(FACES / "labels.csv", newline="") as f:
        return [(r["path"], r["identities"].split(";")) for r in csv.DictReader(f)]


def test_build_enrols_every_readable_photo_and_reports_the_rest(built, photo_folder):
    assert built.model == "dlib-resnet" and built.dim == 128
    assert built.identities == ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
    assert len(built) == 9
    report = built.last_report
    assert report["summary"] == {"images": 10, "faces": 9, "enrolled": 9, "skipped": {"unreadable": 1},
                                 "ignored_files": 1, "resumed": 0}
    by_source = {e["source"]: e for e in report["sources"]}
    assert by_source["obama/corrupt.jpg"]["status"] == "skipped"
    assert "corrupt.jpg" in by_source["obama/corrupt.jpg"]["error"]
    assert by_source["biden/biden.jpg"]["enrolled"] == [0] and len(by_source["biden/biden.jpg"]["boxes"]) == 1
    assert report["ignored"] == [{"file": "biden/notes.txt", "reason": "not an image file"}]
    assert read_report(built.root / "report-000001.json") == report


#: Mated probes whose best score (0.9345) is below the dlib default of 0.94: the price of a default
#: that errs toward "unknown" (see gallery.search.MODEL_THRESHOLDS).
REJECTED_AT_THE_DEFAULT = {"misc/alex-lacamoire.png"}


@pytest.mark.parametrize("path, who", labelled_probes(), ids=[p for p, _ in labelled_probes()])
def test_every_labelled_probe_is_answered_right(built, path, who):
    (photo,) = built.search_images(FACES / path, k=3)
    assert photo.error is None
    assert len(photo.faces) >= len(who), f"{path}: the detector found {len(photo.faces)} faces, expected {len(who)}"
    decided = [f.identity for f in photo.faces]
    ranked_first = [f.result.best.identity for f in photo.faces]
    if who == ["unknown"]:
        assert decided == [None], f"{path}: an unenrolled person was matched to {decided}"
    elif path in REJECTED_AT_THE_DEFAULT:
        assert set(who) <= set(ranked_first) and not set(who) & set(decided), f"{path}: {decided}"
    else:
        assert set(who) <= set(decided), f"{path}: expected {who}, got {decided}"
    for f in photo.faces:
        r = f.result
        assert r.threshold_source == "model-default"
        assert [m.score for m in r.matches] == sorted((m.score for m in r.matches), reverse=True)


def test_identification_is_the_same_with_dlibs_own_encoder(built, photo_folder, tmp_path):
    """The torch port answers every labelled probe exactly as dlib's native descriptor does."""
    native = Gallery.from_photos(photo_folder, tmp_path / "native", model="dlib-resnet-native", workers=2, progress=False)
    assert native.model == "dlib-resnet-native" and native.identities == built.identities
    paths = [FACES / path for path, _ in labelled_probes()]
    for ours, theirs in zip(built.search_images(paths, k=5), native.search_images(paths, k=5)):
        assert len(ours.faces) == len(theirs.faces) and ours.faces, ours.source
        for a, b in zip(ours.faces, theirs.faces):
            assert a.box == b.box and a.identity == b.identity, ours.source
            assert [m.identity for m in a.result.matches] == [m.identity for m in b.result.matches], ours.source
            np.testing.assert_allclose([m.score for m in a.result.matches], [m.score for m in b.result.matches], atol=1e-4)


def test_the_dlib_default_rejects_every_non_mated_search_of_the_labelled_photos():
    """The measured default as a 1:N decision (benchmarks/dlib_threshold.py): every labelled single-face
    photo searched against the others with its identity left out scores below it; searched with its
    identity in, all but the documented mated probe score at or above it."""
    from gallery.embed import Photo, embed_photos, get_encoder

    photos = [Photo(p, str(p.relative_to(FACES)), p.parent.name) for p in sorted((FACES / "gallery").glob("*/*"))]
    photos += [Photo(FACES / path, path, who[0]) for path, who in labelled_probes() if len(who) == 1]
    embedded = [e for e in embed_photos(photos, get_encoder(), workers=2, progress=False) if e.n_faces == 1]
    x = np.stack([e.vectors[0] for e in embedded])
    who = np.array([e.photo.identity for e in embedded])
    s, same = x @ x.T, who[:, None] == who[None, :]
    np.fill_diagonal(s, -np.inf)
    t = MODEL_THRESHOLDS["dlib-resnet"].value
    nonmated_best = np.where(same, -np.inf, s).max(axis=1)
    mated_best = np.where(same, s, -np.inf).max(axis=1)
    assert len(x) == 23 and (nonmated_best < t).all()
    rejected = {e.photo.source for e, m in zip(embedded, mated_best) if np.isfinite(m) and m < t}
    assert rejected == REJECTED_AT_THE_DEFAULT


def test_two_face_photo_returns_both_people_with_their_boxes(built):
    (photo,) = built.search_images(FACES / "probes" / "kit_with_rose.jpg")
    assert sorted(f.identity for f in photo.faces) == ["kit_harington", "rose_leslie"]
    boxes = [f.box for f in photo.faces]
    assert boxes[0] != boxes[1] and all(r > l and b > t for l, t, r, b in boxes)


def test_batch_of_probes_is_one_result_per_photo_in_order(built, tmp_path):
    (tmp_path / "x.jpg").write_text("not an image")
    paths = [FACES / "misc" / "obama_small.jpg", tmp_path / "x.jpg", FACES / "misc" / "two_people.jpg"]
    out = built.search_images(paths, k=2, threshold=0.5)
    assert [Path(r.source).name for r in out] == ["obama_small.jpg", "x.jpg", "two_people.jpg"]
    assert out[1].faces == () and "x.jpg" in out[1].error
    assert [len(r.faces) for r in out] == [1, 0, 2]
    assert out[0].faces[0].result.threshold == 0.5 and out[0].faces[0].result.threshold_source == "call"


def test_search_images_equals_vector_search(built):
    (photo,) = built.search_images(FACES / "probes" / "obama1.jpg", k=5)
    from gallery.embed import embed_photos, Photo

    (e,) = embed_photos([Photo(FACES / "probes" / "obama1.jpg", "p")], built.encoder(), workers=0, progress=False)
    assert built.search(e.vectors, k=5)[0] == photo.faces[0].result


def test_add_photos_enrols_new_people_without_rebuilding(built, tmp_path):
    g = Gallery.from_photos(FACES / "gallery", tmp_path / "g", workers=0, progress=False)
    index_file = g.manifest.index.file
    (tmp_path / "new" / "lin_manuel_miranda").mkdir(parents=True)
    shutil.copy(FACES / "misc" / "lin-manuel-miranda.png", tmp_path / "new" / "lin_manuel_miranda" / "1.png")
    report = g.add_photos(tmp_path / "new", workers=0, progress=False)
    assert report["operation"] == "add" and report["summary"]["enrolled"] == 1
    assert "lin_manuel_miranda" in g.identities and len(g) == 10
    assert g.manifest.index.trained_on == 0 and g.manifest.index.file != index_file
    (photo,) = g.search_images(FACES / "misc" / "lin-manuel-miranda.png")
    assert photo.faces[0].identity == "lin_manuel_miranda"


def test_photos_from_another_model_are_refused(tmp_path):
    import torch

    from gallery.embed.iresnet import IResNet

    torch.save(IResNet((2, 2, 2, 2)).state_dict(), tmp_path / "r18.pth")
    one = tmp_path / "one" / "obama"
    one.mkdir(parents=True)
    shutil.copy(FACES / "gallery" / "obama" / "obama.jpg", one)
    g = Gallery.from_photos(tmp_path / "one", tmp_path / "g", workers=0, progress=False)
    with pytest.raises(ModelMismatchError, match="cannot be mixed in"):
        g.add_photos(tmp_path / "one", model=f"arcface-r18:{tmp_path / 'r18.pth'}", workers=0, progress=False)
    vectors_only = Gallery.from_vectors(np.eye(4, 128, dtype=np.float32), list("abcd"), tmp_path / "v", progress=False)
    with pytest.raises(ModelMismatchError, match="not photos; search it with vectors"):
        vectors_only.search_images(FACES / "misc" / "obama_small.jpg")


def test_build_refuses_an_existing_gallery_and_empty_input(built, tmp_path):
    with pytest.raises(GalleryError, match="already holds a gallery"):
        Gallery.from_photos(FACES / "gallery", built.root, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no photos found"):
        Gallery.from_photos(tmp_path / "empty", tmp_path / "g", progress=False)
    (tmp_path / "blank" / "nobody").mkdir(parents=True)
    (tmp_path / "blank" / "nobody" / "x.jpg").write_text("junk")
    with pytest.raises(InvalidInputError, match="no face was enrolled from 1 photo "):
        Gallery.from_photos(tmp_path / "blank", tmp_path / "g2", workers=0, progress=False)
    assert not (tmp_path / "g2" / "manifest.json").exists()


def test_faces_policy_all_and_single(tmp_path):
    (tmp_path / "p" / "couple").mkdir(parents=True)
    shutil.copy(FACES / "misc" / "two_people.jpg", tmp_path / "p" / "couple")
    shutil.copy(FACES / "misc" / "obama_small.jpg", tmp_path / "p" / "couple")
    g = Gallery.from_photos(tmp_path / "p", tmp_path / "all", faces="all", workers=0, progress=False)
    assert len(g) == 3
    assert g.last_report["summary"]["enrolled"] == 3
    g = Gallery.from_photos(tmp_path / "p", tmp_path / "single", faces="single", workers=0, progress=False)
    assert len(g) == 1 and g.last_report["summary"]["skipped"] == {"several faces": 1}


def test_remove_erases_the_identity_from_reports(tmp_path):
    g = Gallery.from_photos(FACES / "gallery", tmp_path / "g", workers=0, progress=False)
    g.remove("rose_leslie")
    text = (tmp_path / "g" / "report-000001.json").read_text()
    assert "rose_leslie" not in text and "kit_harington" in text
    assert not list((tmp_path / "g").glob("*.old"))


def test_overwrite_erases_the_replaced_gallerys_reports(tmp_path):
    g = Gallery.from_photos(FACES / "gallery", tmp_path / "g", workers=0, progress=False)
    assert [p.name for p in (tmp_path / "g").glob("report-*.json")] == ["report-000001.json"]
    Gallery.from_vectors(np.eye(4, 16, dtype=np.float32), list("abcd"), g.root, overwrite=True, progress=False)
    assert list((tmp_path / "g").glob("report-*.json")) == []
    one = tmp_path / "one" / "obama"
    one.mkdir(parents=True)
    shutil.copy(FACES / "gallery" / "obama" / "obama.jpg", one)
    g = Gallery.from_photos(tmp_path / "one", tmp_path / "g", overwrite=True, workers=0, progress=False)
    (report,) = (tmp_path / "g").glob("report-*.json")
    assert "rose_leslie" not in report.read_text() and g.identities == ["obama"]


def test_cli_build_then_query_with_the_default_gallery(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GALLERY_DIR", raising=False)
    runner = CliRunner()
    r = runner.invoke(main, ["build", str(FACES / "gallery"), "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "9 images, 9 faces, 9 enrolled" in r.output and (tmp_path / "gallery" / "manifest.json").is_file()
    r = runner.invoke(main, ["query", str(FACES / "probes" / "kit_with_rose.jpg"), str(FACES / "misc" / "lin-manuel-miranda.png"), "-k", "2"])
    assert r.exit_code == 0, r.output
    assert "kit_with_rose.jpg: 2 faces" in r.output and ": kit_harington" in r.output and ": rose_leslie" in r.output
    assert "lin-manuel-miranda.png: 1 face\n  face 1 at" in r.output and ": unknown" in r.output
    r = runner.invoke(main, ["query", str(FACES / "probes" / "obama1.jpg"), "--json"])
    row = json.loads(r.output)
    assert row["faces"][0]["identity"] == "obama" and len(row["faces"][0]["box"]) == 4


def test_cli_reports_bad_input_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("GALLERY_DIR", str(tmp_path / "nowhere"))
    r = CliRunner().invoke(main, ["query", str(FACES / "probes" / "obama1.jpg")])
    assert r.exit_code == 1 and "nowhere: no such gallery folder" in r.output
    r = CliRunner().invoke(main, ["build", str(FACES / "gallery"), "--model", "facenet"])
    assert r.exit_code == 1 and "unknown model 'facenet'" in r.output


CHILD = """
import sys
from gallery import Gallery
Gallery.from_photos(sys.argv[1], sys.argv[2], rows_per_shard=1, workers=1, progress=False)
"""


@pytest.mark.slow
def test_a_killed_build_resumes(tmp_path):
    """SIGKILL a real build once it has written a few one-row shards; the rerun finishes only the rest."""
    photos = copied_photos(FACES / "gallery", tmp_path / "photos", 4)  # 36 photos: the kill lands mid-build
    root = tmp_path / "g"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(photos), str(root)], stderr=subprocess.PIPE)
    interrupt_after_shards(child, root, 4, signal.SIGKILL, timeout=120)
    assert not (root / "manifest.json").exists()
    written = len(json.loads((root / "journal.json").read_text())["shards"])
    g = Gallery.from_photos(photos, root, rows_per_shard=1, workers=1, progress=False)
    summary = g.last_report["summary"]
    assert summary["resumed"] >= written >= 4 and summary["images"] == 36 and summary["enrolled"] == 36
    assert len(g) == 36 and sorted({e["source"] for e in g.last_report["sources"]}) == sorted(
        p.relative_to(photos).as_posix() for p in photos.rglob("*.jp*g"))
    # the resumed gallery answers like a clean one
    clean = Gallery.from_photos(photos, tmp_path / "clean", workers=1, progress=False)
    (a,), (b,) = g.search_images(FACES / "probes" / "obama1.jpg"), clean.search_images(FACES / "probes" / "obama1.jpg")
    assert a.faces[0].identity == b.faces[0].identity == "obama"
    assert abs(a.faces[0].result.best.score - b.faces[0].result.best.score) < 1e-5


@pytest.fixture(scope="module")
def probe_folder(tmp_path_factory):
    """The single-face labelled probe photos laid out <identity>/<photo>; the stranger under his own name."""
    root = tmp_path_factory.mktemp("probes")
    for path, who in labelled_probes():
        if len(who) == 1:
            name = "lin_manuel_miranda" if who == ["unknown"] else who[0]
            (root / name).mkdir(exist_ok=True)
            shutil.copy(FACES / path, root / name)
    return root


def test_thumbnails_are_the_enrolled_faces(built):
    from gallery.embed import FaceDetector

    ids, labels = built.records()
    det = FaceDetector("hog", upsample=2)
    for i in ids:
        thumb = built.thumbnail(int(i))
        assert thumb.shape == (64, 64, 3) and thumb.dtype == np.uint8
        assert len(det.detect(thumb)) == 1, "the crop holds the face"


def test_thumbnails_of_a_vector_gallery_are_none(tmp_path):
    g = Gallery.from_vectors(np.eye(4, 16, dtype=np.float32), list("abcd"), tmp_path / "v", progress=False)
    assert g.thumbnail(0) is None


def test_calibrate_and_eval_on_photo_probes(built, probe_folder, tmp_path):
    vectors, labels = built.embed_labelled_photos(probe_folder, workers=0, progress=False)
    assert len(vectors) == len(labels) == 14 and labels.count("lin_manuel_miranda") == 1
    root = tmp_path / "g"  # a copy: the shared gallery keeps its model-default threshold
    shutil.copytree(built.root, root)
    runner = CliRunner()
    r = runner.invoke(main, ["calibrate", str(root), "--probes", str(probe_folder), "--target-fpir", "0.5", "--allow-few-searches"])
    assert r.exit_code == 0, r.output
    assert "on 1 non-mated and 13 mated searches (probes), FNIR 0.0000" in r.output
    cal = Gallery.open(root).calibration
    assert cal.n_mated == 13 and cal.n_nonmated == 1 and cal.model == "dlib-resnet"
    r = runner.invoke(main, ["eval", str(root), "--probes", str(probe_folder), "-o", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    assert "rank-1 1.0000 (probes)" in r.output
    for name in ("similarity_grid.png", "embedding_map.png", "report.html", "metrics.json"):
        assert (tmp_path / "ev" / name).is_file()


def gallery_holds(root: Path, secrets: list[bytes]) -> list[bytes]:
    """Which of ``secrets`` occur anywhere in any file of the gallery folder."""
    blobs = [p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return [s for s in secrets if any(s in b for b in blobs)]


@pytest.mark.slow
def test_remove_leaves_no_byte_of_the_person_even_after_an_interrupted_add(tmp_path):
    """Scan every byte of the gallery for the label, the photo names and the float32 vectors of the removed
    person, in the committed files and in what a killed `gallery add` of more of his photos left behind."""
    root = tmp_path / "g"
    g = Gallery.from_photos(FACES / "gallery", root, workers=0, progress=False)
    ids, labels = g.records()
    secrets = [b"kit_harington", b"john1", b"john2"] + [v.tobytes() for v in g.vectors_of(ids[labels == "kit_harington"])]
    more = tmp_path / "more" / "kit_harington"
    more.mkdir(parents=True)
    for i in range(12):
        for p in (FACES / "gallery" / "kit_harington").iterdir():
            shutil.copy(p, more / f"{i}-{p.name}")
    child = subprocess.Popen([sys.executable, "-m", "gallery.cli", "add", str(more.parent), "-g", str(root), "--workers", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    journal, _ = interrupt_after_shards(child, root, 1, signal.SIGKILL, timeout=120)
    assert list(root.glob(".sources-*.jsonl")), "the killed add left its log of photo outcomes"
    for s in journal["shards"]:
        secrets += [v.tobytes() for v in np.load(root / s["vectors_file"])]
    assert gallery_holds(root, secrets) == secrets, "the scan must see every secret before the removal"

    r = CliRunner().invoke(main, ["remove", "kit_harington", "-g", str(root)])
    assert r.exit_code == 0, r.output
    assert gallery_holds(root, secrets) == []
    g = Gallery.open(root)
    g.verify()
    assert "kit_harington" not in g.identities and len(g) == 7
    (photo,) = g.search_images(FACES / "probes" / "obama1.jpg")
    assert photo.faces[0].identity == "obama"


@pytest.mark.slow
def test_a_photo_build_stopped_with_ctrl_c_resumes_where_it_stopped_and_says_so(tmp_path):
    # 90 photos, in one 100k-row shard: enough that the first checkpoint (2 s) comes before the last photo
    photos = copied_photos(FACES / "gallery", tmp_path / "photos", 10)
    root = tmp_path / "g"
    build = [sys.executable, "-m", "gallery.cli", "build", str(photos), "-o", str(root), "--workers", "1"]
    child = subprocess.Popen(build, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    journal, err = interrupt_after_shards(child, root, 1, signal.SIGINT, timeout=120)
    assert "interrupted: the gallery is as it was before this command; rerun it to resume" in err
    checkpointed = sum(s["rows"] for s in journal["shards"])
    rerun = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    done = [line for line in rerun.stderr.splitlines() if line.startswith("resuming: ")]
    assert len(done) == 1 and done[0].endswith(" of 90 photos already done"), rerun.stderr
    assert checkpointed <= int(done[0].split()[1]) < 90
    g = Gallery.open(root)
    assert len(g) == 90 and len(g.manifest.shards) == 1, "the checkpoints are merged into one shard at commit"
    g.verify()


def test_an_answer_explains_itself_margin_threshold_and_the_enrolled_photo_it_matched(built):
    (photo,) = built.search_images(FACES / "probes" / "kit_with_rose.jpg", k=3)
    for face in photo.faces:
        r = face.result
        assert r.margin == pytest.approx(r.matches[0].score - r.matches[1].score) and r.margin > 0
        best = r.matches[0]
        assert best.sources and best.sources[0].startswith(f"{best.identity}/"), best.sources
        d = face.to_dict()
        assert d["matches"][0]["source"] == best.sources[0] and d["margin"] == r.margin
        assert d["threshold_provenance"] == {"source": "model-default", "model": "dlib-resnet",
                                             "evidence": MODEL_THRESHOLDS["dlib-resnet"].evidence}
    r = CliRunner().invoke(main, ["query", str(FACES / "probes" / "obama1.jpg"), "-g", str(built.root), "-k", "2"])
    assert r.exit_code == 0, r.output
    assert "margin " in r.output and "(enrolled photo obama/" in r.output


# ---------------------------------------------------------------------- answers as they come, and what the terminal is told


STREAMED = [FACES / "misc" / "obama_small.jpg", FACES / "probes" / "kit_with_rose.jpg", FACES / "misc" / "lin-manuel-miranda.png"]


def test_answers_stream_one_photo_at_a_time_in_input_order(built, monkeypatch):
    from gallery.embed import pipeline

    read, detect = [], pipeline._detect
    monkeypatch.setattr(pipeline, "_detect", lambda photo: read.append(Path(photo.source).name) or detect(photo))
    answers = built.iter_search_images(STREAMED, k=2, workers=0)
    first = next(answers)
    assert read == ["obama_small.jpg"] and Path(first.source).name == "obama_small.jpg" and first.faces
    rest = list(answers)
    assert [Path(p.source).name for p in [first, *rest]] == ["obama_small.jpg", "kit_with_rose.jpg", "lin-manuel-miranda.png"]


def test_streamed_answers_equal_one_batched_vector_search(built):
    from gallery.embed import Photo, embed_photos

    streamed = [f.result for p in built.iter_search_images(STREAMED, k=3, workers=0) for f in p.faces]
    embedded = embed_photos([Photo(p, str(p)) for p in STREAMED], built.encoder(), workers=0, progress=False)
    batched = built.search(np.concatenate([e.vectors for e in embedded]), k=3)
    assert len(streamed) == len(batched) == 4
    for one, many in zip(streamed, batched):
        assert one.identity == many.identity
        assert [m.identity for m in one.matches] == [m.identity for m in many.matches]
        assert np.allclose([m.score for m in one.matches], [m.score for m in many.matches], atol=1e-5)


@pytest.fixture
def mixed_probes(tmp_path):
    """A face, a file that is not an image, and a photo without a face, in that order."""
    from PIL import Image

    folder = tmp_path / "probes"
    folder.mkdir()
    shutil.copy(FACES / "misc" / "obama_small.jpg", folder / "a.jpg")
    (folder / "b.jpg").write_text("not an image")
    Image.new("RGB", (200, 200), "white").save(folder / "c.png")
    return folder


def test_query_prints_each_answer_in_order_then_names_what_it_could_not_read(built, mixed_probes):
    a, b, c = (str(mixed_probes / n) for n in ("a.jpg", "b.jpg", "c.png"))
    r = CliRunner().invoke(main, ["query", str(mixed_probes), "-g", str(built.root), "-k", "1", "--workers", "0"])
    assert r.exit_code == 0, r.output
    heads = [line for line in r.stdout.splitlines() if not line.startswith(" ")]
    assert heads == [f"{a}: 1 face", f"{b}: not an image Pillow can read", f"{c}: no face found"]
    assert "reading probes: 3/3 (100%)" in r.stderr and "\r" not in r.stderr
    assert r.stderr.splitlines()[-1] == f"3 photos, 1 face; no face found in 1 photo ({c}); 1 photo unreadable ({b})"
    r = CliRunner().invoke(main, ["query", str(mixed_probes), "-g", str(built.root), "--json", "--quiet", "--workers", "0"])
    assert [json.loads(line)["source"] for line in r.stdout.splitlines()] == [a, b, c]
    assert "reading probes" not in r.stderr


def test_query_fails_when_no_probe_could_be_read(built, mixed_probes, tmp_path):
    b = mixed_probes / "b.jpg"
    r = CliRunner().invoke(main, ["query", str(b), "-g", str(built.root)])
    assert r.exit_code == 1
    assert r.stdout == f"{b}: not an image Pillow can read\n"
    assert r.stderr == f"Error: no probe photo could be read: 1 photo unreadable ({b})\n"
    (tmp_path / "none").mkdir()
    r = CliRunner().invoke(main, ["query", str(tmp_path / "none"), "-g", str(built.root)])
    assert r.exit_code == 1 and r.stderr == f"Error: no probe photo found in {tmp_path / 'none'}\n"


def test_build_names_the_photos_it_passed_over_and_a_second_build_names_the_flag(built, tmp_path):
    photos = tmp_path / "photos" / "obama"
    photos.mkdir(parents=True)
    shutil.copy(FACES / "misc" / "obama_small.jpg", photos / "small.jpg")
    (photos / "corrupt.jpg").write_bytes((FACES / "misc" / "obama_small.jpg").read_bytes()[:200])
    (photos / "notes.txt").write_text("not a photo")
    r = CliRunner().invoke(main, ["build", str(photos.parent), "-o", str(tmp_path / "g"), "--workers", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[:3] == [
        f"{tmp_path / 'g'}: 2 images, 1 face, 1 enrolled; skipped: 1 unreadable; 1 non-image file ignored",
        "  unreadable: obama/corrupt.jpg",
        "  not an image file: obama/notes.txt",
    ]
    assert r.stdout.splitlines()[3] == (f"{tmp_path / 'g'}: 1 record, 1 identity, model dlib-resnet; every photo's outcome "
                                        f"in {tmp_path / 'g' / 'report-000001.json'}")
    r = CliRunner().invoke(main, ["build", str(FACES / "gallery"), "-o", str(built.root)])
    assert r.exit_code == 1
    assert r.stderr == (f"Error: {built.root}: already holds a gallery; add to it with `gallery add` (Gallery.add_photos), "
                        "or replace it with `gallery build --overwrite` (overwrite=True)\n")
