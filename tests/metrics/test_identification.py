"""CMC and open-set FNIR / FPIR with NIST FRVT conventions, on hand-made searches."""

import numpy as np
import pytest

from gallery import metrics
from gallery.types import Match, SearchResult


def result(*pairs):
    return SearchResult(matches=tuple(Match(i, s) for i, s in pairs), threshold=0.5, threshold_source="call")


@pytest.fixture
def outcomes():
    results = [
        result(("a", 0.9), ("b", 0.4)),  # mated a, rank 1
        result(("c", 0.7), ("b", 0.6)),  # mated b, rank 2
        result(("a", 0.3), ("c", 0.2)),  # mated a, rank 1, low score
        result(("c", 0.55), ("a", 0.1)),  # non-mated
        result(("b", 0.35)),  # non-mated
    ]
    return metrics.search_outcomes(results, ["a", "b", "a", "zed", None], enrolled={"a", "b", "c"})


def test_search_outcomes_split_mated_and_non_mated(outcomes):
    assert list(outcomes.mated_rank) == [1, 2, 1]
    assert list(outcomes.mated_score) == [0.9, 0.6, 0.3]
    assert list(outcomes.nonmated_best) == [0.55, 0.35]


def test_cmc(outcomes):
    assert list(metrics.cmc(outcomes, 2)) == pytest.approx([2 / 3, 1.0])


def test_fnir_and_fpir_by_hand(outcomes):
    assert metrics.fpir(outcomes.nonmated_best, 0.5) == 0.5
    assert metrics.fpir(outcomes.nonmated_best, 0.55) == 0.5  # score == threshold is a match
    assert metrics.fpir(outcomes.nonmated_best, 0.56) == 0.0
    assert metrics.fnir(outcomes, 0.5) == pytest.approx(2 / 3)  # rank-2 mate and low score miss
    assert metrics.fnir(outcomes, 0.5, rank=2) == pytest.approx(1 / 3)
    assert metrics.fnir(outcomes, 0.3) == pytest.approx(1 / 3)


def test_fpir_threshold_is_the_lowest_meeting_the_target():
    best = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0], dtype=np.float32)
    t = metrics.fpir_threshold(best, 0.2)  # 2 of 10 may pass: must reject 0.7
    assert metrics.fpir(best, t) == pytest.approx(0.2)
    assert t > np.float32(0.7) and np.float32(t) == np.nextafter(np.float32(0.7), np.float32(1))
    assert metrics.fpir(best, np.float32(0.7)) > 0.2
    assert metrics.fpir_threshold(best, 0.05) > np.float32(0.9)  # none may pass


def test_fnir_at_fpir_skips_targets_the_data_cannot_show(outcomes):
    out = metrics.fnir_at_fpir(outcomes, (0.5, 0.1))
    assert out == {"0.5": None, "0.1": None}  # 2 non-mated searches: 0.5 needs 20 (10 false accepts allowed)
    many = metrics.SearchOutcomes(outcomes.mated_rank, outcomes.mated_score, np.linspace(0, 1, 20))
    shown = metrics.fnir_at_fpir(many, (0.5, 0.1))
    assert shown["0.1"] is None and shown["0.5"]["fpir"] <= 0.5
    assert shown["0.5"]["fnir"] == pytest.approx(metrics.fnir(many, shown["0.5"]["threshold"]))


def test_open_set_curve_agrees_with_pointwise_rates(outcomes):
    t, fp, fn = metrics.open_set_curve(outcomes)
    for ti, a, b in zip(t, fp, fn):
        assert a == pytest.approx(metrics.fpir(outcomes.nonmated_best, ti))
        assert b == pytest.approx(metrics.fnir(outcomes, ti))
