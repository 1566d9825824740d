"""Photo embedding throughput: decode, detection, alignment and encoding separately, then end to end.

Two sections (``--section``, default both):

``encoders`` runs on the real photos of ``../shared/faces`` (every image, repeated ``--repeat`` times)
and writes ``benchmarks/results/embed_throughput-<device>.json``. Encoders: dlib's ResNet run by
dlib (``dlib-resnet-native``, one chip at a time) against the torch port (``dlib-resnet``) at batch 1,
32 and 256, on the CPU and, when torch sees one, on the GPU, with the two checked to agree (cosine
>= 0.9999 on every face); and the IResNet-18/50 architectures with random weights (their speed does
not depend on the weights).

``detection`` compares HOG detection settings (the old rule, the two-pass rule of
:mod:`gallery.embed.detect` and alternatives) on the shared photos and on 1, 4 and 12 MP JPEG
versions of them written to a temporary folder: per stage (decode, detect, landmarks and
alignment, encode; CPU time of one process) and end to end (``embed_photos`` with ``--workers``
processes, wall time, best of ``--rounds`` rounds run interleaved, since other work may share the
machine), with the recall of the labelled faces (``labels.csv``; a gallery photo shows its one
identity). It stops with an error if the default rule loses a labelled face of the shared photos.
Writes ``benchmarks/results/embed_throughput-detection-<device>.json``.

    .venv/bin/python benchmarks/embed_throughput.py [--section detection] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gallery.embed import FaceDetector, Photo, align_face, decode_photo, embed_photos, get_encoder, load_image  # noqa: E402
from gallery.embed.align import ARCFACE_CHIP, DLIB_CHIP, DLIB_SAMPLED_CHIP  # noqa: E402
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

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


def encoder_section(args) -> None:
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
    chips, t_align = timed(lambda: [align_face(im, f, DLIB_SAMPLED_CHIP) for im, fs in zip(images, faces) for f in fs])
    rows.append({"stage": "align: dlib chip 150 (gallery's warp)", "items": n_faces, "unit": "face", "seconds": t_align})
    native_chips, t_native = timed(lambda: [align_face(im, f, DLIB_CHIP) for im, fs in zip(images, faces) for f in fs])
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


#: HOG settings compared: a name, the FaceDetector options, and whether the old per-photo upsample applies.
SETTINGS = [
    ("old rule: long side 1600, upsampled once up to 1000 px", {"max_side": 1600}, True),
    ("two passes at 640, then 1280 where none (default)", {}, False),
    ("two passes at 480, then 960 where none", {"max_side": 480}, False),
    ("two passes at 600, then 1200 where none", {"max_side": 600}, False),
    ("two passes at 800, then 1600 where none", {"max_side": 800}, False),
    ("one pass at 640", {"max_side": 640, "upsample": 0}, False),
    ("one pass at 480", {"max_side": 480, "upsample": 0}, False),
]
DEFAULT_SETTING = SETTINGS[1][0]
OLD_UPSAMPLE_BELOW = 1000


def labelled_faces() -> dict[str, int]:
    """Labelled faces per shared photo (relative path): labels.csv, and one per gallery photo."""
    import csv

    with open(FACES / "labels.csv", newline="") as f:
        counts = {row["path"]: len(row["identities"].split(";")) for row in csv.DictReader(f)}
    for path in sorted((FACES / "gallery").rglob("*")):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            counts[path.relative_to(FACES).as_posix()] = 1
    return counts


def resized_sets(megapixels: list[float], root: Path) -> dict[str, Path]:
    """The shared photos as JPEG (quality 90) of about ``mp`` megapixels each, one folder per size."""
    from PIL import Image

    folders = {"shared photos": FACES}
    for mp in megapixels:
        folder = root / f"{mp:g}mp"
        for rel in labelled_faces():
            image = load_image(FACES / rel)
            h, w = image.shape[:2]
            scale = (mp * 1e6 / (h * w)) ** 0.5
            out = folder / Path(rel).with_suffix(".jpg")
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BICUBIC).save(out, quality=90)
        folders[f"{mp:g} MP JPEG"] = folder
    return folders


def photo_paths(folder: Path) -> dict[str, Path]:
    """Labelled photo (relative path as in labels.csv) -> its file in ``folder``."""
    out = {}
    for rel in labelled_faces():
        path = folder / rel
        out[rel] = path if path.is_file() else (folder / rel).with_suffix(".jpg")
    return out


def old_rule(options: dict, path: Path) -> dict:
    """The per-photo choice of the old default: upsample once when the photo's long side is at most 1000."""
    from gallery.embed.images import image_size

    return {**options, "upsample": int(max(image_size(path)) <= OLD_UPSAMPLE_BELOW)}


def stage_times(paths: dict[str, Path], options: dict, per_photo_upsample: bool, encoder) -> dict:
    """CPU seconds per photo of each stage in this process, and the faces found per photo."""
    from gallery.embed.align import align_faces

    detectors: dict = {}
    found, t = {}, dict.fromkeys(("decode", "detect", "landmarks+align", "encode"), 0.0)
    chips = []
    clock = time.thread_time
    for rel, path in paths.items():
        opts = old_rule(options, path) if per_photo_upsample else options
        key = tuple(sorted(opts.items()))
        detector = detectors.get(key) or detectors.setdefault(key, FaceDetector("hog", **opts))
        c = clock()
        photo = decode_photo(path)
        t["decode"] += clock() - c
        c = clock()
        boxes = detector.find_boxes(photo)
        t["detect"] += clock() - c
        c = clock()
        faces = detector.fit_landmarks(photo.pixels, boxes)
        chips.append(align_faces(photo.pixels, faces, encoder.chip))
        t["landmarks+align"] += clock() - c
        found[rel] = len(faces)
    batch = np.concatenate(chips)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in embed_photos while detection workers hold the other cores
    encoder.encode(batch)  # warm-up at this batch's size: kernels chosen, memory allocated
    t["encode"] = min(cpu_seconds(encoder.encode, batch) for _ in range(3))
    torch.set_num_threads(threads)
    return {"seconds_per_photo": {k: v / len(paths) for k, v in t.items()}, "faces": found}


def cpu_seconds(fn, *args) -> float:
    """CPU seconds of this process and its reaped children (all threads) while ``fn`` runs."""
    def used() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    start = used()
    fn(*args)
    return used() - start


def end_to_end(paths: dict[str, Path], options: dict, per_photo_upsample: bool, encoder, workers: int,
               repeat: int) -> tuple[float, float, dict]:
    """Wall and CPU seconds (every process) of ``embed_photos`` over every photo ``repeat`` times (so that
    starting the workers weighs as little as in a large build), and the faces found per photo."""
    groups: dict = {}
    for rel, path in paths.items():
        opts = old_rule(options, path) if per_photo_upsample else options
        groups.setdefault(tuple(sorted(opts.items())), []).extend([Photo(path, rel)] * repeat)
    found: dict[str, int] = {}

    def run() -> None:
        for key, photos in groups.items():
            for e in embed_photos(photos, encoder, detector={"method": "hog", **dict(key)}, workers=workers, progress=False):
                if e.error:
                    raise SystemExit(f"{e.photo.source}: {e.error}")
                found[e.photo.source] = e.n_faces

    start = time.perf_counter()
    cpu = cpu_seconds(run)
    return time.perf_counter() - start, cpu, found


def decode_times(paths: dict[str, Path], side: int = 640) -> dict[str, float]:
    """CPU ms per photo (best of 3) of the ways to get the full-size pixels and a copy of long side ``side``."""
    from gallery.embed.images import resize_image

    def shrunk(image) -> np.ndarray:
        return resize_image(image, min(1.0, side / max(image.shape[:2])), gray=True)

    ways = {
        "full decode": lambda p: load_image(p),
        f"full decode, then a gray copy shrunk to {side} from the array": lambda p: shrunk(load_image(p)),
        f"full decode, then a gray copy shrunk to {side} from Pillow's image (the pipeline)": lambda p: shrunk(decode_photo(p)),
        f"draft decode to {side} only (no full-size pixels)": lambda p: load_image(p, max_side=side),
        f"draft decode to {side}, then a full decode (draft first)": lambda p: (load_image(p, max_side=side), load_image(p)),
    }
    out = {}
    for name, way in ways.items():
        out[name] = 1000 * min(sum(cpu_seconds(way, p) for p in paths.values()) for _ in range(3)) / len(paths)
    return out


def recall(found: dict[str, int], labels: dict[str, int]) -> tuple[int, list[str]]:
    """Labelled faces found (at most the labelled number per photo), and the photos with fewer."""
    return sum(min(found[k], n) for k, n in labels.items()), [k for k, n in labels.items() if found[k] < n]


def detection_section(args) -> int:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    labels = labelled_faces()
    encoder = get_encoder("dlib-resnet", device="cpu")
    tmp = Path(tempfile.mkdtemp(prefix="embed-detection-"))
    try:
        folders = resized_sets([float(m) for m in args.megapixels.split(",") if m], tmp)
        rows, decode_rows = [], []
        for set_name, folder in folders.items():
            paths = photo_paths(folder)
            megapixels = float(np.mean([np.prod(load_image(p).shape[:2]) for p in paths.values()])) / 1e6
            decoding = decode_times(paths)
            decode_rows.append({"photos": set_name, "cpu_ms_per_photo": decoding})
            print(f"\n{set_name}: decoding, CPU ms per photo: " + "; ".join(f"{k} {v:.1f}" for k, v in decoding.items()))
            stages = {name: stage_times(paths, opts, old, encoder) for name, opts, old in SETTINGS}
            best, best_cpu = dict.fromkeys(stages, float("inf")), dict.fromkeys(stages, float("inf"))
            e2e_found = {}
            n = len(paths) * args.repeat
            for _ in range(args.rounds):
                for name, opts, old in SETTINGS:
                    seconds, cpu, e2e_found[name] = end_to_end(paths, opts, old, encoder, args.workers, args.repeat)
                    best[name], best_cpu[name] = min(best[name], seconds), min(best_cpu[name], cpu)
            for name, _, _ in SETTINGS:
                got, short = recall(e2e_found[name], labels)
                rows.append({"photos": set_name, "mean_megapixels": megapixels, "setting": name, "n_photos": len(paths),
                             "labelled_faces": sum(labels.values()), "labelled_found": got, "photos_missing_faces": short,
                             "faces_found": sum(e2e_found[name].values()),
                             "end_to_end_photos_per_second": n / best[name],
                             "end_to_end_cpu_ms_per_photo": 1000 * best_cpu[name] / n,
                             "photos_per_second_on_idle_cores": os.cpu_count() * n / best_cpu[name],
                             "stage_ms_per_photo": {k: 1000 * v for k, v in stages[name]["seconds_per_photo"].items()}})
            print_rows([r for r in rows if r["photos"] == set_name])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"device": device, "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "machine": platform.platform(),
              "load_average_after": os.getloadavg(), "workers": args.workers, "rounds": args.rounds,
              "torch_threads": torch.get_num_threads(), "rows": rows, "decoding": decode_rows}
    out = REPO / "benchmarks" / "results" / f"embed_throughput-detection-{device}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    default = next(r for r in rows if r["photos"] == "shared photos" and r["setting"] == DEFAULT_SETTING)
    if default["photos_missing_faces"]:
        print(f"the default rule lost labelled faces in {default['photos_missing_faces']}")
        return 1
    return 0


def print_rows(rows: list[dict]) -> None:
    r0 = rows[0]
    print(f"\n{r0['photos']}: {r0['n_photos']} photos, {r0['mean_megapixels']:.1f} MP mean, {r0['labelled_faces']} labelled faces")
    print("| setting | labelled faces found | faces found | end to end, wall | end to end, CPU | on idle cores | "
          "decode | detect | landmarks + align | encode |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = r["stage_ms_per_photo"]
        print(f"| {r['setting']} | {r['labelled_found']}/{r['labelled_faces']} | {r['faces_found']} | "
              f"{r['end_to_end_photos_per_second']:.1f} photos/s | {r['end_to_end_cpu_ms_per_photo']:.1f} ms | "
              f"{r['photos_per_second_on_idle_cores']:.1f} photos/s | {ms['decode']:.1f} ms | {ms['detect']:.1f} ms | "
              f"{ms['landmarks+align']:.1f} ms | {ms['encode']:.1f} ms |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--section", choices=("all", "encoders", "detection"), default="all")
    ap.add_argument("--repeat", type=int, default=4, help="times every photo is embedded (end to end)")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=5.0, help="encoders: time each torch batch size runs for")
    ap.add_argument("--rounds", type=int, default=3, help="detection: interleaved rounds, the best of which counts")
    ap.add_argument("--megapixels", default="1,4,12", help="detection: sizes of the resized photo sets")
    args = ap.parse_args()
    if args.section in ("all", "encoders"):
        encoder_section(args)
    if args.section in ("all", "detection"):
        return detection_section(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
