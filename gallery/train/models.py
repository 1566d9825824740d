"""Small trainable encoders: a projection head over frozen embeddings, and a CNN for 8x8 digit images.

Both return raw (un-normalised) embeddings; the losses and the exported encoder normalise them.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError


class ProjectionHead(nn.Module):
    """Adapts frozen embeddings to a domain: ``y = P x + MLP(x)``.

    ``P`` is a linear skip, the identity when ``out_dim == in_dim`` (otherwise a random orthogonal
    projection), and the MLP's last layer starts at zero, so the untrained head reproduces the base
    model's geometry and training starts from its accuracy instead of from noise. ``hidden=()`` makes
    the head linear.
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden: Sequence[int] = (256,), dropout: float = 0.0):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim), *(("hidden", h) for h in hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{name}: expected a positive integer, got {v!r}")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.skip = nn.Linear(in_dim, out_dim, bias=False)
        with torch.no_grad():
            if in_dim == out_dim:
                self.skip.weight.copy_(torch.eye(in_dim))
            else:
                nn.init.orthogonal_(self.skip.weight)
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        last = nn.Linear(width, out_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last) if hidden else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.skip(x)
        if self.mlp is not None:
            y = y + self.mlp(x)
        return y


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout)]


class DigitsCNN(nn.Module):
    """A four-convolution network for scikit-learn's 8x8 digits (inputs (N, 1, 8, 8) scaled to [0, 1]).

    The shape of the networks behind the classic 2-d MNIST feature plots of the margin-loss papers
    (conv-BN-PReLU pairs, pooling, a linear embedding layer), shrunk to 8x8 inputs so it trains in
    seconds on a CPU.
    """

    def __init__(self, dim: int = 2, *, width: int = 32):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidInputError(f"dim: expected a positive integer, got {dim!r}")
        self.dim = dim
        self.features = nn.Sequential(
            *_block(1, width), *_block(width, width), nn.MaxPool2d(2),               # 4x4
            *_block(width, 2 * width), *_block(2 * width, 2 * width), nn.MaxPool2d(2),  # 2x2
        )
        self.embed = nn.Linear(2 * width * 4, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(self.features(x).flatten(1))


__all__ = ["DigitsCNN", "ProjectionHead"]
