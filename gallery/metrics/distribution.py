"""Positive- and negative-pair score distributions and their Jensen–Shannon divergence.

Following Oi, Kawakami and Naemura's analysis of metric-learning losses: the inner products of all
positive pairs (same class) and of all negative pairs (different classes), each as a histogram
normalised to area 1, their means, and the Jensen–Shannon divergence between the two histograms in
bits (log base 2), which lies in [0, 1]: 0 when the distributions coincide, 1 when they do not overlap.
The histograms use ``DEFAULT_BINS = 200`` equal bins over [-1, 1] (width 0.01), and are accumulated
block by block, so the n x n score matrix is never held.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pairs import labelled_embeddings, pair_blocks

DEFAULT_BINS = 200


@dataclass(frozen=True)
class PairHistograms:
    """Area-normalised histograms of positive and negative pair scores over ``edges``."""

    pos: np.ndarray
    neg: np.ndarray
    edges: np.ndarray
    pos_counts: np.ndarray
    neg_counts: np.ndarray
    pos_mean: float
    neg_mean: float
    jsd: float

    @property
    def n_pos(self) -> int:
        return int(self.pos_counts.sum())

    @property
    def n_neg(self) -> int:
        return int(self.neg_counts.sum())


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """JSD in bits between two discrete distributions (each is normalised to sum 1 first)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return min(max((kl(p) + kl(q)) / 2, 0.0), 1.0)


def pair_histograms(embeddings, labels, *, bins: int = DEFAULT_BINS) -> PairHistograms:
    """Histograms, means and JSD of all positive and all negative pair inner products (i < j)."""
    x, codes = labelled_embeddings(embeddings, labels)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    pos_counts = np.zeros(bins, np.int64)
    neg_counts = np.zeros(bins, np.int64)
    sums = [0.0, 0.0]
    for scores, same in pair_blocks(x, codes):
        scores = np.clip(scores.astype(np.float64), -1.0, 1.0)
        for k, sel in ((0, same), (1, ~same)):
            s = scores[sel]
            sums[k] += float(s.sum())
            counts = pos_counts if k == 0 else neg_counts
            counts += np.histogram(s, bins=edges)[0]
    width = np.diff(edges)

    def density(c: np.ndarray) -> np.ndarray:
        return c / (c.sum() * width) if c.sum() else np.zeros(bins)

    n_pos, n_neg = int(pos_counts.sum()), int(neg_counts.sum())
    return PairHistograms(
        pos=density(pos_counts),
        neg=density(neg_counts),
        edges=edges,
        pos_counts=pos_counts,
        neg_counts=neg_counts,
        pos_mean=sums[0] / n_pos if n_pos else float("nan"),
        neg_mean=sums[1] / n_neg if n_neg else float("nan"),
        jsd=jensen_shannon(pos_counts, neg_counts) if n_pos and n_neg else float("nan"),
    )
