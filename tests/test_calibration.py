"""Open-set calibration: the stored threshold meets its FPIR, and its tail fit follows gallery growth."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gallery import Gallery
from gallery.calibration import TailFit, calibrate, calibrate_leave_out, gpd_pwm
from gallery.cli import main
from gallery.metrics import fpir
from gallery.store.imports import write_labelled_vectors
from gallery.synthetic import synthetic_gallery, synthetic_probes


@pytest.fixture(scope="module")
def population():
    """16,000 identities; galleries enrol the first 1k, 4k or 16k of them."""
    return synthetic_gallery(16_000, 2, 128, genuine=0.6, seed=11)


def enrol(population, n_identities, root):
    names = np.unique(population.identities)[:n_identities]
    keep = np.isin(population.identities, names)
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


def test_tail_fit_predicts_the_threshold_of_larger_galleries(tmp_path, population):
    target = 1e-2
    fit_probes, _ = synthetic_probes(population, 0, 2000, seed=4)
    test_probes, _ = synthetic_probes(population, 0, 2000, seed=5)
    cal = calibrate(enrol(population, 1000, tmp_path / "small"), fit_probes, [None] * 2000, target_fpir=target)
    for n in (4000, 16_000):
        g = enrol(population, n, tmp_path / f"g{n}")
        best = np.array([r.matches[0].score for r in g.search(test_probes, k=1)])
        predicted = cal.threshold_for(n)
        assert predicted > cal.value
        assert target / 3 <= fpir(best, predicted) <= 3 * target
        assert fpir(best, cal.value) > 3 * target  # the unadjusted threshold is far too low


def test_leave_identities_out_uses_the_gallery_itself(tmp_path, population):
    g = enrol(population, 1000, tmp_path / "g")
    cal = calibrate_leave_out(g, target_fpir=1e-2, holdout=0.2, seed=1)
    assert cal.protocol == "leave-identities-out"
    assert cal.gallery_identities == 800 and cal.n_nonmated == 400 and cal.n_mated == 800
    assert 0.0 <= cal.fnir <= 1.0 and cal.achieved_fpir <= 1e-2
    assert cal.threshold_for(len(g.identities)) >= cal.value
    assert sorted(Gallery.open(tmp_path / "g").identities) == sorted(g.identities)  # the gallery is untouched


def test_calibrate_command_stores_and_info_shows(tmp_path, population):
    g = enrol(population, 1000, tmp_path / "g")
    pv, pl = synthetic_probes(population, 200, 300, seed=6)
    write_labelled_vectors(tmp_path / "probes.parquet", pv, ["-" if p is None else p for p in pl])
    r = CliRunner().invoke(main, ["calibrate", str(tmp_path / "g"), "--probes", str(tmp_path / "probes.parquet"), "--target-fpir", "0.01"])
    assert r.exit_code == 0, r.output
    n_mated = sum(p is not None and p in set(g.identities) for p in pl)
    assert f"on {500 - n_mated} non-mated and {n_mated} mated searches" in r.output
    info = CliRunner().invoke(main, ["info", "-g", str(g.root)]).output
    assert "calibrated" in info and "(calibrated)" in info
