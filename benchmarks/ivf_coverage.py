"""How far the gallery's measured nprobe, read on its own images, is from what new probes need.

``gallery.index.coverage`` sets nprobe to the fewest cells in which a share of sampled enrolled images
find another image of their identity. A held-out image has one mate fewer than a new probe of that
identity, so that share is not the share of new probes whose mate is in the cells visited. This
builds the gallery's IVF index (its own training rule) over a synthetic gallery, takes the rule's
nprobe at several shares, and counts, for new mated probes with every image of their identity
enrolled, how many have a mate in the cells that nprobe visits; and, the other way round, how many
cells those probes need for a share. Cells only: no codes, no timing, so the figures do not depend on
the machine (``ivf_codes.py`` and ``search_scale.py`` measure what the codes lose and what a search
costs).

Finding some mate is what rank-1 needs; an open-set decision needs more where the threshold falls
among mated scores: a probe whose best image scores above the threshold but whose visited mates score
below it is rejected where exact search accepts it. So each run also sets the threshold at which exact
search gives FPIR 1% on new strangers, counts the FNIR the cells alone give (the identity scored by its
best mate in the cells visited, exactly), and the gallery's rule with that threshold
(``cells_for_coverage(threshold=...)``, what calibration measures): where exact search would accept a
held-out image's identity, it counts as covered only when a mate that also clears the threshold is in
the cells.

    .venv/bin/python benchmarks/ivf_coverage.py --models even,default,varied,steep
    .venv/bin/python benchmarks/ivf_coverage.py --models even --identities 1000000 --images-per-identity 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gallery.index import VectorIndex, choose_index_spec, training_sample
from gallery.index.coverage import cell_of, cells_for_coverage, centroids_of
from gallery.index.exact import as_tensor, exact_search
from gallery.metrics.identification import fpir_threshold
from gallery.store.shards import VectorTable
from gallery.synthetic import synthetic_gallery, synthetic_probes
from search_scale import GENUINE, MODELS, TARGET_FPIR  # benchmarks/search_scale.py

SHARES = (0.995, 0.998, 0.999)
PROBE_SHARES = (0.998, 0.999, 0.9995)
STRANGERS = 5000


def mates_seen_from(index: VectorIndex, x: np.ndarray, mates_of, vectors: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row of ``x``: (rank of the cell holding each of its mates, the mate's exact score)."""
    held, held_cell = cell_of(index)
    cell = np.empty(len(vectors), np.int64)
    cell[held] = held_cell
    centroids = centroids_of(index)
    out = []
    for b in range(0, len(x), 4096):
        scores = x[b : b + 4096] @ centroids.T
        for i, row in enumerate(scores):
            mates = mates_of(b + i)
            out.append(((row[None, :] > row[cell[mates]][:, None]).sum(axis=1) + 1, vectors[mates] @ x[b + i]))
    return out


def cells_needed(seen) -> np.ndarray:
    """Per row, the cells a search must visit to reach any mate."""
    return np.asarray([rank.min() for rank, _ in seen], np.int64)


def cells_fnir(seen, threshold: float, cells: int) -> float:
    """The share of mated probes rejected when the identity's score is its best mate in the cells visited
    (exact scores: what the cells alone lose, before the codes)."""
    return float(np.mean([not (score[rank <= cells] >= threshold).any() for rank, score in seen]))


def measure(model: str, identities: int, images: int, probes: int) -> dict:
    t = time.perf_counter()
    data = synthetic_gallery(identities, images, 512, genuine=GENUINE, seed=0, **MODELS[model])
    xb = data.vectors
    n, d = xb.shape
    index = VectorIndex.create(choose_index_spec(n, d, "ivfpq"))
    index.train(xb[training_sample(n, index.spec)])
    ids = np.arange(n, dtype=np.int64)
    index.add(ids, xb)
    table = VectorTable([ids], [xb], d)
    rule = {share: cells_for_coverage(index, ids, data.identities, table, coverage=share) for share in SHARES}
    xq, labels = synthetic_probes(data, probes, STRANGERS, seed=1)
    mated = np.asarray([lab is not None for lab in labels])
    threshold = fpir_threshold(exact_search(as_tensor(xb), xq[~mated], 1)[0][:, 0], TARGET_FPIR)
    names, code_of = np.unique(data.identities, return_inverse=True)
    code = {s: i for i, s in enumerate(names.tolist())}
    order = np.argsort(code_of, kind="stable")
    starts = np.searchsorted(code_of[order], np.arange(code_of.max() + 2))
    probe_code = np.asarray([code[lab] for lab in labels[mated]])
    new = mates_seen_from(index, xq[mated], lambda i: order[starts[probe_code[i]] : starts[probe_code[i] + 1]], xb)
    needed = cells_needed(new)
    exact_fnir = cells_fnir(new, threshold, index.spec.nlist)
    by_threshold = {share: cells_for_coverage(index, ids, data.identities, table, coverage=share, threshold=threshold)
                    for share in SHARES}
    run = {"model": model, "n": n, "identities": identities, "images_per_identity": images, "nlist": index.spec.nlist,
           "new_probes": probes, "strangers": STRANGERS, "threshold_fpir_1pct": threshold,
           "exact_fnir": exact_fnir, "seconds": time.perf_counter() - t,
           "rule": [{"share_of_images": s, "cells": c, "new_probes_covered": float(np.mean(needed <= c)),
                     "cells_fnir": cells_fnir(new, threshold, c)} for s, c in rule.items()],
           "threshold_rule": [{"share_of_images": s, "cells": c, "cells_fnir": cells_fnir(new, threshold, c)}
                              for s, c in by_threshold.items()],
           "new_probes_need": {str(s): int(np.quantile(needed, s, method="higher")) for s in PROBE_SHARES}}
    tag = f"[{model}, {images}/identity]"
    for r in run["rule"]:
        print(f"{tag} {r['share_of_images']:.1%} of held-out images: {r['cells']} of {run['nlist']} cells; new probes "
              f"with a mate in them: {r['new_probes_covered']:.3%}; FNIR {r['cells_fnir']:.4f} (exact {exact_fnir:.4f})",
              flush=True)
    for r in run["threshold_rule"]:
        print(f"{tag} {r['share_of_images']:.1%} of held-out images, a mate >= {threshold:.4f} where exact accepts: "
              f"{r['cells']} cells; FNIR {r['cells_fnir']:.4f}", flush=True)
    print(f"{tag} cells new probes need: "
          + ", ".join(f"{float(s):.2%}: {c}" for s, c in run["new_probes_need"].items()), flush=True)
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="even,default,varied,steep")
    p.add_argument("--identities", type=int, default=333_334)
    p.add_argument("--images-per-identity", type=int, default=3)
    p.add_argument("--probes", type=int, default=20_000, help="new mated probes")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    runs = [measure(m, args.identities, args.images_per_identity, args.probes) for m in args.models.split(",")]
    n = args.identities * args.images_per_identity
    path = args.out or Path(__file__).parent / "results" / f"ivf_coverage-{n}.json"
    path.write_text(json.dumps(runs, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
