"""Where an auto index's rank-1 misses come from: the cells it does not visit, or the codes' shortlist.

On the index the gallery's own build makes (coverage-measured ``nprobe``, measured codes and
shortlist), new mated probes are searched exactly over all vectors and through the index. For each
probe whose best identity differs, it reports the rank of the cell holding exact search's best record
(past ``nprobe``: a cell miss) and that record's rank among the codes' candidates (past the
shortlist: a codes miss). It also reports the misses at other shortlists and at all cells, and the
build's held-out codes measure (:func:`gallery.index.codes.code_loss`) on 4000 and 16000 sampled
images, to compare what the build sees with what new probes meet.

    .venv/bin/python benchmarks/rank1_misses.py --model varied --probes 5000
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from gallery.index import codes
from gallery.index.build import VectorIndex, candidate_scores, knn, training_sample
from gallery.index.coverage import cell_of, centroids_of, with_measured_nprobe
from gallery.index.exact import exact_search
from gallery.index.spec import choose_index_spec
from gallery.store.shards import VectorTable
from gallery.synthetic import synthetic_gallery, synthetic_probes
from gallery.types import IdMap
from search_scale import GENUINE, MODELS  # benchmarks/search_scale.py

SHORTLISTS = (160, 320, 640, 1000, 2000, 4000)


def auto_index(xb: np.ndarray, identities: np.ndarray) -> tuple[VectorIndex, VectorTable]:
    """The index Enrolment.commit builds for these vectors, without writing a gallery."""
    n, d = xb.shape
    ids = np.arange(n, dtype=np.int64)
    table = VectorTable([ids], [xb], d)
    spec = choose_index_spec(n, d, "ivfpq")
    index = VectorIndex.create(spec)
    index.train(xb[training_sample(n, spec)])
    index.add(ids, xb)
    with_measured_nprobe(index, ids, identities, table)
    return codes.with_measured_codes(index, ids, identities, table), table


def main(argv=None) -> int:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="varied", choices=sorted(MODELS))
    p.add_argument("--identities", type=int, default=333_334)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--probes", type=int, default=5000)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    started = time.perf_counter()
    data = synthetic_gallery(a.identities, 3, a.dim, genuine=GENUINE, seed=0, **MODELS[a.model])
    xb = data.vectors
    n = len(xb)
    names, code_of = np.unique(data.identities.astype(str), return_inverse=True)
    index, table = auto_index(xb, data.identities)
    build_s = time.perf_counter() - started
    q, labels = synthetic_probes(data, a.probes, 0, seed=11)
    D, I = exact_search(xb, q, 1)
    best = I[:, 0]
    spec = index.spec
    _, cand = knn(index._searcher(), q, max(SHORTLISTS), faiss.SearchParametersIVF(nprobe=spec.nprobe))
    scores = candidate_scores(q, cand, table)
    rows = np.arange(len(q))
    misses = {s: int((code_of[cand[rows, scores[:, :s].argmax(1)]] != code_of[best]).sum()) for s in SHORTLISTS}
    got = cand[rows, scores[:, : spec.shortlist].argmax(1)]
    held, held_cell = cell_of(index)
    cell = np.empty(n, np.int64)
    cell[held] = held_cell
    cell_order = np.argsort(-(q @ centroids_of(index).T), axis=1)
    detail = []
    for i in np.flatnonzero(code_of[got] != code_of[best]):
        in_cand = np.flatnonzero(cand[i] == best[i])
        detail.append({"cell_rank": int(np.flatnonzero(cell_order[i] == cell[best[i]])[0]),
                       "candidate_rank": int(in_cand[0]) if len(in_cand) else None,
                       "exact_score": float(D[i, 0]), "index_score": float(q[i] @ xb[got[i]]),
                       "exact_is_the_mate": bool(names[code_of[best[i]]] == labels[i])})
    _, cand_all = knn(index._searcher(), q, spec.shortlist, faiss.SearchParametersIVF(nprobe=spec.nlist))
    top_all = cand_all[rows, candidate_scores(q, cand_all, table).argmax(1)]
    ids = np.arange(n, dtype=np.int64)
    identity_of = IdMap(ids, code_of, n)
    held_out = {}
    for sample in (4000, 16000):
        picked = ids[codes.sample_with_mates(ids, data.identities, sample=sample, seed=1)]
        truth = code_of[codes.exact_in_cells(index, picked, xb[picked], spec.nprobe, table)]
        held_out[sample] = codes.code_loss(index, picked, xb[picked], truth, identity_of, table,
                                           shortlists=SHORTLISTS[:-1]).by_shortlist
    out = {"model": a.model, "n": n, "d": a.dim, "probes": a.probes, "spec": spec.factory, "knobs": spec.params(),
           "build_s": build_s, "misses_by_shortlist": misses, "misses_at_all_cells": int((code_of[top_all] != code_of[best]).sum()),
           "misses": detail, "held_out_code_loss": held_out}
    text = json.dumps(out, indent=1)
    print(text)
    if a.out is not None:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
