"""Pair histograms are area-normalised, their means exact, and the JSD in bits as hand-computed."""

import numpy as np
import pytest

from gallery import metrics
from gallery.synthetic import synthetic_gallery


def test_jsd_hand_computed_cases():
    assert metrics.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert metrics.jensen_shannon([3, 1], [3, 1]) == pytest.approx(0.0)
    # p = (1/2, 1/2), q = (1, 0): m = (3/4, 1/4); KL(p||m) = 1/2 log2(2/3) + 1/2 log2(2), KL(q||m) = log2(4/3)
    expected = 0.5 * (0.5 * np.log2(2 / 3) + 0.5 * np.log2(2)) + 0.5 * np.log2(4 / 3)
    assert metrics.jensen_shannon([1, 1], [1, 0]) == pytest.approx(expected)


def test_histograms_count_every_pair_once_with_exact_means():
    d = synthetic_gallery(40, 3, 16, seed=2)
    x, y = d.vectors, d.identities
    h = metrics.pair_histograms(x, y, bins=50)
    S = x @ x.T
    iu = np.triu_indices(len(x), 1)
    same = (y[:, None] == y[None, :])[iu]
    assert h.n_pos == same.sum() and h.n_neg == (~same).sum()
    assert h.pos_mean == pytest.approx(S[iu][same].mean(), abs=1e-6)
    assert h.neg_mean == pytest.approx(S[iu][~same].mean(), abs=1e-6)
    width = np.diff(h.edges)
    assert (h.pos * width).sum() == pytest.approx(1.0) and (h.neg * width).sum() == pytest.approx(1.0)
    ref_pos = np.histogram(np.clip(S[iu][same], -1, 1), bins=h.edges)[0]
    assert np.array_equal(h.pos_counts, ref_pos)
    assert h.jsd == pytest.approx(metrics.jensen_shannon(ref_pos, np.histogram(np.clip(S[iu][~same], -1, 1), bins=h.edges)[0]))


def test_jsd_grows_as_classes_separate():
    loose = metrics.pair_histograms(*_set(0.3))
    tight = metrics.pair_histograms(*_set(0.8))
    assert 0.0 <= loose.jsd < tight.jsd <= 1.0


def _set(genuine):
    d = synthetic_gallery(60, 4, 64, genuine=genuine, seed=5)
    return d.vectors, d.identities
