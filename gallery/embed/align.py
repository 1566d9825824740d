"""Alignment: a similarity transform from a face's landmarks onto the chip its encoder was trained on.

Two chips exist: dlib's 150x150 chip (dlib's own chip extraction, padding 0.25, which is what its
ResNet descriptor was trained on) and the 112x112 five-point template of ArcFace training code
(eye centres, nose tip, mouth corners), fitted by least squares (Umeyama 1991) from 68-point landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InvalidInputError
from .detect import Face

#: (x, y) of left eye, right eye, nose tip, left and right mouth corner on the 112x112 ArcFace chip.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
TEMPLATES = ("dlib", "arcface")


@dataclass(frozen=True)
class ChipSpec:
    """The aligned face an encoder expects: which template, its size in pixels, and dlib's padding."""

    template: str
    size: int
    padding: float = 0.25

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise InvalidInputError(f"unknown chip template {self.template!r}; choose one of: {', '.join(TEMPLATES)}")

    @property
    def landmarks(self) -> int:
        """Landmark model the template needs: ArcFace's mouth corners exist only in the 68-point model."""
        return 68 if self.template == "arcface" else 5


DLIB_CHIP = ChipSpec("dlib", 150, 0.25)
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


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Sample ``image`` so that output pixel ``q`` shows input point ``p`` where ``matrix @ [p, 1] = q``."""
    a = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(a)
    coeffs = tuple(inv[0]) + tuple(inv[1])
    out = Image.fromarray(image).transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    return np.asarray(out)


def align_face(image: np.ndarray, face: Face, spec: ChipSpec) -> np.ndarray:
    """The ``(size, size, 3) uint8`` chip of ``face`` that ``spec``'s encoder expects."""
    if spec.template == "arcface":
        template = ARCFACE_TEMPLATE * (spec.size / 112.0)
        return warp_affine(image, similarity_transform(five_points(face.landmarks), template), spec.size)
    import dlib

    left, top, right, bottom = face.box
    points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in face.landmarks])
    shape = dlib.full_object_detection(dlib.rectangle(left, top, right, bottom), points)
    return np.asarray(dlib.get_face_chip(image, shape, size=spec.size, padding=spec.padding))
