"""The `gallery` command: each subcommand on real files, its output, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from gallery import Gallery
from gallery.cli import main
from gallery.store.imports import write_labelled_vectors
from gallery.synthetic import synthetic_gallery, synthetic_probes


@pytest.fixture(scope="module")
def data():
    return synthetic_gallery(400, 3, 64, genuine=0.7, seed=7)


@pytest.fixture
def files(tmp_path, data):
    enrol = tmp_path / "enrol.parquet"
    write_labelled_vectors(enrol, data.vectors, data.identities)
    pv, pl = synthetic_probes(data, 4, 2, seed=3)
    probes = tmp_path / "probes.parquet"
    write_labelled_vectors(probes, pv, ["-" if p is None else p for p in pl])
    return enrol, probes, pv, pl


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_import_then_search_prints_a_table_with_decisions(tmp_path, files):
    enrol, probes, _, labels = files
    g = tmp_path / "g"
    r = run("import-vectors", enrol, "-g", g)
    assert r.exit_code == 0, r.output
    assert "1200 records, 400 identities" in r.output
    r = run("search-vectors", probes, "-g", g, "-k", "2", "--threshold", "0.45")
    assert r.exit_code == 0, r.output
    assert "match iff cosine >= threshold" in r.output
    for label in labels[:4]:
        assert f"{label}  (label {label})" in r.output


def test_search_json_matches_the_python_api(tmp_path, files):
    enrol, probes, pv, _ = files
    g = tmp_path / "g"
    run("import-vectors", enrol, "-g", g)
    r = run("search-vectors", probes, "-g", g, "-k", "3", "--json", "--threshold", "0.3")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    expected = Gallery.open(g).search(pv, k=3, threshold=0.3)
    assert len(rows) == len(expected)
    for row, res in zip(rows, expected):
        assert row["identity"] == res.identity
        assert [m["identity"] for m in row["matches"]] == [m.identity for m in res.matches]
        assert np.allclose([m["score"] for m in row["matches"]], [m.score for m in res.matches])


def test_threshold_is_inclusive_from_the_command_line(tmp_path, files):
    enrol, probes, pv, _ = files
    g = tmp_path / "g"
    run("import-vectors", enrol, "-g", g)
    best = Gallery.open(g).search(pv[:1], k=1)[0].matches[0].score
    at = json.loads(run("search-vectors", probes, "-g", g, "--json", "--threshold", repr(best)).output.splitlines()[0])
    above = json.loads(run("search-vectors", probes, "-g", g, "--json", "--threshold", repr(float(np.nextafter(best, 2)))).output.splitlines()[0])
    assert at["identity"] == at["matches"][0]["identity"]
    assert above["identity"] is None


def test_import_into_an_existing_gallery_adds(tmp_path, files, data):
    enrol, _, _, _ = files
    g = tmp_path / "g"
    run("import-vectors", enrol, "-g", g)
    extra = tmp_path / "extra.npy"
    np.save(extra, data.vectors[:5])
    (tmp_path / "extra.txt").write_text("\n".join(["newcomer"] * 5) + "\n")
    r = run("import-vectors", extra, "--labels", tmp_path / "extra.txt", "-g", g)
    assert r.exit_code == 0, r.output
    assert "1205 records, 401 identities" in r.output
    r = run("import-vectors", enrol, "-g", g, "--replace")
    assert "1200 records, 400 identities" in r.output


def test_info_remove_and_rebuild(tmp_path, files, data):
    enrol, _, _, _ = files
    g = tmp_path / "g"
    run("import-vectors", enrol, "-g", g, "--format", "hdf5", "--rows-per-shard", "200")
    info = json.loads(run("info", "-g", g, "--json").output)
    assert info["records"] == 1200 and info["shards"] == 6 and info["shard_format"] == "hdf5"
    assert info["index"]["kind"] == "flat"
    assert (info["threshold"]["value"], info["threshold"]["source"]) == (0.5, "fallback")
    text = run("info", "-g", g, "--verify").output
    assert "all files match the manifest" in text
    victim = data.identities[0]
    r = run("remove", victim, "-g", g)
    assert r.exit_code == 0 and "removed 3 records of 1 identity" in r.output
    assert victim not in Gallery.open(g).identities
    r = run("rebuild-index", "-g", g, "--index", "ivfpq", "--nlist", "16")
    assert r.exit_code == 0, r.output
    assert Gallery.open(g).manifest.index.factory.startswith("RR64,IVF16,")


@pytest.mark.parametrize(
    "args, message",
    [
        (["search-vectors", "{probes}", "-g", "{tmp}/missing"], "missing: no such gallery folder"),
        (["import-vectors", "{npy}", "-g", "{tmp}/g"], "a .npy file holds no labels"),
        (["import-vectors", "{nan}", "--labels", "{labels}", "-g", "{tmp}/g"], "row 1 contains NaN or inf"),
        (["remove", "nobody", "-g", "{tmp}/ok"], "no such identities: nobody"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, files, data, args, message):
    enrol, probes, _, _ = files
    np.save(tmp_path / "v.npy", data.vectors[:3])
    bad = data.vectors[:3].copy()
    bad[1, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    run("import-vectors", enrol, "-g", tmp_path / "ok")
    fill = dict(probes=probes, tmp=tmp_path, npy=tmp_path / "v.npy", nan=tmp_path / "nan.npy", labels=tmp_path / "labels.txt")
    r = CliRunner().invoke(main, [a.format(**fill) for a in args])
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0], r.output
    assert not (tmp_path / "g" / "manifest.json").exists()


def test_console_script_help_teaches(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gallery.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for word in ("import-vectors", "search-vectors", "remove", "rebuild-index", "info", "score >= threshold"):
        assert word in out
    sub = subprocess.run([sys.executable, "-m", "gallery.cli", "search-vectors", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--threshold" in sub and "--nprobe" in sub


def test_a_second_writer_names_the_one_holding_the_gallery_or_waits_for_it(tmp_path, files, data):
    enrol, *_ = files
    g = tmp_path / "g"
    assert run("import-vectors", enrol, "-g", g).exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom gallery.store.locks import writer_lock\n"
                               "with writer_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(2)\n", str(g)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    r = run("remove", str(data.identities[0]), "-g", g)
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [f"Error: {g}: process {holder.pid} is changing this gallery; wait for it "
                                             "to finish (--wait SECONDS) and try again"]
    r = run("remove", str(data.identities[0]), "-g", g, "--wait", "30")
    assert r.exit_code == 0 and "removed 3 records of 1 identity" in r.output
    assert holder.wait(10) == 0


def test_group_access_makes_a_new_gallery_readable_by_the_group(tmp_path, files):
    enrol, *_ = files
    assert run("import-vectors", enrol, "-g", tmp_path / "private").exit_code == 0
    assert run("import-vectors", enrol, "-g", tmp_path / "team", "--group-access").exit_code == 0
    assert (tmp_path / "private" / "manifest.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "team" / "manifest.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "team").stat().st_mode & 0o777 == 0o750


def gallery_command(*args, cwd):
    """The real `gallery` command in a child process: its exit code, stdout and stderr (where warnings go)."""
    return subprocess.run([sys.executable, "-m", "gallery.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_a_gallery_deciding_with_the_fallback_threshold_says_so_and_names_the_fix(tmp_path, files):
    enrol, probes, *_ = files
    g = tmp_path / "g"
    fix = "run `gallery calibrate` (Gallery.set_calibration) to measure one, or pass --threshold"
    for args in (["import-vectors", enrol, "-g", g], ["info", "-g", g], ["search-vectors", probes, "-g", g]):
        r = gallery_command(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        warning = f"no threshold has been calibrated or measured for model 'external': the open-set decision uses " \
                  f"the fallback 0.5, a guess that may accept strangers; {fix}"
        assert warning in r.stderr + r.stdout, (args, r.stderr)
    r = gallery_command("search-vectors", probes, "-g", g, "--json", cwd=tmp_path)
    row = json.loads(r.stdout.splitlines()[0])
    assert row["threshold_provenance"]["source"] == "fallback" and fix in row["threshold_provenance"]["warning"]
    assert row["margin"] == pytest.approx(row["matches"][0]["score"] - row["matches"][1]["score"])


@pytest.mark.parametrize("score, threshold, shown", [
    (0.90099996, 0.901, ("0.90099996", "0.90100002")),
    (0.9345, 0.94, ("0.9345", "0.9400")),
    (0.94, 0.94, ("0.9400", "0.9400")),
    (0.940001, 0.94, ("0.940001", "0.940000")),
])
def test_scores_are_printed_with_the_digits_their_comparison_needs(score, threshold, shown):
    from gallery.cli import _compared

    s, t = _compared(float(np.float32(score)), float(np.float32(threshold)))
    assert (s, t) == shown and (float(s) >= float(t)) == (np.float32(score) >= np.float32(threshold))


# ---------------------------------------------------------------------- output formats, progress and messages


def test_json_is_json_lines_and_json_array_is_one_document(tmp_path, files):
    enrol, probes, pv, _ = files
    g = tmp_path / "g"
    run("import-vectors", enrol, "-g", g, "--quiet")
    lines = run("search-vectors", probes, "-g", g, "--json").stdout.splitlines()
    array = json.loads(run("search-vectors", probes, "-g", g, "--json-array").stdout)
    assert array == [json.loads(line) for line in lines] and len(array) == len(pv)
    r = run("search-vectors", probes, "-g", g, "--json", "--json-array")
    assert r.exit_code == 2 and "Error: --json and --json-array cannot be used together; pick one" in r.output
    for command in ("search-vectors", "query"):
        assert "Print JSON Lines instead of a table" in " ".join(run(command, "--help").output.split())


def test_progress_in_a_log_is_plain_lines_and_quiet_leaves_none(tmp_path, files):
    enrol, *_ = files
    r = run("import-vectors", enrol, "-g", tmp_path / "loud")
    assert r.exit_code == 0 and "writing shards: 0/1200 (0%)" in r.stderr and "writing shards: 1200/1200 (100%)" in r.stderr
    assert "\r" not in r.stderr and "\x1b[" not in r.stderr
    r = run("import-vectors", enrol, "-g", tmp_path / "quiet", "--quiet")
    assert r.exit_code == 0 and "1200 records, 400 identities" in r.stdout
    assert "writing shards" not in r.stderr and "indexing" not in r.stderr  # warnings may still come


def test_every_long_command_takes_quiet():
    for command in ("build", "add", "import-vectors", "query", "calibrate", "eval", "remove", "rebuild-index", "train"):
        assert "--quiet" in run(command, "--help").output, command


def test_a_folder_without_a_gallery_names_both_ways_to_build_one(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("info", "-g", tmp_path / "empty")
    assert r.exit_code == 1
    assert r.output == (f"Error: {tmp_path / 'empty'}: not a gallery (no manifest.json); build one from photos with "
                        "`gallery build PHOTOS` (Gallery.from_photos) or from vectors with `gallery import-vectors FILE` "
                        "(Gallery.from_vectors)\n")


def test_the_detector_defaults_to_auto_and_the_help_says_what_auto_picks():
    for command in ("build", "add", "query"):
        text = " ".join(run(command, "--help").output.split())
        assert "--detector [auto|hog|cnn]" in text, command
        assert "auto: cnn on the encoder's GPU when the encoder runs on CUDA, else hog." in text, command
        assert "[default: auto]" in text.split("--detector", 1)[1].split("--", 1)[0], command
