"""1:N identification with NIST FRVT conventions: CMC for closed-set, FNIR against FPIR for open-set.

A mated search has its identity enrolled; a non-mated one does not. With a threshold T:

* FNIR(T) is the fraction of mated searches whose mate is not returned at rank <= R with score >= T
  (R = 1 by default: the answer must be the right identity);
* FPIR(T) is the fraction of non-mated searches that return any candidate with score >= T, i.e. whose
  best score is >= T.

CMC(r) is the fraction of mated searches whose mate is at rank <= r, whatever its score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..types import SearchResult

DEFAULT_FPIRS = (1e-1, 1e-2, 1e-3, 1e-4)
#: The evidence a target FPIR needs, for calibration and evaluation alike: enough non-mated searches
#: that the target allows this many false accepts. With fewer, the threshold is one impostor's score
#: and the achieved FPIR is known only within a factor of several (at 10, its 95% interval is about
#: 0.5x to 1.8x the target).
MIN_FALSE_ACCEPTS = 10


def nonmated_needed(target_fpir: float) -> int:
    """How many non-mated searches a target FPIR needs (``MIN_FALSE_ACCEPTS / target``)."""
    return int(math.ceil(MIN_FALSE_ACCEPTS / target_fpir - 1e-9))


def lowest_supported_fpir(n_nonmated: int) -> Optional[float]:
    """The lowest target FPIR that ``n_nonmated`` searches support (None for none)."""
    return MIN_FALSE_ACCEPTS / n_nonmated if n_nonmated >= MIN_FALSE_ACCEPTS else None


def fpir_interval(false_accepts: int, searches: int, *, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval on an FPIR of ``false_accepts`` in ``searches``."""
    from scipy.stats import beta

    a = (1.0 - level) / 2.0
    lo = 0.0 if false_accepts == 0 else float(beta.ppf(a, false_accepts, searches - false_accepts + 1))
    hi = 1.0 if false_accepts == searches else float(beta.ppf(1.0 - a, false_accepts + 1, searches - false_accepts))
    return lo, hi


@dataclass(frozen=True)
class SearchOutcomes:
    """What metrics need from searches: each mate's rank and score, and each non-mated best score."""

    mated_rank: np.ndarray  # 1-based; np.inf when the mate is not among the candidates
    mated_score: np.ndarray  # the mate's score; -inf when absent
    nonmated_best: np.ndarray  # best candidate score of each non-mated search; -inf when none


def search_outcomes(results: Sequence[SearchResult], truths: Sequence[Optional[str]], enrolled: set[str]) -> SearchOutcomes:
    """Split search results into mated and non-mated by whether their true identity is ``enrolled``."""
    if len(results) != len(truths):
        raise InvalidInputError(f"got {len(results)} results for {len(truths)} labels")
    ranks, scores, nonmated = [], [], []
    for r, truth in zip(results, truths):
        if truth is not None and str(truth) in enrolled:
            names = [m.identity for m in r.matches]
            if str(truth) in names:
                i = names.index(str(truth))
                ranks.append(i + 1.0)
                scores.append(r.matches[i].score)
            else:
                ranks.append(np.inf)
                scores.append(-np.inf)
        else:
            nonmated.append(r.matches[0].score if r.matches else -np.inf)
    return SearchOutcomes(np.asarray(ranks, float), np.asarray(scores, float), np.asarray(nonmated, float))


def cmc(outcomes: SearchOutcomes, max_rank: int) -> np.ndarray:
    """CMC(r) for r = 1 .. max_rank."""
    if len(outcomes.mated_rank) == 0:
        raise InvalidInputError("CMC needs mated searches; none of the probes' identities is enrolled")
    return np.asarray([(outcomes.mated_rank <= r).mean() for r in range(1, max_rank + 1)])


def fpir(nonmated_best: np.ndarray, threshold: float) -> float:
    return float((np.asarray(nonmated_best) >= threshold).mean())


def fnir(outcomes: SearchOutcomes, threshold: float, *, rank: int = 1) -> float:
    hit = (outcomes.mated_rank <= rank) & (outcomes.mated_score >= threshold)
    return float(1.0 - hit.mean())


def fpir_threshold(nonmated_best, target_fpir: float) -> float:
    """The lowest threshold whose FPIR on these non-mated searches is at most ``target_fpir``.

    With n searches, at most floor(target * n) may score at or above it, so it sits just above the next
    best score. A target below 1 / n cannot be checked on the data; it then returns the threshold that
    rejects every non-mated search seen (and a caller should get more non-mated searches).
    """
    s = np.sort(np.asarray(nonmated_best, dtype=np.float64))[::-1]
    if len(s) == 0:
        raise InvalidInputError("a threshold for a target FPIR needs non-mated searches")
    if not 0.0 < target_fpir < 1.0:
        raise InvalidInputError(f"target FPIR must lie in (0, 1), got {target_fpir}")
    allowed = int(np.floor(target_fpir * len(s) + 1e-9))
    if allowed >= len(s):
        return -1.0
    # scores are float32 cosines: step one float32 ulp above the first score that must be rejected
    return float(np.nextafter(np.float32(s[allowed]), np.float32(np.inf)))


def fnir_at_fpir(outcomes: SearchOutcomes, fpirs: Sequence[float] = DEFAULT_FPIRS, *, rank: int = 1) -> dict:
    """For each target FPIR the data support (:func:`nonmated_needed`): threshold, FNIR, achieved FPIR."""
    out: dict = {}
    n = len(outcomes.nonmated_best)
    for target in fpirs:
        if n < nonmated_needed(target):
            out[f"{target:g}"] = None
            continue
        t = fpir_threshold(outcomes.nonmated_best, target)
        miss = fnir(outcomes, t, rank=rank) if len(outcomes.mated_rank) else None
        out[f"{target:g}"] = {"threshold": t, "fnir": miss, "fpir": fpir(outcomes.nonmated_best, t)}
    return out


def open_set_curve(outcomes: SearchOutcomes, *, rank: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, FPIR, FNIR) at every distinct score of the searches (for DET-style plots)."""
    t = np.unique(np.r_[outcomes.mated_score[np.isfinite(outcomes.mated_score)], outcomes.nonmated_best[np.isfinite(outcomes.nonmated_best)]])[::-1]
    nm = np.sort(outcomes.nonmated_best)
    fp = 1.0 - np.searchsorted(nm, t, side="left") / max(len(nm), 1)
    eligible = np.sort(np.where(outcomes.mated_rank <= rank, outcomes.mated_score, -np.inf))
    fn = np.searchsorted(eligible, t, side="left") / max(len(eligible), 1)
    return t, fp, fn
