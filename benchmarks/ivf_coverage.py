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
from gallery.store.shards import VectorTable
from gallery.synthetic import synthetic_gallery, synthetic_probes
from search_scale import GENUINE, MODELS  # benchmarks/search_scale.py

SHARES = (0.995, 0.998, 0.999)
PROBE_SHARES = (0.998, 0.999, 0.9995)


def probe_cells_needed(index: VectorIndex, xq: np.ndarray, probe_code: np.ndarray, code_of: np.ndarray) -> np.ndarray:
    """Per probe, the rank of the best-ranked cell that holds an image of its identity."""
    held, held_cell = cell_of(index)
    cell = np.empty(len(code_of), np.int64)
    cell[held] = held_cell
    centroids = centroids_of(index)
    order = np.argsort(code_of, kind="stable")
    starts = np.searchsorted(code_of[order], np.arange(code_of.max() + 2))
    needed = np.empty(len(xq), np.int64)
    for b in range(0, len(xq), 4096):
        scores = xq[b : b + 4096] @ centroids.T
        for i, row in enumerate(scores):
            mates = order[starts[probe_code[b + i]] : starts[probe_code[b + i] + 1]]
            needed[b + i] = int((row > row[cell[mates]].max()).sum()) + 1
    return needed


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
    xq, labels = synthetic_probes(data, probes, 0, seed=1)
    names, code_of = np.unique(data.identities, return_inverse=True)
    code = {s: i for i, s in enumerate(names.tolist())}
    needed = probe_cells_needed(index, xq, np.asarray([code[lab] for lab in labels]), code_of)
    run = {"model": model, "n": n, "identities": identities, "images_per_identity": images, "nlist": index.spec.nlist,
           "new_probes": probes, "seconds": time.perf_counter() - t,
           "rule": [{"share_of_images": s, "cells": c, "new_probes_covered": float(np.mean(needed <= c))}
                    for s, c in rule.items()],
           "new_probes_need": {str(s): int(np.quantile(needed, s, method="higher")) for s in PROBE_SHARES}}
    for r in run["rule"]:
        print(f"[{model}, {images}/identity] {r['share_of_images']:.1%} of held-out images: {r['cells']} of "
              f"{run['nlist']} cells; new probes with a mate in them: {r['new_probes_covered']:.3%}", flush=True)
    print(f"[{model}, {images}/identity] cells new probes need: "
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
