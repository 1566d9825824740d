"""Why an inverted file misses mates on some data: does a probe's exact rank-1 identity lie in the cells it searches?

For mated probes of a synthetic gallery (gallery/synthetic.py), the exact rank-1 identity is found by
exact search; then, for a spherical k-means coarse quantizer of ``nlist`` cells (the one the gallery
trains), this counts how often that identity has an image in the probe's ``P`` best cells, and what
fraction of the gallery those cells hold (the scan's cost). It needs no PQ codes and no timing, so
its figures do not depend on the machine or its load. Four ways of placing an identity's images:

* **own cell** (what FAISS and the gallery do): each image in its nearest cell;
* **spill 2**: each image also in its second-nearest cell (twice the codes to scan per cell);
* **identity mean**: all of an identity's images in the cell of their mean;
* **own + identity mean**: both (up to twice the codes).

``--hnsw`` also builds a FAISS ``HNSW32`` graph over the same vectors (slow to build on 2 cores:
keep ``--identities`` near 67k) and reports rank-1 agreement with exact search after an exact
re-rank of its 40 candidates, at several ``efSearch``.

    .venv/bin/python benchmarks/ivf_cells.py --model default          # 1M x 512, nlist 1024
    .venv/bin/python benchmarks/ivf_cells.py --model default --identities 66667 --nlist 256 --hnsw
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gallery.index.exact import exact_search
from gallery.index.kmeans import spherical_kmeans
from gallery.synthetic import synthetic_gallery, synthetic_probes
from search_scale import MODELS  # benchmarks/search_scale.py

IMAGES = 3
SAMPLE_PER_CELL = 64  # the gallery's training sample (gallery/index/build.py)


def cell_ranks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per probe, the cells best first, and each cell's rank."""
    order = np.argsort(-scores, axis=1)
    rank = np.empty_like(order)
    rank[np.arange(len(scores))[:, None], order] = np.arange(scores.shape[1])
    return order, rank


def placements(x: np.ndarray, centroids: np.ndarray, n_id: int) -> dict:
    """For each placement: (cells holding each identity's images: (n_id, c) array, codes per cell)."""
    nlist = len(centroids)
    _, own = exact_search(centroids, x, 2)
    means = x.reshape(n_id, IMAGES, -1).mean(1)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    _, mean_cell = exact_search(centroids, means, 1)
    first = own[:, 0].reshape(n_id, IMAGES)
    second = own[:, 1].reshape(n_id, IMAGES)
    count = lambda cells: np.bincount(cells.ravel(), minlength=nlist)  # noqa: E731
    by_mean = np.repeat(mean_cell, IMAGES, axis=1)
    return {
        "own cell": (first, count(first)),
        "spill 2": (np.hstack([first, second]), count(first) + count(second)),
        "identity mean": (mean_cell, count(by_mean)),
        "own + identity mean": (np.hstack([first, mean_cell]), count(first) + count(by_mean)),
    }


def cell_rows(x, xq, top_identity, n_id: int, nlist: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    centroids = spherical_kmeans(x[rng.choice(len(x), min(len(x), nlist * SAMPLE_PER_CELL), replace=False)], nlist)
    order, rank = cell_ranks(xq @ centroids.T)
    rows = []
    for name, (cells, sizes) in placements(x, centroids, n_id).items():
        best = np.take_along_axis(rank, cells[top_identity], axis=1).min(1)
        for p in sorted({max(1, nlist // f) for f in (64, 32, 16, 8, 4, 2)}):
            rows.append({"placement": name, "nlist": nlist, "nprobe": p, "found": float(np.mean(best < p)),
                         "scanned": float(sizes[order[:, :p]].sum(1).mean() / len(x))})
    return rows


def hnsw_rows(x, xq, exact_identity, owner) -> list[dict]:
    import faiss

    index = faiss.index_factory(x.shape[1], "HNSW32", faiss.METRIC_INNER_PRODUCT)
    t = time.perf_counter()
    index.add(x)
    build = time.perf_counter() - t
    rows = []
    for ef in (16, 32, 64, 128, 256):
        index.hnsw.efSearch = ef
        t = time.perf_counter()
        _, cand = index.search(xq, 40)
        seconds = time.perf_counter() - t
        scores = np.einsum("qd,qkd->qk", xq, x[np.maximum(cand, 0)])
        scores[cand < 0] = -np.inf
        top = cand[np.arange(len(xq)), scores.argmax(1)]
        rows.append({"efSearch": ef, "rank1_eq_exact": float(np.mean(owner[top] == exact_identity)),
                     "queries_per_s": len(xq) / seconds, "build_s": build})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="default")
    p.add_argument("--identities", type=int, default=333_334)
    p.add_argument("--nlist", default="1024", help="comma-separated cell counts")
    p.add_argument("--probes", type=int, default=1000)
    p.add_argument("--hnsw", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    data = synthetic_gallery(args.identities, IMAGES, 512, seed=0, **MODELS[args.model])
    xq, _ = synthetic_probes(data, args.probes, 0, seed=1)
    owner = np.repeat(np.arange(args.identities), IMAGES)
    _, nearest = exact_search(data.vectors, xq, 1)
    top_identity = owner[nearest[:, 0]]
    out = {"model": args.model, "n": len(data.vectors), "identities": args.identities, "probes": args.probes,
           "cells": [row for nlist in map(int, args.nlist.split(","))
                     for row in cell_rows(data.vectors, xq, top_identity, args.identities, nlist, seed=0)]}
    for row in out["cells"]:
        print(f"{row['placement']:>20}  nlist {row['nlist']:5d}  nprobe {row['nprobe']:4d}: "
              f"found {row['found']:.4f}, scanning {row['scanned']:.1%} of the gallery")
    if args.hnsw:
        out["hnsw"] = hnsw_rows(data.vectors, xq, top_identity, owner)
        for row in out["hnsw"]:
            print(f"HNSW32 efSearch {row['efSearch']:3d}: rank-1 = exact {row['rank1_eq_exact']:.4f}, "
                  f"{row['queries_per_s']:.0f} q/s (build {row['build_s']:.0f} s)")
    path = args.out or Path(__file__).parent / "results" / f"ivf_cells-{args.model}-{len(data.vectors)}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
