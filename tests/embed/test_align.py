"""Alignment maps landmarks onto the chip template its encoder was trained on."""

import numpy as np
import pytest

from gallery.embed import ARCFACE_CHIP, DLIB_CHIP, FaceDetector, align_face, load_image, similarity_transform
from gallery.embed.align import ARCFACE_TEMPLATE, five_points, warp_affine
from gallery.errors import InvalidInputError


def test_similarity_transform_recovers_rotation_scale_and_shift():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_similarity_transform_never_reflects():
    src = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [2.0, 2.5]])
    m = similarity_transform(src, src * [-1.0, 1.0])  # a mirror image: best proper fit, not a reflection
    assert np.linalg.det(m[:, :2]) > 0


def test_warp_moves_a_known_pixel():
    image = np.zeros((50, 50, 3), np.uint8)
    image[10, 20] = 255
    m = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 7.0]])  # shift by (+5, +7)
    out = warp_affine(image, m, 50)
    y, x = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
    assert (x, y) == (25, 17)


def test_arcface_chip_puts_the_five_points_on_the_template(faces_dir):
    image = load_image(faces_dir / "misc" / "obama-480p.jpg")
    face = FaceDetector("hog", landmarks=68).detect(image)[0]
    chip = align_face(image, face, ARCFACE_CHIP)
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    m = similarity_transform(five_points(face.landmarks), ARCFACE_TEMPLATE)
    mapped = five_points(face.landmarks) @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 6  # a real face fits the template to a few pixels
    # and the face really is there: the chip is not blank or clipped
    assert chip.std() > 20


def test_arcface_needs_68_points():
    with pytest.raises(InvalidInputError, match="68-point"):
        five_points(np.zeros((5, 2)))


def test_dlib_chip_size(faces_dir):
    image = load_image(faces_dir / "misc" / "obama_small.jpg")
    face = FaceDetector("hog").detect(image)[0]
    chip = align_face(image, face, DLIB_CHIP)
    assert chip.shape == (150, 150, 3) and chip.std() > 20
