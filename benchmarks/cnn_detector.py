"""dlib's MMOD CNN face detector: dlib's own on the CPU against the torch port (``gallery.embed.dlib_cnn``).

Every photo of ``../shared/faces`` (or ``--photos``) is detected once by each, the two interleaved
photo by photo (which goes first alternates), since other work may share the machine; then the torch
port once more on all photos in one ``detect`` call (its batching). Prints photos/s and megapixels/s
for each, the speed-up, and how the detections compare (the count, the largest box and score
differences), and exits with an error if any photo's detections differ beyond 2 px or 1e-3.
The issue's goal on 2 CPU cores: torch at least 10x dlib, with the same boxes.

    .venv/bin/python benchmarks/cnn_detector.py [--upsample 0] [--threads 2] [--limit N] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dlib  # noqa: E402
import torch  # noqa: E402

from gallery.embed.dlib_cnn import CnnFaceDetector, default_model_file  # noqa: E402
from gallery.embed.images import IMAGE_SUFFIXES, load_image  # noqa: E402

FACES = REPO.parent / "shared" / "faces"


def dlib_detections(detector, image, upsample: int) -> list:
    found = detector(image, upsample)
    return [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence) for d in found]


def compare(ours: list, theirs: list) -> tuple[bool, int, float]:
    """(same set, largest box difference in px, largest score difference), dlib's order on both sides."""
    if len(ours) != len(theirs):
        return False, -1, float("inf")
    box = max((max(abs(a - b) for a, b in zip(x, y)) for (x, _), (y, _) in zip(ours, theirs)), default=0)
    score = max((abs(s - t) for (_, s), (_, t) in zip(ours, theirs)), default=0.0)
    return box <= 2 and score <= 1e-3, box, score


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=FACES)
    ap.add_argument("--upsample", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (dlib's CPU code runs as it does)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (0: all)")
    ap.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]  # other work sharing the machine slows both, dlib and torch

    paths = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    paths = paths[: args.limit] if args.limit else paths
    images = [load_image(p) for p in paths]
    model = default_model_file()
    theirs_detector = dlib.cnn_face_detection_model_v1(str(model))
    ours_detector = CnnFaceDetector(model, device="cpu")
    warm = images[0][:200, :200].copy()  # first calls set up dlib's and oneDNN's kernels
    theirs_detector(warm, 0), ours_detector.detect([warm])

    rows, t_dlib, t_torch = [], 0.0, 0.0
    for k, (path, image) in enumerate(zip(paths, images)):
        timings = {}
        for who in (("dlib", "torch") if k % 2 == 0 else ("torch", "dlib")):
            t = time.perf_counter()
            if who == "dlib":
                theirs = dlib_detections(theirs_detector, image, args.upsample)
            else:
                ours = ours_detector.detect([image], args.upsample)[0]
            timings[who] = time.perf_counter() - t
        same, box, score = compare(ours, theirs)
        t_dlib, t_torch = t_dlib + timings["dlib"], t_torch + timings["torch"]
        rows.append({"photo": str(path.relative_to(args.photos)), "size": list(image.shape[:2]), "faces": len(theirs),
                     "dlib_s": timings["dlib"], "torch_s": timings["torch"], "same": same, "box_px": box, "score": score,
                     "dlib": theirs, "torch": ours})
        print(f"{rows[-1]['photo']:45s} {image.shape[1]:5d}x{image.shape[0]:<5d} faces {len(theirs)}  "
              f"dlib {timings['dlib']:7.2f} s  torch {timings['torch']:6.2f} s  "
              f"{'same' if same else 'DIFFERENT'} (box {box} px, score {score:.1e})", flush=True)

    t = time.perf_counter()
    batched = ours_detector.detect(images, args.upsample)
    t_batched = time.perf_counter() - t
    batched_same = all(compare(b, r["dlib"])[0] for b, r in zip(batched, rows))

    n, mp = len(images), sum(i.shape[0] * i.shape[1] for i in images) / 1e6
    compared = [r for r in rows if r["box_px"] >= 0]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {load_at_start:.1f} to {os.getloadavg()[0]:.1f}",
        "versions": f"torch {torch.__version__} ({args.threads} threads), dlib {dlib.__version__}",
        "photos": n, "megapixels": round(mp, 2), "upsample": args.upsample,
        "dlib_photos_per_s": n / t_dlib, "torch_photos_per_s": n / t_torch, "torch_batched_photos_per_s": n / t_batched,
        "speedup": t_dlib / t_torch, "speedup_batched": t_dlib / t_batched,
        "detections_compared": sum(r["faces"] for r in compared),
        "max_box_px": max((r["box_px"] for r in compared), default=0),
        "max_score_diff": max((r["score"] for r in compared), default=0.0),
        "mismatched_photos": [r["photo"] for r in rows if not r["same"]], "batched_same": batched_same,
        "rows": rows,
    }
    print(f"\n{n} photos, {mp:.1f} MP, upsample {args.upsample}; {result['machine']}; {result['versions']}")
    print(f"dlib CNN (CPU)              {n / t_dlib:7.3f} photos/s  {mp / t_dlib:7.3f} MP/s  ({t_dlib:.1f} s)")
    print(f"torch CNN (CPU, one by one) {n / t_torch:7.3f} photos/s  {mp / t_torch:7.3f} MP/s  ({t_torch:.1f} s)  "
          f"x{t_dlib / t_torch:.1f}")
    print(f"torch CNN (CPU, one call)   {n / t_batched:7.3f} photos/s  {mp / t_batched:7.3f} MP/s  ({t_batched:.1f} s)  "
          f"x{t_dlib / t_batched:.1f}")
    print(f"detections compared {result['detections_compared']}: max box diff {result['max_box_px']} px, "
          f"max score diff {result['max_score_diff']:.2e}; mismatched photos: {result['mismatched_photos'] or 'none'}; "
          f"batched call same: {batched_same}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if not result["mismatched_photos"] and batched_same else 1


if __name__ == "__main__":
    sys.exit(main())
