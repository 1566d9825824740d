"""Measure the default open-set threshold of dlib's ResNet on the labelled real photos, for both ports.

Every single-face photo of ``../shared/faces`` (gallery, probes and misc, labels from labels.csv) is
embedded with the shipped pipeline; all pairs of photos of the same person are genuine, all pairs of
different people (the unenrolled person included) impostors. The script prints the score
distributions, the equal-error-rate threshold, and the zero-error interval [max impostor, min genuine],
and writes them to ``benchmarks/results/dlib_threshold.json``. The default threshold in
``gallery.search.MODEL_THRESHOLDS`` is the midpoint of that interval, rounded to 0.01. Both
``dlib-resnet`` (torch) and ``dlib-resnet-native`` (dlib) are measured in the same run: the same
model on the same chips, so their intervals must agree.

The set is small (tens of pairs), so this is a sanity-checked starting point, not a calibration:
for a real gallery run ``gallery calibrate`` at a target FPIR.

    .venv/bin/python benchmarks/dlib_threshold.py
"""

from __future__ import annotations

import csv
import json
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gallery.embed import Photo, embed_photos, get_encoder  # noqa: E402
from gallery.metrics import equal_error_rate, roc  # noqa: E402

FACES = REPO.parent / "shared" / "faces"


def labelled_photos() -> list[Photo]:
    photos = [Photo(p, str(p.relative_to(FACES)), p.parent.name) for p in sorted((FACES / "gallery").glob("*/*"))]
    with open(FACES / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            if ";" not in row["identities"]:
                photos.append(Photo(FACES / row["path"], row["path"], row["identities"]))
    return photos


def measure(model: str) -> dict:
    embedded = [e for e in embed_photos(labelled_photos(), get_encoder(model), workers=2, progress=False) if e.n_faces == 1]
    x = np.stack([e.vectors[0] for e in embedded])
    who = np.array([e.photo.identity for e in embedded])
    s = x @ x.T
    iu = np.triu_indices(len(x), 1)
    same = (who[:, None] == who[None, :])[iu]
    scores = s[iu]
    genuine, impostor = scores[same], scores[~same]
    eer, eer_t = equal_error_rate(roc(scores, same))
    lo, hi = float(impostor.max()), float(genuine.min())
    out = {
        "photos": len(embedded),
        "identities": int(len(set(who))),
        "genuine_pairs": int(len(genuine)),
        "impostor_pairs": int(len(impostor)),
        "genuine": {"min": hi, "median": float(np.median(genuine))},
        "impostor": {"max": lo, "median": float(np.median(impostor)), "p99": float(np.quantile(impostor, 0.99))},
        "eer": float(eer),
        "eer_threshold": float(eer_t),
        "zero_error_interval": [lo, hi],
        "suggested_threshold": round((lo + hi) / 2, 2) if hi > lo else None,
    }
    return out


def main() -> int:
    out = {model: measure(model) for model in ("dlib-resnet", "dlib-resnet-native")}
    out["machine"] = platform.platform()
    print(json.dumps(out, indent=1))
    (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "results" / "dlib_threshold.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
