"""dlib's face recognition ResNet in torch, with its weights read from dlib's own model file.

The network of dlib's ``dnn_face_recognition_ex.cpp`` (King 2017; 99.38% on LFW): 150x150 RGB chips
minus dlib's per-channel means, divided by 256; a 7x7 stride-2 convolution and a 3x3 stride-2 max
pool; residual levels of 32, 64, 128 and 256 filters (3, 4, 3, 3 blocks) and one more 256 block,
each level after the first entered by a stride-2 block whose shortcut is a 2x2 average pool; a
global average pool and a 128-d linear map without bias.

Two dlib details matter for equal outputs. Strided convolutions and pools are unpadded, so a
downsampling block's two branches can differ in size (3x3 against 4x4 at 256 filters); dlib then
adds them as if both were zero-padded at the bottom, right and in the extra channels. And dlib's
``affine`` layers are batch norms already folded into a per-channel scale and shift, which
:func:`load_dlib_weights` folds further into the preceding convolution's weights and bias.

The converted weights are cached (``$GALLERY_CACHE``, else ``$XDG_CACHE_HOME/gallery``, else
``~/.cache/gallery``) under the digest of the ``.dat`` file they came from; nothing is downloaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvalidInputError
from ..store.files import sha256_file, write_atomic
from .detect import cache_dir
from .dlib_file import DlibLayer, check_convolution, read_dlib_network

#: dlib's per-channel means (R, G, B) and divisor; the model file records the means too, and they are checked.
DLIB_MEANS = (122.782, 117.001, 104.298)
DLIB_SCALE = 256.0
#: (filters, blocks, first block downsamples) per level, input side first.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def add_zero_padded(a: Tensor, b: Tensor) -> Tensor:
    """``a + b`` over the larger of each dimension, each summand zero-padded at the end (dlib's add_prev)."""
    if a.shape == b.shape:
        return a + b
    size = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]

    def pad(t: Tensor) -> Tensor:
        c, h, w = t.shape[1:]
        return F.pad(t, (0, size[2] - w, 0, size[1] - h, 0, size[0] - c))

    return pad(a) + pad(b)


class DlibResidual(nn.Module):
    """3x3 conv, (affine), ReLU, 3x3 conv, (affine), plus the input, then ReLU; stride 2 and a 2x2
    average-pooled shortcut when ``down``."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(F.relu(self.conv1(x), inplace=True))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_zero_padded(y, shortcut), inplace=True)


class DlibFaceResNet(nn.Module):
    """Maps ``(N, 3, 150, 150)`` RGB pixel values in [0, 255] to ``(N, 128)`` descriptors (not normalised)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("means", torch.tensor(DLIB_MEANS).view(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        blocks, cin = [], 32
        for filters, count, down in LEVELS:
            for i in range(count):
                blocks.append(DlibResidual(cin, filters, down and i == 0))
                cin = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, pixels: Tensor) -> Tensor:
        x = (pixels - self.means) / DLIB_SCALE
        x = F.max_pool2d(F.relu(self.stem(x), inplace=True), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

    def convolutions(self) -> list[nn.Conv2d]:
        """The convolutions in dlib's order (input side first), each followed there by an affine layer."""
        return [self.stem] + [c for b in self.blocks for c in (b.conv1, b.conv2)]

    def dlib_layer_kinds(self) -> list[str]:
        """The layer kinds dlib's file lists for this network, in its order (``tag`` for tags and skips)."""
        kinds = ["input", "con", "affine", "relu", "max_pool"]
        for b in self.blocks:
            kinds += ["tag", "con", "affine", "relu", "con", "affine"]
            kinds += ["tag", "tag", "avg_pool", "add_prev", "relu"] if b.down else ["add_prev", "relu"]
        return kinds + ["avg_pool", "fc", "loss"]


def load_dlib_weights(model: DlibFaceResNet, layers: Sequence[DlibLayer], source: str = "model file") -> DlibFaceResNet:
    """Copy a dlib network's parameters (from :func:`read_dlib_network`) into ``model``, folding each
    affine layer into the convolution before it. Any difference in architecture is an error naming it."""
    kinds = [layer.kind for layer in layers]
    expected = model.dlib_layer_kinds()
    if kinds != expected:
        at = next((i for i, (a, b) in enumerate(zip(kinds, expected)) if a != b), min(len(kinds), len(expected)))
        raise InvalidInputError(f"{source}: not dlib's face recognition ResNet (layer {at} is "
                                f"{kinds[at] if at < len(kinds) else 'missing'}, expected {expected[at] if at < len(expected) else 'the end'})")
    means = tuple(layers[0].fields[k] for k in ("avg_red", "avg_green", "avg_blue"))
    if not np.allclose(means, DLIB_MEANS, atol=1e-3):
        raise InvalidInputError(f"{source}: input means {means} differ from dlib's {DLIB_MEANS}")
    cons = [layer for layer in layers if layer.kind == "con"]
    affines = [layer for layer in layers if layer.kind == "affine"]
    with torch.no_grad():
        for conv, con, affine in zip(model.convolutions(), cons, affines):
            check_convolution(con, conv, source)
            f = con.fields
            gamma, beta = affine.tensors["gamma"], affine.tensors["beta"]
            bias = con.tensors.get("biases", np.zeros(f["num_filters"], np.float32))
            conv.weight.copy_(torch.from_numpy(con.tensors["filters"] * gamma[:, None, None, None]))
            conv.bias.copy_(torch.from_numpy(bias * gamma + beta))
        fc = next(layer for layer in layers if layer.kind == "fc")
        if fc.tensors["weights"].shape != (256, 128) or "biases" in fc.tensors:
            raise InvalidInputError(f"{source}: the last layer is not a 256x128 map without bias")
        model.fc.weight.copy_(torch.from_numpy(fc.tensors["weights"].T.copy()))
    return model


def dlib_face_resnet(dat_file: Path, digest: Optional[str] = None) -> DlibFaceResNet:
    """The torch network with the weights of ``dat_file``, converted once and then loaded from the cache."""
    dat_file = Path(dat_file)
    digest = digest or sha256_file(dat_file)
    cached = cache_dir() / f"dlib-face-resnet-{digest[:20]}.pt"
    model = DlibFaceResNet()
    if cached.is_file():
        try:
            model.load_state_dict(torch.load(str(cached), map_location="cpu", weights_only=True))
            return model.eval()
        except Exception as e:  # a damaged cache is rebuilt, never trusted
            warnings.warn(f"{cached}: unreadable cached weights ({type(e).__name__}); converting {dat_file.name} again")
    load_dlib_weights(model, read_dlib_network(dat_file), source=str(dat_file))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cached, lambda tmp: torch.save(model.state_dict(), str(tmp)))
    except OSError as e:
        warnings.warn(f"{cached}: cannot cache converted weights ({e.strerror or e}); converting on every start")
    return model.eval()
