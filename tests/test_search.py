"""Identities, not images: aggregation per identity, and the open-set rule score >= threshold."""

import numpy as np
import pytest

from gallery import InvalidInputError
from gallery.search import FALLBACK_THRESHOLD, MODEL_THRESHOLDS, decide, rank_identities, resolve_threshold

NAMES = np.array(["ann", "bob", "cy"])
IDENTITY_OF = np.array([0, 0, 1, 2, 0, -1])  # record id -> identity code; record 5 was removed


def test_several_images_of_one_identity_count_once_with_the_best_score():
    D = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    I = np.array([[1, 0, 2, 4, 3]])
    (matches,) = rank_identities(D, I, IDENTITY_OF, NAMES, k=5)
    assert [(m.identity, m.score) for m in matches] == [("ann", pytest.approx(0.9)), ("bob", pytest.approx(0.7)), ("cy", pytest.approx(0.5))]
    assert matches[0].records == (1, 0, 4) and matches[0].record_scores == pytest.approx((0.9, 0.8, 0.6))


def test_at_most_k_identities_and_removed_or_missing_records_are_skipped():
    D = np.array([[0.95, 0.9, 0.8, -np.inf]])
    I = np.array([[5, 2, 3, -1]])
    (matches,) = rank_identities(D, I, IDENTITY_OF, NAMES, k=1)
    assert [m.identity for m in matches] == ["bob"]


def test_mean_of_top_n_uses_every_image_of_the_candidates():
    D = np.array([[0.9, 0.85]])
    I = np.array([[0, 2]])
    every = {0: ([0, 1, 4], [0.9, 0.1, 0.2]), 1: ([2], [0.85])}
    rescore = lambda q, codes: [(c, *every[c]) for c in codes]  # noqa: E731
    (matches,) = rank_identities(D, I, IDENTITY_OF, NAMES, k=2, aggregate="mean", top_n=2, rescore=rescore)
    assert [m.identity for m in matches] == ["bob", "ann"]
    assert matches[1].score == pytest.approx((0.9 + 0.2) / 2) and matches[0].score == pytest.approx(0.85)
    assert matches[1].records == (0, 4, 1)


def test_a_match_is_score_at_or_above_the_threshold():
    D = np.array([[0.5], [np.nextafter(0.5, 0)]])
    I = np.array([[0], [0]])
    at, below = decide(rank_identities(D, I, IDENTITY_OF, NAMES, k=1), 0.5, "call")
    assert at.identity == "ann" and at.is_known
    assert below.identity is None and below.best.identity == "ann"


def test_threshold_precedence():
    assert resolve_threshold(0.3, 0.6, "dlib-resnet") == (0.3, "call")
    assert resolve_threshold(None, 0.6, "dlib-resnet") == (0.6, "calibrated")
    assert resolve_threshold(None, None, "dlib-resnet") == (MODEL_THRESHOLDS["dlib-resnet"], "model-default")
    assert resolve_threshold(None, None, "some-model") == (FALLBACK_THRESHOLD, "fallback")
    with pytest.raises(InvalidInputError, match="finite cosine"):
        resolve_threshold(float("nan"), None, "m")


def test_bad_aggregate():
    with pytest.raises(InvalidInputError, match="unknown aggregate 'median'"):
        rank_identities(np.zeros((1, 1)), np.zeros((1, 1), int), IDENTITY_OF, NAMES, 1, aggregate="median")
