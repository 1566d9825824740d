"""A reader for dlib's serialised DNN files (``dlib_face_recognition_resnet_model_v1.dat``,
``mmod_human_face_detector.dat`` and their kin).

dlib writes a network as nested templates, outermost first: the loss layer, then one version number
per wrapping layer down to the input layer, and then each layer's own fields on the way back out,
so the fields come in forward order (input first). Integers are dlib's compact form (a control byte
holding the sign and the byte count, then little-endian bytes); floats and doubles are an integer
mantissa and exponent; tensors are four dimensions followed by raw little-endian float32 values.

Tag and skip layers carry only a version number (their ids live in the C++ type), so the network
definition that consumes these layers supplies the wiring; the reader reports them as ``"tag"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import InvalidInputError

#: Exponents dlib reserves for infinities and NaN in its float format.
_INF, _NINF, _NAN = 32000, 32001, 32002


@dataclass
class DlibLayer:
    """One layer as dlib stored it: ``kind`` (``con``, ``affine``, ``relu``, ``max_pool``, ``avg_pool``,
    ``add_prev``, ``fc``, ``tag``, an input or a loss), the exact version string, its scalar fields and
    its parameter tensors (already split into filters / biases / gamma / beta / weights). A batch norm
    (``bn_con2``, ``bn_fc2``) comes as an ``affine`` layer with its running statistics folded in."""

    kind: str
    version: str
    fields: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)


class DlibFormatError(InvalidInputError):
    """The file is not a dlib network this reader understands."""


class _Stream:
    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.at = data, path, 0

    def fail(self, why: str) -> DlibFormatError:
        return DlibFormatError(f"{self.path}: not a dlib network file ({why} at byte {self.at})")

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise self.fail(f"truncated: {n} more bytes needed")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def int(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        if self.data[self.at : self.at + 1] and self.data[self.at] & 0x70:
            raise self.fail("floats in dlib's old text format are not supported")
        mantissa, exponent = self.int(), self.int()
        if exponent >= _INF:
            return {_INF: math.inf, _NINF: -math.inf}.get(exponent, math.nan)
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            raise self.fail(f"bad boolean {byte!r}")
        return byte == b"1"

    def string(self) -> str:
        n = self.int()
        if not 0 <= n <= 256:
            raise self.fail(f"implausible string length {n}")
        try:
            return self.take(n).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a layer name that is not ASCII") from None

    def peek_string(self) -> Optional[str]:
        at = self.at
        try:
            return self.string()
        except DlibFormatError:
            return None
        finally:
            self.at = at

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise self.fail("unknown tensor version")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple:
        if self.int() != 1:
            raise self.fail("unknown alias_tensor version")
        return tuple(self.int() for _ in range(4))


def _split(params: np.ndarray, *shapes: tuple) -> list:
    """dlib keeps a layer's parameters in one tensor and addresses the parts by offset."""
    flat, out, at = params.reshape(-1), [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[at : at + n].reshape(shape))
        at += n
    return out


def _con(s: _Stream, version: str) -> DlibLayer:
    params = s.tensor()
    f = {name: s.int() for name in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
    filters, biases = s.alias(), s.alias()
    f["multipliers"] = [s.float() for _ in range(4)]
    f["use_bias"] = s.bool() if version in ("con_5", "con_6") else True
    if version == "con_6":
        f["use_relu"] = s.bool()
    parts = _split(params, filters, biases) if f["use_bias"] else _split(params, filters)
    tensors = {"filters": parts[0]}
    if f["use_bias"]:
        tensors["biases"] = parts[1].reshape(-1)
    return DlibLayer("con", version, f, tensors)


def _affine(s: _Stream, version: str) -> DlibLayer:
    params = s.tensor()
    gamma, beta = s.alias(), s.alias()
    f = {"mode": s.int()}
    if version == "affine_2":
        f["disabled"] = s.bool()
    g, b = _split(params, gamma, beta)
    return DlibLayer("affine", version, f, {"gamma": g.reshape(-1), "beta": b.reshape(-1)})


def _bn_as_affine(s: _Stream, version: str) -> DlibLayer:
    """A batch norm layer, folded into an affine one with its running statistics, as dlib itself does
    when a network declared with ``affine`` is read from a file trained with ``bn_con``."""
    params = s.tensor()
    gamma, beta = s.alias(), s.alias()
    s.tensor(), s.tensor()  # the last training batch's means and inverse deviations
    running_means, running_variances = s.tensor().reshape(-1), s.tensor().reshape(-1)
    s.int(), s.int()  # updates seen, running-statistics window
    for _ in range(4):  # learning rate and weight decay multipliers
        s.float()
    eps = s.float()
    g, b = _split(params, gamma, beta)
    scale = g.reshape(-1) / np.sqrt(running_variances + np.float32(eps))
    shift = b.reshape(-1) - scale * running_means
    f = {"mode": 1 if version == "bn_con2" else 0, "eps": eps}
    return DlibLayer("affine", version, f, {"gamma": scale.astype(np.float32), "beta": shift.astype(np.float32)})


def _fc(s: _Stream, version: str) -> DlibLayer:
    f = {"num_outputs": s.int(), "num_inputs": s.int()}
    params = s.tensor()
    weights, biases = s.alias(), s.alias()
    f["bias_mode"] = s.int()
    f["multipliers"] = [s.float() for _ in range(4)]
    f["use_bias"] = s.bool() if version == "fc_3" else f["bias_mode"] == 0
    # bias_mode 0 is FC_HAS_BIAS; the weights are (num_inputs, num_outputs): dlib computes x @ W
    parts = _split(params, weights, biases) if f["bias_mode"] == 0 else _split(params, weights)
    tensors = {"weights": parts[0].reshape(f["num_inputs"], f["num_outputs"])}
    if f["bias_mode"] == 0:
        tensors["biases"] = parts[1].reshape(-1)
    return DlibLayer("fc", version, f, tensors)


def _pool(kind: str):
    def read(s: _Stream, version: str) -> DlibLayer:
        names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return DlibLayer(kind, version, {name: s.int() for name in names})

    return read


def _relu(s: _Stream, version: str) -> DlibLayer:
    return DlibLayer("relu", version, {"disabled": s.bool()} if version == "relu_2" else {})


def _add_prev(s: _Stream, version: str) -> DlibLayer:
    return DlibLayer("add_prev", version)


def _input_rgb(s: _Stream, version: str) -> DlibLayer:
    f = {"avg_red": s.float(), "avg_green": s.float(), "avg_blue": s.float()}
    if version == "input_rgb_image_sized":
        f["nr"], f["nc"] = s.int(), s.int()
    return DlibLayer("input", version, f)


def _input_rgb_pyramid(s: _Stream, version: str) -> DlibLayer:
    f = {"avg_red": s.float(), "avg_green": s.float(), "avg_blue": s.float()}
    # the first version had no padding fields; dlib then uses 10 between levels and 11 around them
    f["pyramid_padding"], f["pyramid_outer_padding"] = (s.int(), s.int()) if version.endswith("2") else (10, 11)
    return DlibLayer("input", version, f)


def _loss_metric(s: _Stream, version: str) -> DlibLayer:
    f = {"margin": s.float(), "dist_thresh": s.float()} if version == "loss_metric_2" else {}
    return DlibLayer("loss", version, f)


def _loss_mmod(s: _Stream, version: str) -> DlibLayer:
    """``mmod_options`` versions 1-4: detector windows as ``(width, height, label)``, the
    non-max-suppression and ignore overlap tests as ``(iou, percent covered)``, bounding box regression."""
    options = s.int()
    if not 1 <= options <= 4:
        raise s.fail(f"unknown mmod_options version {options}")
    if options == 1:
        windows = [(s.int(), s.int(), "")]
    else:
        windows = []
        for _ in range(s.int()):
            if s.int() not in (1, 2):
                raise s.fail("unknown detector window version")
            windows.append((s.int(), s.int(), s.string()))
    f = {"detector_windows": windows}
    for name in ("loss_per_false_alarm", "loss_per_missed_target", "truth_match_iou_threshold"):
        f[name] = s.float()
    f["overlaps_nms"] = (s.float(), s.float())
    f["overlaps_ignore"] = (s.float(), s.float())
    f["assume_image_pyramid"] = s.take(1)[0] == 1 if options >= 3 else True
    f["use_bounding_box_regression"], f["bbr_lambda"] = (s.bool(), s.float()) if options >= 4 else (False, 100.0)
    return DlibLayer("loss", version, f)


_LAYERS = {
    "con_4": _con, "con_5": _con, "con_6": _con,
    "affine_": _affine, "affine_2": _affine, "bn_con2": _bn_as_affine, "bn_fc2": _bn_as_affine,
    "fc_2": _fc, "fc_3": _fc,
    "max_pool_2": _pool("max_pool"), "avg_pool_2": _pool("avg_pool"),
    "relu_": _relu, "relu_2": _relu,
    "add_prev_": _add_prev,
}
_INPUTS = {
    "input_rgb_image": _input_rgb, "input_rgb_image_sized": _input_rgb,
    "input_rgb_image_pyramid": _input_rgb_pyramid, "input_rgb_image_pyramid2": _input_rgb_pyramid,
}
_LOSSES = {"loss_metric_": _loss_metric, "loss_metric_2": _loss_metric, "loss_mmod_": _loss_mmod}


def _details(s: _Stream, table: dict) -> DlibLayer:
    at = s.at
    version = s.string()
    if version not in table:
        s.at = at
        raise s.fail(f"unsupported layer {version!r} (this reader knows {', '.join(sorted(table))})")
    return table[version](s, version)


def read_dlib_network(source: Union[str, Path, bytes]) -> list[DlibLayer]:
    """Every layer of a dlib network file in forward order: the input first, the loss last.

    Raises :class:`DlibFormatError` (naming the file and byte offset) on anything it cannot read.
    """
    path = Path("<bytes>") if isinstance(source, bytes) else Path(source)
    if isinstance(source, bytes):
        data = source
    else:
        if not path.is_file():
            raise InvalidInputError(f"{path}: model file not found")
        data = path.read_bytes()
    s = _Stream(data, path)
    if s.int() != 1:
        raise s.fail("unknown loss layer version")
    loss = _details(s, _LOSSES)

    wrappers = []
    while True:
        name = s.peek_string()
        if name is not None and name.startswith("input"):
            break
        wrappers.append(s.int())
        if len(wrappers) > 10_000:
            raise s.fail("no input layer found")
    if not wrappers or wrappers[-1] not in (2, 3):
        raise s.fail("the innermost layer must be a computational layer on the input")

    layers = [_details(s, _INPUTS)]
    for depth, version in enumerate(reversed(wrappers)):
        if depth > 0 and version == 1:
            layers.append(DlibLayer("tag", "tag"))
            continue
        if version not in (2, 3):
            raise s.fail(f"unknown layer wrapper version {version}")
        layers.append(_details(s, _LAYERS))
        for _ in range(3):  # setup done, gradient stale, gradient disabled
            s.bool()
        s.tensor(), s.tensor(), s.tensor()  # gradients and cached outputs, unused for inference
        if depth == 0 and version == 3:
            s.int()  # sample expansion factor
    if s.at != len(data):
        raise s.fail(f"{len(data) - s.at} bytes left over after the last layer")
    return layers + [loss]


def check_convolution(layer: DlibLayer, conv, source: str) -> None:
    """Refuse a dlib ``con`` layer whose geometry is not the one of ``conv`` (a ``torch.nn.Conv2d``) that will
    hold its weights: a different network under the same file name is an error, never a silent misfit."""
    f = layer.fields
    geometry = (f["num_filters"], f["nr"], f["nc"], f["stride_y"], f["stride_x"], f["padding_y"], f["padding_x"])
    ours = (conv.out_channels, *conv.kernel_size, *conv.stride, *conv.padding)
    if geometry != ours or layer.tensors["filters"].shape[1] != conv.in_channels:
        raise InvalidInputError(f"{source}: a convolution is {geometry}, expected {ours}")
