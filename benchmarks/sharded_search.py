"""Sharded search on a local Ray cluster: 1, 2 and 4 identity shards against the local engine, same run.

One synthetic gallery (ivfpq by default at 1M x 512) is built once. The local engine searches it; then
``Gallery.open(root, engine="ray", shards=S)`` starts S actors, each adding its identities' vectors to
the gallery's trained quantizers (build time), and the same queries are searched through them.
Measured: queries/s (batched, k=10), build time, RAM per shard (index + labels), and how often the
rank-1 identity equals the local engine's. It asserts the answers agree, so a broken path cannot pass.

    .venv/bin/python benchmarks/sharded_search.py --work /path/with/8GB/free       # 1M x 512 (about 4 min)
    .venv/bin/python benchmarks/sharded_search.py --quick                          # 30k x 128 smoke run

Run it as root inside a network namespace that has only loopback (``unshare -n sh -c 'ip link set lo
up && ...'``), as the tests are, so the local Ray cluster listens on 127.0.0.1 and nowhere else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gallery import Gallery
from gallery.index import VectorIndex, training_sample
from gallery.synthetic import synthetic_gallery, synthetic_probes


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def top1(results) -> np.ndarray:
    return np.asarray([r.matches[0].identity if r.matches else None for r in results], dtype=object)


def measure(n: int, d: int, n_queries: int, shard_counts: list[int], work: Path, repeats: int, index: str) -> dict:
    import ray

    data = synthetic_gallery(n // 3, 3, d, genuine=0.6, seed=0)
    xq, truth = synthetic_probes(data, n_queries, 0, seed=1)
    t = time.perf_counter()
    local = Gallery.from_vectors(data.vectors, data.identities, work / "g", index=index, progress=False)
    write_s = time.perf_counter() - t
    del data
    t = time.perf_counter()
    local.rebuild_index(local.index_spec.kind, nlist=local.index_spec.nlist or None, pq_m=local.index_spec.pq_m or None)
    local_build_s = time.perf_counter() - t
    train_s = 0.0
    if local.index_spec.kind != "flat":
        sample = local.vectors_of(local.records()[0][training_sample(len(local), local.index_spec)])
        t = time.perf_counter()
        VectorIndex.create(local.index_spec).train(sample)
        train_s = time.perf_counter() - t
    local.search(xq[:50], k=10)
    local_s, local_results = best_time(lambda: local.search(xq, k=10), repeats)
    reference = top1(local_results)
    info = local.info()
    rows = [{"engine": "local", "shards": 1, "build_s": local_build_s, "qps": n_queries / local_s, "x_local": 1.0,
             "ram_bytes_per_shard": [info["ram_bytes"]["index"] + info["ram_bytes"]["labels"]],
             "rank1_vs_local": 1.0, "rank1_correct": float((reference == truth).mean())}]
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        for shards in shard_counts:
            t = time.perf_counter()
            g = Gallery.open(work / "g", engine="ray", shards=shards)
            build_s = time.perf_counter() - t
            g.search(xq[:50], k=10)
            s, results = best_time(lambda: g.search(xq, k=10), repeats)
            answers = top1(results)
            agree = float((answers == reference).mean())
            assert agree >= 0.99, f"{shards} shards agree with the local engine on only {agree:.4f} of rank-1 answers"
            stats = g.info()["engine"]["shards"]
            rows.append({"engine": "ray", "shards": shards, "build_s": build_s, "qps": n_queries / s,
                         "x_local": local_s / s, "ram_bytes_per_shard": [st["ram_bytes"] for st in stats],
                         "records_per_shard": [st["records"] for st in stats],
                         "load_s_per_shard": [st["load_seconds"] for st in stats],
                         "rank1_vs_local": agree, "rank1_correct": float((answers == truth).mean())})
            g.close()
            print(table(n, d, rows[-1:]), file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    return {"n": n, "d": d, "queries": n_queries, "index": info["index"], "write_s": write_s, "train_s": train_s,
            "rows": rows}


def table(n: int, d: int, rows: list[dict]) -> str:
    head = ("| n | d | engine | shards | index build s | queries/s | x local | RAM per shard (MB) | RAM B/vec (all shards) "
            "| rank-1 = local | rank-1 correct |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ram = r["ram_bytes_per_shard"]
        lines.append(f"| {n:,} | {d} | {r['engine']} | {r['shards']} | {r['build_s']:.1f} | {r['qps']:.0f} | "
                     f"{r['x_local']:.2f} | {', '.join(f'{b / 1e6:.0f}' for b in ram)} | {sum(ram) / n:.0f} | "
                     f"{r['rank1_vs_local']:.4f} | {r['rank1_correct']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--shards", default="1,2,4")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--index", default="ivfpq", choices=["flat", "ivfpq"])
    p.add_argument("--work", type=Path, default=None, help="scratch folder for the gallery (default: a temp dir)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sharded_search.json")
    p.add_argument("--quick", action="store_true", help="30k x 128, 200 queries, 1 and 2 shards: a smoke run")
    a = p.parse_args(argv)
    n, d, queries = (30_000, 128, 200) if a.quick else (a.n, a.dim, a.queries)
    shard_counts = [1, 2] if a.quick else [int(s) for s in a.shards.split(",")]
    work = Path(tempfile.mkdtemp(prefix="sharded-search-", dir=a.work))
    try:
        result = measure(n, d, queries, shard_counts, work, a.repeats, a.index)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import faiss
    import ray

    result["meta"] = {"machine": platform.platform(), "cpus": os.cpu_count(), "faiss": faiss.__version__,
                      "ray": ray.__version__, "python": platform.python_version(), "k": 10}
    if not a.quick:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(n, d, result["rows"]))
    print(f"training the quantizers once: {result['train_s']:.1f} s (in the local build's time; shards reuse them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
