"""Alignment: a similarity transform from a face's landmarks onto the chip its encoder was trained on.

Two chips exist. dlib's 150x150 chip (padding 0.25) is what its ResNet descriptor was trained on:
its five landmarks (eye corners, base of the nose) are fitted by least squares to dlib's template,
and the chip is cut the way dlib's ``extract_image_chip`` cuts it (see :func:`dlib_chip_transform`).
The 112x112 chip of ArcFace training code puts the eye centres, nose tip and mouth corners on its
five-point template. ArcFace's chip is cut by a batched sampler in numpy, :func:`extract_chips`,
which also reproduces dlib's chip pixel for pixel (:data:`DLIB_SAMPLED_CHIP`): that equality, tested on
every shared face, is what checks the sampler and its image pyramid. dlib's chip itself
(:data:`DLIB_CHIP`, ``native``) is cut by dlib's ``get_face_chip``: the same pixels, and 1.3 ms a photo
against 8 ms in numpy, on every photo a build embeds (``benchmarks/README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InvalidInputError
from .detect import Face

#: (x, y) of left eye, right eye, nose tip, left and right mouth corner on the 112x112 ArcFace chip.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
#: dlib's five landmarks on its unpadded unit chip: outer and inner corner of the eye on the image's
#: right, outer and inner corner of the other eye, base of the nose (dlib's get_face_chip_details).
DLIB_TEMPLATE = np.array(
    [[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677], [0.1205750620789, 0.2137274526848],
     [0.3340850613712, 0.2290642403242], [0.4901123135679, 0.6277975316475]],
    dtype=np.float64,
)
#: The same five points among the 68 iBUG landmarks.
DLIB_POINTS_OF_68 = [45, 42, 36, 39, 33]
TEMPLATES = ("dlib", "arcface")


@dataclass(frozen=True)
class ChipSpec:
    """The aligned face an encoder expects: which template, its size in pixels, dlib's padding, and
    whether dlib itself cuts it (``native``, dlib templates only)."""

    template: str
    size: int
    padding: float = 0.25
    native: bool = False

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise InvalidInputError(f"unknown chip template {self.template!r}; choose one of: {', '.join(TEMPLATES)}")
        if self.native and self.template != "dlib":
            raise InvalidInputError("only dlib's chip can be cut by dlib itself")

    @property
    def landmarks(self) -> int:
        """Landmark model the template needs: ArcFace's mouth corners exist only in the 68-point model."""
        return 68 if self.template == "arcface" else 5


#: dlib's chip as its encoders get it: cut by dlib.
DLIB_CHIP = ChipSpec("dlib", 150, 0.25, native=True)
#: The same chip cut by :func:`extract_chips`, without dlib.
DLIB_SAMPLED_CHIP = ChipSpec("dlib", 150, 0.25)
ARCFACE_CHIP = ChipSpec("arcface", 112, 0.0)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """ArcFace's five points (eye centres, nose tip, mouth corners) from dlib's 68 landmarks."""
    if len(landmarks) != 68:
        raise InvalidInputError(f"the ArcFace template needs 68-point landmarks, got {len(landmarks)} points")
    p = np.asarray(landmarks, dtype=np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of the rotation, uniform scale and translation mapping ``src`` points onto ``dst``
    with least squared error (Umeyama's closed form, reflections excluded)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1
    rot = u @ fix @ vt
    var = (s0**2).sum() / len(src)
    scale = (sig * np.diag(fix)).sum() / var
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def dlib_chip_transform(landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The 2x3 map from chip pixels to image points of dlib's face chip, from 5 (or 68) landmarks.

    dlib fits its template (padded, scaled to ``size``) onto the landmarks, keeps the fit's rotation
    and scale, and spans a ``size * scale - 1`` pixel square centred on the image point of the
    template's centre with the chip's corner pixels; that stretch by ``(size * scale - 1) /
    ((size - 1) * scale)`` is part of the chip the network learnt from, so it is kept.
    """
    points = np.asarray(landmarks, np.float64)
    if len(points) == 68:
        points = points[DLIB_POINTS_OF_68]
    if len(points) != 5:
        raise InvalidInputError(f"dlib's chip needs 5 or 68 landmarks, got {len(points)} points")
    template = (padding + DLIB_TEMPLATE) / (2 * padding + 1) * size
    fit = similarity_transform(template, points)
    scale = float(np.hypot(fit[0, 0], fit[1, 0]))
    centre = fit[:, :2] @ [size / 2.0, size / 2.0] + fit[:, 2]
    rotation = fit[:, :2] / scale
    step = (size * scale - 1) / (size - 1)
    m = np.zeros((2, 3))
    m[:, :2] = rotation * step
    half = (size * scale - 1) / 2.0
    m[:, 2] = centre - rotation @ np.array([half, half])
    return m


def chip_transform(face: Face, spec: ChipSpec) -> np.ndarray:
    """The 2x3 map from ``spec``'s chip pixels to points of the image ``face`` was found in."""
    if spec.template == "dlib":
        return dlib_chip_transform(face.landmarks, spec.size, spec.padding)
    template = ARCFACE_TEMPLATE * (spec.size / 112.0)
    return similarity_transform(template, five_points(face.landmarks))


def _binomial_halve(x: np.ndarray, axis: int) -> np.ndarray:
    """1-4-6-4-1 weighted sums of five neighbours along ``axis``, every other one, unnormalised."""
    n = (x.shape[axis] - 3) // 2

    def tap(k: int) -> np.ndarray:
        return x[(slice(None),) * axis + (slice(k, k + 2 * n, 2),)]

    out = tap(0) + tap(4)
    out += 4 * (tap(1) + tap(3))
    out += 6 * tap(2)
    return out


def _pyramid_down(image: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>``: a separable 1-4-6-4-1 blur keeping every other row and column,
    output pixel ``j`` drawn around input ``2j + 2``, rounded down to whole pixel values.

    The sums are whole numbers below 256 * 16 * 16, so uint16 holds them exactly (and is the
    cheapest type that does)."""
    summed = _binomial_halve(_binomial_halve(image.astype(np.uint16), 1), 0)
    return (summed >> 8).astype(np.uint8)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` sampled at points ``(x, y)`` (arrays of one shape), truncated to uint8 as dlib does;
    points without four neighbours inside the image are black. Weights in float64, as dlib's."""
    h, w = image.shape[:2]
    x0f, y0f = np.floor(x), np.floor(y)
    inside = (x0f >= 0) & (y0f >= 0) & (x0f + 1 < w) & (y0f + 1 < h)
    x0 = np.clip(x0f, 0, max(w - 2, 0)).astype(np.intp)
    y0 = np.clip(y0f, 0, max(h - 2, 0)).astype(np.intp)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    flat = image.reshape(h * w, -1)
    at = y0 * w + x0
    gx = 1 - fx

    def pixels(offset: int) -> np.ndarray:
        return np.take(flat, at + offset, axis=0)  # 4x faster than flat[at] (measured)

    top = gx * pixels(0) + fx * pixels(1)
    bottom = gx * pixels(w) + fx * pixels(w + 1)
    out = (1 - fy) * top + fy * bottom
    out[~inside] = 0
    return np.clip(out, 0, 255).astype(np.uint8).reshape(x.shape + image.shape[2:])


def _pyramid_levels(scale: float, size: int) -> int:
    """How many times dlib halves the image first: while the halved chip square still spans more
    than ``size`` pixels (its ``size * scale - 1`` extent halving each time)."""
    levels, extent = 0, size * scale - 1
    while extent / 2 + 1 > size:
        levels, extent = levels + 1, extent / 2
    return levels


def extract_chips(image: np.ndarray, transforms: Sequence[np.ndarray], size: int) -> np.ndarray:
    """``(N, size, size, 3) uint8`` chips: chip pixel ``(x, y)`` shows image point ``m @ [x, y, 1]``.

    Bilinear sampling, black outside the image. A face more than about twice the chip's size is
    cut from dlib's image pyramid instead (the region around it halved with a blur until it is
    not), so it is averaged rather than point-sampled; faces needing no pyramid are cut in one pass.
    """
    transforms = np.asarray(transforms, np.float64).reshape(-1, 2, 3)
    out = np.empty((len(transforms), size, size, 3), np.uint8)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    t = transforms[:, :, :, None, None]
    points = np.stack([t[:, j, 0] * xs + t[:, j, 1] * ys + t[:, j, 2] for j in (0, 1)], axis=-1)
    levels = np.array([_pyramid_levels(float(np.hypot(m[0, 0], m[1, 0])), size) for m in transforms], dtype=int)
    direct = np.flatnonzero(levels == 0)
    if len(direct):
        out[direct] = _bilinear(image, points[direct, ..., 0], points[direct, ..., 1])
    h, w = image.shape[:2]
    for i in np.flatnonzero(levels > 0):
        corners = points[i][[0, 0, -1, -1], [0, -1, 0, -1]]
        grow = 2.0 ** (levels[i] + 2) - 2  # dlib's border: 2 px, doubled plus 2 per pyramid level
        left, top = (int(np.round(max(corners[:, k].min() - grow, 0))) for k in (0, 1))
        right = int(np.round(min(corners[:, 0].max() + grow, w - 1)))
        bottom = int(np.round(min(corners[:, 1].max() + grow, h - 1)))
        src, p = image[top : bottom + 1, left : right + 1], points[i] - [left, top]
        for _ in range(levels[i]):
            if min(src.shape[:2]) <= 8:
                break
            src, p = _pyramid_down(src), p / 2 - [1.25, 0.75]
        out[i] = _bilinear(src, p[..., 0], p[..., 1])
    return out


def align_faces(image: np.ndarray, faces: Sequence[Face], spec: ChipSpec) -> np.ndarray:
    """The ``(F, size, size, 3) uint8`` chips of ``faces`` that ``spec``'s encoder expects."""
    if not faces:
        return np.empty((0, spec.size, spec.size, 3), np.uint8)
    if spec.native:
        return np.stack([_dlib_native_chip(image, face, spec) for face in faces])
    return extract_chips(image, [chip_transform(face, spec) for face in faces], spec.size)


def align_face(image: np.ndarray, face: Face, spec: ChipSpec) -> np.ndarray:
    """The ``(size, size, 3) uint8`` chip of one face."""
    return align_faces(image, [face], spec)[0]


def _dlib_native_chip(image: np.ndarray, face: Face, spec: ChipSpec) -> np.ndarray:
    import dlib

    left, top, right, bottom = face.box
    five = face.landmarks[DLIB_POINTS_OF_68] if len(face.landmarks) == 68 else face.landmarks  # dlib's 5-point fit
    points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in five])
    shape = dlib.full_object_detection(dlib.rectangle(left, top, right, bottom), points)
    return np.asarray(dlib.get_face_chip(image, shape, size=spec.size, padding=spec.padding))
