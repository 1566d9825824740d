"""`gallery eval` writes every metric, readable figures and a self-contained report."""

import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from gallery import Gallery, metrics
from gallery.cli import main
from gallery.evaluation import evaluate, sample_identities, write_report
from gallery.evaluation.report import FIGURES, grid_records
from gallery.synthetic import synthetic_gallery, synthetic_probes

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def population():
    return synthetic_gallery(300, (1, 4), 64, genuine=0.6, seed=21)


@pytest.fixture(scope="module")
def gallery(population, tmp_path_factory):
    return Gallery.from_vectors(population.vectors, population.identities, tmp_path_factory.mktemp("g") / "g", progress=False)


def test_sampling_keeps_whole_identities(population):
    rows = sample_identities(np.arange(len(population.vectors)), population.identities, 200, seed=1)
    chosen = set(population.identities[rows])
    for name in chosen:
        assert (population.identities[rows] == name).sum() == (population.identities == name).sum()
    assert len(rows) <= 200


def test_evaluation_numbers_equal_the_metrics_module(gallery, population):
    pv, pl = synthetic_probes(population, 100, 100, seed=2)
    ev = evaluate(gallery, pv, list(pl), max_samples=10_000)
    s = ev.summary
    direct = metrics.retrieval(population.vectors, population.identities)
    assert s["retrieval"]["map@r"] == pytest.approx(direct["map@r"])
    assert s["distribution"]["jsd"] == pytest.approx(metrics.pair_histograms(population.vectors, population.identities).jsd)
    results = gallery.search(pv, k=20)
    out = metrics.search_outcomes(results, list(pl), set(gallery.identities))
    assert s["identification"]["cmc"]["rank1"] == pytest.approx(metrics.cmc(out, 1)[0])
    assert s["identification"]["n_mated"] == 100 and s["identification"]["n_nonmated"] == 100
    assert s["identification"]["fnir_at_fpir"]["0.1"]["fpir"] <= 0.1


@pytest.fixture(scope="module")
def leave_out(gallery):
    return evaluate(gallery, max_samples=400)


@pytest.fixture(scope="module")
def written(leave_out, tmp_path_factory):
    return write_report(leave_out, tmp_path_factory.mktemp("report"))


def test_report_has_every_figure_and_embeds_them(leave_out, written):
    ev, paths = leave_out, written
    assert ev.summary["identification"]["protocol"] == "leave-identities-out"
    for name in ("histograms.png", "roc.png", "det.png", "cmc.png", "fnir_fpir.png", "similarity_grid.png", "embedding_map.png"):
        data = paths[name].read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    saved = json.loads(paths["metrics"].read_text())
    assert saved["verification"]["eer"] == pytest.approx(ev.summary["verification"]["eer"])
    page = paths["report.html"].read_text()
    assert page.count("data:image/png;base64,") == 7 and "src='http" not in page
    md = paths["report.md"].read_text()
    assert "| MAP@R |" in md and "![ROC (1:1)](roc.png)" in md


def test_eval_command(gallery, tmp_path):
    r = CliRunner().invoke(main, ["eval", str(gallery.root), "-o", str(tmp_path / "out"), "--max-samples", "300"])
    assert r.exit_code == 0, r.output
    assert "MAP@R" in r.output and (tmp_path / "out" / "report.html").is_file()


def test_report_marks_the_gallerys_own_threshold_and_its_rates(gallery, leave_out, written):
    ev = leave_out
    op = ev.summary["operating_point"]
    assert (op["threshold"], op["source"]) == gallery.threshold() == (ev.threshold, ev.threshold_source)
    assert (op["far"], op["tar"]) == metrics.rates_at(ev.roc, op["threshold"])
    assert op["fpir"] == metrics.fpir(ev.outcomes.nonmated_best, op["threshold"])
    md = written["report.md"].read_text()
    assert f"| operating threshold | {op['threshold']:.4f} ({op['source']}): FAR " in md


def test_the_similarity_grid_of_a_sample_says_it_is_one(gallery, leave_out):
    ev = leave_out
    rows, title = grid_records(ev)
    assert len(rows) == 12 and len(set(ev.labels[rows])) == 6
    assert title == f"cosine similarity in a sample of 12 of the gallery's {len(gallery)} records: 2 records of each of 6 identities"


def test_a_gallery_of_one_record_per_identity_gets_every_figure_each_saying_what_it_lacks(tmp_path):
    one_each = synthetic_gallery(30, 1, 16, seed=5)
    g = Gallery.from_vectors(one_each.vectors, one_each.identities, tmp_path / "g", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev = evaluate(g)
        paths = write_report(ev, tmp_path / "report")
    assert ev.roc is None and ev.summary["verification"]["eer"] is None
    assert all(paths[name].read_bytes().startswith(PNG) for name, _ in FIGURES)
    md = paths["report.md"].read_text()
    assert "| EER (1:1) | n/a (no genuine pairs) |" in md and "no genuine pairs; FPIR" in md
