"""dlib's MMOD CNN face detector in torch: read from dlib's own file, its boxes and scores equal to dlib's.

dlib takes 1-30 s a photo on this CPU, so the comparison with dlib itself runs on the smaller shared
photos (three at upsample 0, two at upsample 1, one with no face until upsampled); every shared photo
is compared by ``benchmarks/cnn_detector.py --upsample 0`` (and ``--upsample 1``, which takes dlib an hour).
"""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import gallery.embed.dlib_cnn as dlib_cnn
import gallery.embed.dlib_file as dlib_file
from gallery.embed.dlib_cnn import (
    CnnFaceDetector, MmodFaceNet, canvas_to_image, dlib_resize, load_mmod_weights, lround, overlaps,
    pyramid_level_sizes, rect_down, tiled_pyramid_layout,
)
from gallery.embed.dlib_file import read_dlib_network
from gallery.embed.images import load_image
from gallery.errors import InvalidInputError

UPSAMPLE_0 = ["misc/obama_small.jpg", "misc/obama-240p.jpg", "probes/kit_with_rose.jpg"]
UPSAMPLE_1 = ["misc/obama_small.jpg", "misc/obama-240p.jpg"]


@pytest.fixture(scope="module")
def dat_file():
    return dlib_cnn.default_model_file()


@pytest.fixture(scope="module")
def detector(dat_file):
    return CnnFaceDetector(dat_file, device="cpu")


@pytest.fixture(scope="module")
def dlib_detector(dat_file):
    dlib = pytest.importorskip("dlib")
    return dlib.cnn_face_detection_model_v1(str(dat_file))


@pytest.fixture(scope="module")
def photos(faces_dir):
    return {name: load_image(faces_dir / name) for name in sorted(set(UPSAMPLE_0 + UPSAMPLE_1))}


def assert_same_detections(ours, theirs, where):
    """dlib's detections, in dlib's order: boxes within 2 px (we find them equal), scores within 1e-3."""
    theirs = [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence) for d in theirs]
    assert len(ours) == len(theirs), f"{where}: {ours} against dlib's {theirs}"
    for (box, score), (want_box, want_score) in zip(ours, theirs):
        assert max(abs(a - b) for a, b in zip(box, want_box)) <= 2, f"{where}: {box} against dlib's {want_box}"
        assert abs(score - want_score) <= 1e-3, f"{where}: score {score} against dlib's {want_score}"


def test_reader_finds_the_detector_with_its_batch_norms_folded(dat_file):
    layers = read_dlib_network(dat_file)
    assert [layer.kind for layer in layers] == MmodFaceNet().dlib_layer_kinds()
    assert layers[0].version == "input_rgb_image_pyramid" and layers[0].fields["pyramid_outer_padding"] == 11
    assert [layer.version for layer in layers if layer.kind == "affine"] == ["bn_con2"] * 6
    assert layers[2].tensors["gamma"].shape == (16,) and np.isfinite(layers[2].tensors["gamma"]).all()
    loss = layers[-1].fields
    assert loss["detector_windows"] == [(80, 80, "")] and loss["overlaps_nms"][0] == pytest.approx(0.3383, abs=1e-4)
    assert layers[-2].tensors["filters"].shape == (1, 45, 9, 9)


def test_another_network_is_refused_by_name():
    from gallery.embed.encoders import _dlib_model_file

    with pytest.raises(InvalidInputError, match="not dlib's MMOD face detector .layer 4 is max_pool, expected con"):
        CnnFaceDetector(_dlib_model_file())


def test_feature_positions_map_to_the_canvas_as_dlib_maps_them(detector):
    # three unpadded 5x5 stride-2 layers: p -> 2p + 2, three times
    assert (detector.config.scale, detector.config.offset) == (8, 14)
    assert detector.config.window == (80, 80)


def test_upsampling_is_dlibs_pixel_for_pixel(photos, dlib_detector):
    import dlib

    image = photos["probes/kit_with_rose.jpg"].copy()
    h, w = image.shape[:2]
    want = dlib.resize_image(image, 2 * h + 1, 2 * w + 2)  # pyramid_up's size, and the same resize
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    ours = dlib_resize(x, 2 * h + 1, 2 * w + 2, to_uint8=True)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours, want)


def test_pyramid_levels_are_resized_as_dlib_resizes_floats(photos):
    import dlib

    grey = (photos["probes/kit_with_rose.jpg"][..., 1].astype(np.float32) - 117.0) / 256
    for rows, cols in [(583, 417), (100, 77), (700, 501)]:
        want = dlib.resize_image(grey, rows, cols)
        ours = dlib_resize(torch.from_numpy(grey)[None, None], rows, cols, to_uint8=False)[0, 0].numpy()
        np.testing.assert_allclose(ours, want, atol=1e-6)


def test_the_pyramid_tiles_its_levels_without_overlap_inside_the_canvas():
    for h, w in [(240, 320), (1137, 491), (961, 1708), (30, 20)]:
        rects, rows, cols = tiled_pyramid_layout(h, w)
        sizes = pyramid_level_sizes(h, w)
        assert [(b - t + 1, r - l + 1) for l, t, r, b in rects] == sizes[: len(rects)]
        assert all(0 <= l and 0 <= t and r < cols and b < rows for l, t, r, b in rects)
        assert rects[0][:2] == (11, 11) and cols == w + 22
        for i, a in enumerate(rects):
            for b in rects[i + 1 :]:
                assert min(a[2], b[2]) < max(a[0], b[0]) or min(a[3], b[3]) < max(a[1], b[1]), (h, w, a, b)
    assert pyramid_level_sizes(240, 320)[:3] == [(240, 320), (200, 266), (166, 221)]
    assert pyramid_level_sizes(240, 320)[-1][0] >= 5


def test_boxes_round_and_overlap_as_dlibs_rectangles():
    assert (lround(2.5), lround(-2.5), lround(-84.4), lround(3.49)) == (3, -3, -84, 3)
    assert rect_down((190, 130, 425, 366), 1) == (94, 64, 211, 182)
    rects = [(11, 11, 330, 250), (11, 261, 276, 460)]
    assert canvas_to_image(rects, (100.5, 100.5, 179.5, 179.5)) == (90, 90, 169, 169)  # level 0: just shifted
    assert canvas_to_image(rects, (101.5, 301.5, 180.5, 380.5)) == (109, 49, 204, 144)  # level 1: x 6/5 + 0.3
    # the "union" is the box bounding both: 40x40 overlap of two 80x80 boxes is 1600 / (120*120)
    assert not overlaps((0, 0, 79, 79), (40, 40, 119, 119), 0.34, 1.0)
    assert overlaps((0, 0, 79, 79), (20, 0, 99, 79), 0.34, 1.0)
    assert overlaps((0, 0, 79, 79), (10, 10, 29, 29), 0.99, 0.9)  # the small box is covered


@pytest.mark.parametrize("upsample, names", [(0, UPSAMPLE_0), (1, UPSAMPLE_1)])
def test_torch_finds_dlibs_faces(detector, dlib_detector, photos, upsample, names):
    ours = detector.detect([photos[n] for n in names], upsample)
    for name, found in zip(names, ours):
        assert_same_detections(found, dlib_detector(photos[name], upsample), f"{name} at upsample {upsample}")
    if upsample == 0:
        assert ours[names.index("misc/obama-240p.jpg")] == [] and len(ours[names.index("probes/kit_with_rose.jpg")]) == 2
    else:
        assert len(ours[names.index("misc/obama-240p.jpg")]) == 1  # found only once upsampled


def test_a_batch_of_mixed_sizes_finds_what_each_photo_finds_alone(detector, photos, monkeypatch):
    small, wide = photos["misc/obama_small.jpg"], photos["misc/obama-240p.jpg"]
    images = [wide, small, small[20:, 30:].copy(), small]
    alone = [detector.detect([image])[0] for image in images]
    monkeypatch.setattr(detector, "padding_waste", 1.0)  # pad every photo into one batch, as on a GPU
    assert len(detector._batches([detector._layout(i.shape[:2], 0) for i in images])) == 1
    together = detector.detect(images)
    for a, b in zip(alone, together):
        assert [box for box, _ in a] == [box for box, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)


def test_grey_photos_and_photos_too_small_for_the_network(detector, photos):
    rgb = photos["misc/obama_small.jpg"]
    grey = rgb[..., 1].copy()
    assert detector.detect([grey]) == detector.detect([np.repeat(grey[..., None], 3, axis=2)])
    assert detector.detect([np.zeros((4, 4, 3), np.uint8), rgb[:1, :1]]) == [[], []]  # dlib raises on these
    assert detector.detect([]) == []


def test_bad_inputs_are_refused_with_the_reason(detector):
    with pytest.raises(InvalidInputError, match=r"image 1: expected an \(H, W, 3\) or \(H, W\) uint8 array, got float32"):
        detector.detect([np.zeros((50, 50, 3), np.uint8), np.zeros((50, 50, 3), np.float32)])
    for bad in (-1, 0.5, True):
        with pytest.raises(InvalidInputError, match="upsample must be a whole number"):
            detector.detect([np.zeros((50, 50, 3), np.uint8)], bad)


def test_weights_of_a_different_shape_are_refused(dat_file):
    layers = read_dlib_network(dat_file)
    layers[4].fields["num_filters"] = 31
    with pytest.raises(InvalidInputError, match="a convolution is .31, 5, 5, 2, 2, 0, 0., expected .32"):
        load_mmod_weights(MmodFaceNet(), layers, source="x.dat")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
def test_cuda_finds_what_the_cpu_finds(dat_file, detector, photos):
    images = [photos[n] for n in UPSAMPLE_0]
    on_gpu = CnnFaceDetector(dat_file, device="cuda").detect(images, 1)
    for a, b in zip(detector.detect(images, 1), on_gpu):
        assert [box for box, _ in a] == [box for box, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-4)


def test_the_torch_detector_never_imports_dlib():
    for module in (dlib_cnn, dlib_file):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "dlib" not in imported, module.__name__
