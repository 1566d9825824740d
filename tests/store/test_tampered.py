"""A gallery's own files are untrusted: an edited or damaged one gives a one-line error naming the file and
the field, from the library and from the CLI alike, and nothing on disk changes, inside the gallery or out.

Each case edits one field of a real gallery's ``manifest.json`` (or a shard, the journal, an input file).
Write commands (add, remove, rebuild-index) are covered by their own tests; here only reads run.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import gallery
from gallery import CorruptGalleryError, Gallery, GalleryError, InvalidInputError
from gallery.calibration import Calibration, TailFit
from gallery.cli import main
from gallery.index.spec import KINDS, IndexSpec
from gallery.store import hdf5, manifest, read_labelled_vectors, read_manifest
from gallery.store.journal import read_journal
from gallery.store.manifest import INDEX_KINDS, INDEX_PARAMS, SHARD_FORMATS, Manifest
from gallery.store.shards import FORMATS, SHARD_DIR, ShardStore
from gallery.synthetic import synthetic_gallery

PRECIOUS = b"not a gallery file: must survive every case\n"


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Two small real galleries (Parquet and HDF5 shards: 60 vectors, 3 shards of 20, a flat index), built once."""
    data = synthetic_gallery(20, 3, 16, seed=3)
    base = tmp_path_factory.mktemp("templates")
    for fmt in FORMATS:
        Gallery.from_vectors(data.vectors, data.identities, base / fmt, shard_format=fmt, rows_per_shard=20, progress=False)
    np.save(base / "queries.npy", data.vectors[:4])
    return base


@pytest.fixture
def root(templates, tmp_path):
    """A fresh copy of the Parquet gallery at ``tmp_path/g``, next to ``tmp_path/outside/precious.txt``."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "precious.txt").write_bytes(PRECIOUS)
    shutil.copytree(templates / "parquet", tmp_path / "g")
    return tmp_path / "g"


@pytest.fixture
def hdf5_root(templates, tmp_path):
    shutil.copytree(templates / "hdf5", tmp_path / "h")
    return tmp_path / "h"


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder``: a file's sha256, a symlink's target (never followed)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def edit_manifest(root: Path, change) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def calibration_json() -> dict:
    """What `gallery calibrate` stores in ``thresholds.open_set``."""
    tail = TailFit(u=0.3, xi=-0.1, sigma=0.05, zeta=0.01, exceedances=40, identities=20)
    return Calibration(value=0.42, target_fpir=0.01, achieved_fpir=0.01, fnir=0.1, model="external",
                       gallery_identities=20, n_mated=10, n_nonmated=40, protocol="probes", tail=tail,
                       created=1.0).to_json()


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, cwd: Path, process: bool = False) -> CliResult:
    """``gallery ARGS``: in this process through click's runner (an exception that escapes the CLI's
    error handling is reported as a traceback), or with ``process`` in a child process."""
    if process:
        env = {**os.environ, "PYTHONPATH": str(Path(gallery.__file__).parent.parent)}
        done = subprocess.run([sys.executable, "-m", "gallery.cli", *args], capture_output=True, text=True,
                              cwd=cwd, env=env, timeout=120)
        return CliResult(done.returncode, done.stdout, done.stderr)
    result = CliRunner().invoke(main, list(args))
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(result.exception))
    return CliResult(result.exit_code, result.stdout, stderr)


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def assert_one_line(message: str, *fragments: str) -> None:
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# ----------------------------------------------------------------------- the manifest: one field per case


def setter(*path, value):
    """An edit that sets ``manifest[path[0]][path[1]]... = value`` (``value(manifest)`` if callable)."""
    def change(m):
        obj = m
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value(m) if callable(value) else value
    return change


def deleter(*path):
    def change(m):
        obj = m
        for key in path[:-1]:
            obj = obj[key]
        del obj[path[-1]]
    return change


def with_open_set(change=lambda c: None):
    """Store a valid calibration, then apply ``change`` to it."""
    def edit(m):
        cal = calibration_json()
        change(cal)
        m["thresholds"]["open_set"] = cal
    return edit


OUTSIDE = "../outside/precious.txt"

#: (case id, edit of the manifest, what the one-line message must contain)
MANIFEST_CASES = [
    ("next_id-below-last-shard", setter("next_id", value=lambda m: m["shards"][-1]["last_id"]),
     "next_id is 59, but shards[2] holds ids up to 59; next_id must exceed every shard's last_id"),
    ("next_id-zero", setter("next_id", value=0), "next_id is 0, but shards[2] holds ids up to 59"),
    ("next_id-text", setter("next_id", value="60"), "next_id is '60', expected an integer >= 0"),
    ("next_id-missing", deleter("next_id"), "next_id is missing"),
    ("rows_per_shard-zero", setter("rows_per_shard", value=0), "rows_per_shard is 0, expected an integer >= 1"),
    ("rows_per_shard-negative", setter("rows_per_shard", value=-20), "rows_per_shard is -20, expected an integer >= 1"),
    ("rows_per_shard-float", setter("rows_per_shard", value=20.5), "rows_per_shard is 20.5, expected an integer >= 1"),
    ("rows_per_shard-text", setter("rows_per_shard", value="20"), "rows_per_shard is '20', expected an integer >= 1"),
    ("rows_per_shard-bool", setter("rows_per_shard", value=True), "rows_per_shard is True, expected an integer >= 1"),
    ("dim-zero", setter("model", "dim", value=0), "model.dim is 0, expected an integer >= 1"),
    ("dim-text", setter("model", "dim", value="16"), "model.dim is '16', expected an integer >= 1"),
    ("model-name-number", setter("model", "name", value=7), "model.name is 7, expected a string"),
    ("model-not-object", setter("model", value="external"), "model is 'external', expected a JSON object"),
    ("shard_format-unknown", setter("shard_format", value="csv"), "shard_format is 'csv', expected one of parquet, hdf5"),
    ("generation-negative", setter("generation", value=-1), "generation is -1, expected an integer >= 0"),
    ("next_file-text", setter("next_file", value="4"), "next_file is '4', expected an integer >= 0"),
    ("metric-other", setter("metric", value="l2"), "metric is 'l2', expected 'cosine'"),
    ("created-text", setter("created", value="yesterday"), "created is 'yesterday', expected a finite number"),
    # shards
    ("shards-not-list", setter("shards", value={}), "shards is {}, expected a list"),
    ("shard-not-object", setter("shards", 1, value="shards/shard-000001.parquet"),
     "shards[1] is 'shards/shard-000001.parquet', expected a JSON object"),
    ("shard-rows-zero", setter("shards", 1, "rows", value=0), "shards[1].rows is 0, expected an integer >= 1"),
    ("shard-rows-text", setter("shards", 1, "rows", value="20"), "shards[1].rows is '20', expected an integer >= 1"),
    ("shard-rows-more-than-ids", setter("shards", 1, "rows", value=21), "shards[1].rows is 21, expected at most 20 (ids 20..39)"),
    ("shard-first-after-last", setter("shards", 1, "first_id", value=45),
     "shards[1].last_id is 39, expected an integer >= first_id (45)"),
    ("shard-first-negative", setter("shards", 0, "first_id", value=-1), "shards[0].first_id is -1, expected an integer >= 0"),
    ("shard-last-null", setter("shards", 2, "last_id", value=None), "shards[2].last_id is None, expected an integer >= 0"),
    ("shard-sha256-number", setter("shards", 1, "sha256", value=123), "shards[1].sha256 is 123, expected a sha256 digest"),
    ("shard-sha256-short", setter("shards", 1, "vectors_sha256", value="abc"), "shards[1].vectors_sha256 is 'abc', expected a sha256"),
    ("shard-sha256-missing", deleter("shards", 0, "sha256"), "shards[0].sha256 is missing"),
    ("shard-unknown-field", setter("shards", 0, "owner", value="x"), "shards[0].owner is not a field of shards[0]"),
    ("shard-ids-overlap", setter("shards", 1, "first_id", value=19), "shards[1] ids 19..39 overlap shards[0] ids 0..19"),
    ("shard-ids-repeat", setter("shards", 2, value=lambda m: {**m["shards"][0], "file": "shards/x.parquet",
                                                              "vectors_file": "shards/x.npy"}),
     "shards[2] ids 0..19 overlap shards[0] ids 0..19"),
    ("shard-file-twice", setter("shards", 1, "file", value="shards/shard-000000.parquet"),
     "shards[1].file 'shards/shard-000000.parquet' is also shards[0].file"),
    ("shard-file-in-index-folder", setter("shards", 1, "file", value="index/index-000003.faiss"),
     "shards[1].file 'index/index-000003.faiss' is not a file of the gallery's shards/ folder"),
    ("shard-file-number", setter("shards", 1, "file", value=5), "shards[1].file 5 is not a file name"),
    # the index
    ("index-params-unknown-key", setter("index", "params", "nprob", value=8), "index.params.nprob is not a field of index.params"),
    ("index-params-text-value", setter("index", "params", "nprobe", value="8"), "index.params.nprobe is '8', expected an integer >= 0"),
    ("index-params-list", setter("index", "params", value=[16]), "index.params is [16], expected a JSON object"),
    ("index-kind-unknown", setter("index", "kind", value="hnsw"), "index.kind is 'hnsw', expected one of flat, ivfpq"),
    ("index-kind-auto", setter("index", "kind", value="auto"), "index.kind is 'auto', expected one of flat, ivfpq"),
    ("index-ntotal-negative", setter("index", "ntotal", value=-1), "index.ntotal is -1, expected an integer >= 0"),
    ("index-trained_on-text", setter("index", "trained_on", value="0"), "index.trained_on is '0', expected an integer >= 0"),
    ("index-unknown-field", setter("index", "nprobe", value=8), "index.nprobe is not a field of index"),
    ("index-not-object", setter("index", value="index/index-000003.faiss"), "index is 'index/index-000003.faiss', expected a JSON object"),
    # the calibrated open-set threshold
    ("open_set-value-text", with_open_set(lambda c: c.update(value="high")),
     "thresholds.open_set.value is 'high', expected a finite number"),
    ("open_set-value-list", with_open_set(lambda c: c.update(value=[0.4])), "thresholds.open_set.value is [0.4], expected a finite number"),
    ("open_set-gallery_identities-float", with_open_set(lambda c: c.update(gallery_identities=2.5)),
     "thresholds.open_set.gallery_identities is 2.5, expected an integer >= 0"),
    ("open_set-missing-field", with_open_set(lambda c: c.pop("target_fpir")), "thresholds.open_set.target_fpir is missing"),
    ("open_set-unknown-field", with_open_set(lambda c: c.update(margin=0.1)), "thresholds.open_set.margin is not a field"),
    ("open_set-fnir-text", with_open_set(lambda c: c.update(fnir="n/a")), "thresholds.open_set.fnir is 'n/a', expected a finite number or null"),
    ("open_set-tail-field", with_open_set(lambda c: c["tail"].update(xi="x")), "thresholds.open_set.tail.xi is 'x', expected a finite number"),
    ("open_set-tail-list", with_open_set(lambda c: c.update(tail=[1, 2])), "thresholds.open_set.tail is [1, 2], expected a JSON object"),
    ("open_set-not-object", setter("thresholds", "open_set", value="0.4"), "thresholds.open_set is '0.4', expected a JSON object"),
    ("thresholds-not-object", setter("thresholds", value=[]), "thresholds is [], expected a JSON object"),
]

#: Every manifest field that names a file, each given a name that leaves the gallery two ways.
FILE_FIELDS = [("shards", 1, "file"), ("shards", 1, "vectors_file"), ("index", "file")]


def _field_name(path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


#: (field path, how its name leaves the gallery): ``..`` up to a sibling folder, or an absolute path.
OUTSIDE_NAME_CASES = [pytest.param(path, how, id=f"{_field_name(path)}-{how}") for path in FILE_FIELDS for how in ("dotdot", "absolute")]


def leave_gallery(root: Path, path, how: str) -> str:
    """Point manifest field ``path`` out of the gallery at ``outside/precious.txt``; the expected message."""
    name = OUTSIDE if how == "dotdot" else str(root.parent / "outside" / "precious.txt")
    edit_manifest(root, setter(*path, value=name))
    return f"{root / 'manifest.json'}: {_field_name(path)} {name!r} " + (
        "leaves the gallery folder" if how == "dotdot" else "is an absolute path")


@pytest.fixture(params=[pytest.param(c[1:], id=c[0]) for c in MANIFEST_CASES])
def tampered(request, root):
    """``(root, expected message fragment)`` for a gallery whose manifest has one bad field."""
    change, expected = request.param
    edit_manifest(root, change)
    return root, expected


def test_a_tampered_manifest_field_is_named_in_one_line(tampered):
    root, expected = tampered
    before = snapshot(root.parent)
    with pytest.raises(CorruptGalleryError) as e:
        read_manifest(root)
    assert_one_line(str(e.value), f"{root / 'manifest.json'}: {expected}", "the file was edited or damaged")
    with pytest.raises(CorruptGalleryError, match="the file was edited or damaged"):
        Gallery.open(root)
    assert snapshot(root.parent) == before


@pytest.mark.parametrize("command", ["info", "search-vectors"])
def test_the_cli_reports_a_tampered_manifest_field_in_one_line(tampered, templates, command):
    root, expected = tampered
    before = snapshot(root.parent)
    args = ["search-vectors", str(templates / "queries.npy")] if command == "search-vectors" else ["info"]
    assert_one_line_error(cli(*args, "-g", str(root), cwd=root.parent), str(root / "manifest.json"), expected)
    assert snapshot(root.parent) == before


@pytest.mark.parametrize("path, how", OUTSIDE_NAME_CASES)
def test_a_file_name_that_leaves_the_gallery_is_refused_and_touches_nothing(root, path, how):
    expected = leave_gallery(root, path, how)
    before = snapshot(root.parent)
    with pytest.raises(CorruptGalleryError) as e:
        Gallery.open(root)
    assert_one_line(str(e.value), expected)
    assert snapshot(root.parent) == before
    assert (root.parent / "outside" / "precious.txt").read_bytes() == PRECIOUS


@pytest.mark.parametrize("command", ["info", "search-vectors"])
@pytest.mark.parametrize("path, how", OUTSIDE_NAME_CASES)
def test_the_cli_refuses_a_file_name_that_leaves_the_gallery(root, templates, path, how, command):
    expected = leave_gallery(root, path, how)
    before = snapshot(root.parent)
    args = ["search-vectors", str(templates / "queries.npy")] if command == "search-vectors" else ["info", "--verify"]
    assert_one_line_error(cli(*args, "-g", str(root), cwd=root.parent), expected)
    assert snapshot(root.parent) == before
    assert (root.parent / "outside" / "precious.txt").read_bytes() == PRECIOUS


@pytest.mark.parametrize("path", FILE_FIELDS, ids=_field_name)
def test_a_file_name_that_is_a_symlink_out_of_the_gallery_is_refused(root, path):
    link = root / ("index" if path[0] == "index" else SHARD_DIR) / "link.bin"
    link.symlink_to(root.parent / "outside" / "precious.txt")
    edit_manifest(root, setter(*path, value=str(link.relative_to(root))))
    before = snapshot(root.parent)
    with pytest.raises(CorruptGalleryError) as e:
        read_manifest(root)
    assert_one_line(str(e.value), f"{_field_name(path)} '{link.relative_to(root)}' leaves the gallery folder")
    assert snapshot(root.parent) == before


def test_the_untampered_gallery_reads_and_answers(root, templates):
    """The cases above fail because of their one edit: the same gallery unedited opens and searches."""
    g = Gallery.open(root)
    assert len(g) == 60 and len(g.search(np.load(templates / "queries.npy"), k=1)) == 4


def test_a_valid_calibration_is_read_back(root):
    edit_manifest(root, with_open_set())
    assert Gallery.open(root).calibration == Calibration.from_json(calibration_json())


def test_the_manifest_checks_against_the_parameters_kinds_and_folders_the_writers_use(root):
    """store/manifest.py keeps its own copies (importing gallery.index there would be circular)."""
    assert set(INDEX_PARAMS) == set(IndexSpec("ivfpq", 8).params())
    assert set(INDEX_KINDS) == set(KINDS) - {"auto"}
    assert set(SHARD_FORMATS) == set(FORMATS) and manifest.SHARD_DIR == SHARD_DIR
    assert read_manifest(root).index.file.startswith(f"{manifest.INDEX_DIR}/")


def test_without_a_folder_file_names_are_still_checked_for_shape(root):
    data = json.loads((root / "manifest.json").read_text())
    assert Manifest.from_json(data).count == 60
    data["index"]["file"] = OUTSIDE
    with pytest.raises(CorruptGalleryError, match=r"manifest.json: index.file '../outside/precious.txt' leaves the gallery folder"):
        Manifest.from_json(data)
    data["index"]["file"] = "/etc/passwd"
    with pytest.raises(CorruptGalleryError, match=r"index.file '/etc/passwd' is an absolute path"):
        Manifest.from_json(data)
    data["index"]["file"] = "shards/shard-000000.parquet"
    with pytest.raises(CorruptGalleryError, match=r"index.file 'shards/shard-000000.parquet' is not a file of the gallery's index/"):
        Manifest.from_json(data)


# ------------------------------------------------------------------------------------------- shard files


def replace_parquet_shard(root: Path, change) -> Path:
    path = root / read_manifest(root).shards[1].file
    pq.write_table(change(pq.read_table(path)), path)
    return path


PARQUET_SHARD_CASES = [
    ("identity-missing", lambda t: t.drop_columns(["identity"]), "no column 'identity'"),
    ("id-missing", lambda t: t.drop_columns(["id"]), "no column 'id'"),
    ("id-as-text", lambda t: t.set_column(0, "id", pa.array([str(i) for i in range(20)])), "column 'id' has type string, expected integers"),
    ("identity-as-numbers", lambda t: t.set_column(1, "identity", pa.array(np.arange(20.0))),
     "column 'identity' has type double, expected strings"),
    ("identity-nulls", lambda t: t.set_column(1, "identity", pa.array([None] * 20, pa.string())), "column 'identity' has 20 missing values"),
]


@pytest.mark.parametrize("change, expected", [pytest.param(*c[1:], id=c[0]) for c in PARQUET_SHARD_CASES])
def test_a_parquet_shard_with_a_bad_column_is_named(root, change, expected):
    path = replace_parquet_shard(root, change)
    before = snapshot(root.parent)
    with pytest.raises(CorruptGalleryError) as e:
        Gallery.open(root)
    assert_one_line(str(e.value), f"{path}: cannot read Parquet shard: {expected}")
    assert snapshot(root.parent) == before


def test_the_cli_names_a_parquet_shard_with_a_bad_column(root):
    path = replace_parquet_shard(root, PARQUET_SHARD_CASES[0][1])
    before = snapshot(root.parent)
    assert_one_line_error(cli("info", "-g", str(root), cwd=root.parent), str(path), "no column 'identity'")
    assert snapshot(root.parent) == before


def test_a_parquet_shard_whose_vectors_are_text_is_named(root):
    path = replace_parquet_shard(root, lambda t: t.set_column(5, "vector", pa.array(["v"] * 20)))
    with pytest.raises(CorruptGalleryError) as e:
        ShardStore(root, "parquet").read(read_manifest(root).shards[1])
    assert_one_line(str(e.value), f"{path}: cannot read Parquet shard: column 'vector' has type string, expected lists of floats")


def rewrite_hdf5_shard(root: Path, name: str, make) -> Path:
    """Replace dataset ``name`` of the second shard with ``make(file)``."""
    path = root / read_manifest(root).shards[1].file
    with h5py.File(path, "a") as f:
        del f[name]
        make(f, name)
    return path


HDF5_SHARD_CASES = [
    ("vector-is-a-group", "vector", lambda f, n: f.create_group(n), "'vector' is an HDF5 group, not a dataset"),
    ("vector-1d", "vector", lambda f, n: f.create_dataset(n, data=np.zeros(20, np.float32)),
     "dataset 'vector' has shape (20,) and dtype float32, expected (n, d) float"),
    ("vector-text", "vector", lambda f, n: f.create_dataset(n, data=np.array([[b"a"]] * 20)),
     "dataset 'vector' has shape (20, 1) and dtype |S1, expected (n, d) float"),
    ("vector-short", "vector", lambda f, n: f.create_dataset(n, data=np.zeros((19, 16), np.float32)),
     "dataset 'vector' has 19 rows, but 'id' has 20"),
    ("identity-is-a-group", "identity", lambda f, n: f.create_group(n), "'identity' is an HDF5 group, not a dataset"),
    ("identity-2d", "identity", lambda f, n: f.create_dataset(n, data=np.array([[b"a", b"b"]] * 20)),
     "dataset 'identity' has shape (20, 2) and dtype |S1, expected (n,) text"),
    ("identity-not-utf8", "identity", lambda f, n: f.create_dataset(n, data=np.array([b"\xff\xfe"] * 20)),
     "dataset 'identity' row 0 holds text that is not UTF-8 (invalid start byte at byte 0)"),
    ("id-float", "id", lambda f, n: f.create_dataset(n, data=np.arange(20.0)),
     "dataset 'id' has shape (20,) and dtype float64, expected (n,) integer"),
    ("id-missing", "id", lambda f, n: None, "no dataset 'id'"),
]


@pytest.mark.parametrize("name, make, expected", [pytest.param(*c[1:], id=c[0]) for c in HDF5_SHARD_CASES])
def test_an_hdf5_shard_with_a_bad_dataset_is_named(hdf5_root, name, make, expected):
    path = rewrite_hdf5_shard(hdf5_root, name, make)
    before = snapshot(hdf5_root)
    for read in (lambda: hdf5.read_records(path), lambda: ShardStore(hdf5_root, "hdf5").read(read_manifest(hdf5_root).shards[1])):
        with pytest.raises(CorruptGalleryError) as e:
            read()
        assert_one_line(str(e.value), f"{path}: {expected}")
    assert snapshot(hdf5_root) == before


def test_the_cli_names_an_hdf5_shard_whose_labels_are_a_group(hdf5_root):
    path = rewrite_hdf5_shard(hdf5_root, "identity", lambda f, n: f.create_group(n))
    before = snapshot(hdf5_root)
    assert_one_line_error(cli("info", "-g", str(hdf5_root), cwd=hdf5_root.parent), f"{path}: 'identity' is an HDF5 group")
    assert snapshot(hdf5_root) == before


# ------------------------------------------------------------------------------------------- the journal


def write_journal_json(root: Path, change) -> Path:
    m = read_manifest(root)
    journal = {"operation": "enrol", "fingerprint": "f" * 32, "base_generation": m.generation, "next_file": m.next_file,
               "shards": [dataclasses.asdict(s) for s in m.shards[:2]], "trained_index": "index/trained-000009.faiss"}
    change(journal)
    path = root / "journal.json"
    path.write_text(json.dumps(journal))
    return path


JOURNAL_CASES = [
    ("shard-file-dotdot", setter("shards", 0, "file", value=OUTSIDE), f"shards[0].file '{OUTSIDE}' leaves the gallery folder"),
    ("shard-file-absolute", setter("shards", 0, "file", value="/tmp/outside/precious.txt"),
     "shards[0].file '/tmp/outside/precious.txt' is an absolute path"),
    ("vectors_file-dotdot", setter("shards", 1, "vectors_file", value=OUTSIDE), f"shards[1].vectors_file '{OUTSIDE}' leaves"),
    ("vectors_file-absolute", setter("shards", 1, "vectors_file", value="/tmp/outside/precious.txt"),
     "shards[1].vectors_file '/tmp/outside/precious.txt' is an absolute path"),
    ("trained_index-dotdot", setter("trained_index", value=OUTSIDE), f"trained_index '{OUTSIDE}' leaves the gallery folder"),
    ("trained_index-absolute", setter("trained_index", value="/tmp/outside/precious.txt"),
     "trained_index '/tmp/outside/precious.txt' is an absolute path"),
    ("trained_index-in-shards", setter("trained_index", value="shards/shard-000000.parquet"),
     "trained_index 'shards/shard-000000.parquet' is not a file of the gallery's index/ folder"),
    ("shard-rows-text", setter("shards", 0, "rows", value="20"), "shards[0].rows is '20', expected an integer >= 1"),
    ("shards-missing", deleter("shards"), "shards is missing"),
    ("next_file-negative", setter("next_file", value=-1), "next_file is -1, expected an integer >= 0"),
]


@pytest.mark.parametrize("change, expected", [pytest.param(*c[1:], id=c[0]) for c in JOURNAL_CASES])
def test_a_journal_with_a_bad_field_is_refused_not_trusted(root, change, expected):
    """The journal decides which files a resumed write keeps and erases: a bad one must stop it."""
    path = write_journal_json(root, change)
    before = snapshot(root.parent)
    with pytest.raises(CorruptGalleryError) as e:
        read_journal(root)
    assert_one_line(str(e.value), f"{path}: {expected}")
    assert snapshot(root.parent) == before


def test_a_sound_journal_reads_back(root):
    write_journal_json(root, lambda j: None)
    journal = read_journal(root)
    assert journal.shards == read_manifest(root).shards[:2] and journal.trained_index == "index/trained-000009.faiss"


@pytest.mark.parametrize("text", ['{"operation": "enr', "", "\xff"])
def test_a_torn_journal_is_ignored(root, text):
    """A journal that is not JSON names no file to keep: the interrupted run starts over."""
    (root / "journal.json").write_text(text, encoding="latin-1")
    assert read_journal(root) is None


# --------------------------------------------------------------------------- input files of import-vectors


def hdf5_input(tmp_path: Path, vector=None, identity=None) -> Path:
    """An HDF5 embeddings file: 6 vectors of d = 16 and labels, either replaced by a ``make(file, name)``."""
    path = tmp_path / "input.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for name, make, default in (("vector", vector, rng.standard_normal((6, 16)).astype(np.float32)),
                                    ("identity", identity, np.array([b"a", b"b", b"c"] * 2))):
            if make is None:
                f.create_dataset(name, data=default)
            else:
                make(f, name)
    return path


def npy_input(tmp_path: Path, labels: bytes, suffix: str = ".txt") -> tuple[Path, Path]:
    np.save(tmp_path / "input.npy", np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32))
    (tmp_path / f"labels{suffix}").write_bytes(labels)
    return tmp_path / "input.npy", tmp_path / f"labels{suffix}"


IMPORT_CASES = [
    ("hdf5-vector-group", lambda p: (hdf5_input(p, vector=lambda f, n: f.create_group(n)), None),
     "input.h5: 'vector' is an HDF5 group, not a dataset"),
    ("hdf5-vector-1d", lambda p: (hdf5_input(p, vector=lambda f, n: f.create_dataset(n, data=np.zeros(6))), None),
     "input.h5: dataset 'vector' has shape (6,) and dtype float64, expected (n, d) float or integer"),
    ("hdf5-vector-text", lambda p: (hdf5_input(p, vector=lambda f, n: f.create_dataset(n, data=np.array([[b"x"] * 16] * 6))), None),
     "input.h5: dataset 'vector' has shape (6, 16) and dtype |S1"),
    ("hdf5-identity-group", lambda p: (hdf5_input(p, identity=lambda f, n: f.create_group(n)), None),
     "input.h5: 'identity' is an HDF5 group, not a dataset"),
    ("hdf5-identity-2d", lambda p: (hdf5_input(p, identity=lambda f, n: f.create_dataset(n, data=np.zeros((6, 2)))), None),
     "input.h5: dataset 'identity' has shape (6, 2) and dtype float64, expected (n,) text or integer"),
    ("hdf5-identity-short", lambda p: (hdf5_input(p, identity=lambda f, n: f.create_dataset(n, data=np.array([b"a"] * 5))), None),
     "input.h5: dataset 'identity' has 5 rows, but 'vector' has 6"),
    ("hdf5-identity-not-utf8", lambda p: (hdf5_input(p, identity=lambda f, n: f.create_dataset(n, data=np.array([b"\xe9t\xe9"] * 6))), None),
     "input.h5: dataset 'identity' row 0 holds text that is not UTF-8 (invalid continuation byte at byte 0)"),
    ("labels-txt-latin1", lambda p: npy_input(p, "anna\nbob\nren\xe9e\n".encode("latin-1")),
     "labels.txt: not UTF-8 text: byte 12 (line 3) is 0xe9; save the file as UTF-8"),
    ("labels-csv-utf16", lambda p: npy_input(p, "identity\na\nb\nc\n".encode("utf-16"), ".csv"),
     "labels.csv: not UTF-8 text: byte 0 (line 1) is 0xff"),
]


@pytest.mark.parametrize("make, expected", [pytest.param(*c[1:], id=c[0]) for c in IMPORT_CASES])
def test_a_bad_input_file_is_named_in_one_line(tmp_path, make, expected):
    source, labels = make(tmp_path)
    with pytest.raises(InvalidInputError) as e:
        read_labelled_vectors(source, labels=labels)
    assert_one_line(str(e.value), f"{tmp_path}/{expected}")


@pytest.mark.parametrize("make, expected", [pytest.param(*c[1:], id=c[0]) for c in IMPORT_CASES])
def test_import_vectors_names_a_bad_input_file_and_leaves_the_gallery_alone(root, make, expected):
    inputs = root.parent / "inputs"
    inputs.mkdir()
    source, labels = make(inputs)
    before = snapshot(root.parent)
    for gallery_dir in (root, root.parent / "new"):
        args = ["import-vectors", str(source), "-g", str(gallery_dir)] + (["--labels", str(labels)] if labels else [])
        assert_one_line_error(cli(*args, cwd=root.parent), f"{inputs}/{expected}")
        assert snapshot(root.parent) == before and not (root.parent / "new").exists()


def test_every_error_here_is_a_gallery_error():
    """Callers catch GalleryError; the CLI turns it into its one-line ``Error:``."""
    assert issubclass(CorruptGalleryError, GalleryError) and issubclass(InvalidInputError, GalleryError)


# ------------------------------------------------------------------- write commands on a tampered gallery


WRITE_COMMANDS = {
    "add": lambda root, t: ["import-vectors", str(t / "enrol.parquet"), "-g", str(root)],
    "replace": lambda root, t: ["import-vectors", str(t / "enrol.parquet"), "-g", str(root), "--replace"],
    "remove": lambda root, t: ["remove", "id-00001", "-g", str(root)],
    "rebuild-index": lambda root, t: ["rebuild-index", "-g", str(root)],
    "calibrate": lambda root, t: ["calibrate", "-g", str(root)],
}

#: Tampering that a write would once have acted on: erasing or overwriting what the names point at.
WRITE_CASES = [
    ("index-file-dotdot", setter("index", "file", value=OUTSIDE), f"index.file {OUTSIDE!r} leaves the gallery folder"),
    ("shard-file-dotdot", setter("shards", 0, "file", value=OUTSIDE), f"shards[0].file {OUTSIDE!r} leaves the gallery folder"),
    ("vectors-file-absolute", setter("shards", 1, "vectors_file", value="/etc/hostname"),
     "shards[1].vectors_file '/etc/hostname' is an absolute path"),
    ("next_id-lowered", setter("next_id", value=10), "next_id is 10, but shards[2] holds ids up to 59"),
    ("rows_per_shard-zero", setter("rows_per_shard", value=0), "rows_per_shard is 0"),
    ("shard-entry-dropped", lambda m: m["shards"].pop(0), "index.ntotal is 60 but the shards hold 40 records"),
]


@pytest.fixture(scope="module")
def enrol_file(templates):
    data = synthetic_gallery(5, 2, 16, seed=9)
    from gallery.store import write_labelled_vectors

    write_labelled_vectors(templates / "enrol.parquet", data.vectors, data.identities)
    return templates / "enrol.parquet"


@pytest.mark.parametrize("command", sorted(WRITE_COMMANDS))
@pytest.mark.parametrize("change, expected", [pytest.param(c[1], c[2], id=c[0]) for c in WRITE_CASES])
def test_a_write_on_a_tampered_gallery_is_refused_and_touches_nothing(root, templates, enrol_file, change, expected,
                                                                       command):
    edit_manifest(root, change)
    (root / "shards" / "stray.npy").symlink_to(root.parent / "outside" / "precious.txt")  # erased as a stray, never followed
    before = snapshot(root.parent)
    assert_one_line_error(cli(*WRITE_COMMANDS[command](root, templates), cwd=root.parent), expected)
    assert snapshot(root.parent) == before
    assert (root.parent / "outside" / "precious.txt").read_bytes() == PRECIOUS


def test_a_symlink_planted_in_the_shards_folder_is_unlinked_and_its_target_left_alone(root, templates, enrol_file):
    (root / "shards" / "shard-000099.vectors.npy").symlink_to(root.parent / "outside" / "precious.txt")
    result = cli(*WRITE_COMMANDS["add"](root, templates), cwd=root.parent)
    assert result.returncode == 0, result.stderr
    assert not (root / "shards" / "shard-000099.vectors.npy").is_symlink()
    assert (root.parent / "outside" / "precious.txt").read_bytes() == PRECIOUS


def test_a_journal_naming_a_file_outside_the_gallery_stops_the_resume(root, templates, enrol_file):
    (root / "journal.json").write_text(json.dumps({
        "operation": "enrolment", "fingerprint": "x", "base_generation": 1, "next_file": 9,
        "shards": [], "trained_index": OUTSIDE}))
    before = snapshot(root.parent)
    assert_one_line_error(cli(*WRITE_COMMANDS["add"](root, templates), cwd=root.parent),
                          f"trained_index {OUTSIDE!r} leaves the gallery folder")
    assert snapshot(root.parent) == before


@pytest.mark.parametrize("command", ["info", "remove"])
def test_the_installed_command_answers_a_tampered_gallery_in_one_line(root, templates, command):
    """The same as above through a real child process: its exit code and its whole stderr."""
    edit_manifest(root, setter("index", "params", "nprob", value=8))
    args = ["info", "--verify"] if command == "info" else ["remove", "id-00001"]
    before = snapshot(root.parent)
    assert_one_line_error(cli(*args, "-g", str(root), cwd=root.parent, process=True),
                          "index.params.nprob is not a field of index.params")
    assert snapshot(root.parent) == before


@pytest.mark.parametrize("content, expected", [
    (b"", "cannot memory-map shard vectors (the file is empty or truncated)"),
    (b"\x93NUMPY garbage", "cannot memory-map shard vectors"),
])
@pytest.mark.parametrize("command", ["info", "search-vectors"])
def test_a_damaged_vectors_file_is_named_in_one_line_not_aborted(root, templates, content, expected, command):
    """An empty .vectors.npy once made numpy raise EOFError, which click reports as a bare `Aborted!`."""
    (root / "shards" / "shard-000001.vectors.npy").write_bytes(content)
    args = ["search-vectors", str(templates / "queries.npy")] if command == "search-vectors" else ["info"]
    before = snapshot(root.parent)
    assert_one_line_error(cli(*args, "-g", str(root), cwd=root.parent), "shard-000001.vectors.npy: " + expected)
    assert snapshot(root.parent) == before
