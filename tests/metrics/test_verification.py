"""ROC equals scikit-learn's; EER and TAR@FAR follow their definitions."""

import numpy as np
import pytest

from gallery import metrics
from gallery.synthetic import synthetic_gallery


def test_roc_matches_scikit_learn():
    from sklearn.metrics import roc_curve

    d = synthetic_gallery(150, 3, 32, seed=1)
    scores, genuine = metrics.pair_scores(d.vectors, d.identities)
    ours = metrics.roc(scores, genuine)
    far, tar, thresholds = roc_curve(genuine, scores, drop_intermediate=False)
    assert np.allclose(ours.far, far, atol=1e-12) and np.allclose(ours.tar, tar, atol=1e-12)
    assert np.allclose(ours.thresholds[1:], thresholds[1:])


def test_accepting_means_score_at_or_above_threshold():
    curve = metrics.roc([0.9, 0.5, 0.5, 0.1], [True, True, False, False])
    i = list(curve.thresholds).index(0.5)
    assert curve.tar[i] == 1.0 and curve.far[i] == 0.5


def test_eer_hand_computed():
    # genuine 0.9, 0.5, 0.45; impostor 0.6, 0.1. At t = 0.6: FAR 1/2, FRR 2/3; at t = 0.5: FAR 1/2, FRR 1/3.
    # FAR - FRR changes sign between them; halfway, FAR = FRR = 1/2 at t = 0.55.
    curve = metrics.roc([0.9, 0.5, 0.45, 0.6, 0.1], [True, True, True, False, False])
    eer, t = metrics.equal_error_rate(curve)
    assert eer == pytest.approx(0.5)
    assert t == pytest.approx(0.55)
    # where FAR and FRR meet exactly at a point, that point is the EER
    eer, t = metrics.equal_error_rate(metrics.roc([0.8, 0.6, 0.4, 0.5, 0.3, 0.1], [True] * 3 + [False] * 3))
    assert (eer, t) == (pytest.approx(1 / 3), pytest.approx(0.5))


def test_tar_at_far_needs_enough_impostors():
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(0.7, 0.1, 1000), rng.normal(0.0, 0.1, 1000)]
    genuine = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    out = metrics.tar_at_far(metrics.roc(scores, genuine), (1e-1, 1e-3, 1e-4))
    assert out[1e-4] is None
    assert out[1e-3]["far"] <= 1e-3 and out[1e-1]["far"] <= 1e-1
    assert out[1e-1]["tar"] >= out[1e-3]["tar"]
    impostors = scores[~genuine]
    assert (impostors >= out[1e-3]["threshold"]).mean() <= 1e-3
