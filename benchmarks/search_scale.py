"""Open-set search at scale under mixed traffic: exact search at the machine's limit, flat, the auto index,
and raw FAISS at the same settings, on synthetic galleries of up to millions of vectors.

One run, per data model and per traffic mix (100%, 50%, 10% of probes mated, the rest strangers):

* the machine's limit: GFLOP/s of a big sgemm, the faster of numpy's and torch's, and the BLAS
  kernel FAISS's bundled OpenBLAS reports (threadpoolctl);
* queries/s of exact search at that limit (blocked matmul + top-k, :func:`gallery.index.exact.exact_search`
  over the vectors in RAM), of FAISS's own ``IndexFlatIP``, of ``Gallery.search`` on a ``flat`` gallery and on
  the ``auto`` gallery, and of raw FAISS on the same IVF index at the same settings (exact re-rank from the
  vectors in RAM, then a numpy identity grouping);
* per search path: rank-1 identity equal to exact on mated probes (with its 95% Wilson interval), and
  at the threshold where exact search gives FPIR 1% on the strangers: FNIR, FPIR and wrong-identity
  accepts. These are counted on a pool of ``--accuracy-probes`` mated probes and as many strangers
  (5000 each by default), larger than the timed queries: with 1000 mated probes a 99.9% target is one
  miss, and 4 misses (99.6%) happen one time in 50 at a true 99.9%;
* build time split into k-means/PQ training and adding; RAM per vector: index, id maps, and the page
  cache the exact re-rank reads from.

The auto gallery is built and then calibrated (``gallery calibrate`` on 1000 mated probes and 5000
strangers of its own, at FPIR 1%), as a deployment would use it: calibration measures the cells its
threshold needs and raises the gallery's nprobe to them (gallery.calibration). The accuracy rows
still count at exact search's FPIR-1% threshold.

Every timing is the best of ``--repeats`` runs, the paths interleaved round by round (exact search
in the same rounds as the fast paths), because other work may share the cores. ``--sweep`` adds
raw-FAISS rows over a grid of (nprobe, shortlist), which is how the defaults in
gallery/index/spec.py were chosen. It asserts that exact search is right and that the
auto index agrees with it, so a fast broken path cannot pass.

    .venv/bin/python benchmarks/search_scale.py --n 1000000 --models default,even,varied --work /big/disk
    .venv/bin/python benchmarks/search_scale.py --quick             # a smoke run (30k x 128)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from gallery import Gallery
from gallery.calibration import calibrate
from gallery.index import VectorIndex
from gallery.index.build import knn
from gallery.index.exact import as_tensor, exact_search
from gallery.metrics.identification import fpir_threshold
from gallery.synthetic import synthetic_gallery, synthetic_probes
from machine import cpu_model  # benchmarks/machine.py

GENUINE = 0.6
SGEMM_SHAPE = (1024, 65536, 512)
SGEMM_FLOP = 2 * SGEMM_SHAPE[0] * SGEMM_SHAPE[1] * SGEMM_SHAPE[2]
K = 10  # identities asked for
K_RECORDS = 40  # records the gallery asks its index for k = 10 identities (4 per identity)
#: FAISS's own flat search is timed on at most this many probes per mix (it runs at a few q/s).
FAISS_FLAT_QUERIES = 100
MIXES = (1.0, 0.5, 0.1)
TARGET_FPIR = 0.01
#: The auto gallery's own calibration pool (`gallery calibrate` on labelled probes), apart from the measured one.
CALIBRATION_MATED = 1000
CALIBRATION_STRANGERS = 5000
#: Data models: how identities' images vary (see gallery/synthetic.py).
MODELS = {
    "default": {},  # noise shaped like the identity spectrum (the hard case for IVF)
    "even": {"noise_decay": 0.0},  # noise spread evenly over all directions
    "varied": {"tightness_spread": 0.4},  # identities differ in tightness
    # a steeper identity spectrum, images varying evenly: identities differ most along a few directions,
    # which the cells follow and an image's noise barely moves along (the easy case for IVF)
    "steep": {"spectrum_decay": 1.0, "noise_decay": 0.0},
}


def best_of(fns: dict, repeats: int) -> dict:
    """Best wall time of each callable, the callables interleaved round by round."""
    best = {name: np.inf for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


_A = _B = _OUT = None


def sgemm() -> None:
    """One big sgemm through the faster BLAS (the machine's matrix-multiply limit), timed alongside the searches."""
    global _A, _B, _OUT
    if _A is None:
        m, n, d = SGEMM_SHAPE
        _A, _B, _OUT = torch.randn(m, d), torch.randn(n, d), torch.empty(m, n)
    if FASTER_BLAS == "numpy":
        np.matmul(_A.numpy(), _B.numpy().T, out=_OUT.numpy())
    else:
        torch.matmul(_A, _B.T, out=_OUT)


FASTER_BLAS = "numpy"


def machine() -> dict:
    """sgemm GFLOP/s of torch and numpy (the faster is the "limit" :func:`sgemm` times), and the BLAS kernels in use."""
    global FASTER_BLAS
    m, n, d = 1024, 65536, 512
    a, b, out = torch.randn(m, d), torch.randn(n, d), torch.empty(m, n)
    an, bn = a.numpy(), b.numpy()
    t = best_of({"torch": lambda: torch.matmul(a, b.T, out=out), "numpy": lambda: an @ bn.T}, 5)
    info = {"torch_sgemm_gflops": 2 * m * n * d / t["torch"] / 1e9, "numpy_sgemm_gflops": 2 * m * n * d / t["numpy"] / 1e9}
    FASTER_BLAS = "numpy" if t["numpy"] < t["torch"] else "torch"
    info["limit_blas"] = FASTER_BLAS
    try:
        from threadpoolctl import threadpool_info

        for lib in threadpool_info():
            if lib.get("internal_api") == "openblas":
                owner = "faiss" if "faiss" in lib["filepath"] else "numpy"
                info[f"{owner}_openblas"] = f"{lib.get('version')} {lib.get('architecture')}"
    except ImportError:
        info["faiss_openblas"] = "unknown (threadpoolctl not installed)"
    info["torch_blas"] = "MKL" if torch.backends.mkl.is_available() else "other"
    info["cpu"] = cpu_model()
    return info


def group_top1(D: np.ndarray, I: np.ndarray, code_of: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw identity grouping: per query the first ``k`` distinct identities of its ranked records; returns
    the rank-1 identity code and score (the rest of the grouping is computed, as a caller would)."""
    codes = np.where(I >= 0, code_of[np.maximum(I, 0)], -1)
    order = np.argsort(codes, axis=1, kind="stable")
    sc = np.take_along_axis(codes, order, 1)
    first = np.ones_like(sc, bool)
    first[:, 1:] = sc[:, 1:] != sc[:, :-1]
    is_first = np.zeros_like(first)
    np.put_along_axis(is_first, order, first & (sc >= 0), 1)
    ranked = np.where(is_first & (np.cumsum(is_first, axis=1) <= k), codes, -1)  # the k identities, in rank order
    return ranked[:, 0], D[:, 0]


_REFINED: dict = {}


def raw_ivf(index: faiss.Index, xb: np.ndarray, code_of: np.ndarray, xq: np.ndarray, nprobe: int, shortlist: int):
    """FAISS alone: ``IndexRefineFlat`` over the same IVF index (its own float copy of the vectors in RAM)
    re-ranks ``shortlist`` candidates exactly, then the numpy identity grouping."""
    if id(index) not in _REFINED:
        _REFINED.clear()  # one index at a time: each holds a float copy of the gallery
        _REFINED[id(index)] = faiss.IndexRefineFlat(index, faiss.swig_ptr(np.ascontiguousarray(xb, np.float32)))
    params = faiss.IndexRefineSearchParameters(k_factor=max(shortlist, K_RECORDS) / K_RECORDS,
                                               base_index_params=faiss.SearchParametersIVF(nprobe=nprobe))
    D, I = knn(_REFINED[id(index)], xq, K_RECORDS, params)
    return group_top1(D, I, code_of, K)


def gallery_top1(g: Gallery, xq: np.ndarray, code: dict, **knobs):
    res = g.search(xq, k=K, threshold=1.0, **knobs)
    return (np.asarray([code[r.matches[0].identity] if r.matches else -1 for r in res]),
            np.asarray([r.matches[0].score if r.matches else -np.inf for r in res]))


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: unlike the normal one, it stays inside [0, 1] and is
    not empty at 0 or n hits, which is where rank-1 agreement sits."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def outcomes(top1, exact_top1, truth: np.ndarray, mated: np.ndarray, t: float) -> dict:
    c, s = top1
    ce, _ = exact_top1
    accept = s >= t
    m, nm = mated, ~mated
    same = int((c[m] == ce[m]).sum())
    return {"rank1_eq_exact": same / max(1, int(m.sum())), "rank1_interval": wilson_interval(same, int(m.sum())),
            "fnir": float((~(accept[m] & (c[m] == truth[m]))).mean()),
            "fpir": float(accept[nm].mean()), "wrong_accepts": float((accept[m] & (c[m] != truth[m])).mean()),
            "n_mated": int(m.sum()), "n_nonmated": int(nm.sum())}


class Timed:
    """Accumulated wall time of VectorIndex.train / .add during a gallery build."""

    def __init__(self):
        self.train = self.add = 0.0
        self._orig = (VectorIndex.train, VectorIndex.add)

    def __enter__(self):
        tr, ad = self._orig

        def train(ix, *a, **kw):
            t = time.perf_counter()
            tr(ix, *a, **kw)
            self.train += time.perf_counter() - t

        def add(ix, *a, **kw):
            t = time.perf_counter()
            ad(ix, *a, **kw)
            self.add += time.perf_counter() - t

        VectorIndex.train, VectorIndex.add = train, add
        return self

    def __exit__(self, *exc):
        VectorIndex.train, VectorIndex.add = self._orig


class CodesLog(logging.Handler):
    """What the build's codes measurement (gallery.index.codes) logged: what it saw, what it chose, its cost."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("gallery.index.codes").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("gallery.index.codes").removeHandler(self)


def measure(model: str, n: int, d: int, ipi: int, n_queries: int, work: Path, repeats: int, sweep: list,
            flat_queries: int, accuracy_probes: int, seed: int = 0) -> dict:
    log = lambda msg: print(f"[{model} n={n:,}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    data = synthetic_gallery(n // ipi, ipi, d, genuine=GENUINE, seed=seed, **MODELS[model])
    n_mated = max(n_queries, accuracy_probes)
    n_strangers = max(int(round(n_queries * (1 - min(MIXES)))), accuracy_probes)
    xq, labels = synthetic_probes(data, n_mated, n_strangers, seed=seed + 1)
    names, code_of = np.unique(data.identities, return_inverse=True)
    code = {s: i for i, s in enumerate(names.tolist())}
    truth = np.asarray([code.get(lab, -1) if lab is not None else -1 for lab in labels])
    mated = truth >= 0
    xb = data.vectors
    log("data ready")

    t = time.perf_counter()
    xb_t = as_tensor(xb)
    exact = exact_search(xb_t, xq, K_RECORDS)
    exact_s = time.perf_counter() - t
    exact_top1 = group_top1(*exact, code_of, K)
    thr = fpir_threshold(exact_top1[1][~mated], TARGET_FPIR)
    log(f"exact over {len(xq)} probes: {exact_s:.1f} s, threshold {thr:.4f}")

    measured = CodesLog()
    with Timed() as tm, measured:
        t = time.perf_counter()
        g = Gallery.from_vectors(xb, data.identities, work / "g", index="auto", progress=False)
        build_s = time.perf_counter() - t
    built_nprobe = g.index_spec.nprobe
    log(f"auto gallery {g.manifest.index.factory}: {build_s:.0f} s (train {tm.train:.0f}, add {tm.add:.0f})")
    t = time.perf_counter()  # as a deployment would: calibrated on probes of its own, not the measured ones
    cq, cl = synthetic_probes(data, CALIBRATION_MATED, CALIBRATION_STRANGERS, seed=seed + 3)
    cal = calibrate(g, cq, list(cl), target_fpir=TARGET_FPIR)
    g.set_calibration(cal)
    calibration = {"threshold": cal.value, "achieved_fpir": cal.achieved_fpir, "built_nprobe": built_nprobe,
                   "nprobe": g.index_spec.nprobe, "seconds": time.perf_counter() - t}
    log(f"calibrated: threshold {cal.value:.4f}, nprobe {built_nprobe} -> {g.index_spec.nprobe}, "
        f"{calibration['seconds']:.0f} s")
    spec = g.index_spec
    factory = g.manifest.index.factory  # what the file holds: the spec's rotation may have been trained
    ivf_index = g._searcher.index.index
    info = g.info()

    rows = []
    assert outcomes(exact_top1, exact_top1, truth, mated, thr)["fpir"] <= TARGET_FPIR
    results = {"exact": exact_top1}
    results["auto gallery"] = gallery_top1(g, xq, code)
    results["raw faiss, same settings"] = raw_ivf(ivf_index, xb, code_of, xq, spec.nprobe, spec.candidates(K_RECORDS))
    for nprobe, shortlist in sweep:
        results[f"raw faiss nprobe {nprobe} shortlist {shortlist}"] = raw_ivf(ivf_index, xb, code_of, xq, nprobe, shortlist)
    for path, top1 in results.items():
        rows.append({"path": path, **outcomes(top1, exact_top1, truth, mated, thr)})

    # timings per mix: the first mated and strangers of the pool in the mix's proportion, shuffled
    rng = np.random.default_rng(seed + 2)
    m_rows, s_rows = np.flatnonzero(mated), np.flatnonzero(~mated)
    qps: dict = {}
    faiss_flat = faiss.IndexFlatIP(d)
    limit: dict = {}
    latency: dict = {}
    for mix in MIXES:
        nm = int(round(mix * n_queries))
        sel = rng.permutation(np.r_[m_rows[:nm], s_rows[: n_queries - nm]])
        q = xq[sel]
        qf = q[:flat_queries]  # noqa: F841 - used by the lambdas below
        fns = {
            "auto gallery": lambda: g.search(q, k=K),
            "raw faiss, same settings": lambda: raw_ivf(ivf_index, xb, code_of, q, spec.nprobe, spec.candidates(K_RECORDS)),
        }
        for nprobe, shortlist in sweep:
            fns[f"raw faiss nprobe {nprobe} shortlist {shortlist}"] = (
                lambda p=nprobe, s=shortlist: raw_ivf(ivf_index, xb, code_of, q, p, s))
        # exact search in the same rounds, so that a slow spell of this shared machine slows both sides
        fns["exact"] = lambda: group_top1(*exact_search(xb_t, qf, K_RECORDS), code_of, K)
        for path, s in best_of(fns, repeats).items():
            qps.setdefault(path, {})[mix] = (len(qf) if path == "exact" else len(q)) / s
        log(f"mix {mix:.0%}: " + ", ".join(f"{p} {v[mix]:.0f}" for p, v in qps.items() if mix in v))
        lat = []
        for i in range(min(200, len(q))):  # one query per call, as a live camera would send them
            t = time.perf_counter()
            g.search(q[i : i + 1], k=K)
            lat.append(time.perf_counter() - t)
        latency[mix] = {"p50_ms": 1e3 * float(np.percentile(lat, 50)), "p99_ms": 1e3 * float(np.percentile(lat, 99))}

    ram = {"index": info["ram_bytes"]["index"] / n, "id_maps": info["ram_bytes"]["labels"] / n,
           "page_cache_rerank": 4 * d, "refine_codes": 0}
    flat_build = time.perf_counter()
    g.rebuild_index("flat")
    flat_build = time.perf_counter() - flat_build
    sub = np.r_[m_rows[: flat_queries // 2], s_rows[: flat_queries - flat_queries // 2]]
    results_flat = gallery_top1(g, xq[sub], code)
    for mix in MIXES:
        nm = int(round(mix * flat_queries))
        q = xq[np.r_[m_rows[:nm], s_rows[: flat_queries - nm]]]
        if faiss_flat.ntotal == 0 and mix == MIXES[0]:
            faiss_flat.add(xb)
        qs = q[:FAISS_FLAT_QUERIES]  # noqa: F841 - used by the lambda below
        best = best_of({"flat gallery": lambda: g.search(q, k=K), "faiss IndexFlatIP": lambda: faiss_flat.search(qs, K_RECORDS),
                        "exact": lambda: exact_search(xb_t, q, K_RECORDS), "sgemm": sgemm}, max(1, repeats - 1))
        limit[mix] = SGEMM_FLOP / best.pop("sgemm") / 1e9
        for path, s in best.items():
            count = min(len(q), FAISS_FLAT_QUERIES) if path == "faiss IndexFlatIP" else len(q)
            qps.setdefault(path, {})[mix] = max(qps.get(path, {}).get(mix, 0), count / s)
        log(f"flat mix {mix:.0%}: " + ", ".join(f"{p} {qps[p][mix]:.0f}" for p in best))
    flat_row = {"path": "flat gallery", **outcomes((results_flat[0], results_flat[1]),
                                                    (exact_top1[0][sub], exact_top1[1][sub]), truth[sub], mated[sub], thr)}
    rows.append(flat_row)
    g.close()
    del data
    return {"model": model, "n": n, "d": d, "identities": n // ipi, "images_per_identity": ipi,
            "queries": n_queries, "mated_in_pool": n_mated, "strangers_in_pool": n_strangers, "threshold": thr, "spec": factory,
            "knobs": spec.params(), "calibration": calibration, "codes_measured": measured.lines, "build_s": build_s, "train_s": tm.train, "add_s": tm.add,
            "flat_rebuild_s": flat_build, "ram_bytes_per_vector": ram, "rows": rows,
            "sgemm_gflops": {f"{m:g}": v for m, v in limit.items()},
            "auto_single_query_latency": {f"{m:g}": v for m, v in latency.items()},
            "qps": {p: {f"{m:g}": v for m, v in d_.items()} for p, d_ in qps.items()}}


def check(run: dict) -> None:
    """Exact paths must agree with exact search; the auto index must be close (else it is broken)."""
    acc = {r["path"]: r for r in run["rows"]}
    assert acc["flat gallery"]["rank1_eq_exact"] == 1.0, acc["flat gallery"]
    assert acc["auto gallery"]["rank1_eq_exact"] > 0.5, acc["auto gallery"]  # a broken index agrees on ~0


def table(run: dict) -> str:
    lines = [f"**{run['model']}**, {run['n']:,} x {run['d']} ({run['identities']:,} identities x "
             f"{run['images_per_identity']}), {run['spec']} {run['knobs']}, threshold {run['threshold']:.4f}",
             "",
             "| path | q/s 100% | q/s 50% | q/s 10% | x exact (10%) | rank-1 = exact (95% interval, mated probes) | FNIR | FPIR | wrong-id accepts |",
             "|---|---|---|---|---|---|---|---|---|"]
    ex = run["qps"]["exact"]
    acc = {r["path"]: r for r in run["rows"]}
    for path, q in run["qps"].items():
        r = acc.get(path)
        lo, hi = r.get("rank1_interval", (np.nan, np.nan)) if r else (np.nan, np.nan)
        metrics = (f"{r['rank1_eq_exact']:.4f} ({lo:.4f}-{hi:.4f}, {r['n_mated']}) | {r['fnir']:.4f} | {r['fpir']:.4f} | {r['wrong_accepts']:.4f}"
                   if r else " | | | ")
        lines.append(f"| {path} | {q.get('1', 0):.0f} | {q.get('0.5', 0):.0f} | {q.get('0.1', 0):.0f} | "
                     f"{q.get('0.1', 0) / ex['0.1']:.1f} | {metrics} |")
    ram = run["ram_bytes_per_vector"]
    lines.append("")
    gflops = {m: 2 * run["n"] * run["d"] * ex[m] / 1e9 for m in ex}
    frac = ", ".join(f"{gflops[m]:.0f} of {run['sgemm_gflops'][m]:.0f} GFLOP/s ({gflops[m] / run['sgemm_gflops'][m]:.0%})"
                     for m in run["sgemm_gflops"])
    flat = {m: 2 * run["n"] * run["d"] * run["qps"]["flat gallery"][m] / 1e9 / run["sgemm_gflops"][m] for m in ex}
    lat = ", ".join(f"{float(m):.0%} mated {v['p50_ms']:.1f} / {v['p99_ms']:.1f} ms"
                    for m, v in run["auto_single_query_latency"].items())
    lines.append(f"auto gallery, one query per call, p50 / p99: {lat}.")
    lines.append(f"build {run['build_s']:.0f} s (train {run['train_s']:.0f} s, add {run['add_s']:.0f} s); RAM per vector: "
                 f"index {ram['index']:.0f} B, id maps {ram['id_maps']:.0f} B, page cache for the re-rank "
                 f"{ram['page_cache_rerank']} B. Exact search against the sgemm measured in the same rounds, per mix: "
                 f"{frac}; the flat gallery at " + ", ".join(f"{v:.0%}" for v in flat.values()) + " of it.")
    if run.get("calibration"):
        c = run["calibration"]
        lines.append(f"Calibrated on its own probes at threshold {c['threshold']:.4f} (FPIR {c['achieved_fpir']:.4f}): "
                     f"nprobe {c['built_nprobe']} as built, {c['nprobe']} for the threshold ({c['seconds']:.0f} s).")
    if run.get("codes_measured"):
        lines.append("The build's codes measurement: " + "; ".join(run["codes_measured"]) + ".")
    return "\n".join(lines)


def main(argv=None) -> int:
    logging.basicConfig(format="%(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("gallery.index.codes").setLevel(logging.INFO)  # what the build measured, and its cost
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--images-per-identity", type=int, default=3)
    p.add_argument("--models", default="default,even,varied")
    p.add_argument("--queries", type=int, default=1000, help="probes per timed mix")
    p.add_argument("--accuracy-probes", type=int, default=5000,
                   help="mated probes, and as many strangers, that the accuracy rows count (exact search runs on all)")
    p.add_argument("--flat-queries", type=int, default=200, help="queries per mix for the exhaustive paths")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sweep", default="", help="raw-FAISS (nprobe:shortlist) pairs, e.g. '16:160,32:160,32:320'")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "search_scale.json")
    p.add_argument("--work", type=Path, default=None, help="scratch folder for the galleries (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="30k x 128, 300 queries: a smoke run")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.dim, a.queries, a.flat_queries, a.models, a.repeats = 30_000, 128, 300, 100, "default", 1
        a.accuracy_probes = 300
    sweep = [tuple(int(v) for v in s.split(":")) for s in a.sweep.split(",") if s]
    meta = {"machine": platform.platform(), "cpus": faiss.omp_get_max_threads(), "faiss": faiss.__version__,
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "genuine": GENUINE, "k": K, "target_fpir": TARGET_FPIR, **machine()}
    print(json.dumps(meta), file=sys.stderr, flush=True)
    runs = []
    for model in a.models.split(","):
        work = Path(tempfile.mkdtemp(prefix="search-scale-", dir=a.work))
        try:
            runs.append(measure(model, a.n, a.dim, a.images_per_identity, a.queries, work, a.repeats, sweep, a.flat_queries,
                                a.accuracy_probes))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(table(runs[-1]) + "\n", flush=True)
        if not a.quick:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
        check(runs[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
