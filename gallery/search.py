"""From nearest records to ranked identities, and the open-set decision.

A gallery holds several images per identity; an answer ranks identities. By default an identity's
score is its best image's cosine score (``aggregate="max"``); ``aggregate="mean"`` uses the mean of its
``top_n`` best images instead, which rewards identities that match on several photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .errors import InvalidInputError
from .types import IdMap, Match, SearchResult

AGGREGATES = ("max", "mean")
#: First guess of records per identity to fetch when ranking k identities; widened when too few.
RECORDS_PER_IDENTITY_GUESS = 4
_new_match = tuple.__new__

@dataclass(frozen=True)
class ModelDefault:
    """A model's open-set threshold for a gallery nobody has calibrated yet, and how it was measured."""

    value: float
    evidence: str


#: dlib-resnet, measured as a 1:N decision (benchmarks/dlib_threshold.py, results/dlib_threshold.json):
#: every labelled single-face real photo of ../shared/faces searched against the others with its own
#: identity left out. The highest non-mated best score there is 0.901 (0 of 23 accepted at 0.94: at
#: most 15% FPIR at 95% confidence, so weak evidence), and on a larger labelled set with two look-alike
#: people it was 0.933 (0.92 accepted about 10% of non-mated searches there). The default is the first
#: 0.01 step above every non-mated score known, erring toward "unknown": at it 1 of 22 mated searches
#: here (an RGBA PNG at 0.9345) is rejected. It was measured on galleries of at most 6 identities;
#: larger galleries raise the best impostor score, so calibrate them. dlib's own rule (Euclidean
#: distance < 0.6, cosine >= 0.82 on unit vectors) accepts half of the impostor pairs there.
_DLIB = ModelDefault(0.94, "1:N leave-one-identity-out on 23 labelled real photos of 6 people (highest non-mated "
                           "best score 0.901, 0.933 on a larger set with look-alikes; 0 of 23 accepted, FPIR <= 0.15 "
                           "at 95%); measured at <= 6 identities: run `gallery calibrate` for larger galleries")
MODEL_THRESHOLDS: dict[str, ModelDefault] = {"dlib-resnet": _DLIB, "dlib-resnet-native": _DLIB}
#: For models with no measured threshold: a guess, never used silently (see :func:`threshold_provenance`).
FALLBACK_THRESHOLD = 0.5
FALLBACK_FIX = "run `gallery calibrate` (Gallery.set_calibration) to measure one, or pass --threshold"


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
        return MODEL_THRESHOLDS[model].value, "model-default"
    return FALLBACK_THRESHOLD, "fallback"


def fallback_warning(model: str) -> str:
    return (f"no threshold has been calibrated or measured for model {model!r}: the open-set decision uses the "
            f"fallback {FALLBACK_THRESHOLD}, a guess that may accept strangers; {FALLBACK_FIX}")


def threshold_provenance(source: str, model: str, calibration: Optional[dict] = None) -> dict:
    """Where a threshold came from, for every answer: the calibration's data, the model default's
    evidence, or the fallback's warning and the command that fixes it."""
    out: dict = {"source": source}
    if source == "calibrated" and calibration is not None:
        out.update(calibration)
    elif source == "model-default":
        out.update(model=model, evidence=MODEL_THRESHOLDS[model].evidence)
    elif source == "fallback":
        out.update(model=model, warning=fallback_warning(model))
    return out


def rank_identities(
    D: np.ndarray,
    I: np.ndarray,
    identity_of: IdMap,
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
    if aggregate == "max":
        return _rank_by_best_record(D, I, identity_of, names, k)
    if rescore is None:
        raise ValueError("aggregate='mean' needs a rescore function")
    out: list[list[Match]] = []
    for q in range(len(D)):
        codes = identity_of[I[q][I[q] >= 0]]
        ranked = []
        for code, ids, scores in rescore(q, list(dict.fromkeys(codes[codes >= 0].tolist()))):
            order = np.argsort(-np.asarray(scores), kind="stable")
            ids = [ids[i] for i in order]
            scores = [scores[i] for i in order]
            ranked.append((float(np.mean(scores[:top_n])), code, ids, scores))
        ranked.sort(key=lambda t: (-t[0], names[t[1]]))
        out.append([_match(names[c], s, ids, sc) for s, c, ids, sc in ranked[:k]])
    return out


def _match(name, score, ids, scores) -> Match:
    return Match(identity=str(name), score=float(score), records=tuple(np.asarray(ids).tolist()),
                 record_scores=tuple(np.asarray(scores, dtype=np.float64).tolist()))


def _rank_by_best_record(D: np.ndarray, I: np.ndarray, identity_of: IdMap, names: np.ndarray, k: int) -> list[list[Match]]:
    """Group each row's records by identity in numpy; rows are sorted best first, so a group's first
    record is its best. Only the k winning groups per query become Python objects, from their
    records alone (per-element numpy access, or converting every record, costs more than the ranking
    itself), each through ``tuple.__new__`` (the named tuple's own constructor is a Python function: about
    a fifth of the grouping's time at ten matches per query)."""
    nq, kr = I.shape
    codes = identity_of[I].reshape(-1)
    held = np.flatnonzero(codes >= 0)  # row-major: by query, then best record first
    if len(held) == 0:  # no query found any record (e.g. an ivfpq search probed only empty cells)
        return [[] for _ in range(nq)]
    q_of = held // kr
    key = q_of * len(names) + codes[held]
    order = np.argsort(key, kind="stable")  # (query, identity) groups, each with its best record first
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)]
    best = order[starts]  # each group's best record, as an index into held
    by_rank = np.argsort(best)  # by query, then by the rank of the group's best record
    g_q = q_of[best[by_rank]]
    won = by_rank[np.arange(len(by_rank)) - np.searchsorted(g_q, g_q) < k]
    lens = ends[won] - starts[won]
    bounds = np.r_[0, np.cumsum(lens)]
    records = held[order[np.repeat(starts[won] - bounds[:-1], lens) + np.arange(bounds[-1])]]
    ids = tuple(I.reshape(-1)[records].tolist())  # a tuple's slice is a tuple: one object per field
    scores = tuple(D.reshape(-1)[records].astype(np.float64).tolist())
    heads = best[won]
    who = names[codes[held[heads]]].astype(str).tolist()
    b = bounds.tolist()
    matches = [_new_match(Match, (name, scores[lo], ids[lo:hi], scores[lo:hi], ()))
               for lo, hi, name in zip(b, b[1:], who)]
    per_query = np.searchsorted(q_of[heads], np.arange(nq + 1)).tolist()  # heads are in query order
    return [matches[lo:hi] for lo, hi in zip(per_query, per_query[1:])]


class IdentitySearcher:
    """Ranked identities over one set of records: an index over their vectors and each record's identity.

    A gallery has one; a sharded gallery has one per shard, each over the identities it holds, so the
    ranking of a shard's answer is the same code as a whole gallery's.
    """

    def __init__(self, index, vectors, record_ids: np.ndarray, labels: Sequence, next_id: int, spec=None):
        self.index = index
        self.spec = spec if spec is not None else getattr(index, "spec", None)
        self.vectors = vectors
        self.record_ids = np.asarray(record_ids, dtype=np.int64)
        labels = np.asarray(labels, dtype=object).astype(str)
        if len(labels):
            self.names, codes = np.unique(labels, return_inverse=True)
        else:
            self.names, codes = np.empty(0, str), np.empty(0, np.int64)
        self.codes = codes.astype(np.int32)
        self.identity_of = IdMap(self.record_ids, self.codes, next_id)
        self._records_of: Optional[list[np.ndarray]] = None

    def __len__(self) -> int:
        return len(self.record_ids)

    def memory_bytes(self) -> int:
        """RAM of the index, the label arrays and the id -> row map (the vectors stay memory-mapped on disk)."""
        index = self.index.memory_bytes() if self.index is not None else 0
        labels = self.identity_of.nbytes + self.record_ids.nbytes + self.codes.nbytes + sum(len(s) for s in self.names)
        labels += self.vectors.nbytes if self.vectors is not None else 0
        return int(index + labels)

    def engine_info(self) -> Optional[dict]:
        """What a distributed engine reports about its workers (None for the local engine)."""
        return None

    def rank(self, xq: np.ndarray, k: int, *, nprobe: Optional[int] = None, rerank: Optional[int] = None,
             aggregate: str = "max", top_n: int = 3) -> list[list[Match]]:
        """At most ``k`` identities per query row, best first (``xq``: validated unit-norm queries)."""
        if self.index is None or len(self) == 0:
            return [[] for _ in range(len(xq))]
        k_ids = min(int(k), len(self.names))
        kr = min(len(self), k_ids * RECORDS_PER_IDENTITY_GUESS)
        ranked: list[list[Match]] = [[] for _ in range(len(xq))]
        rows = np.arange(len(xq))
        while True:
            D, I = self.index.search(xq[rows], kr, nprobe=nprobe, rerank=rerank, vectors=self.vectors)
            rescore = self._rescore(xq[rows]) if aggregate == "mean" else None
            again = rank_identities(D, I, self.identity_of, self.names, k_ids, aggregate=aggregate, top_n=top_n,
                                    rescore=rescore)
            for q, m in zip(rows.tolist(), again):
                ranked[q] = m
            rows = np.asarray([q for q in rows.tolist() if len(ranked[q]) < k_ids], dtype=np.int64)
            if len(rows) == 0 or kr >= len(self):
                return ranked
            kr = min(len(self), kr * 4)

    def rank_open_set(self, xq: np.ndarray, k: int, threshold: float, *, nprobe: Optional[int] = None,
                      recheck_nprobe: Optional[int] = None, **options) -> list[list[Match]]:
        """:meth:`rank`, then, when a recheck is asked for (``recheck_nprobe``, or the index spec's stored
        one), every query whose best score is below ``threshold`` ranked again over that many cells.

        Off by default: every stranger falls below the threshold, so a recheck makes the cost of a
        search depend on who is asking (at 10% mated traffic it was 6x slower); the default index
        settings reach exact search's open-set error rates without it (gallery/index/spec.py)."""
        ranked = self.rank(xq, k, nprobe=nprobe, **options)
        if self.spec is None:
            return ranked
        _, wide = self.spec.probes(nprobe, recheck_nprobe)
        low = [q for q, m in enumerate(ranked) if not m or m[0].score < threshold]
        if wide and low:
            for q, m in zip(low, self.rank(xq[low], k, nprobe=wide, **options)):
                ranked[q] = m
        return ranked

    def _rescore(self, xq: np.ndarray):
        """Exact scores of every record of given identities, for mean-of-top-n ranking."""
        if self._records_of is None:
            order = np.argsort(self.codes, kind="stable")
            bounds = np.searchsorted(self.codes[order], np.arange(len(self.names) + 1))
            self._records_of = [self.record_ids[order[bounds[c] : bounds[c + 1]]] for c in range(len(self.names))]

        def rescore(q: int, codes: list[int]):
            out = []
            for c in codes:
                ids = self._records_of[c]
                scores = self.vectors.gather(ids) @ xq[q]
                out.append((c, ids.tolist(), scores.tolist()))
            return out

        return rescore


def decide(matches: list[list[Match]], threshold: float, source: str,
           provenance: Optional[dict] = None) -> list[SearchResult]:
    """Wrap ranked matches with the open-set threshold: a result names its identity iff score >= threshold."""
    provenance = provenance if provenance is not None else {"source": source}
    return [SearchResult(matches=tuple(m), threshold=threshold, threshold_source=source, provenance=provenance)
            for m in matches]
