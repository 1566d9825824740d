"""Retrieval metrics as defined in Musgrave, Belongie and Lim, "A Metric Learning Reality Check" (ECCV 2020).

Every sample is a query against all the others (itself excluded). For a query whose class has R other
samples, the R nearest neighbours by cosine decide R-Precision (the fraction of them in its class) and
MAP@R (the mean over i <= R of precision@i at each correct position i, divided by R). Recall@K is the
fraction of queries with at least one same-class sample among their K nearest (Recall@1 = precision@1).
Queries whose class has no other sample cannot be scored and are left out, as in the paper's code.
NMI compares the classes with a k-means clustering (k = number of classes) of the embeddings, using
the arithmetic mean of the two entropies as the normaliser.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..index.cluster import kmeans_assign
from .pairs import labelled_embeddings

#: Queries scored together; a block holds BLOCK x n float32 scores.
BLOCK = 1024


def _neighbours(x: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest other samples for each of ``rows``, nearest first (stable on ties)."""
    S = x[rows] @ x.T
    S[np.arange(len(rows)), rows] = -np.inf
    top = np.argpartition(-S, k - 1, axis=1)[:, :k] if k < S.shape[1] else np.argsort(-S, axis=1, kind="stable")[:, :k]
    order = np.lexsort((top, -np.take_along_axis(S, top, axis=1)), axis=1)
    return np.take_along_axis(top, order, axis=1)


def normalized_mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """NMI between two labelings with the arithmetic-mean normaliser."""
    a = np.unique(np.asarray(a), return_inverse=True)[1]
    b = np.unique(np.asarray(b), return_inverse=True)[1]
    n = len(a)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= n
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    ha = float(-(pa[pa > 0] * np.log(pa[pa > 0])).sum())
    hb = float(-(pb[pb > 0] * np.log(pb[pb > 0])).sum())
    if ha == 0.0 and hb == 0.0:
        return 1.0
    return float(mi / ((ha + hb) / 2)) if mi > 0 else 0.0


def retrieval(
    embeddings,
    labels,
    *,
    recall_at: Sequence[int] = (1, 2, 4, 8),
    nmi: bool = True,
    seed: int = 0,
) -> dict:
    """Recall@K, R-Precision, MAP@R and NMI of labelled embeddings.

    >>> m = retrieval(x, y)            # doctest: +SKIP
    >>> m["recall@1"], m["map@r"]      # doctest: +SKIP
    """
    x, codes = labelled_embeddings(embeddings, labels)
    counts = np.bincount(codes)
    R = counts[codes] - 1
    queries = np.flatnonzero(R > 0)
    out: dict = {"queries": int(len(queries)), "lone_queries": int(len(x) - len(queries))}
    if len(queries) == 0:
        out.update({f"recall@{k}": float("nan") for k in recall_at})
        out.update({"r_precision": float("nan"), "map@r": float("nan")})
    else:
        kmax = int(min(max(R.max(), max(recall_at)), len(x) - 1))
        hits = {k: 0 for k in recall_at}
        r_prec, map_r = 0.0, 0.0
        for s in range(0, len(queries), BLOCK):
            rows = queries[s : s + BLOCK]
            nn = _neighbours(x, rows, kmax)
            rel = codes[nn] == codes[rows][:, None]
            for k in recall_at:
                hits[k] += int(rel[:, :k].any(axis=1).sum())
            r = R[rows]
            within = np.arange(kmax)[None, :] < r[:, None]
            rel_r = rel & within
            r_prec += float((rel_r.sum(1) / r).sum())
            precision_at_i = np.cumsum(rel_r, axis=1) / np.arange(1, kmax + 1)[None, :]
            map_r += float(((precision_at_i * rel_r).sum(1) / r).sum())
        out.update({f"recall@{k}": hits[k] / len(queries) for k in recall_at})
        out["r_precision"] = r_prec / len(queries)
        out["map@r"] = map_r / len(queries)
    if nmi:
        clusters = kmeans_assign(x, int(len(counts)), seed=seed)
        out["nmi"] = normalized_mutual_info(codes, clusters)
    return out
