"""From nearest records to ranked identities, and the open-set decision.

A gallery holds several images per identity; an answer ranks identities. By default an identity's
score is its best image's cosine score (``aggregate="max"``); ``aggregate="mean"`` uses the mean of its
``top_n`` best images instead, which rewards identities that match on several photos.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .errors import InvalidInputError
from .types import Match, SearchResult

AGGREGATES = ("max", "mean")

#: Documented open-set defaults per model, used until a threshold is calibrated for the gallery.
#: dlib-resnet: dlib's published rule "same person if Euclidean distance < 0.6" on unit vectors,
#: i.e. cosine >= 1 - 0.6**2 / 2 = 0.82.
MODEL_THRESHOLDS: dict[str, float] = {"dlib-resnet": 0.82}
#: For models with no documented threshold: a deliberately cautious cosine; calibrate instead.
FALLBACK_THRESHOLD = 0.5


def resolve_threshold(threshold: Optional[float], calibrated: Optional[float], model: str) -> tuple[float, str]:
    """The threshold to use and where it came from: the call, the manifest's calibration, the model, fallback."""
    if threshold is not None:
        t = float(threshold)
        if not np.isfinite(t):
            raise InvalidInputError(f"threshold must be a finite cosine similarity, got {threshold}")
        return t, "call"
    if calibrated is not None:
        return float(calibrated), "calibrated"
    if model in MODEL_THRESHOLDS:
        return MODEL_THRESHOLDS[model], "model-default"
    return FALLBACK_THRESHOLD, "fallback"


def rank_identities(
    D: np.ndarray,
    I: np.ndarray,
    identity_of: np.ndarray,
    names: np.ndarray,
    k: int,
    *,
    aggregate: str = "max",
    top_n: int = 3,
    rescore: Optional[Callable[[int, list[int]], list[tuple[int, list[int], list[float]]]]] = None,
) -> list[list[Match]]:
    """Per query, at most ``k`` identities best first, from record scores ``D`` and record ids ``I``.

    ``identity_of[record_id]`` is the identity code of a record (-1 if removed). With
    ``aggregate="mean"``, ``rescore(query_row, codes)`` must return, for each candidate identity code,
    all its record ids and exact scores, so the top-``top_n`` mean does not depend on which images the
    index happened to return.
    """
    if aggregate not in AGGREGATES:
        raise InvalidInputError(f"unknown aggregate {aggregate!r}; choose one of: {', '.join(AGGREGATES)}")
    if top_n < 1:
        raise InvalidInputError(f"top_n must be >= 1, got {top_n}")
    out: list[list[Match]] = []
    for q in range(len(D)):
        groups: dict[int, tuple[list[int], list[float]]] = {}
        for score, rid in zip(D[q].tolist(), I[q].tolist()):
            if rid < 0:
                continue
            code = int(identity_of[rid])
            if code < 0:
                continue
            ids, scores = groups.setdefault(code, ([], []))
            ids.append(rid)
            scores.append(score)
        if aggregate == "max":
            ranked = [(scores[0], code, ids, scores) for code, (ids, scores) in groups.items()]
        else:
            assert rescore is not None, "aggregate='mean' needs a rescore function"
            ranked = []
            for code, ids, scores in rescore(q, list(groups)):
                order = np.argsort(-np.asarray(scores), kind="stable")
                ids = [ids[i] for i in order]
                scores = [scores[i] for i in order]
                ranked.append((float(np.mean(scores[:top_n])), code, ids, scores))
        ranked.sort(key=lambda t: (-t[0], names[t[1]]))
        out.append(
            [
                Match(identity=str(names[code]), score=float(s), records=tuple(ids), record_scores=tuple(map(float, sc)))
                for s, code, ids, sc in ranked[:k]
            ]
        )
    return out


def decide(matches: list[list[Match]], threshold: float, source: str) -> list[SearchResult]:
    """Wrap ranked matches with the open-set threshold: a result names its identity iff score >= threshold."""
    return [SearchResult(matches=tuple(m), threshold=threshold, threshold_source=source) for m in matches]
