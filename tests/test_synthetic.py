"""Synthetic identities look like embeddings: the requested genuine similarity, centred impostors, a decaying spectrum."""

import numpy as np
import pytest

from gallery import InvalidInputError
from gallery.synthetic import synthetic_gallery, synthetic_probes


def pair_scores(d):
    S = d.vectors @ d.vectors.T
    same = d.identities[:, None] == d.identities[None, :]
    iu = np.triu_indices(len(S), 1)
    return S[iu][same[iu]], S[iu][~same[iu]]


@pytest.mark.parametrize("genuine", [0.4, 0.7])
def test_genuine_and_impostor_means(genuine):
    gen, imp = pair_scores(synthetic_gallery(300, 3, 128, genuine=genuine, seed=1))
    assert gen.mean() == pytest.approx(genuine, abs=0.04)
    assert abs(imp.mean()) < 0.01
    assert 0.05 < imp.std() < 0.2  # far wider than isotropic noise (1/sqrt(128) = 0.088 at decay 0)


def test_spectrum_decays():
    x = synthetic_gallery(2000, 2, 64, seed=2).vectors
    var = x.var(axis=0)
    assert var[:8].mean() > 3 * var[-8:].mean()
    iso = synthetic_gallery(2000, 2, 64, spectrum_decay=0.0, seed=2).vectors.var(axis=0)
    assert iso[:8].mean() < 1.5 * iso[-8:].mean()


def test_unit_norm_labels_and_reproducible():
    a = synthetic_gallery(50, (1, 4), 16, seed=3)
    b = synthetic_gallery(50, (1, 4), 16, seed=3)
    assert np.array_equal(a.vectors, b.vectors) and list(a.identities) == list(b.identities)
    assert np.allclose(np.linalg.norm(a.vectors, axis=1), 1, atol=1e-5)
    counts = np.unique(a.identities, return_counts=True)[1]
    assert counts.min() >= 1 and counts.max() <= 4 and len(counts) == 50


def test_probes_are_new_images_of_known_people_and_strangers():
    d = synthetic_gallery(200, 3, 64, genuine=0.7, seed=4)
    q, labels = synthetic_probes(d, 50, 30, seed=5)
    assert q.shape == (80, 64) and all(lab is None for lab in labels[50:])
    best = (q @ d.vectors.T).argmax(1)
    assert (d.identities[best[:50]] == labels[:50]).mean() > 0.9
    assert (q[:50] @ d.vectors.T).max(1).mean() > (q[50:] @ d.vectors.T).max(1).mean() + 0.2
    assert not np.isin(q, d.vectors).all(axis=1).any()


def test_bad_parameters():
    with pytest.raises(InvalidInputError, match="genuine must lie in"):
        synthetic_gallery(10, 2, 8, genuine=1.0)
