"""Which part of an IVF-PQ search loses a mate: the cells it visits, or the codes that pick its shortlist?

``ivf_cells.py`` counts whether the exact answer's identity has an image in the cells searched; this
goes one step further, through real FAISS indexes over one spherical k-means quantizer (the
gallery's own training rule) and several code types. For every (code, nprobe, shortlist) it takes
the FAISS candidates, scores them exactly, groups them by identity, and compares with exact search
on mated and non-mated probes mixed 50/50 (the probes of ``search_scale.py``): rank-1 = exact on
mated probes, and at the threshold where exact search gives FPIR 1%, FNIR, FPIR and how many of exact
search's correct accepts are lost. ``nprobe = nlist`` visits every cell, so what it still loses is
the codes'. Each code is measured after the gallery's random rotation (named ``RR,<code>``) and
without it (``--rotation``). The scan is timed on 1000 probes (50% mated, best of 3; FAISS's scan alone, no re-rank).

``--coverage`` adds the nprobe the gallery's rule would measure at other shares of its images (the
rule's own share is :data:`gallery.index.coverage.COVERAGE`). For every (code, nprobe) it also
reports how deep a mate ranks: each of 4000 enrolled images is searched (itself left out), and the
rank of the first other image of its identity is read, among the index's candidates and among
exact scores over the whole gallery. A mate that exact search ranks within the shortlist and the
codes rank outside it (or the cells miss) is one the index loses.

    .venv/bin/python benchmarks/ivf_codes.py --model varied
    .venv/bin/python benchmarks/ivf_codes.py --model even --nlist 4096 --nprobe measured,192,256
    .venv/bin/python benchmarks/ivf_codes.py --model default --codes PQ64x4fs --coverage 0.995,0.998
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from gallery.index import VectorIndex, choose_index_spec, training_sample
from gallery.index.build import knn, rotation_of
from gallery.index.codes import code_loss, exact_in_cells, sample_with_mates
from gallery.index.coverage import COVERAGE, cells_for_coverage, centroids_of, with_measured_nprobe
from gallery.index.exact import exact_search
from gallery.metrics.identification import fpir_threshold
from gallery.store.shards import VectorTable
from gallery.types import IdMap
from gallery.synthetic import synthetic_gallery, synthetic_probes
from search_scale import GENUINE, K, K_RECORDS, MODELS, TARGET_FPIR, group_top1, outcomes  # benchmarks/search_scale.py

IMAGES = 3
#: The rotation's seed: VectorIndex.train's default, so the rotated index is the gallery's own.
SEED = 1234


def build(xb: np.ndarray, identities: np.ndarray, nlist: int, codes: list[str], rotations: list[bool],
          coverages: tuple[float, ...] = ()) -> tuple[dict, int, dict]:
    """One FAISS index per code type, with and/or without the gallery's random rotation before it, over
    the same trained quantizer; the gallery's measured nprobe, and the nprobe measured at each of
    ``coverages``."""
    n, d = xb.shape
    spec = choose_index_spec(n, d, "ivfpq", nlist=nlist)
    sample = xb[training_sample(n, spec)]
    first = VectorIndex.create(spec)
    first.train(sample)
    centroids = centroids_of(first)
    ids = np.arange(n, dtype=np.int64)
    first.add(ids, xb)
    table = VectorTable([ids], [xb], d)
    at = {c: cells_for_coverage(first, ids, identities, table, coverage=c) for c in coverages}
    measured = with_measured_nprobe(first, ids, identities, table).spec.nprobe
    indexes = {}
    for code in codes:
        for rotated in rotations:
            factory = f"{f'RR{d},' if rotated else ''}IVF{nlist},{code}"
            name = f"{'RR,' if rotated else ''}{code}"
            if factory == spec.factory:
                indexes[name] = first.index
                continue
            index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
            rotation = rotation_of(index)
            if rotation is not None:
                rotation.init(SEED)
            faiss.extract_index_ivf(index).quantizer.add(centroids if rotation is None else rotation.apply(centroids))
            index.train(sample)
            index.add_with_ids(xb, ids)
            indexes[name] = index
    return indexes, measured, at


def reranked_top1(index, xb, xq, code_of, nprobe: int, shortlist: int):
    _, cand = knn(index, xq, shortlist, faiss.SearchParametersIVF(nprobe=nprobe))
    scores = np.concatenate([np.einsum("qkd,qd->qk", xb[np.maximum(cand[s : s + 100], 0)], xq[s : s + 100])
                             for s in range(0, len(xq), 100)])
    scores[cand < 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :K_RECORDS]
    return group_top1(np.take_along_axis(scores, order, 1), np.take_along_axis(cand, order, 1), code_of, K)


MATE_SAMPLE, MATE_DEPTH = 4000, 1000


def first_mate_rank(cand: np.ndarray, rows: np.ndarray, code_of: np.ndarray) -> np.ndarray:
    """Per sampled image, the rank among its candidates (itself left out) of the first other image of
    its identity; 0 where none is among them."""
    ranks = np.zeros(len(rows), np.int64)
    for i, (row, own) in enumerate(zip(cand, rows)):
        row = row[(row != own) & (row >= 0)]
        hit = np.flatnonzero(code_of[row] == code_of[own])
        if len(hit):
            ranks[i] = hit[0] + 1
    return ranks


def mate_ranks(codes_rank: np.ndarray, exact_rank: np.ndarray, shortlist: int) -> dict:
    """How deep the codes rank a held-out image's first mate, against exact scores over the whole
    gallery: quantiles of both, and how many mates exact search ranks within ``shortlist`` that the
    codes push out of it (or out of the cells visited)."""
    def quantiles(r):
        r = r[r > 0]
        return {f"q{q}": int(np.quantile(r, q, method="higher")) for q in (0.99, 0.995, 0.999)} if len(r) else {}
    exact_in = (exact_rank > 0) & (exact_rank <= shortlist)
    return {"sampled": len(codes_rank), "codes": quantiles(codes_rank), "exact": quantiles(exact_rank),
            "shortlist": shortlist, "exact_within_shortlist": int(exact_in.sum()),
            "pushed_out_by_codes": int((exact_in & ((codes_rank == 0) | (codes_rank > shortlist))).sum())}


def held_out_losses(indexes: dict, xb: np.ndarray, identities: np.ndarray, nprobe: int, nlist: int) -> list:
    """What the gallery's codes rule (gallery.index.codes) measures for each code type at the measured
    nprobe: per shortlist, the share of its sampled enrolled images, each left out, whose answer differs
    from the exact answer within the same cells."""
    n, d = xb.shape
    ids = np.arange(n, dtype=np.int64)
    table = VectorTable([ids], [xb], d)
    picked = sample_with_mates(ids, identities)
    _, code = np.unique(identities, return_inverse=True)
    identity_of = IdMap(ids, code, n)
    out, truth = [], None
    for name, index in indexes.items():
        pq_m = int(name.split("PQ")[1].split("x")[0])
        wrapped = VectorIndex(index, choose_index_spec(n, d, "ivfpq", nlist=nlist, pq_m=pq_m, nprobe=nprobe))
        if truth is None:
            truth = identity_of[exact_in_cells(wrapped, ids[picked], xb[picked], nprobe, table)]
        loss = code_loss(wrapped, ids[picked], xb[picked], truth, identity_of, table)
        out.append({"codes": name, "nprobe": nprobe, "sampled": loss.sampled,
                    "changed": {str(s): round(v * loss.sampled) for s, v in loss.by_shortlist.items()}})
        print(f"{name:>10} nprobe {nprobe:4d}: the gallery's rule sees " + ", ".join(
            f"{c} of {loss.sampled} answers changed at {s}" for s, c in out[-1]["changed"].items()), flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="varied")
    p.add_argument("--identities", type=int, default=333_334)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--codes", default="PQ64x4fs,PQ32x4fs,PQ128x4fs", help="FAISS code factory strings")
    p.add_argument("--rotation", default="on,off", help="'on' (the gallery's random rotation before the IVF), 'off', or both")
    p.add_argument("--nprobe", default="measured,all", help="'measured' (the gallery's rule), 'all', or numbers")
    p.add_argument("--shortlist", default="160,320,1000")
    p.add_argument("--coverage", default="", help="other shares of images for the measured nprobe, e.g. 0.995,0.998")
    p.add_argument("--probes", type=int, default=1000, help="mated probes; as many strangers")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    data = synthetic_gallery(args.identities, IMAGES, 512, genuine=GENUINE, seed=0, **MODELS[args.model])
    xq, labels = synthetic_probes(data, args.probes, args.probes, seed=1)
    names, code_of = np.unique(data.identities, return_inverse=True)
    code = {s: i for i, s in enumerate(names.tolist())}
    truth = np.asarray([code.get(lab, -1) if lab is not None else -1 for lab in labels])
    mated = truth >= 0
    xb = data.vectors
    exact_top1 = group_top1(*exact_search(xb, xq, K_RECORDS), code_of, K)
    thr = fpir_threshold(exact_top1[1][~mated], TARGET_FPIR)
    exact_accepts = mated & (exact_top1[0] == truth) & (exact_top1[1] >= thr)

    t = time.perf_counter()
    coverages = tuple(float(c) for c in args.coverage.split(",") if c)
    rotations = [{"on": True, "off": False}[r] for r in args.rotation.split(",")]
    indexes, measured, at = build(xb, data.identities, args.nlist, args.codes.split(","), rotations, coverages)
    print(f"[{args.model}] built {len(indexes)} indexes in {time.perf_counter() - t:.0f} s; measured nprobe {measured}"
          f" (coverage {COVERAGE}); " + ", ".join(f"{c}: {n}" for c, n in at.items()), file=sys.stderr, flush=True)
    probes = sorted({measured if s == "measured" else args.nlist if s == "all" else int(s)
                     for s in args.nprobe.split(",")} | set(at.values()))
    rule = held_out_losses(indexes, xb, data.identities, measured, args.nlist)
    held_out = np.random.default_rng(0).choice(len(xb), MATE_SAMPLE, replace=False)
    exact_rank = first_mate_rank(exact_search(xb, xb[held_out], MATE_DEPTH + 1)[1], held_out, code_of)
    shortlists = [int(v) for v in args.shortlist.split(",")]
    rows, ranks = [], []
    for name, index in indexes.items():
        for nprobe in probes:
            _, cand = knn(index, xb[held_out], MATE_DEPTH + 1, faiss.SearchParametersIVF(nprobe=nprobe))
            codes_rank = first_mate_rank(cand, held_out, code_of)
            for shortlist in shortlists:
                ranks.append({"codes": name, "nprobe": nprobe, **mate_ranks(codes_rank, exact_rank, shortlist)})
                r = ranks[-1]
                print(f"{name:>10} nprobe {nprobe:4d}: a held-out image's first mate ranks at (q0.99, q0.995, q0.999) "
                      f"{tuple(r['codes'].values())} by the codes, {tuple(r['exact'].values())} by exact scores; "
                      f"{r['pushed_out_by_codes']} of the {r['exact_within_shortlist']} exact ranks within {shortlist} "
                      f"fall outside it", flush=True)
            best = np.inf
            for _ in range(3):
                t = time.perf_counter()
                knn(index, xq, 160, faiss.SearchParametersIVF(nprobe=nprobe))
                best = min(best, time.perf_counter() - t)
            for shortlist in map(int, args.shortlist.split(",")):
                top1 = reranked_top1(index, xb, xq, code_of, nprobe, shortlist)
                row = {"codes": name, "nlist": args.nlist, "nprobe": nprobe, "shortlist": shortlist,
                       "scan_ms_per_1000": 1e3 * best * 1000 / len(xq),
                       **outcomes(top1, exact_top1, truth, mated, thr),
                       "exact_accepts_lost": int((exact_accepts & ~((top1[0] == truth) & (top1[1] >= thr))).sum())}
                rows.append(row)
                print(f"{name:>10} nprobe {nprobe:4d} shortlist {shortlist:4d}: rank-1 = exact {row['rank1_eq_exact']:.4f}, "
                      f"FNIR {row['fnir']:.4f}, FPIR {row['fpir']:.4f}, lost {row['exact_accepts_lost']} of "
                      f"{int(exact_accepts.sum())} exact accepts; scan {row['scan_ms_per_1000']:.0f} ms / 1000 probes",
                      flush=True)
    exact = outcomes(exact_top1, exact_top1, truth, mated, thr)
    out = {"model": args.model, "n": len(xb), "identities": args.identities, "probes_mated": args.probes,
           "probes_nonmated": args.probes, "threshold": thr, "exact": exact, "measured_nprobe": measured,
           "coverage": COVERAGE, "nprobe_at_coverage": {str(c): n for c, n in at.items()}, "mate_ranks": ranks,
           "held_out_code_loss": rule, "rows": rows}
    path = args.out or Path(__file__).parent / "results" / f"ivf_codes-{args.model}-{len(xb)}-nlist{args.nlist}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"exact: FNIR {exact['fnir']:.4f}, FPIR {exact['fpir']:.4f}; wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
