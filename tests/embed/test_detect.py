"""dlib finds faces and landmarks on real photos; photos are searched downscaled (a second, larger search
only where the first found no face), landmarks at full size; dlib's models load once per process."""

import csv

import numpy as np
import pytest
from PIL import Image

from gallery.embed import IMAGE_SUFFIXES, FaceDetector, decode_photo, load_image
from gallery.embed import detect as detect_module
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


def test_the_cnn_detector_runs_in_torch_and_finds_dlibs_own_boxes(faces_dir):
    import dlib

    image = load_image(faces_dir / "misc" / "obama_small.jpg")
    ours = FaceDetector("cnn", upsample=1, max_side=max(image.shape[:2])).find_boxes(image)
    theirs = dlib.cnn_face_detection_model_v1(detect_module.model_files()["cnn"])(image, 1)
    assert len(ours) == len(theirs) == 1
    assert ours[0][0] == (theirs[0].rect.left(), theirs[0].rect.top(), theirs[0].rect.right(), theirs[0].rect.bottom())
    assert abs(ours[0][1] - theirs[0].confidence) < 1e-3


@pytest.mark.parametrize("kw, message", [
    ({"method": "haar"}, "unknown face detector 'haar'"),
    ({"landmarks": 7}, "landmarks must be 5 or 68"),
    ({"method": "hog", "device": "cuda"}, "the hog detector runs on the CPU only"),
    ({"max_side": 10}, "max_side must be at least 64"),
    ({"upsample": 4}, "upsample must be 0 to 3, got 4"),
])
def test_bad_options(kw, message):
    with pytest.raises(InvalidInputError, match=message):
        FaceDetector(**kw)


def labelled_faces(faces_dir):
    with open(faces_dir / "labels.csv", newline="") as f:
        counts = {row["path"]: len(row["identities"].split(";")) for row in csv.DictReader(f)}
    for path in (faces_dir / "gallery").rglob("*"):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            counts[path.relative_to(faces_dir).as_posix()] = 1
    return counts


def test_the_default_rule_finds_every_labelled_face_of_the_shared_photos(hog, faces_dir):
    labels = labelled_faces(faces_dir)
    assert len(labels) == 26
    found = {rel: len(hog.find_boxes(decode_photo(faces_dir / rel))) for rel in labels}
    assert {rel: n for rel, n in found.items() if n < labels[rel]} == {}


@pytest.mark.parametrize("name", ["misc/two_people.jpg", "probes/obama_and_biden.jpg", "misc/32bit.png"])
def test_a_decoded_photo_gives_the_faces_of_its_pixels(hog, faces_dir, name):
    photo = decode_photo(faces_dir / name)
    assert hog.find_boxes(photo) == hog.find_boxes(photo.pixels)
    assert [f.box for f in hog.detect(photo)] == [f.box for f in hog.detect(photo.pixels)]


@pytest.fixture(scope="module")
def small_face_photo(faces_dir):
    """obama_small.jpg's face (about 100 px) in an 1800 px photo: 36 px at the first pass's 640, too small."""
    canvas = np.full((1350, 1800, 3), 128, np.uint8)
    canvas[300:540, 400:720] = load_image(faces_dir / "misc" / "obama_small.jpg")
    return canvas


def test_a_face_too_small_for_the_first_pass_is_found_by_the_second(hog, small_face_photo):
    assert FaceDetector("hog", upsample=0).detect(small_face_photo) == []  # the first pass alone
    (face,) = hog.detect(small_face_photo)
    left, top, right, bottom = face.box
    assert 400 <= left < right <= 720 and 300 <= top < bottom <= 540
    assert ((face.landmarks >= [left - 10, top - 10]) & (face.landmarks <= [right + 10, bottom + 10])).all()


def test_no_second_pass_where_the_first_found_a_face(hog, faces_dir, monkeypatch):
    image = load_image(faces_dir / "probes" / "obama1.jpg")
    searched = []
    search = hog._search
    monkeypatch.setattr(hog, "_search", lambda small, full, up: searched.append(small.shape) or search(small, full, up))
    assert len(hog.find_boxes(image)) == 1
    assert [max(s[:2]) for s in searched] == [640]


def test_the_saved_hog_detector_is_dlibs_own(tmp_path, monkeypatch, faces_dir):
    import dlib

    monkeypatch.setenv("GALLERY_CACHE", str(tmp_path))
    builtin = detect_module.hog_detector(dlib)  # nothing saved yet: dlib's built-in detector, which is then saved
    (path,) = tmp_path.glob("*.svm")
    loaded = detect_module.hog_detector(dlib)
    for name in ("misc/two_people.jpg", "probes/kit_with_rose.jpg", "misc/obama-240p.jpg"):
        image = load_image(faces_dir / name, max_side=640)
        want, got = builtin.run(image, 0, -0.5), loaded.run(image, 0, -0.5)  # weak candidates too
        assert len(want[0]) >= 1
        assert [(r.left(), r.top(), r.right(), r.bottom()) for r in got[0]] == \
            [(r.left(), r.top(), r.right(), r.bottom()) for r in want[0]]
        np.testing.assert_array_equal(got[1], want[1])
    path.write_bytes(b"not a detector")
    with pytest.warns(UserWarning, match="unreadable saved HOG detector"):
        again = detect_module.hog_detector(dlib)
    assert len(again.run(load_image(faces_dir / "misc" / "two_people.jpg", max_side=640), 0, 0.0)[0]) == 2
    assert path.stat().st_size > 1000  # replaced by a good copy


def test_models_load_once_per_process():
    a, b = FaceDetector("hog", landmarks=5), FaceDetector("hog", landmarks=5, max_side=320)
    assert a._shape is b._shape and a._detector is b._detector
