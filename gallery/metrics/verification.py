"""1:1 verification: ROC (TAR against FAR), equal error rate, and TAR at fixed FARs.

A pair is accepted when ``score >= threshold``. FAR(t) is the fraction of impostor pairs accepted,
TAR(t) the fraction of genuine pairs accepted, FRR = 1 - TAR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import InvalidInputError
from .pairs import labelled_embeddings, pair_blocks

DEFAULT_FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@dataclass(frozen=True)
class ROC:
    """``far[i]``, ``tar[i]`` are the rates when accepting ``score >= thresholds[i]`` (thresholds descending)."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    n_genuine: int
    n_impostor: int


def roc(scores, genuine) -> ROC:
    """The ROC over every distinct score; the first point (threshold +inf) accepts nothing."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    genuine = np.asarray(genuine, dtype=bool).reshape(-1)
    if scores.shape != genuine.shape:
        raise InvalidInputError(f"scores and genuine flags differ in length: {scores.shape} vs {genuine.shape}")
    n_gen, n_imp = int(genuine.sum()), int((~genuine).sum())
    if n_gen == 0 or n_imp == 0:
        raise InvalidInputError(f"a ROC needs genuine and impostor pairs; got {n_gen} genuine, {n_imp} impostor")
    order = np.argsort(-scores, kind="mergesort")
    s, g = scores[order], genuine[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(g)[last]
    fp = np.cumsum(~g)[last]
    return ROC(
        far=np.r_[0.0, fp / n_imp],
        tar=np.r_[0.0, tp / n_gen],
        thresholds=np.r_[np.inf, s[last]],
        n_genuine=n_gen,
        n_impostor=n_imp,
    )


def equal_error_rate(curve: ROC) -> tuple[float, float]:
    """(EER, threshold) where FAR equals FRR, interpolated linearly between ROC points."""
    frr = 1.0 - curve.tar
    diff = curve.far - frr  # rises from -1 towards +1 as the threshold falls
    i = int(np.searchsorted(diff, 0.0))
    if i == 0:
        return float(curve.far[0]), float(curve.thresholds[0])
    if i >= len(diff):
        return float(curve.far[-1]), float(curve.thresholds[-1])
    w = -diff[i - 1] / (diff[i] - diff[i - 1])
    eer = curve.far[i - 1] + w * (curve.far[i] - curve.far[i - 1])
    t_prev = curve.thresholds[i - 1] if np.isfinite(curve.thresholds[i - 1]) else curve.thresholds[i]
    return float(eer), float(t_prev + w * (curve.thresholds[i] - t_prev))


def rates_at(curve: ROC, threshold: float) -> tuple[float, float]:
    """(FAR, TAR) when accepting ``score >= threshold``: the operating point of one threshold on the ROC."""
    i = int(np.searchsorted(-curve.thresholds, -threshold, side="right")) - 1  # the last threshold >= it
    return float(curve.far[i]), float(curve.tar[i])


def tar_at_far(curve: ROC, fars: Sequence[float] = DEFAULT_FARS) -> dict[float, Optional[dict]]:
    """For each target FAR, the highest TAR with FAR <= target and its threshold.

    A target below 1 / n_impostor cannot be measured with the data at hand and maps to None.
    """
    out: dict[float, Optional[dict]] = {}
    for far in fars:
        if far * curve.n_impostor < 1:
            out[far] = None
            continue
        i = int(np.flatnonzero(curve.far <= far)[-1])
        out[far] = {"tar": float(curve.tar[i]), "threshold": float(curve.thresholds[i]), "far": float(curve.far[i])}
    return out


def pair_scores(embeddings, labels) -> tuple[np.ndarray, np.ndarray]:
    """Scores and genuine flags of all unordered pairs (n (n - 1) / 2 of them: for moderate n)."""
    x, codes = labelled_embeddings(embeddings, labels)
    blocks = list(pair_blocks(x, codes))
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def verification(embeddings, labels, *, fars: Sequence[float] = DEFAULT_FARS) -> dict:
    """ROC summary of all pairs: EER, its threshold, and TAR at each FAR the data allow."""
    scores, genuine = pair_scores(embeddings, labels)
    curve = roc(scores, genuine)
    eer, t = equal_error_rate(curve)
    return {
        "eer": eer,
        "eer_threshold": t,
        "tar_at_far": {f"{far:g}": v for far, v in tar_at_far(curve, fars).items()},
        "n_genuine": curve.n_genuine,
        "n_impostor": curve.n_impostor,
    }
