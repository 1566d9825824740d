"""Photo embedding throughput: decode, detection, alignment and encoding separately, then end to end.

Runs on the real photos of ``../shared/faces`` (every image, repeated ``--repeat`` times) and writes
``benchmarks/results/embed_throughput-<device>.json``; the table in ``benchmarks/README.md`` comes from
those files. Encoders: dlib's ResNet run by dlib (``dlib-resnet-native``, one chip at a time) against
the torch port (``dlib-resnet``) at batch 1, 32 and 256, on the CPU and, when torch sees one, on the GPU,
with the two checked to agree (cosine >= 0.9999 on every face); and the IResNet-18/50 architectures
with random weights (their speed does not depend on the weights).

    .venv/bin/python benchmarks/embed_throughput.py [--repeat 4] [--workers 2]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gallery.embed import FaceDetector, Photo, align_face, embed_photos, get_encoder, load_image  # noqa: E402
from gallery.embed.align import ARCFACE_CHIP, DLIB_CHIP, DLIB_NATIVE_CHIP  # noqa: E402

FACES = REPO.parent / "shared" / "faces"


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def encoder_rows(chips: np.ndarray, devices: list[str], seconds: float) -> tuple[list[dict], dict]:
    """Native dlib against the torch port on the same chips: faces/s per batch size and device."""
    native = get_encoder("dlib-resnet-native")
    want, t = timed(native.encode, chips)
    rows = [{"stage": "encode dlib-resnet-native (dlib, CPU, one chip at a time)", "items": len(chips), "unit": "face",
             "seconds": t}]
    speed = {"native": len(chips) / t}
    for device in devices:
        port = get_encoder("dlib-resnet", device=device)
        got = port.encode(chips)
        cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        if cosine.min() < 0.9999:
            raise SystemExit(f"torch and dlib disagree on {device}: min cosine {cosine.min():.6f}")
        for batch in (1, 32, 256):
            port.batch_size = batch
            pool = np.concatenate([chips] * (batch // len(chips) + 2))
            run = pool[: max(batch, 2 * len(chips) // batch * batch)]  # whole batches only
            port.encode(run[:batch])  # warm-up: kernels chosen, memory allocated
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                port.encode(run)
                done += len(run)
            t = time.perf_counter() - start
            rows.append({"stage": f"encode dlib-resnet (torch, {device}, batch {batch})", "items": done, "unit": "face",
                         "seconds": t, "min_cosine_to_dlib": float(cosine.min())})
            speed[f"{device}/{batch}"] = done / t
    return rows, speed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=5.0, help="time each torch batch size runs for")
    args = ap.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    paths = sorted(p for p in FACES.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) * args.repeat
    n = len(paths)
    rows = []

    images, t_decode = timed(lambda: [load_image(p) for p in paths])
    pixels = sum(im.shape[0] * im.shape[1] for im in images) / n / 1e6
    rows.append({"stage": "decode (Pillow)", "items": n, "unit": "img", "seconds": t_decode})
    det5, det68 = FaceDetector("hog"), FaceDetector("hog", landmarks=68)
    faces, t_det = timed(lambda: [det5.detect(im) for im in images])
    n_faces = sum(len(f) for f in faces)
    rows.append({"stage": "detect HOG + 5 landmarks", "items": n, "unit": "img", "seconds": t_det})
    faces68, t_det68 = timed(lambda: [det68.detect(im) for im in images])
    rows.append({"stage": "detect HOG + 68 landmarks", "items": n, "unit": "img", "seconds": t_det68})
    small = images[: max(4, n // args.repeat // 4)]
    cnn = FaceDetector("cnn", max_side=800)
    _, t_cnn = timed(lambda: [cnn.detect(im) for im in small])
    rows.append({"stage": "detect CNN (MMOD, max side 800) + 5 landmarks", "items": len(small), "unit": "img", "seconds": t_cnn})
    chips, t_align = timed(lambda: [align_face(im, f, DLIB_CHIP) for im, fs in zip(images, faces) for f in fs])
    rows.append({"stage": "align: dlib chip 150 (gallery's warp)", "items": n_faces, "unit": "face", "seconds": t_align})
    native_chips, t_native = timed(lambda: [align_face(im, f, DLIB_NATIVE_CHIP) for im, fs in zip(images, faces) for f in fs])
    rows.append({"stage": "align: dlib chip 150 (dlib's get_face_chip)", "items": n_faces, "unit": "face", "seconds": t_native})
    chips112, t_align112 = timed(lambda: [align_face(im, f, ARCFACE_CHIP) for im, fs in zip(images, faces68) for f in fs])
    rows.append({"stage": "align: ArcFace chip 112", "items": len(chips112), "unit": "face", "seconds": t_align112})

    enc_rows, speed = encoder_rows(np.stack(native_chips), ["cpu"] + (["cuda"] if device == "cuda" else []), args.seconds)
    rows += enc_rows
    from gallery.embed.iresnet import IResNet

    tmp = Path(tempfile.mkdtemp(prefix="embed-throughput-"))
    for depth, layers in (("r18", (2, 2, 2, 2)), ("r50", (3, 4, 14, 3))):
        torch.save(IResNet(layers).state_dict(), tmp / f"{depth}.pth")
        enc = get_encoder(f"arcface-{depth}:{tmp / f'{depth}.pth'}", device=device)
        b112 = np.stack(chips112)
        enc.encode(b112[:2])
        _, t = timed(enc.encode, b112)
        rows.append({"stage": f"encode arcface-{depth} (512-d, {device})", "items": len(b112), "unit": "face", "seconds": t})
    shutil.rmtree(tmp, ignore_errors=True)

    photos = [Photo(p, str(p)) for p in paths]
    for model in ("dlib-resnet-native", "dlib-resnet"):
        enc = get_encoder(model)
        for workers in sorted({0, args.workers}):
            out, t = timed(lambda: list(embed_photos(photos, enc, workers=workers, progress=False)))
            rows.append({"stage": f"end to end, {model}, {workers} workers", "items": n, "unit": "img", "seconds": t,
                         "faces": sum(e.n_faces for e in out)})

    for r in rows:
        r["per_second"] = r["items"] / r["seconds"]
    result = {"device": device, "cpu_count": os.cpu_count(), "machine": platform.platform(), "images": n,
              "faces": n_faces, "mean_megapixels": pixels, "torch_threads": torch.get_num_threads(), "rows": rows,
              "dlib_resnet_faces_per_second": speed,
              "speedup_torch_batch32_cpu_over_native": speed["cpu/32"] / speed["native"]}
    out = REPO / "benchmarks" / "results" / f"embed_throughput-{device}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{n} images ({pixels:.2f} MP mean), {n_faces} faces, {os.cpu_count()} CPUs, device {device}\n")
    print("| stage | items | per second |\n|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['items']} {r['unit']} | {r['per_second']:.1f} {r['unit']}/s |")
    print(f"\ntorch at batch 32 on the CPU: {result['speedup_torch_batch32_cpu_over_native']:.1f}x dlib's native descriptor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
