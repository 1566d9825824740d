"""Retrieval metrics agree with pytorch-metric-learning and scikit-learn on the same inputs."""

import numpy as np
import pytest

from gallery import metrics
from gallery.synthetic import synthetic_gallery

torch = pytest.importorskip("torch")
accuracy_calculator = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")


@pytest.fixture(scope="module")
def labelled():
    d = synthetic_gallery(250, (1, 6), 32, genuine=0.5, seed=3)
    return d.vectors, np.unique(d.identities, return_inverse=True)[1]


def test_recall_r_precision_and_map_at_r_match_pytorch_metric_learning(labelled):
    x, y = labelled
    calc = accuracy_calculator.AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k=None, device=torch.device("cpu")
    )
    ref = calc.get_accuracy(torch.tensor(x), torch.tensor(y))
    ours = metrics.retrieval(x, y, nmi=False)
    assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)


def test_lone_queries_are_left_out(labelled):
    x, y = labelled
    m = metrics.retrieval(x, y, nmi=False)
    assert m["lone_queries"] == int((np.bincount(y)[y] == 1).sum()) > 0
    assert m["queries"] + m["lone_queries"] == len(x)


def test_map_at_r_by_hand():
    # query 0 (class a, R = 2): neighbours by cosine are 1 (a), 3 (b), 2 (a) -> MAP@R = (1/2)(1/1 + 0) = 0.5
    angles = np.radians([0, 10, 40, 25])
    x = np.c_[np.cos(angles), np.sin(angles)]
    y = np.array(["a", "a", "a", "b"])
    m = metrics.retrieval(x, y, nmi=False, recall_at=(1,))
    # query 1: nbrs 0 (a), 3 (b) -> R=2: r_prec 1/2, map (1/1)/2 = .5 ; query 2: nbrs 3 (b), 1 (a) -> r_prec 1/2, map (1/2)/2
    assert m["r_precision"] == pytest.approx((0.5 + 0.5 + 0.5) / 3)
    assert m["map@r"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)
    assert m["recall@1"] == pytest.approx(2 / 3)


def test_recall_at_k_grows_with_k(labelled):
    x, y = labelled
    m = metrics.retrieval(x, y, nmi=False)
    assert m["recall@1"] <= m["recall@2"] <= m["recall@4"] <= m["recall@8"]


def test_nmi_matches_scikit_learn():
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 6, 300), rng.integers(0, 9, 300)
        assert metrics.normalized_mutual_info(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-6)
    assert metrics.normalized_mutual_info([1, 1, 2, 2], [7, 7, 3, 3]) == pytest.approx(1.0)


def test_nmi_of_well_separated_classes_is_near_one():
    d = synthetic_gallery(20, 10, 64, genuine=0.9, seed=1)
    assert metrics.retrieval(d.vectors, d.identities)["nmi"] > 0.95
