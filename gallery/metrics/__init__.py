"""Accuracy metrics with their published definitions: retrieval, pair distributions, 1:1 and 1:N.

>>> from gallery import metrics
>>> metrics.retrieval(embeddings, labels)["map@r"]          # doctest: +SKIP
>>> metrics.pair_histograms(embeddings, labels).jsd         # doctest: +SKIP
"""

from .distribution import DEFAULT_BINS, PairHistograms, jensen_shannon, pair_histograms
from .identification import (
    SearchOutcomes,
    cmc,
    fnir,
    fnir_at_fpir,
    fpir,
    fpir_threshold,
    open_set_curve,
    search_outcomes,
)
from .retrieval import normalized_mutual_info, retrieval
from .verification import ROC, equal_error_rate, pair_scores, rates_at, roc, tar_at_far, verification

__all__ = [
    "DEFAULT_BINS",
    "PairHistograms",
    "ROC",
    "SearchOutcomes",
    "cmc",
    "equal_error_rate",
    "fnir",
    "fnir_at_fpir",
    "fpir",
    "fpir_threshold",
    "jensen_shannon",
    "normalized_mutual_info",
    "open_set_curve",
    "pair_histograms",
    "pair_scores",
    "rates_at",
    "retrieval",
    "roc",
    "search_outcomes",
    "tar_at_far",
    "verification",
]
