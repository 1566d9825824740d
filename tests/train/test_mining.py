"""Miners on a hand-built batch whose distances are known from the angles alone."""

import math

import pytest
import torch

from gallery.errors import InvalidInputError
from gallery.train import cosine_distances, mine_pairs, mine_triplets

# Unit vectors at these angles (degrees). A = {0, 1, 3}, B = {2, 4}, C = {5} (a lone class: only ever a negative).
ANGLES = [0.0, 20.0, 50.0, 60.0, 72.0, 200.0]
LABELS = [0, 0, 1, 0, 1, 2]


@pytest.fixture
def batch():
    x = torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in ANGLES])
    return 3.0 * x, torch.tensor(LABELS)  # the norm must not matter


def test_cosine_distance_convention(batch):
    x, _ = batch
    D = cosine_distances(x)
    assert float(D[0, 1]) == pytest.approx(1 - math.cos(math.radians(20)), abs=1e-6)
    assert float(D[0, 0]) == pytest.approx(0.0, abs=1e-6)
    # on unit vectors the squared Euclidean distance is twice the cosine distance
    u = x / x.norm(dim=1, keepdim=True)
    assert torch.allclose(torch.cdist(u, u).pow(2), 2 * D, atol=1e-5)


def test_batch_all_triplets(batch):
    t = mine_triplets(*batch, mining="batch-all")
    expected = {(a, p, n) for a in range(6) for p in range(6) for n in range(6)
                if a != p and LABELS[a] == LABELS[p] and LABELS[n] != LABELS[a]}
    assert len(expected) == 3 * 2 * 3 + 2 * 1 * 4
    assert t.as_set() == expected and len(t) == len(expected)


def test_batch_hard_triplets(batch):
    # anchor 0: farthest positive 3 (60 deg), nearest negative 2 (50 deg); anchor 3: farthest positive 0,
    # nearest negative 2 (10 deg, against 12 deg for 4); the lone anchor 5 has no positive and is skipped.
    t = mine_triplets(*batch, mining="batch-hard")
    assert t.as_set() == {(0, 3, 2), (1, 3, 2), (2, 4, 3), (3, 0, 2), (4, 2, 3)}


def test_semi_hard_triplets(batch):
    # margin 0.1: only (1, 0) has a negative in its window (node 2 at 30 deg: d = 0.134 in (0.060, 0.160)),
    # and (2, 4) has node 1 (d = 0.134 in (0.073, 0.173)).
    assert mine_triplets(*batch, mining="semi-hard", margin=0.1).as_set() == {(1, 0, 2), (2, 4, 1)}
    # margin 0.3: (2, 4) now has two semi-hard negatives, 1 (d = 0.134) and 0 (d = 0.357); the nearest wins.
    got = mine_triplets(*batch, mining="semi-hard", margin=0.3).as_set()
    assert got == {(0, 1, 2), (0, 3, 4), (1, 0, 2), (1, 3, 4), (2, 4, 1)}


def test_semi_hard_negatives_are_farther_than_the_positive(batch):
    x, y = batch
    D = cosine_distances(x)
    t = mine_triplets(x, y, mining="semi-hard", margin=0.5)
    for a, p, n in t.as_set():
        assert D[a, p] < D[a, n] < D[a, p] + 0.5


def test_batch_all_pairs(batch):
    pairs = mine_pairs(*batch, mining="batch-all")
    assert pairs.positives() == {(0, 1), (0, 3), (1, 3), (2, 4)}
    assert len(pairs.negatives()) == 15 - 4
    assert all(i < j and LABELS[i] != LABELS[j] for i, j in pairs.negatives())


def test_batch_hard_pairs(batch):
    pairs = mine_pairs(*batch, mining="batch-hard")
    assert pairs.positives() == {(0, 3), (1, 3), (2, 4), (3, 0), (4, 2)}
    assert pairs.negatives() == {(0, 2), (1, 2), (2, 3), (3, 2), (4, 3)}


def test_semi_hard_pairs(batch):
    pairs = mine_pairs(*batch, mining="semi-hard", margin=0.3)
    assert pairs.positives() == {(0, 1), (0, 3), (1, 0), (1, 3), (2, 4)}
    assert pairs.negatives() == {(0, 2), (0, 4), (1, 2), (1, 4), (2, 1)}


def test_no_positives_mines_nothing():
    x, y = torch.randn(4, 3), torch.arange(4)
    for mining in ("batch-all", "batch-hard", "semi-hard"):
        assert len(mine_triplets(x, y, mining=mining)) == 0


def test_unknown_mining():
    with pytest.raises(InvalidInputError, match="expected one of batch-all, batch-hard, semi-hard, got 'hard'"):
        mine_triplets(torch.randn(2, 2), torch.tensor([0, 0]), mining="hard")
