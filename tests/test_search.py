"""Identities, not images: aggregation per identity, and the open-set rule score >= threshold."""

import numpy as np
import pytest

from gallery import InvalidInputError
from gallery.search import FALLBACK_THRESHOLD, MODEL_THRESHOLDS, decide, rank_identities, resolve_threshold
from gallery.types import IdMap, Match, SearchResult

NAMES = np.array(["ann", "bob", "cy", "dee"])
# record id -> identity code: ann owns records 0, 1, 4, 6; bob 2; cy 3, 7; record 5 was removed; dee 8
IDENTITY_OF = IdMap([0, 1, 2, 3, 4, 6, 7, 8], [0, 0, 1, 2, 0, 0, 2, 3], capacity=9)
EVERY_SCORE = {  # query 0: exact scores of every record of each identity, for mean-of-top-n
    0: ([0, 1, 4, 6], [0.9, 0.1, 0.2, 0.6]),
    1: ([2], [0.85]),
    2: ([3, 7], [0.5, 0.45]),
    3: ([8], [0.3]),
}


def rescore(q, codes):
    return [(c, *EVERY_SCORE[c]) for c in codes]


def summary(matches):
    return [(m.identity, round(m.score, 6)) for m in matches]


def test_several_images_of_one_identity_count_once_with_the_best_score():
    D = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    I = np.array([[1, 0, 2, 4, 3]])
    (matches,) = rank_identities(D, I, IDENTITY_OF, NAMES, k=5)
    assert summary(matches) == [("ann", 0.9), ("bob", 0.7), ("cy", 0.5)]
    assert matches[0].records == (1, 0, 4) and matches[0].record_scores == pytest.approx((0.9, 0.8, 0.6))
    assert matches[1].records == (2,) and matches[2].records == (3,)


def test_each_query_is_ranked_on_its_own_rows():
    D = np.array([[0.95, 0.9, 0.4, 0.3], [0.8, 0.7, 0.65, 0.1]])
    I = np.array([[3, 7, 6, 2], [2, 8, 0, 5]])
    first, second = rank_identities(D, I, IDENTITY_OF, NAMES, k=4)
    assert summary(first) == [("cy", 0.95), ("ann", 0.4), ("bob", 0.3)]
    assert first[0].records == (3, 7)
    assert summary(second) == [("bob", 0.8), ("dee", 0.7), ("ann", 0.65)]  # record 5 (removed) is skipped


def test_at_most_k_distinct_identities():
    D = np.array([[0.99, 0.98, 0.97, 0.9, 0.8, 0.7, 0.6, 0.5]])
    I = np.array([[0, 1, 4, 3, 2, 7, 8, 6]])
    for k in (1, 2, 3, 4, 10):
        (matches,) = rank_identities(D, I, IDENTITY_OF, NAMES, k=k)
        names = [m.identity for m in matches]
        assert len(names) == min(k, 4) and len(set(names)) == len(names)
        assert names == ["ann", "cy", "bob", "dee"][:k]


def test_removed_and_missing_records_are_skipped():
    D = np.array([[0.95, 0.9, 0.8, -np.inf]])
    I = np.array([[5, 2, 3, -1]])
    (matches,) = rank_identities(D, I, IDENTITY_OF, NAMES, k=1)
    assert summary(matches) == [("bob", 0.9)]
    (nothing,) = rank_identities(np.array([[-np.inf, 0.5]]), np.array([[-1, 5]]), IDENTITY_OF, NAMES, k=3)
    assert nothing == []


def by_hand(D, I, identity_of, names, k):
    """The ranking rule read literally: walk each row best first, an identity's first record opens its group."""
    out = []
    for d, ids in zip(D.tolist(), I.tolist()):
        groups: dict = {}
        for score, i in zip(d, ids):
            code = int(identity_of[np.array([i])][0]) if i >= 0 else -1
            if code >= 0:
                groups.setdefault(code, []).append((i, score))
        out.append([Match(str(names[c]), recs[0][1], tuple(i for i, _ in recs), tuple(s for _, s in recs))
                    for c, recs in list(groups.items())[:k]])
    return out


@pytest.mark.parametrize("seed", range(5))
def test_many_queries_rank_as_the_rule_says(seed):
    rng = np.random.default_rng(seed)
    n_records, n_names = 300, 40
    names = np.array([f"p{i:02d}" for i in range(n_names)])
    identity_of = IdMap(np.arange(n_records), rng.integers(-1, n_names, n_records), capacity=n_records)
    I = np.stack([rng.choice(n_records, 30, replace=False) for _ in range(50)])
    I[rng.random(I.shape) < 0.1] = -1
    D = -np.sort(-rng.random(I.shape).astype(np.float32), axis=1)
    for k in (1, 3, 7, 30):
        assert rank_identities(D, I, identity_of, names, k=k) == by_hand(D, I, identity_of, names, k)


def test_mean_of_top_n_uses_every_image_of_the_candidates():
    D = np.array([[0.9, 0.85]])
    I = np.array([[0, 2]])
    (matches,) = rank_identities(D, I, IDENTITY_OF, NAMES, k=2, aggregate="mean", top_n=2, rescore=rescore)
    # ann: top two of (0.9, 0.1, 0.2, 0.6) -> (0.9 + 0.6) / 2 = 0.75 < bob's single 0.85
    assert summary(matches) == [("bob", 0.85), ("ann", 0.75)]
    assert matches[1].records == (0, 6, 4, 1) and matches[1].record_scores == pytest.approx((0.9, 0.6, 0.2, 0.1))


@pytest.mark.parametrize("top_n, ann", [(1, 0.9), (3, (0.9 + 0.6 + 0.2) / 3), (4, 0.45), (10, 0.45)])
def test_mean_of_top_n_by_hand(top_n, ann):
    D = np.array([[0.9, 0.5, 0.3]])
    I = np.array([[0, 3, 8]])
    (matches,) = rank_identities(D, I, IDENTITY_OF, NAMES, k=3, aggregate="mean", top_n=top_n, rescore=rescore)
    got = {m.identity: m.score for m in matches}
    assert got["ann"] == pytest.approx(ann)
    assert got["cy"] == pytest.approx(np.mean([0.5, 0.45][:top_n]))  # fewer images than top_n: mean of all
    assert got["dee"] == pytest.approx(0.3)
    assert [m.identity for m in matches] == sorted(got, key=lambda s: -got[s])


def test_mean_ranks_only_identities_the_index_returned_and_at_most_k():
    D = np.array([[0.5, 0.3]])
    I = np.array([[3, 8]])
    (matches,) = rank_identities(D, I, IDENTITY_OF, NAMES, k=1, aggregate="mean", top_n=2, rescore=rescore)
    assert summary(matches) == [("cy", 0.475)]


def test_mean_needs_a_rescore_function_and_a_positive_top_n():
    D, I = np.array([[0.9]]), np.array([[0]])
    with pytest.raises(ValueError, match="needs a rescore function"):
        rank_identities(D, I, IDENTITY_OF, NAMES, 1, aggregate="mean")
    with pytest.raises(InvalidInputError, match="top_n must be >= 1, got 0"):
        rank_identities(D, I, IDENTITY_OF, NAMES, 1, aggregate="mean", top_n=0, rescore=rescore)


def test_bad_aggregate():
    with pytest.raises(InvalidInputError, match="unknown aggregate 'median'; choose one of: max, mean"):
        rank_identities(np.zeros((1, 1)), np.zeros((1, 1), int), IDENTITY_OF, NAMES, 1, aggregate="median")


# ---------------------------------------------------------------- the open-set decision


def result(score, threshold):
    return SearchResult(matches=(Match("ann", score),), threshold=threshold, threshold_source="call")


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.82, -0.25, 0.0])
def test_a_match_is_score_greater_or_equal_threshold(threshold):
    assert result(threshold, threshold).identity == "ann"  # equality is a match
    assert result(float(np.nextafter(threshold, 2.0)), threshold).identity == "ann"
    below = result(float(np.nextafter(threshold, -2.0)), threshold)
    assert below.identity is None and not below.is_known and below.best.identity == "ann"


def test_the_boundary_holds_for_float32_scores_from_the_index():
    score = np.float32(0.7)  # as FAISS returns it; not equal to the double 0.7
    D, I = np.array([[score], [np.nextafter(score, np.float32(0))]], dtype=np.float32), np.array([[0], [0]])
    at, below = decide(rank_identities(D, I, IDENTITY_OF, NAMES, k=1), float(score), "call")
    assert at.identity == "ann" and at.is_known
    assert below.identity is None and below.best.identity == "ann"


def test_no_matches_is_unknown():
    empty = SearchResult(matches=(), threshold=-1.0, threshold_source="fallback")
    assert empty.identity is None and empty.best is None and not empty.is_known


def test_decide_keeps_the_ranking_and_carries_threshold_and_source():
    ranked = rank_identities(np.array([[0.9, 0.7]]), np.array([[3, 2]]), IDENTITY_OF, NAMES, k=2)
    (r,) = decide(ranked, 0.95, "calibrated")
    assert r.identity is None and [m.identity for m in r.matches] == ["cy", "bob"]
    assert r.to_dict()["threshold"] == 0.95 and r.to_dict()["threshold_source"] == "calibrated"
    assert r.to_dict()["identity"] is None and r.to_dict()["matches"][0]["records"] == [3]


def test_threshold_precedence_call_then_calibrated_then_model_then_fallback():
    assert resolve_threshold(0.3, 0.6, "dlib-resnet") == (0.3, "call")
    assert resolve_threshold(None, 0.6, "dlib-resnet") == (0.6, "calibrated")
    assert resolve_threshold(None, None, "dlib-resnet") == (MODEL_THRESHOLDS["dlib-resnet"].value, "model-default")
    assert resolve_threshold(None, None, "some-model") == (FALLBACK_THRESHOLD, "fallback")
    assert resolve_threshold(None, 0.6, "some-model") == (0.6, "calibrated")


def test_zero_is_a_threshold_not_a_missing_one():
    assert resolve_threshold(0.0, 0.6, "dlib-resnet") == (0.0, "call")
    assert resolve_threshold(None, 0.0, "dlib-resnet") == (0.0, "calibrated")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_threshold_must_be_finite(bad):
    with pytest.raises(InvalidInputError, match="threshold must be a finite cosine similarity"):
        resolve_threshold(bad, None, "m")
