"""One evaluation of a gallery: every metric, from the gallery's own records and from 1:N searches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .. import metrics
from ..calibration import leave_identities_out
from ..errors import InvalidInputError
from ..metrics.identification import DEFAULT_FPIRS
from ..metrics.verification import DEFAULT_FARS

#: Records the all-pairs metrics look at; whole identities are sampled so every class keeps its size.
DEFAULT_MAX_SAMPLES = 5000
DEFAULT_MAX_RANK = 20


@dataclass
class Evaluation:
    """Numbers (``summary``, JSON-ready) and the curves behind them, for plots and reports."""

    summary: dict
    histograms: metrics.PairHistograms
    roc: Optional[metrics.ROC]  # None when the sample has no genuine pair (every identity has one record)
    outcomes: metrics.SearchOutcomes
    cmc: np.ndarray
    record_ids: np.ndarray
    labels: np.ndarray
    vectors: np.ndarray
    #: The open-set threshold the gallery's searches use, and where it comes from (see ``Gallery.threshold``).
    threshold: float = float("nan")
    threshold_source: str = ""


def sample_identities(ids: np.ndarray, labels: np.ndarray, max_records: int, seed: int = 0) -> np.ndarray:
    """Rows of whole identities, chosen at random until about ``max_records`` rows are taken."""
    if len(ids) <= max_records:
        return np.arange(len(ids))
    names, codes = np.unique(labels, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(names))
    sizes = np.bincount(codes)[order]
    chosen = order[: max(1, int(np.searchsorted(np.cumsum(sizes), max_records, side="right")))]
    return np.flatnonzero(np.isin(codes, chosen))


def evaluate(
    gallery,
    probes=None,
    probe_labels: Optional[Sequence[Optional[str]]] = None,
    *,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    max_rank: int = DEFAULT_MAX_RANK,
    fars: Sequence[float] = DEFAULT_FARS,
    fpirs: Sequence[float] = DEFAULT_FPIRS,
    holdout: float = 0.2,
    seed: int = 0,
) -> Evaluation:
    """Evaluate ``gallery``: retrieval, pair distributions and 1:1 on its records; CMC and FNIR@FPIR on 1:N searches.

    1:N searches come from labelled ``probes`` (labels not enrolled, or None, are non-mated), or
    without probes from leaving identities out of the gallery itself.
    """
    ids, labels = gallery.records()
    rows = sample_identities(ids, labels, max_samples, seed)
    x, y = gallery.vectors_of(ids[rows]), labels[rows]
    if len(np.unique(y)) < 2:
        raise InvalidInputError(f"{gallery.root}: evaluation needs at least two identities")
    retrieval = metrics.retrieval(x, y, seed=seed)
    hist = metrics.pair_histograms(x, y)
    scores, genuine = metrics.pair_scores(x, y)
    curve = metrics.roc(scores, genuine) if genuine.any() else None
    threshold, source = gallery.threshold()
    if probes is not None:
        if probe_labels is None or len(probe_labels) != len(probes):
            raise InvalidInputError("probes need one label each (an enrolled identity, or anything else for unknown)")
        results = gallery.search(probes, k=max_rank)
        outcomes = metrics.search_outcomes(results, list(probe_labels), set(gallery.identities))
        protocol, size = "probes", len(gallery.identities)
    else:
        with leave_identities_out(gallery, holdout=holdout, seed=seed) as (sub, pv, pl):
            outcomes = metrics.search_outcomes(sub.search(pv, k=max_rank), pl, set(sub.identities))
            protocol, size = "leave-identities-out", len(sub.identities)
    cmc = metrics.cmc(outcomes, max_rank) if len(outcomes.mated_rank) else np.zeros(0)
    summary = {
        "gallery": {"path": str(gallery.root), "model": gallery.model, "records": len(gallery),
                    "identities": len(gallery.identities)},
        "sample": {"records": int(len(rows)), "identities": int(len(np.unique(y)))},
        "retrieval": retrieval,
        "distribution": {"pos_mean": hist.pos_mean, "neg_mean": hist.neg_mean, "jsd": hist.jsd,
                         "n_pos": hist.n_pos, "n_neg": hist.n_neg, "bins": len(hist.pos)},
        "verification": _verification(curve, fars),
        "identification": {
            "protocol": protocol,
            "gallery_identities": size,
            "n_mated": int(len(outcomes.mated_rank)),
            "n_nonmated": int(len(outcomes.nonmated_best)),
            "cmc": {f"rank{r}": float(v) for r, v in zip((1, 5, 10, 20), cmc[[0, 4, 9, 19]] if len(cmc) >= 20 else cmc[:1])},
            "fnir_at_fpir": metrics.fnir_at_fpir(outcomes, fpirs),
        },
        "operating_point": operating_point(threshold, source, curve, outcomes),
    }
    return Evaluation(summary, hist, curve, outcomes, cmc, ids[rows], y, x, threshold, source)


def _verification(curve: Optional[metrics.ROC], fars: Sequence[float]) -> dict:
    if curve is None:
        return {"eer": None, "eer_threshold": None, "n_genuine": 0, "n_impostor": None,
                "tar_at_far": {f"{k:g}": None for k in fars}}
    eer, eer_t = metrics.equal_error_rate(curve)
    return {"eer": eer, "eer_threshold": eer_t, "n_genuine": curve.n_genuine, "n_impostor": curve.n_impostor,
            "tar_at_far": {f"{k:g}": v for k, v in metrics.tar_at_far(curve, fars).items()}}


def operating_point(threshold: float, source: str, curve: Optional[metrics.ROC], outcomes: metrics.SearchOutcomes) -> dict:
    """What the gallery's own threshold does on this data: FAR and TAR on pairs, FPIR and FNIR on searches
    (None where the data have no such trials)."""
    far, tar = metrics.rates_at(curve, threshold) if curve is not None else (None, None)
    n_nm, n_m = len(outcomes.nonmated_best), len(outcomes.mated_rank)
    return {
        "threshold": threshold, "source": source, "far": far, "tar": tar,
        "fpir": metrics.fpir(outcomes.nonmated_best, threshold) if n_nm else None,
        "fnir": metrics.fnir(outcomes, threshold) if n_m else None,
        "n_genuine": curve.n_genuine if curve is not None else 0, "n_impostor": curve.n_impostor if curve is not None else None,
        "n_mated": n_m, "n_nonmated": n_nm,
    }
