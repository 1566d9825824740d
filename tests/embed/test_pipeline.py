"""The batch embedder: one result per photo, in order, the same in worker processes as in-process."""

import numpy as np
import pytest

from gallery.embed import FaceDetector, Photo, align_photos, embed_photos, get_encoder, load_image
from gallery.embed.pipeline import resolve_detector
from gallery.errors import InvalidInputError


@pytest.fixture(scope="module")
def encoder():
    return get_encoder()


@pytest.fixture(scope="module")
def photos(faces_dir, tmp_path_factory):
    broken = tmp_path_factory.mktemp("broken") / "broken.jpg"
    broken.write_bytes((faces_dir / "misc" / "obama_small.jpg").read_bytes()[:2000])
    names = ["misc/two_people.jpg", "misc/obama_small.jpg", "probes/obama1.jpg", "misc/alex-lacamoire.png"]
    return [Photo(faces_dir / n, n) for n in names[:2]] + [Photo(broken, "broken.jpg")] + [Photo(faces_dir / n, n) for n in names[2:]]


def test_results_in_order_with_unit_vectors_and_errors(encoder, photos):
    out = list(embed_photos(photos, encoder, workers=0, progress=False))
    assert [e.photo.source for e in out] == [p.source for p in photos]
    assert [e.n_faces for e in out] == [2, 1, 0, 1, 1]
    assert out[2].error is not None and "broken.jpg" in out[2].error
    for e in out:
        assert e.vectors.shape == (e.n_faces, 128)
        np.testing.assert_allclose(np.linalg.norm(e.vectors, axis=1), 1.0, atol=1e-5)


def test_workers_give_the_same_vectors(encoder, photos):
    here = list(embed_photos(photos, encoder, workers=0, progress=False))
    pooled = list(embed_photos(photos, encoder, workers=2, progress=False))
    for a, b in zip(here, pooled):
        assert [f.box for f in a.faces] == [f.box for f in b.faces]
        np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)


def test_batches_do_not_mix_faces_between_photos(photos):
    enc = get_encoder()
    enc.batch_size = 1  # every photo encoded in its own call
    one = list(embed_photos(photos, enc, workers=0, progress=False))
    enc.batch_size = 64
    many = list(embed_photos(photos, enc, workers=0, progress=False))
    for a, b in zip(one, many):
        np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


class ThreadsSeen:
    """The real encoder, noting how many threads torch had each time it encoded."""

    def __init__(self, encoder):
        self.encoder, self.threads = encoder, []

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode(self, chips):
        import torch

        self.threads.append(torch.get_num_threads())
        return self.encoder.encode(chips)


def test_the_cpu_encoder_leaves_the_detection_workers_their_cores_until_they_finish(encoder, photos):
    import os

    import torch

    before = torch.get_num_threads()
    seen = ThreadsSeen(encoder)
    seen.batch_size = 2  # faces 2, 1, 0, 1, 1: two batches while the workers run, the last after
    list(embed_photos(photos, seen, workers=1, progress=False))
    assert seen.threads == [max(1, min(before, os.cpu_count() - 1))] * 2 + [before]
    assert torch.get_num_threads() == before
    seen.threads.clear()
    list(embed_photos(photos, seen, workers=0, progress=False))
    assert set(seen.threads) == {before}


@pytest.mark.parametrize("options, device, expected", [
    ({}, "cpu", {"method": "hog"}),
    ({"method": "auto", "landmarks": 68}, "cpu", {"method": "hog", "landmarks": 68}),
    ({"method": "auto"}, None, {"method": "hog"}),
    ({"method": "auto"}, "cuda:0", {"method": "cnn", "device": "cuda:0"}),
    ({"method": "auto", "max_side": 800}, "cuda", {"method": "cnn", "max_side": 800, "device": "cuda"}),
    ({"method": "hog"}, "cuda", {"method": "hog"}),
    ({"method": "cnn"}, "cpu", {"method": "cnn"}),
    ({"method": "cnn"}, "cuda:1", {"method": "cnn", "device": "cuda:1"}),
    ({"method": "cnn", "device": "cpu"}, "cuda", {"method": "cnn", "device": "cpu"}),
    ({"method": "auto", "device": "cuda:1"}, "cuda:0", {"method": "cnn", "device": "cuda:1"}),
])
def test_auto_is_the_cnn_on_a_cuda_encoder_and_hog_elsewhere(options, device, expected):
    assert resolve_detector(options, device) == expected


def test_a_torch_cuda_device_resolves_without_a_gpu():
    torch = pytest.importorskip("torch")
    assert resolve_detector(None, torch.device("cuda")) == {"method": "cnn", "device": "cuda"}
    assert resolve_detector(None, torch.device("cuda", 1)) == {"method": "cnn", "device": "cuda:1"}
    assert resolve_detector(None, torch.device("cpu")) == {"method": "hog"}


def test_auto_on_a_cpu_encoder_finds_hogs_faces(photos):
    hog = FaceDetector("hog")
    found = list(embed_photos(photos, get_encoder(device="cpu"), detector={"method": "auto"}, workers=0, progress=False))
    assert sum(e.n_faces for e in found) >= 5
    for e in found:
        expected = [] if e.error else hog.detect(load_image(e.photo.path))
        assert [(f.box, f.score) for f in e.faces] == [(f.box, f.score) for f in expected], e.photo.source


def test_the_auto_detector_needs_the_encoder_to_be_chosen(encoder, photos):
    with pytest.raises(InvalidInputError, match="the auto face detector is chosen from the encoder's device"):
        list(align_photos(photos, encoder.chip, detector={"method": "auto"}, workers=0, progress=False))
