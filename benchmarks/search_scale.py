"""Search at scale: flat against ivfpq galleries of 10k to 1M synthetic vectors, through the public API.

For each (n, d) it builds both galleries with ``Gallery.from_vectors`` and measures build time, index
RAM per vector, batched queries/s of ``Gallery.search(k=10)``, record-level recall@10 of ivfpq against
flat, and how often the rank-1 identity agrees with flat (and with the truth) over mated queries. It
asserts that the answers are right, so a fast broken path cannot pass.

    .venv/bin/python benchmarks/search_scale.py                      # the full table (about 10 min)
    .venv/bin/python benchmarks/search_scale.py --quick              # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import faiss
import numpy as np

from gallery import Gallery
from gallery.search import FALLBACK_THRESHOLD
from gallery.synthetic import synthetic_gallery, synthetic_probes

IMAGES_PER_IDENTITY = 3
GENUINE = 0.6


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(n: int, d: int, n_queries: int, fractions: list[float], work: Path, seed: int = 0,
            noise_decay: Optional[float] = None, index_params: Optional[dict] = None) -> list[dict]:
    data = synthetic_gallery(n // IMAGES_PER_IDENTITY, IMAGES_PER_IDENTITY, d, genuine=GENUINE, seed=seed,
                             noise_decay=noise_decay)
    xq, truth = synthetic_probes(data, n_queries, 0, seed=seed + 1)
    rows = []
    galleries = {}
    for kind in ("flat", "ivfpq"):
        t = time.perf_counter()
        params = (index_params or {}) if kind == "ivfpq" else {}
        galleries[kind] = Gallery.from_vectors(data.vectors, data.identities, work / kind, index=kind, progress=False,
                                               **params)
        build_s = time.perf_counter() - t
        info = galleries[kind].info()
        galleries[kind].search(xq[:50], k=10)  # warm up (page cache, threads)
        rows.append({"kind": kind, "build_s": build_s, "index": info["index"]["factory"],
                     "index_bytes_per_vector": info["ram_bytes"]["index"] / n,
                     "ram_bytes_per_vector": info["ram_bytes"]["per_vector"]})
    del data
    flat, ivf = galleries["flat"], galleries["ivfpq"]
    repeats = 3
    flat_results = []
    flat_s = best_time(lambda: flat_results.append(flat.search(xq, k=10)), repeats)
    flat_top1 = np.asarray([r.matches[0].identity for r in flat_results[-1]], dtype=object)
    accuracy = float((flat_top1 == truth).mean())
    assert accuracy > 0.95, f"flat rank-1 accuracy {accuracy:.3f}: the synthetic data or exact search is broken"
    D_exact, I_exact = flat._searcher.index.search(xq, 10)
    rows[0].update(qps=n_queries / flat_s, rank1_vs_flat=1.0, rank1_accuracy=accuracy, recall10_vs_flat=1.0)
    spec = ivf.index_spec
    sweep = {max(1, min(spec.nlist, round(f * spec.nlist))) for f in fractions}
    settings = [(p, None) for p in sorted(sweep | {spec.nprobe})] + [(spec.nprobe, 1)]  # last: no recheck
    for nprobe, recheck in settings:
        out = []
        s = best_time(lambda: out.append(ivf.search(xq, k=10, nprobe=nprobe, recheck_nprobe=recheck)), repeats)
        top1 = np.asarray([r.matches[0].identity for r in out[-1]], dtype=object)
        _, I = ivf._searcher.index.search(xq, 10, nprobe=nprobe, vectors=ivf._searcher.vectors)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, I_exact)])
        default = nprobe == spec.nprobe and recheck is None
        row = dict(rows[1]) if default else {"kind": "ivfpq", "index": rows[1]["index"]}
        row.update(nprobe=nprobe, recheck_nprobe=spec.probes(nprobe, recheck)[1], rerank=spec.rerank, qps=n_queries / s,
                   speedup_vs_flat=flat_s / s, rank1_vs_flat=float((top1 == flat_top1).mean()),
                   rank1_accuracy=float((top1 == truth).mean()), recall10_vs_flat=float(recall), default=default,
                   rechecked=rechecked_queries(ivf, xq, nprobe) if recheck is None else 0)
        if row["default"]:
            assert row["rank1_vs_flat"] > 0.8, f"ivfpq rank-1 agreement {row['rank1_vs_flat']:.3f}: the approximate path is broken"
        rows.append(row)
    rows.pop(1)
    for r in rows:
        r.update(n=n, d=d, queries=n_queries)
    return rows


def rechecked_queries(g: Gallery, xq: np.ndarray, nprobe: int) -> int:
    """How many queries the first pass at ``nprobe`` left below the threshold, i.e. were searched again."""
    first = g.search(xq, k=10, nprobe=nprobe, recheck_nprobe=1)
    return sum(1 for r in first if not r.matches or r.matches[0].score < r.threshold)


def table(rows: list[dict]) -> str:
    head = ("| n | d | index | nprobe | recheck | build s | index B/vec | RAM B/vec | queries/s | x flat | "
            "recall@10 vs flat | rank-1 = flat | rank-1 correct |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        build = f"{r['build_s']:.1f}" if "build_s" in r else ""
        ib = f"{r['index_bytes_per_vector']:.0f}" if "index_bytes_per_vector" in r else ""
        rb = f"{r['ram_bytes_per_vector']:.0f}" if "ram_bytes_per_vector" in r else ""
        name = r["index"] + (" (default)" if r.get("default") else "")
        recheck = "" if r["kind"] == "flat" else f"{r['recheck_nprobe']} ({r['rechecked']} q)" if r["recheck_nprobe"] else "none"
        lines.append(
            f"| {r['n']:,} | {r['d']} | {name} | {r.get('nprobe', '')} | {recheck} | {build} | {ib} | {rb} | {r['qps']:.0f} | "
            f"{r.get('speedup_vs_flat', 1.0):.1f} | {r['recall10_vs_flat']:.4f} | {r['rank1_vs_flat']:.4f} | {r['rank1_accuracy']:.4f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--dims", default="128,512")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--probe-fractions", default="0.0625,0.25,0.5",
                   help="extra nprobe values swept for ivfpq, as fractions of nlist (the default is always run)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "search_scale.json")
    p.add_argument("--work", type=Path, default=None, help="scratch folder for the galleries (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="20k x 128, 200 queries: a smoke run")
    p.add_argument("--noise-decay", type=float, default=None,
                   help="shape of within-identity variation (synthetic_gallery's noise_decay; default: the spectrum's)")
    p.add_argument("--index-params", default="", help="ivfpq parameters as JSON, e.g. '{\"nprobe\": 64}'")
    a = p.parse_args(argv)
    sizes = [20_000] if a.quick else [int(s) for s in a.sizes.split(",")]
    dims = [128] if a.quick else [int(s) for s in a.dims.split(",")]
    queries = 200 if a.quick else a.queries
    fractions = [float(s) for s in a.probe_fractions.split(",") if s]
    rows = []
    for d in dims:
        for n in sizes:
            work = Path(tempfile.mkdtemp(prefix="search-scale-", dir=a.work))
            try:
                t = time.perf_counter()
                rows += measure(n, d, queries, fractions, work, noise_decay=a.noise_decay,
                                index_params=json.loads(a.index_params) if a.index_params else None)
                print(f"n={n:,} d={d}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(table([r for r in rows if r["n"] == n and r["d"] == d]), flush=True)
    meta = {"machine": platform.platform(), "processor": platform.processor(), "cpus": faiss.omp_get_max_threads(),
            "faiss": faiss.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "images_per_identity": IMAGES_PER_IDENTITY, "genuine": GENUINE, "k": 10, "threshold": FALLBACK_THRESHOLD, "noise_decay": a.noise_decay,
            "index_params": a.index_params or None}
    if not a.quick:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
