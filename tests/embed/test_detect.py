"""dlib finds faces and landmarks on real photos; huge photos are detected downscaled, landmarks at full size."""

import numpy as np
import pytest
from PIL import Image

from gallery.embed import FaceDetector, load_image
from gallery.errors import InvalidInputError


@pytest.fixture(scope="module")
def hog():
    return FaceDetector("hog")


def test_two_faces_largest_first(hog, faces_dir):
    faces = hog.detect(load_image(faces_dir / "misc" / "two_people.jpg"))
    assert len(faces) == 2
    assert faces[0].area >= faces[1].area
    for f in faces:
        left, top, right, bottom = f.box
        assert 0 <= left < right and 0 <= top < bottom
        assert f.landmarks.shape == (5, 2)
        # landmarks sit on the face they belong to
        assert (f.landmarks[:, 0] > left - 20).all() and (f.landmarks[:, 0] < right + 20).all()


def test_68_point_landmarks(faces_dir):
    faces = FaceDetector("hog", landmarks=68).detect(load_image(faces_dir / "misc" / "obama_small.jpg"))
    assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2)


def test_photo_without_a_face(hog, faces_dir):
    image = load_image(faces_dir / "misc" / "obama_small.jpg")
    assert hog.detect(np.full_like(image, 128)) == []


def test_huge_photo_is_detected_downscaled_with_landmarks_mapped_back(faces_dir):
    small = load_image(faces_dir / "misc" / "obama_small.jpg")
    big = np.asarray(Image.fromarray(small).resize((small.shape[1] * 8, small.shape[0] * 8), Image.BICUBIC))
    ref = FaceDetector("hog", upsample=0).detect(small)[0]
    got = FaceDetector("hog", max_side=640, upsample=0).detect(big)
    assert len(got) == 1
    # the same face, in the big photo's coordinates
    np.testing.assert_allclose(np.array(got[0].box), np.array(ref.box) * 8, atol=8 * 8)
    np.testing.assert_allclose(got[0].landmarks, ref.landmarks * 8, atol=8 * 4)


def test_cnn_detector_finds_the_face(faces_dir):
    faces = FaceDetector("cnn", upsample=0).detect(load_image(faces_dir / "misc" / "obama_small.jpg"))
    assert len(faces) == 1 and faces[0].score > 0


@pytest.mark.parametrize("kw, message", [
    ({"method": "haar"}, "unknown face detector 'haar'"),
    ({"landmarks": 7}, "landmarks must be 5 or 68"),
    ({"max_side": 10}, "max_side must be at least 64"),
])
def test_bad_options(kw, message):
    with pytest.raises(InvalidInputError, match=message):
        FaceDetector(**kw)
