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


@pytest.mark.parametrize("genuine", [0.4, 0.6, 0.8])
def test_genuine_mean_is_close_to_the_requested_value(genuine):
    gen, imp = pair_scores(synthetic_gallery(300, 3, 128, genuine=genuine, seed=1))
    assert gen.mean() == pytest.approx(genuine, abs=0.04)
    assert gen.mean() > imp.mean() + 0.3


@pytest.mark.parametrize("dim", [64, 128, 512])
def test_impostor_mean_is_about_zero_and_wider_than_isotropic(dim):
    _, imp = pair_scores(synthetic_gallery(200, 3, dim, seed=2))
    assert abs(imp.mean()) < 0.01
    assert imp.std() > 1.1 / np.sqrt(dim)  # isotropic unit vectors would give 1 / sqrt(dim)
    assert imp.std() < 0.2


@pytest.mark.parametrize("dim, std", [(128, 0.11), (512, 0.06)])
def test_impostor_spread_matches_the_documented_values(dim, std):
    _, imp = pair_scores(synthetic_gallery(200, 3, dim, seed=2))
    assert imp.std() == pytest.approx(std, abs=0.015)


def test_spectrum_is_anisotropic():
    x = synthetic_gallery(2000, 2, 64, seed=2).vectors
    var = x.var(axis=0)
    assert var[0] > 3 * var[-1]
    assert var[:8].mean() > 3 * var[-8:].mean()
    iso = synthetic_gallery(2000, 2, 64, spectrum_decay=0.0, seed=2).vectors.var(axis=0)
    assert iso[:8].mean() < 1.5 * iso[-8:].mean()  # decay 0 turns it off


def test_vectors_are_unit_float32_with_one_label_per_row():
    d = synthetic_gallery(50, 4, 16, seed=3)
    assert d.vectors.shape == (200, 16) and d.vectors.dtype == np.float32 and d.dim == 16
    assert np.allclose(np.linalg.norm(d.vectors, axis=1), 1, atol=1e-5)
    assert len(d.identities) == 200 and list(d.identities[:5]) == ["id-00"] * 4 + ["id-01"]
    assert len(set(d.identities)) == 50


def test_image_counts_may_vary_within_a_range():
    d = synthetic_gallery(50, (1, 4), 16, seed=3)
    counts = np.unique(d.identities, return_counts=True)[1]
    assert len(counts) == 50 and counts.min() >= 1 and counts.max() <= 4 and len(set(counts)) > 1


def test_same_seed_same_data_other_seed_other_data():
    a = synthetic_gallery(50, (1, 4), 16, seed=3)
    b = synthetic_gallery(50, (1, 4), 16, seed=3)
    c = synthetic_gallery(50, (1, 4), 16, seed=4)
    assert np.array_equal(a.vectors, b.vectors) and list(a.identities) == list(b.identities)
    assert not np.array_equal(a.vectors[:10], c.vectors[:10])
    qa, la = synthetic_probes(a, 10, 5, seed=7)
    qb, lb = synthetic_probes(b, 10, 5, seed=7)
    qc, _ = synthetic_probes(a, 10, 5, seed=8)
    assert np.array_equal(qa, qb) and list(la) == list(lb)
    assert not np.array_equal(qa, qc)


def test_probes_are_new_images_of_known_people_then_strangers_labelled_none():
    d = synthetic_gallery(200, 3, 64, genuine=0.7, seed=4)
    q, labels = synthetic_probes(d, 50, 30, seed=5)
    assert q.shape == (80, 64) and q.dtype == np.float32 and len(labels) == 80
    assert np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    assert all(lab is None for lab in labels[50:])
    assert all(lab in set(d.identities) for lab in labels[:50])
    best = (q @ d.vectors.T).argmax(1)
    assert (d.identities[best[:50]] == labels[:50]).mean() > 0.9
    assert (q[:50] @ d.vectors.T).max(1).mean() > (q[50:] @ d.vectors.T).max(1).mean() + 0.2
    assert not np.isin(q, d.vectors).all(axis=1).any()  # new images, not copies


def test_a_mated_probe_scores_like_a_genuine_pair():
    d = synthetic_gallery(300, 3, 128, genuine=0.6, seed=6)
    q, labels = synthetic_probes(d, 300, 0, seed=2)
    own = [float((d.vectors[d.identities == lab] @ v).mean()) for v, lab in zip(q, labels)]
    assert np.mean(own) == pytest.approx(0.6, abs=0.04)


def test_only_non_mated_or_only_mated_probes():
    d = synthetic_gallery(20, 2, 8, seed=1)
    q, labels = synthetic_probes(d, 0, 4)
    assert q.shape == (4, 8) and list(labels) == [None] * 4
    q, labels = synthetic_probes(d, 3)
    assert q.shape == (3, 8) and None not in list(labels)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((10, 2, 8), {"genuine": 1.0}, "genuine must lie in \\(0, 1\\), got 1.0"),
        ((10, 2, 8), {"genuine": 0.0}, "genuine must lie in"),
        ((0, 2, 8), {}, "need n_identities >= 1 and dim >= 2"),
        ((10, 2, 1), {}, "need n_identities >= 1 and dim >= 2"),
    ],
)
def test_bad_parameters(args, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        synthetic_gallery(*args, **kwargs)


def test_noise_shape_is_a_separate_choice_with_the_same_genuine_mean():
    spread = synthetic_gallery(300, 3, 128, genuine=0.6, seed=5)
    even = synthetic_gallery(300, 3, 128, genuine=0.6, noise_decay=0.0, seed=5)
    np.testing.assert_array_equal(spread.noise_shape, spread.scale)  # default: noise shaped like identities
    assert np.ptp(even.noise_shape) == 0  # evenly over all directions
    for data in (spread, even):
        x = data.vectors
        genuine = (x[0::3] * x[1::3]).sum(1)
        assert abs(genuine.mean() - 0.6) < 0.05
    # even noise leaves more of an image's variation outside the leading directions
    top = slice(0, 8)
    lead = lambda d: float(np.mean(((d.vectors[0::3] - d.vectors[1::3])[:, top] ** 2).sum(1)))
    assert lead(even) < lead(spread)


def test_identities_can_differ_in_tightness_at_the_same_median_genuine_score():
    def genuine_by_identity(d):
        v = d.vectors.reshape(len(d.centres), 2, d.dim)
        return (v[:, 0] * v[:, 1]).sum(1)

    even = synthetic_gallery(2000, 2, 128, seed=4)
    varied = synthetic_gallery(2000, 2, 128, tightness_spread=0.5, seed=4)
    g_even, g_varied = genuine_by_identity(even), genuine_by_identity(varied)
    assert np.median(g_varied) == pytest.approx(np.median(g_even), abs=0.05)
    order = np.argsort(varied.tightness)  # small factor: tight identity
    assert g_varied[order[:200]].mean() > 0.75 and g_varied[order[-200:]].mean() < 0.4
    assert np.ptp(even.tightness) == 0 and np.array_equal(even.vectors, synthetic_gallery(2000, 2, 128, seed=4).vectors)
    xq, labels = synthetic_probes(varied, 400, 0, seed=2)
    tight = {lab: t for lab, t in zip(varied.identities[::2], varied.tightness)}
    mate = {lab: v for lab, v in zip(varied.identities[::2], varied.vectors[::2])}
    scores = np.asarray([mate[lab] @ q for q, lab in zip(xq, labels)])
    factor = np.asarray([tight[lab] for lab in labels])
    assert scores[factor < np.quantile(factor, 0.2)].mean() > scores[factor > np.quantile(factor, 0.8)].mean() + 0.2


def test_tightness_spread_must_not_be_negative():
    with pytest.raises(InvalidInputError, match="tightness_spread must be >= 0, got -0.1"):
        synthetic_gallery(10, 2, 16, tightness_spread=-0.1)
