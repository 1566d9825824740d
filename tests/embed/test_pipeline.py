"""The batch embedder: one result per photo, in order, the same in worker processes as in-process."""

import numpy as np
import pytest

from gallery.embed import Photo, embed_photos, get_encoder


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


def test_the_cpu_encoder_leaves_the_detection_workers_their_cores(encoder, photos):
    import os

    import torch

    before = torch.get_num_threads()
    seen = ThreadsSeen(encoder)
    list(embed_photos(photos, seen, workers=1, progress=False))
    assert seen.threads and set(seen.threads) == {max(1, min(before, os.cpu_count() - 1))}
    assert torch.get_num_threads() == before
    seen.threads.clear()
    list(embed_photos(photos, seen, workers=0, progress=False))
    assert set(seen.threads) == {before}
