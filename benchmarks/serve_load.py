"""`gallery serve` under load: requests/s and p50/p99 latency over loopback HTTP, against the Python API.

Four kinds of request, each at 1, 8 and 32 concurrent clients (threads, one keep-alive httpx client
each), against a real ``gallery serve`` process on 127.0.0.1 with API keys on:

- single photo: one probe photo (1480 x 832, one face) per request, on the shared photos' gallery;
- photo batch: four photos (six faces) per request;
- vector: one 512-d query per request, on a synthetic gallery of 1M x 512 (ivfpq, the ``auto`` choice);
- vector batch: 32 queries per request.

The same work is timed in this process, at the same concurrency, through the Python API
(``Gallery.search``; for photos ``Gallery.search_images``, which loads a face detector per call, and
the service's own in-process path, which keeps one) so the service's overhead is a ratio. Every answer
is checked (the right identity for each probe photo, rank-1 accuracy for the vectors), so a fast broken
path cannot pass. The client threads share the machine's cores with the server.

    .venv/bin/python benchmarks/serve_load.py --work /tmp/serve-bench     # builds 1M x 512 once (minutes), reuses it
    .venv/bin/python benchmarks/serve_load.py --quick                      # 20k x 128, fewer requests
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
import numpy as np

from gallery import Gallery
from gallery.serve.keys import KeyStore
from gallery.serve.limits import Limits
from gallery.serve.live import LiveGallery
from gallery.serve.photos import Upload
from gallery.serve.service import Service
from gallery.synthetic import synthetic_gallery, synthetic_probes

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "faces"
SINGLE = "probes/obama1.jpg"
BATCH = {"probes/obama1.jpg": ["obama"], "probes/kit_with_rose.jpg": ["kit_harington", "rose_leslie"],
         "misc/lin-manuel-miranda.png": [None], "misc/two_people.jpg": ["biden", "obama"]}
VECTOR_BATCH = 32
K = 10


# ---------------------------------------------------------------------- a server, and load on it


def start_server(root: Path) -> tuple[subprocess.Popen, str, str]:
    token, _ = KeyStore(root / "api-keys.json").create("search", name="benchmark")
    log = open(root.parent / f"{root.name}-serve.log", "wb")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "gallery.cli", "serve", "-g", str(root), "--port", "0", "--max-upload-mb", "64",
           "--max-k", "100", "--max-photos", "32"]
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", Path(log.name).read_text(errors="replace"))
        if found:
            return process, found.group(1), token
        if process.poll() is not None:
            raise SystemExit(f"gallery serve exited:\n{Path(log.name).read_text()}")
        time.sleep(0.2)
    process.kill()
    raise SystemExit("gallery serve did not start")


def run_load(work: Callable[[object, int], None], make_worker: Callable[[], object], clients: int, total: int) -> dict:
    """``total`` calls of ``work(worker, i)`` from ``clients`` threads; requests/s and latency percentiles."""
    latencies, errors, next_i, lock = [], [], [0], threading.Lock()
    ready = threading.Barrier(clients + 1)

    def thread():
        worker = make_worker()
        ready.wait()
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= total:
                break
            t = time.perf_counter()
            try:
                work(worker, i)
            except Exception as e:  # counted, and fatal below
                errors.append(repr(e))
            latencies.append(time.perf_counter() - t)
        close = getattr(worker, "close", None)
        if close:
            close()

    threads = [threading.Thread(target=thread) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} of {total} requests failed, e.g. {errors[0]}")
    ms = np.asarray(latencies) * 1e3
    return {"clients": clients, "requests": total, "requests_per_s": total / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def client_for(url: str, token: str) -> Callable[[], httpx.Client]:
    return lambda: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600)


def ok(r: httpx.Response) -> dict:
    if r.status_code != 200:
        raise AssertionError(f"{r.status_code}: {r.text}")
    return r.json()


# ---------------------------------------------------------------------- photos


def check_photos(photos: list[dict], expected: list[list]) -> None:
    for p, want in zip(photos, expected, strict=True):
        got = sorted((f["identity"] for f in p["faces"]), key=str)
        if got != sorted(want, key=str):
            raise AssertionError(f"{p['source']}: found {got}, expected {want}")


def photo_rows(work: Path, levels: list[int], requests: dict[str, int]) -> list[dict]:
    root = work / "faces"
    if not (root / "manifest.json").is_file():
        Gallery.from_photos(FACES / "gallery", root, progress=False)
    single = [Upload(Path(SINGLE).name, (FACES / SINGLE).read_bytes())]
    batch = [Upload(Path(p).name, (FACES / p).read_bytes()) for p in BATCH]
    cases = {"single photo": (single, [["obama"]]), "photo batch (4 photos, 6 faces)": (batch, list(BATCH.values()))}

    rows = []
    process, url, token = start_server(root)
    try:
        service = Service(LiveGallery(root), Limits())  # the service's own path, in this process, without HTTP
        g = Gallery.open(root)
        for name, (uploads, expected) in cases.items():
            files = [("photos", (u.name, u.data)) for u in uploads]
            paths = [FACES / SINGLE] if len(uploads) == 1 else [FACES / p for p in BATCH]
            for warm in range(2):
                check_photos(ok(httpx.post(f"{url}/v1/search/photos", params={"k": K}, files=files,
                                           headers={"Authorization": f"Bearer {token}"}, timeout=600))["photos"], expected)
                check_photos(service.search_photos(uploads, K, None)["photos"], expected)
            api = run_load(lambda _, i: check_photos([p.to_dict() for p in g.search_images(paths, k=K, workers=0)], expected),
                           lambda: None, 1, max(2, requests["photo"] // 4))
            for clients in levels:
                total = max(requests["photo"], clients) if len(uploads) == 1 else max(requests["photo"] // 2, clients)
                served = run_load(lambda c, i: check_photos(ok(c.post("/v1/search/photos", params={"k": K}, files=files))["photos"],
                                                            expected), client_for(url, token), clients, total)
                inproc = run_load(lambda _, i: check_photos(service.search_photos(uploads, K, None)["photos"], expected),
                                  lambda: None, clients, total)
                rows.append({"kind": name, "gallery": "shared photos (9 faces)", **served,
                             "in_process_per_s": inproc["requests_per_s"], "in_process_p50_ms": inproc["p50_ms"],
                             "search_images_per_s": api["requests_per_s"] if clients == 1 else None})
                print(rows[-1], flush=True)
    finally:
        process.terminate()
        process.wait()
    return rows


# ---------------------------------------------------------------------- vectors


def vector_gallery(work: Path, n: int, d: int) -> tuple[Path, np.ndarray, np.ndarray]:
    root = work / f"vectors-{n}x{d}"
    probes = work / f"vectors-{n}x{d}-probes.npz"
    if not (root / "manifest.json").is_file() or not probes.is_file():
        t = time.perf_counter()
        data = synthetic_gallery(n // 3, 3, d, genuine=0.6, seed=0)
        xq, truth = synthetic_probes(data, 1000, 0, seed=1)
        Gallery.from_vectors(data.vectors, data.identities, root, index="auto", progress=True, overwrite=True)
        np.savez(probes, xq=xq, truth=np.asarray(truth, dtype=str))
        print(f"built {root} in {time.perf_counter() - t:.0f} s", flush=True)
        del data
    saved = np.load(probes)
    return root, saved["xq"], saved["truth"]


def vector_rows(work: Path, n: int, d: int, levels: list[int], requests: int) -> list[dict]:
    root, xq, truth = vector_gallery(work, n, d)
    g = Gallery.open(root)
    info = g.info()
    rows = []
    process, url, token = start_server(root)
    try:
        for batch in (1, VECTOR_BATCH):
            name = "vector" if batch == 1 else f"vector batch ({batch} per request)"
            queries = [xq[(i * batch) % len(xq):][:batch] for i in range(len(xq))]
            labels = [truth[(i * batch) % len(xq):][:batch] for i in range(len(xq))]
            bodies = [{"vectors": q.tolist(), "k": K} for q in queries]
            correct, counting = [0, 0], threading.Lock()

            def check(results, i):
                hits = sum(r["identity"] == lab for r, lab in zip(results, labels[i % len(labels)]))
                with counting:
                    correct[0] += hits
                    correct[1] += len(results)

            def served(c, i):
                check(ok(c.post("/v1/search/vectors", json=bodies[i % len(bodies)]))["results"], i)

            def direct(_, i):
                check([r.to_dict() for r in g.search(queries[i % len(queries)], k=K)], i)

            for i in range(20):  # warm up
                with client_for(url, token)() as c:
                    served(c, i)
                direct(None, i)
            total = requests if batch == 1 else max(requests // 8, 64)
            for clients in levels:
                s = run_load(served, client_for(url, token), clients, total)
                p = run_load(direct, lambda: None, clients, total)
                rows.append({"kind": name, "gallery": f"{n:,} x {d} {info['index']['factory']}", **s,
                             "api_per_s": p["requests_per_s"], "api_p50_ms": p["p50_ms"], "api_p99_ms": p["p99_ms"]})
                print(rows[-1], flush=True)
            accuracy = correct[0] / correct[1]
            if accuracy < 0.9:
                raise SystemExit(f"{name}: rank-1 decided identity right for only {accuracy:.3f} of mated probes")
            for r in rows:
                if r["kind"] == name:
                    r["rank1_decided_correct"] = accuracy
    finally:
        process.terminate()
        process.wait()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/gallery-serve-bench"))
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--vector-requests", type=int, default=2000)
    ap.add_argument("--photo-requests", type=int, default=24)
    ap.add_argument("--quick", action="store_true", help="20k x 128 and few requests: a smoke run")
    ap.add_argument("--skip-photos", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve_load.json")
    a = ap.parse_args()
    if a.quick:
        a.n, a.dim, a.vector_requests, a.photo_requests = 20_000, 128, 200, 8
        a.out = a.out.with_name("serve_load_quick.json")
    levels = [int(c) for c in a.clients.split(",")]
    a.work.mkdir(parents=True, exist_ok=True)
    rows = []
    if not a.skip_photos and (FACES / "gallery").is_dir():
        rows += photo_rows(a.work, levels, {"photo": a.photo_requests})
    rows += vector_rows(a.work, a.n, a.dim, levels, a.vector_requests)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                             "python": platform.python_version()}, "rows": rows}, indent=1))
    print("\n| request | gallery | clients | requests | req/s | p50 ms | p99 ms | Python API req/s | service / API |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        api = r.get("api_per_s") or r.get("in_process_per_s")
        print(f"| {r['kind']} | {r['gallery']} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.1f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {api:.1f} | {r['requests_per_s'] / api:.2f} |")


if __name__ == "__main__":
    main()
