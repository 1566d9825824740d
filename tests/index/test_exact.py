"""Exact search through torch equals a numpy brute force id for id, ties included; k-means hands FAISS its
centroids; old flat index files still load and search."""

import faiss
import numpy as np
import pytest

from gallery.index import VectorIndex, build_index, choose_index_spec
from gallery.index.build import rotation_of
from gallery.index.exact import exact_search
from gallery.index.gpu import torch_device
from gallery.index.kmeans import spherical_kmeans


def numpy_top_k(xb, xq, k):
    """The reference: a stable sort of -scores, so equal scores keep storage order."""
    S = xq @ xb.T
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, order, 1), order


def quantised(rng, n, d):
    """Vectors on a coarse grid: every dot product is exact in float32 whatever the summation order,
    so ties are exact ties in numpy and torch alike, and plentiful."""
    return (rng.integers(-2, 3, size=(n, d)) / 4).astype(np.float32)


@pytest.mark.parametrize("q_block, db_block", [(1024, 65_536), (40, 97), (64, 333)])
def test_ties_go_to_the_earlier_row_exactly_as_a_stable_numpy_sort(q_block, db_block):
    rng = np.random.default_rng(0)
    xb = quantised(rng, 2000, 12)
    xb = np.r_[xb, xb[:300]]  # duplicates: ties at every rank, across blocks
    xq = quantised(rng, 120, 12)
    D_ref, I_ref = numpy_top_k(xb, xq, 25)
    D, I = exact_search(xb, xq, 25, q_block=q_block, db_block=db_block)
    assert (I == I_ref).all()
    assert (D == D_ref).all()


def test_the_tie_rule_is_what_a_straddling_block_would_get_wrong():
    """The k-th best score tying with an unselected one inside a block is the case topk alone leaves
    to chance; the answer must still list the earlier rows."""
    xb = np.zeros((40, 4), np.float32)
    xb[:, 0] = 1.0  # forty identical vectors: every score ties
    D, I = exact_search(xb, xb[:3], 5, db_block=16)
    assert I.tolist() == [[0, 1, 2, 3, 4]] * 3 and (D == 1.0).all()


def test_random_vectors_give_numpy_s_answer():
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((5000, 64)).astype(np.float32)
    xq = rng.standard_normal((100, 64)).astype(np.float32)
    D_ref, I_ref = numpy_top_k(xb, xq, 10)
    D, I = exact_search(xb, xq, 10, db_block=1000)
    assert np.allclose(D, D_ref, atol=1e-4)
    assert (I == I_ref).mean() > 0.999  # any difference is a float near-tie (checked next)
    diff = I != I_ref
    assert np.allclose(D[diff], D_ref[diff], atol=1e-4)


def test_k_larger_than_n_pads_with_minus_one_and_minus_infinity():
    xb = np.eye(3, dtype=np.float32)
    D, I = exact_search(xb, xb[:2], 5, ids=np.array([10, 20, 30]))
    assert I.tolist() == [[10, 20, 30, -1, -1], [20, 10, 30, -1, -1]]
    assert np.isneginf(D[:, 3:]).all() and D[0, 0] == 1.0


def test_half_precision_ranks_well_separated_neighbours_the_same():
    rng = np.random.default_rng(2)
    xb = rng.standard_normal((500, 32)).astype(np.float32)
    xq = xb[:20] + 0.01 * rng.standard_normal((20, 32)).astype(np.float32)
    _, I = exact_search(xb, xq, 1, dtype="float16")
    assert I[:, 0].tolist() == list(range(20))


def test_flat_index_files_in_faiss_format_still_load_and_search_exactly(tmp_path):
    """A flat gallery's index file is FAISS's IDMap2,Flat: one written by FAISS alone searches through torch."""
    rng = np.random.default_rng(3)
    xb = quantised(rng, 3000, 16)
    ids = np.arange(3000, dtype=np.int64) * 3 + 1
    old = faiss.index_factory(16, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
    old.add_with_ids(xb, ids)
    faiss.write_index(old, str(tmp_path / "old.faiss"))
    index = VectorIndex.load(tmp_path / "old.faiss", choose_index_spec(3000, 16, "flat"), gpu=False)
    xq = quantised(rng, 50, 16)
    D_ref, rows = numpy_top_k(xb, xq, 7)
    D, I = index.search(xq, 7)
    assert (I == ids[rows]).all() and (D == D_ref).all()
    assert index.remove(ids[:10]) == 10  # the torch view follows FAISS's storage after a change
    D, I = index.search(xq, 7)
    D_ref, rows = numpy_top_k(xb[10:], xq, 7)
    assert (I == ids[10:][rows]).all()


def test_spherical_kmeans_fits_as_well_as_faiss_and_keeps_every_centroid_busy():
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((16, 32)).astype(np.float32)
    x = centres.repeat(40, axis=0) + 0.5 * rng.standard_normal((640, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    C = spherical_kmeans(x, 16, niter=20, seed=0)
    assert np.allclose(np.linalg.norm(C, axis=1), 1, atol=1e-5)
    assert len(np.unique((x @ C.T).argmax(1))) == 16
    km = faiss.Kmeans(32, 16, niter=20, spherical=True, seed=0, min_points_per_centroid=1)
    km.train(x)
    ours, theirs = (x @ C.T).max(1).mean(), (x @ km.centroids.T).max(1).mean()
    assert ours > theirs - 0.02 and ours > (x @ x[:16].T).max(1).mean() + 0.05  # better than its random start


def test_ivf_training_keeps_the_torch_centroids():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1200, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spec = choose_index_spec(len(x), 32, "ivfpq", nlist=16, pq_m=8, nprobe=4, rerank=2)
    index = build_index(spec, x, [(np.arange(len(x)), x)], gpu=False)
    ivf = faiss.extract_index_ivf(index.index)
    expected = spherical_kmeans(rotation_of(index.index).apply(x), 16, niter=ivf.cp.niter, seed=1234)
    assert np.allclose(ivf.quantizer.reconstruct_n(0, 16), expected, atol=1e-6)


def test_gpu_is_a_parameter_of_exact_search():
    assert torch_device(False) == "cpu"
    import torch

    if not torch.cuda.is_available():
        assert torch_device(None) == "cpu"
        with pytest.raises(RuntimeError, match="torch sees no CUDA GPU"):
            torch_device(True)


def test_a_pair_scores_the_same_alone_in_a_batch_and_in_a_shard_of_the_database():
    """An inclusive threshold must accept a probe whether it is searched alone or in a batch, against a
    whole gallery or one of its shards: the BLAS's summation order may not show in the scores."""
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((6000, 512)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[rng.choice(6000, 500)] + 0.3 * rng.standard_normal((500, 512)).astype(np.float32)
    D_batch, I_batch = exact_search(xb, xq, 3)
    alone = [exact_search(xb, xq[i : i + 1], 3) for i in range(0, 500, 25)]
    assert [d[0].tolist() for d, _ in alone] == [D_batch[i].tolist() for i in range(0, 500, 25)]
    D_shard, I_shard = exact_search(xb[:3000], xq, 1, db_block=1000)
    same = I_batch[:, 0] < 3000
    assert same.sum() > 100
    assert (I_shard[same, 0] == I_batch[same, 0]).all()
    assert D_shard[same, 0].tolist() == D_batch[same, 0].tolist()
