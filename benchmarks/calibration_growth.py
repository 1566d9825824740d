"""Does a calibrated open-set threshold hold its FPIR as the gallery grows? The validation grid.

For each seed: a synthetic population of ``n0 * max(growth)`` identities (2 images each); a gallery of
the first ``n0`` is calibrated with ``gallery.calibration.calibrate`` on ``--fit`` non-mated searches at
each target FPIR. The gallery then grows to ``n0 * g`` identities for every growth factor ``g``, and the
FPIR that each way of carrying the threshold achieves there is measured exactly (brute-force best
scores) on ``--test`` fresh non-mated searches. Reported per cell: achieved FPIR / target.

Ways of carrying the threshold to the grown gallery:

* ``anchored`` (what ``Calibration.threshold_for`` does): the threshold measured at ``n0`` plus the rise
  the pooled per-identity tail fit predicts from ``n0`` to ``n``;
* ``tail``: the pooled tail fit's own threshold at ``n`` (what gallery did before);
* ``best-tail`` and ``best-anchored``: a generalised Pareto fit to the tail of the searches' *best*
  scores at ``n0``, carried to ``n`` by max-stability (FPIR_n0 = 1 - (1 - target) ** (n0 / n));
* ``kept``: the threshold measured at ``n0``, unchanged.

    .venv/bin/python benchmarks/calibration_growth.py                  # the grid in benchmarks/README.md
    .venv/bin/python benchmarks/calibration_growth.py --quick          # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gallery import Gallery  # noqa: E402
from gallery.calibration import calibrate, gpd_pwm  # noqa: E402
from gallery.metrics import fpir, fpir_threshold  # noqa: E402
from gallery.synthetic import synthetic_gallery, synthetic_probes  # noqa: E402

METHODS = ("anchored", "tail", "best-tail", "best-anchored", "kept")


def best_score_tail(nonmated_best: np.ndarray, n0: int):
    """Threshold at n identities from a GPD fit to the upper tail of the best scores at n0 (max-stability)."""
    s = np.sort(np.asarray(nonmated_best, dtype=np.float64))[::-1]
    m = max(50, len(s) // 10)
    u = s[m]
    xi, sigma = gpd_pwm(s[:m] - u)
    zeta = m / len(s)

    def threshold(n: int, target: float) -> float:
        q = -np.expm1(np.log1p(-target) * n0 / n)  # the FPIR at n0 that gives `target` at n
        if q >= zeta:
            return fpir_threshold(nonmated_best, q)
        return float(u + sigma / xi * ((q / zeta) ** (-xi) - 1.0)) if abs(xi) > 1e-9 else float(u - sigma * np.log(q / zeta))

    return threshold


def best_scores(test: np.ndarray, vectors: np.ndarray, codes: np.ndarray, sizes: list[int], block: int = 8192) -> dict:
    """Exact best score of every test query against the first ``n`` identities, for every n in ``sizes``."""
    out, best, done = {}, np.full(len(test), -np.inf, np.float32), 0
    for n in sorted(sizes):
        part = vectors[(codes >= done) & (codes < n)]
        for s in range(0, len(test), block):
            np.maximum(best[s : s + block], (test[s : s + block] @ part.T).max(axis=1), out=best[s : s + block])
        out[n], done = best.copy(), n
    return out


def run_seed(seed: int, a, tmp: Path) -> list[dict]:
    growth = [int(g) for g in a.growth.split(",")]
    targets = [float(t) for t in a.targets.split(",")]
    n_max = a.n0 * max(growth)
    pop = synthetic_gallery(n_max, 2, a.dim, genuine=0.6, seed=seed)
    names, codes = np.unique(pop.identities, return_inverse=True)
    first = codes < a.n0
    g = Gallery.from_vectors(pop.vectors[first], pop.identities[first], tmp / f"g{seed}", progress=False, overwrite=True)
    fit, _ = synthetic_probes(pop, 0, a.fit, seed=seed + 1000)
    test, _ = synthetic_probes(pop, 0, a.test, seed=seed + 2000)
    t0 = time.perf_counter()
    best = best_scores(test, pop.vectors, codes, [a.n0 * x for x in growth])
    search_s = time.perf_counter() - t0
    fit_best = np.array([r.matches[0].score for r in g.search(fit, k=1, threshold=1.0)])
    rows = []
    for target in targets:
        cal = calibrate(g, fit, [None] * len(fit), target_fpir=target)
        bt = best_score_tail(fit_best, a.n0)
        for x in growth:
            n = a.n0 * x
            at = {"anchored": cal.threshold_for(n), "tail": cal.tail.threshold(n, target), "kept": cal.value,
                  "best-tail": bt(n, target), "best-anchored": cal.value + bt(n, target) - bt(a.n0, target)}
            rows.append({"seed": seed, "target": target, "growth": x, "identities": n,
                         "thresholds": at, "ratio": {k: fpir(best[n], t) / target for k, t in at.items()},
                         "test_searches": len(test), "fit_searches": len(fit), "search_s": search_s})
            print(json.dumps({k: rows[-1][k] for k in ("seed", "target", "growth")}
                             | {m: round(rows[-1]["ratio"][m], 3) for m in METHODS}), flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n0", type=int, default=2000, help="identities at calibration")
    p.add_argument("--growth", default="4,10,20")
    p.add_argument("--targets", default="1e-2,1e-3")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fit", type=int, default=20_000, help="non-mated calibration searches")
    p.add_argument("--test", type=int, default=100_000, help="fresh non-mated searches per grown gallery")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "calibration_growth.json"))
    a = p.parse_args()
    if a.quick:
        a.n0, a.growth, a.targets, a.seeds, a.fit, a.test = 500, "4,10", "1e-2", "0", 2000, 5000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in a.seeds.split(",")):
            rows += run_seed(seed, a, Path(tmp))
    summary = {}
    for m in METHODS:
        for target in sorted({r["target"] for r in rows}):
            for x in sorted({r["growth"] for r in rows}):
                r = [row["ratio"][m] for row in rows if row["target"] == target and row["growth"] == x]
                summary[f"{m} target={target:g} growth={x}"] = {"min": min(r), "max": max(r),
                                                                  "within_25pct": all(0.75 <= v <= 1.25 for v in r)}
    args = {k: v for k, v in vars(a).items() if k != "out"}  # where it was written is this machine's business
    out = {"args": args, "machine": platform.platform(), "rows": rows, "summary": summary}
    if not a.quick:
        Path(a.out).parent.mkdir(exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    for k, v in summary.items():
        print(f"{k:40s} x{v['min']:.2f} .. x{v['max']:.2f}  {'ok' if v['within_25pct'] else 'MISSES'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
