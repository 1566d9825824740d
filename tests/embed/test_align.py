"""Alignment maps landmarks onto the chip template its encoder was trained on."""

import numpy as np
import pytest

from gallery.embed import ARCFACE_CHIP, DLIB_CHIP, DLIB_SAMPLED_CHIP, FaceDetector, align_face, extract_chips, load_image, similarity_transform
from gallery.embed.align import ARCFACE_TEMPLATE, DLIB_POINTS_OF_68, ChipSpec, _pyramid_levels, dlib_chip_transform, five_points
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


def test_chip_pixel_shows_the_image_point_its_transform_names():
    image = np.full((50, 50, 3), 100, np.uint8)
    image[10, 20] = 255
    shift = np.array([[1.0, 0.0, -5.0], [0.0, 1.0, -7.0]])  # chip (x, y) shows image (x - 5, y - 7)
    half = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])  # chip (x, y) shows image (x / 2, y / 2)
    moved, zoomed = extract_chips(image, [shift, half], 120)
    y, x = np.unravel_index(moved[..., 0].argmax(), moved.shape[:2])
    assert (x, y) == (25, 17)
    assert zoomed[20, 40, 0] == 255 and zoomed[21, 40, 0] == 177  # halfway to the grey, rounded down
    assert (moved[7:56, 5:54] > 0).all()  # image columns 0..48, rows 0..48 have a right and lower neighbour
    assert (moved[:, :5] == 0).all() and (moved[:, 54:] == 0).all() and (moved[56:] == 0).all()  # outside: black
    assert (zoomed[98:] == 0).all() and (zoomed[:98, :98] > 0).all()


def test_dlib_chip_is_dlibs_own_chip_on_every_face(every_face):
    """Cut without dlib, pixel for pixel the chip dlib's get_face_chip makes, large faces included."""
    assert len(every_face) >= 25
    for path, face, native, ours in every_face:
        diff = np.abs(native.astype(int) - ours.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, f"{path}: mean difference {diff.mean():.3f}"
    levels = [_pyramid_levels(float(np.hypot(*dlib_chip_transform(f.landmarks)[:, 0])), 150) for _, f, _, _ in every_face]
    assert max(levels) >= 1 and min(levels) == 0  # both paths ran: direct sampling and dlib's pyramid


def test_dlib_chip_from_68_landmarks_uses_the_same_five_points(faces_dir):
    image = load_image(faces_dir / "misc" / "obama-480p.jpg")
    five = FaceDetector("hog", landmarks=5).detect(image)[0].landmarks
    face68 = FaceDetector("hog", landmarks=68).detect(image)[0]
    sixty_eight = face68.landmarks
    assert np.abs(sixty_eight[DLIB_POINTS_OF_68] - five).max() < 6  # the same eye corners and nose base
    m5, m68 = dlib_chip_transform(five), dlib_chip_transform(sixty_eight)
    corners = np.array([[0, 0, 1], [149, 0, 1], [0, 149, 1], [149, 149, 1]], float)
    assert np.abs(corners @ m5.T - corners @ m68.T).max() < 8
    # dlib's own cut is given the same five points (on all 68 it would fit another template)
    assert np.array_equal(align_face(image, face68, DLIB_CHIP), align_face(image, face68, DLIB_SAMPLED_CHIP))


def test_only_dlibs_chip_can_be_cut_by_dlib():
    with pytest.raises(InvalidInputError, match="only dlib's chip"):
        ChipSpec("arcface", 112, 0.0, native=True)


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
