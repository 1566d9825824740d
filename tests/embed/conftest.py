"""Real photos from ../shared/faces (see its README), read in place by relative path from the repo root."""

from pathlib import Path

import pytest

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "faces"


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not FACES.is_dir():  # pragma: no cover - the shared photos are part of the workspace
        pytest.skip(f"{FACES} not found")
    return FACES


@pytest.fixture(scope="session")
def every_face(faces_dir):
    """Every face dlib's HOG detector finds in the shared photos: (photo, face, dlib's own chip, our chip)."""
    from gallery.embed import DLIB_CHIP, DLIB_SAMPLED_CHIP, IMAGE_SUFFIXES, FaceDetector, align_faces, load_image

    detector = FaceDetector("hog")
    out = []
    for path in sorted(p for p in faces_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        image = load_image(path)
        faces = detector.detect(image)
        for face, native, ours in zip(faces, align_faces(image, faces, DLIB_CHIP), align_faces(image, faces, DLIB_SAMPLED_CHIP)):
            out.append((path.relative_to(faces_dir), face, native, ours))
    return out
