"""Open-set calibration: the stored threshold meets its FPIR with an honest interval, refuses data that cannot
support its target, and follows the gallery as it grows."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gallery import Gallery
from scipy.stats import binomtest

from gallery.calibration import Calibration, InsufficientEvidenceError, TailFit, calibrate, calibrate_leave_out, gpd_pwm, leave_identities_out
from gallery.cli import main
from gallery.metrics import fnir, fnir_at_fpir, fpir, search_outcomes
from gallery.metrics.identification import fpir_interval, nonmated_needed
from gallery.store.imports import write_labelled_vectors
from gallery.synthetic import synthetic_gallery, synthetic_probes


@pytest.fixture(scope="module")
def population():
    """16,000 identities; galleries enrol the first 1k, 4k or 16k of them."""
    return synthetic_gallery(16_000, 2, 128, genuine=0.6, seed=11)


def enrol(population, n_identities, root):
    names = np.unique(population.identities.astype(str))[:n_identities]
    keep = np.isin(population.identities.astype(str), names)
    return Gallery.from_vectors(population.vectors[keep], population.identities[keep], root, progress=False)


def test_pwm_recovers_generalised_pareto_parameters():
    rng = np.random.default_rng(0)
    xi, sigma = -0.2, 0.05
    y = sigma / xi * ((1 - rng.random(50_000)) ** (-xi) - 1)
    est_xi, est_sigma = gpd_pwm(y)
    assert est_xi == pytest.approx(xi, abs=0.03) and est_sigma == pytest.approx(sigma, rel=0.05)


def test_predicted_threshold_rises_with_gallery_size():
    fit = TailFit(u=0.4, xi=-0.1, sigma=0.03, zeta=1e-3, exceedances=1000, identities=1000)
    t = [fit.threshold(n, 1e-3) for n in (1_000, 10_000, 100_000, 1_000_000)]
    assert all(a < b for a, b in zip(t, t[1:]))
    assert fit.threshold(1_000, 0.999) is None  # below u: no tail prediction


def test_calibrated_threshold_meets_target_and_is_stored_with_its_data(tmp_path, population):
    g = enrol(population, 1000, tmp_path / "g")
    pv, pl = synthetic_probes(population, 0, 1000, seed=2)
    cal = calibrate(g, pv, list(pl), target_fpir=1e-2)
    assert cal.achieved_fpir <= 1e-2 and cal.n_nonmated == 1000 and cal.gallery_identities == 1000
    best = np.array([r.matches[0].score for r in g.search(pv, k=1)])
    assert fpir(best, cal.value) <= 1e-2 < fpir(best, np.nextafter(np.float32(cal.value), np.float32(-1)))
    g.set_calibration(cal)
    stored = json.loads((tmp_path / "g" / "manifest.json").read_text())["thresholds"]["open_set"]
    assert stored["value"] == cal.value and stored["model"] == "external" and stored["n_nonmated"] == 1000
    reopened = Gallery.open(tmp_path / "g")
    assert reopened.threshold() == (pytest.approx(cal.value), "calibrated")
    assert reopened.search(pv[:3], k=1)[0].threshold_source == "calibrated"


def test_a_calibration_holds_its_fpir_when_the_gallery_grows_tenfold(tmp_path, population):
    """Calibrated at 1,000 identities, grown to 10,000 with add_vectors: the threshold the gallery now
    uses gives the target FPIR within 25% on fresh strangers (benchmarks/calibration_growth.py runs the grid)."""
    target = 1e-2
    fit_probes, _ = synthetic_probes(population, 0, 10_000, seed=4)
    test_probes, _ = synthetic_probes(population, 0, 20_000, seed=5)
    names = np.unique(population.identities.astype(str))
    g = enrol(population, 1000, tmp_path / "g")
    g.set_calibration(calibrate(g, fit_probes, [None] * len(fit_probes), target_fpir=target))
    grown = np.isin(population.identities.astype(str), names[1000:10_000])
    g.add_vectors(population.vectors[grown], population.identities[grown])
    t, source = g.threshold()
    assert len(g.identities) == 10_000 and source == "calibrated" and t > g.calibration.value
    best = np.array([r.matches[0].score for r in g.search(test_probes, k=1)])
    assert 0.75 * target <= fpir(best, t) <= 1.25 * target
    assert fpir(best, g.calibration.value) > 3 * target  # keeping the calibrated threshold is far off


def test_the_threshold_is_anchored_on_the_measured_one_plus_the_predicted_rise():
    tail = TailFit(u=0.4, xi=-0.1, sigma=0.03, zeta=1e-3, exceedances=1000, identities=1000)
    cal = Calibration(value=0.55, target_fpir=1e-3, achieved_fpir=1e-3, fnir=None, model="m", gallery_identities=1000,
                      n_mated=0, n_nonmated=20_000, protocol="probes", tail=tail, created=0.0)
    rise = tail.threshold(10_000, 1e-3) - tail.threshold(1000, 1e-3)
    assert cal.threshold_for(1000) == 0.55 and cal.threshold_for(10_000) == pytest.approx(0.55 + rise)
    assert cal.threshold_for(100) < 0.55 < cal.threshold_for(100_000)


def test_too_few_non_mated_searches_are_refused_saying_what_the_target_needs(tmp_path, population):
    g = enrol(population, 1000, tmp_path / "g")
    pv, _ = synthetic_probes(population, 0, 13, seed=2)
    with pytest.raises(InsufficientEvidenceError, match="FPIR 0.001 needs at least 10,000 non-mated searches; these "
                                                        "probes give 13, which support FPIR >= 0.77"):
        calibrate(g, pv, [None] * 13, target_fpir=1e-3)
    pv2, _ = synthetic_probes(population, 0, 2, seed=2)
    with pytest.raises(InsufficientEvidenceError, match="give 2, which support no target FPIR"):
        calibrate(g, pv2, [None] * 2, target_fpir=1e-3)
    forced = calibrate(g, pv, [None] * 13, target_fpir=1e-3, allow_few=True)
    assert forced.evidence.startswith("insufficient, forced: FPIR 0.001 needs at least 10,000")
    g.set_calibration(forced)
    assert Gallery.open(g.root).threshold_provenance()["evidence"] == forced.evidence


def test_calibration_and_evaluation_share_one_evidence_rule(tmp_path, population):
    g = enrol(population, 1000, tmp_path / "g")
    pv, _ = synthetic_probes(population, 0, 1500, seed=3)
    outcomes = search_outcomes(g.search(pv, k=1), [None] * len(pv), set(g.identities))
    for target in (1e-1, 1e-2, 1e-3):
        supported = len(pv) >= nonmated_needed(target)
        assert (fnir_at_fpir(outcomes, [target])[f"{target:g}"] is not None) == supported
        if supported:
            calibrate(g, pv, [None] * len(pv), target_fpir=target)
        else:
            with pytest.raises(InsufficientEvidenceError):
                calibrate(g, pv, [None] * len(pv), target_fpir=target)


@pytest.mark.parametrize("k, n", [(0, 50), (3, 50), (10, 1000), (50, 50)])
def test_the_fpir_interval_is_the_exact_binomial_one(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert fpir_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_a_calibration_from_an_older_release_still_reads_and_gets_its_interval(tmp_path, population):
    g = enrol(population, 1000, tmp_path / "g")
    pv, _ = synthetic_probes(population, 0, 1000, seed=2)
    data = calibrate(g, pv, [None] * 1000, target_fpir=1e-2).to_json()
    for key in ("method", "fpir_low", "fpir_high", "evidence"):
        del data[key]
    old = Calibration.from_json(data)
    k = round(old.achieved_fpir * 1000)
    assert (old.fpir_low, old.fpir_high) == pytest.approx(fpir_interval(k, 1000)) and old.evidence == "sufficient"


def test_leave_identities_out_uses_the_gallery_itself(tmp_path, population):
    g = enrol(population, 1000, tmp_path / "g")
    cal = calibrate_leave_out(g, target_fpir=0.025, holdout=0.2, seed=1)
    assert cal.protocol == "leave-identities-out"
    assert cal.gallery_identities == 800 and cal.n_nonmated == 400 and cal.n_mated == 800
    assert 0.0 <= cal.fnir <= 1.0 and cal.achieved_fpir <= 0.025 and cal.fpir_low <= cal.achieved_fpir <= cal.fpir_high
    assert cal.threshold_for(len(g.identities)) >= cal.value
    assert sorted(Gallery.open(tmp_path / "g").identities) == sorted(g.identities)  # the gallery is untouched


def test_calibrate_command_stores_and_info_shows(tmp_path, population):
    g = enrol(population, 1000, tmp_path / "g")
    pv, pl = synthetic_probes(population, 200, 1200, seed=6)
    write_labelled_vectors(tmp_path / "probes.parquet", pv, ["-" if p is None else p for p in pl])
    r = CliRunner().invoke(main, ["calibrate", str(tmp_path / "g"), "--probes", str(tmp_path / "probes.parquet"),
                                  "--target-fpir", "0.001"])
    assert r.exit_code == 1 and "FPIR 0.001 needs at least 10,000 non-mated searches" in r.output
    assert "thresholds" not in r.output and Gallery.open(g.root).calibration is None
    r = CliRunner().invoke(main, ["calibrate", str(tmp_path / "g"), "--probes", str(tmp_path / "probes.parquet"), "--target-fpir", "0.01"])
    assert r.exit_code == 0, r.output
    n_mated = sum(p is not None and p in set(g.identities) for p in pl)
    assert f"on {1400 - n_mated} non-mated and {n_mated} mated searches" in r.output and "95% interval" in r.output
    info = CliRunner().invoke(main, ["info", "-g", str(g.root)]).output
    assert "calibrated" in info and "(calibrated)" in info


def test_leave_identities_out_calibrates_through_the_gallery_s_own_kind_of_index(tmp_path, population):
    """An approximate index can answer "unknown" where exact search accepts an impostor, so its FPIR at a
    threshold is its own: the temporary gallery must search the way the real one does."""
    names = np.unique(population.identities.astype(str))[:1300]  # enough that the leave-out gallery can still train nlist 16
    keep = np.isin(population.identities.astype(str), names)
    g = Gallery.from_vectors(population.vectors[keep], population.identities[keep], tmp_path / "ivf", index="ivfpq",
                             nlist=16, pq_m=16, nprobe=3, rerank=3, progress=False)
    with leave_identities_out(g, holdout=0.2) as (sub, _, _):
        spec = sub.index_spec
        assert (spec.kind, spec.nlist, spec.pq_m, spec.nprobe, spec.rerank) == ("ivfpq", 16, 16, 3, 3)
    flat = enrol(population, 100, tmp_path / "flat")
    with leave_identities_out(flat, holdout=0.2) as (sub, _, _):
        assert sub.index_spec.kind == "flat"


def test_an_ivfpq_calibration_searches_over_the_cells_its_threshold_needs_and_the_gallery_keeps_them(tmp_path):
    """Where the threshold falls among mated scores, the cells measured for rank-1 leave mated probes whose
    best image lies in a cell not visited "unknown". Calibration measures the cells in which the gallery's
    own images find a mate above its threshold, sets the threshold over them, and storing it raises the
    gallery's nprobe, so the calibrated FPIR is what the gallery then gives."""
    data = synthetic_gallery(3000, 3, 64, genuine=0.6, noise_decay=0.0, seed=3)
    pv, pl = synthetic_probes(data, 1000, 2000, seed=4)
    g = Gallery.from_vectors(data.vectors, data.identities, tmp_path / "g", index="ivfpq", nlist=64, pq_m=16, nprobe=8,
                             progress=False)
    cal = calibrate(g, pv, list(pl), target_fpir=0.01)
    assert cal.nlist == 64 and cal.nprobe > 8
    assert cal.nprobe >= g.cells_for_threshold(1.01)  # above every score: the cells rank-1 alone needs
    g.set_calibration(cal)
    g = Gallery.open(tmp_path / "g")
    assert g.index_spec.nprobe == g.manifest.index.params["nprobe"] == cal.nprobe
    out = search_outcomes(g.search(pv, k=1), list(pl), set(g.identities))
    assert fpir(out.nonmated_best, cal.value) == cal.achieved_fpir
    narrow = search_outcomes(g.search(pv, k=1, nprobe=8), list(pl), set(g.identities))
    assert fnir(out, cal.value) == cal.fnir < fnir(narrow, cal.value)


def test_rebuilding_a_calibrated_index_measures_the_cells_for_its_threshold(tmp_path):
    data = synthetic_gallery(3000, 3, 64, genuine=0.6, noise_decay=0.0, seed=3)
    pv, pl = synthetic_probes(data, 0, 2000, seed=4)
    g = Gallery.from_vectors(data.vectors, data.identities, tmp_path / "g", index="ivfpq", nlist=64, pq_m=16,
                             progress=False)
    rank1_cells = g.index_spec.nprobe
    g.set_calibration(calibrate(g, pv, list(pl), target_fpir=0.01))
    spec = g.rebuild_index("ivfpq", nlist=64, pq_m=16)
    assert spec.nprobe == g.cells_for_threshold(g.threshold()[0]) > rank1_cells


def test_the_cells_a_calibration_was_measured_over_carry_to_an_index_of_other_size():
    cal = Calibration(value=0.5, target_fpir=0.01, achieved_fpir=0.01, fnir=None, model="m", gallery_identities=800,
                      n_mated=0, n_nonmated=1000, protocol="leave-identities-out", tail=None, created=0.0,
                      nprobe=10, nlist=16)
    assert (cal.nprobe_for(16), cal.nprobe_for(32), cal.nprobe_for(8), cal.nprobe_for(4)) == (10, 20, 5, 3)
    assert Calibration(**{**cal.to_json(), "nprobe": None, "nlist": None}).nprobe_for(16) is None
    assert Calibration.from_json(cal.to_json()) == cal


def test_calibrate_command_says_how_many_cells_the_threshold_needs(tmp_path):
    data = synthetic_gallery(3000, 3, 64, genuine=0.6, noise_decay=0.0, seed=3)
    pv, pl = synthetic_probes(data, 500, 2000, seed=4)
    Gallery.from_vectors(data.vectors, data.identities, tmp_path / "g", index="ivfpq", nlist=64, pq_m=16, nprobe=8,
                         progress=False)
    write_labelled_vectors(tmp_path / "probes.parquet", pv, ["-" if p is None else p for p in pl])
    r = CliRunner().invoke(main, ["calibrate", str(tmp_path / "g"), "--probes", str(tmp_path / "probes.parquet"),
                                  "--target-fpir", "0.01"])
    assert r.exit_code == 0, r.output
    nprobe = Gallery.open(tmp_path / "g").index_spec.nprobe
    assert nprobe > 8 and f"searches visit {nprobe} of 64 cells per query (the threshold was measured over {nprobe} of 64" in r.output
