"""The IResNet backbone of ArcFace training code (Deng et al. 2019; Duta et al. 2020's improved ResNet).

Parameter names follow the published checkpoints (``conv1``, ``layer1.0.bn1``, ..., ``fc``,
``features``), so a user's ``backbone.pth`` loads with ``load_state_dict``. Input: 112x112 RGB
chips scaled to [-1, 1]; output: 512-d (not normalised; the gallery normalises).
"""

from __future__ import annotations

import re
from typing import Sequence

from torch import Tensor, nn


class IBasicBlock(nn.Module):
    """BN, 3x3 conv, BN, PReLU, 3x3 conv (carrying the stride), BN, plus the (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """Four stages of 64, 128, 256, 512 channels, each halving the resolution (112 -> 7), then BN-FC-BN."""

    def __init__(self, layers: Sequence[int], num_features: int = 512, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stage = [IBasicBlock(cin, width, 2)] + [IBasicBlock(width, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            cin = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x).flatten(1))
        return self.features(self.fc(x))


def stage_depths(state: dict) -> tuple[int, ...]:
    """Blocks per stage in a state_dict, to name the depth a mismatched file really has."""
    blocks: dict[int, set] = {}
    for key in state:
        m = re.match(r"layer(\d)\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return tuple(len(blocks.get(i, ())) for i in range(1, 5))
