"""Mining pairs and triplets inside a batch, for the contrastive and triplet losses.

Distance: everything here uses the cosine distance ``d(i, j) = 1 - cos(x_i, x_j)`` of L2-normalised
embeddings, in [0, 2] (the gallery ranks by ``1 - score`` too). On unit vectors the squared Euclidean
distance is ``2 d``, so a margin stated on squared Euclidean distances (FaceNet's 0.2) is half as large here.

Strategies (``mining=``), for a batch with labels ``y``:

- ``"batch-all"``: every valid triplet ``(a, p, n)`` with ``a != p``, ``y_a == y_p``, ``y_n != y_a``;
  as pairs, every positive and every negative pair ``i < j``.
- ``"batch-hard"`` (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for Person
  Re-Identification", 2017): for each anchor that has a positive and a negative in the batch, its
  farthest positive and its nearest negative (first index on ties).
- ``"semi-hard"`` (Schroff, Kalenichenko and Philbin, "FaceNet", CVPR 2015): for each positive pair
  ``(a, p)``, the negatives farther than the positive but inside the margin,
  ``d(a, p) < d(a, n) < d(a, p) + margin``; the nearest of them (the hardest semi-hard one) makes the
  triplet, and positive pairs without one are skipped.

As pairs, batch-hard and semi-hard give the ``(a, p)`` and ``(a, n)`` pairs of their triplets, each once.
Mining never needs gradients: pass detached embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidInputError

MINING = ("batch-all", "batch-hard", "semi-hard")


@dataclass(frozen=True)
class Triplets:
    """Row indices of mined triplets: ``anchor[t], positive[t], negative[t]``."""

    anchor: Tensor
    positive: Tensor
    negative: Tensor

    def __len__(self) -> int:
        return len(self.anchor)

    def as_set(self) -> set[tuple[int, int, int]]:
        return set(zip(self.anchor.tolist(), self.positive.tolist(), self.negative.tolist()))


@dataclass(frozen=True)
class Pairs:
    """Row indices of mined positive pairs ``(pos_i, pos_j)`` and negative pairs ``(neg_i, neg_j)``."""

    pos_i: Tensor
    pos_j: Tensor
    neg_i: Tensor
    neg_j: Tensor

    @property
    def count(self) -> int:
        return len(self.pos_i) + len(self.neg_i)

    def positives(self) -> set[tuple[int, int]]:
        return set(zip(self.pos_i.tolist(), self.pos_j.tolist()))

    def negatives(self) -> set[tuple[int, int]]:
        return set(zip(self.neg_i.tolist(), self.neg_j.tolist()))


def cosine_distances(x: Tensor) -> Tensor:
    """All-pairs ``1 - cos`` of the rows of ``x`` (normalised here), a (B, B) matrix."""
    x = F.normalize(x, dim=1)
    return 1.0 - x @ x.T


def _masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _check(embeddings: Tensor, labels: Tensor, mining: str) -> Tensor:
    if mining not in MINING:
        raise InvalidInputError(f"mining: expected one of {', '.join(MINING)}, got {mining!r}")
    if embeddings.ndim != 2 or labels.shape != (embeddings.shape[0],):
        raise InvalidInputError(f"expected (batch, dim) embeddings and one label per row, got {tuple(embeddings.shape)} "
                                f"and {tuple(labels.shape)}")
    return labels.long()


@torch.no_grad()
def mine_triplets(embeddings: Tensor, labels: Tensor, *, mining: str = "batch-hard", margin: float = 0.1) -> Triplets:
    """Triplets of the batch chosen by ``mining`` (see the module docstring); ``margin`` serves semi-hard."""
    y = _check(embeddings, labels, mining)
    D = cosine_distances(embeddings.float())
    pos, neg = _masks(y)
    if mining == "batch-all":
        a, p, n = (pos[:, :, None] & neg[:, None, :]).nonzero(as_tuple=True)
        return Triplets(a, p, n)
    if mining == "batch-hard":
        a = torch.nonzero(pos.any(1) & neg.any(1)).squeeze(1)
        p = D.masked_fill(~pos, -float("inf")).argmax(1)
        n = D.masked_fill(~neg, float("inf")).argmin(1)
        return Triplets(a, p[a], n[a])
    a, p = pos.nonzero(as_tuple=True)
    d_ap = D[a, p][:, None]
    Da = D[a]
    semi = neg[a] & (Da > d_ap) & (Da < d_ap + margin)
    n = Da.masked_fill(~semi, float("inf")).argmin(1)
    keep = semi.any(1)
    return Triplets(a[keep], p[keep], n[keep])


def _unique_pairs(i: Tensor, j: Tensor, size: int) -> tuple[Tensor, Tensor]:
    key = torch.unique(i * size + j)
    return key // size, key % size


@torch.no_grad()
def mine_pairs(embeddings: Tensor, labels: Tensor, *, mining: str = "batch-all", margin: float = 0.1) -> Pairs:
    """Positive and negative pairs of the batch chosen by ``mining`` (see the module docstring)."""
    y = _check(embeddings, labels, mining)
    if mining == "batch-all":
        pos, neg = _masks(y)
        upper = torch.ones_like(pos).triu(1)
        pi, pj = (pos & upper).nonzero(as_tuple=True)
        ni, nj = (neg & upper).nonzero(as_tuple=True)
        return Pairs(pi, pj, ni, nj)
    t = mine_triplets(embeddings, y, mining=mining, margin=margin)
    B = len(y)
    return Pairs(*_unique_pairs(t.anchor, t.positive, B), *_unique_pairs(t.anchor, t.negative, B))


__all__ = ["MINING", "Pairs", "Triplets", "cosine_distances", "mine_pairs", "mine_triplets"]
