"""Flat search is exact; ivfpq with exact re-rank approaches it; knobs are per call; files round-trip.

Every index here is built with explicit nlist / pq_m / nprobe / rerank / shortlist, so tuning the defaults in
gallery/index/spec.py does not move these tests.
"""

import faiss
import numpy as np
import pytest

from gallery import CorruptGalleryError, InvalidInputError
from gallery.index import VectorIndex, build_index, choose_index_spec, training_sample
from gallery.index.build import rotation_of
from gallery.index.coverage import centroids_of
from gallery.store.shards import VectorTable
from gallery.synthetic import synthetic_gallery, synthetic_probes

IVF = dict(nlist=64, pq_m=32, nprobe=8, rerank=4, shortlist=1)


@pytest.fixture(scope="module")
def data():
    d = synthetic_gallery(3000, 3, 64, genuine=0.6, seed=5)
    xq, _ = synthetic_probes(d, 200, 50, seed=6)
    ids = np.arange(len(d.vectors), dtype=np.int64) * 2 + 7  # sparse, not row numbers
    return d.vectors, ids, xq


def flat_index(x, ids, **kw):
    return build_index(choose_index_spec(len(x), x.shape[1], "flat"), None, [(ids, x)], **kw)


@pytest.fixture(scope="module")
def ivf(data):
    x, ids, _ = data
    spec = choose_index_spec(len(x), x.shape[1], "ivfpq", **IVF)
    return build_index(spec, x[training_sample(len(x), spec)], [(ids, x)], gpu=False)


@pytest.fixture(scope="module")
def table(data):
    x, ids, _ = data
    return VectorTable([ids], [x], x.shape[1])


def brute_force(x, ids, xq, k):
    """Exact top-k by numpy: (scores, ids, the full score matrix)."""
    S = xq @ x.T
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, order, 1), ids[order], S


def assert_same_top_k(D, I, D_ref, I_ref, S, ids, tol=1e-5):
    """Tie-aware comparison with a brute-force answer.

    Scores must be equal within ``tol`` rank by rank. Ids must be equal, except at a rank where the
    reference score ties (within ``tol``) with another gallery vector's score: there either may come
    first. Each returned id must be distinct and must really have the score reported at its rank.
    """
    assert D.shape == D_ref.shape and I.shape == I_ref.shape
    assert np.allclose(D, D_ref, atol=tol), np.abs(D - D_ref).max()
    row_of = {int(i): r for r, i in enumerate(ids)}
    for q in range(len(D)):
        assert len(set(I[q].tolist())) == len(I[q]), f"query {q}: repeated ids {I[q]}"
        true = S[q, [row_of[int(i)] for i in I[q]]]
        assert np.allclose(true, D_ref[q], atol=tol), f"query {q}: returned ids do not have the reported scores"
        for j in np.flatnonzero(I[q] != I_ref[q]):
            tied = np.sum(np.abs(S[q] - D_ref[q, j]) <= tol)
            assert tied >= 2, f"query {q} rank {j}: id {I[q, j]} instead of {I_ref[q, j]} without a tie"


def test_tie_aware_check_rejects_a_wrong_order_and_accepts_a_tie(data):
    """The comparison used below can fail: swapping two untied neighbours is caught."""
    x, ids, xq = data
    D_ref, I_ref, S = brute_force(x, ids, xq[:5], 10)
    assert_same_top_k(D_ref, I_ref, D_ref, I_ref, S, ids)
    swapped = I_ref.copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    with pytest.raises(AssertionError):
        assert_same_top_k(D_ref, swapped, D_ref, I_ref, S, ids)
    outsider = I_ref.copy()
    outsider[1, 9] = ids[np.argmin(S[1])]  # the worst vector in place of the 10th best
    with pytest.raises(AssertionError):
        assert_same_top_k(D_ref, outsider, D_ref, I_ref, S, ids)


def test_flat_top_k_equals_numpy_brute_force(data):
    x, ids, xq = data
    D, I = flat_index(x, ids).search(xq, 10)
    assert D.dtype == np.float32 and I.dtype == np.int64
    assert_same_top_k(D, I, *brute_force(x, ids, xq, 10), ids)


def test_flat_with_exact_ties_returns_either_tied_id(data):
    x, _, _ = data
    dup = np.r_[x[:50], x[:50]]  # every vector twice, under ids q and q + 50
    dup_ids = np.arange(100, dtype=np.int64)
    D, I = flat_index(dup, dup_ids).search(x[:5], 4)
    assert_same_top_k(D, I, *brute_force(dup, dup_ids, x[:5], 4), dup_ids)
    assert np.allclose(D[:, 0], D[:, 1])
    assert all(set(row[:2]) == {q, q + 50} for q, row in enumerate(I))


def test_k_larger_than_the_index_is_capped(data):
    x, ids, xq = data
    D, I = flat_index(x[:3], ids[:3]).search(xq[:2], 5)
    assert D.shape == (2, 3) and set(I[0]) == set(ids[:3])


def test_empty_index_answers_nothing(data):
    x, _, xq = data
    index = VectorIndex.create(choose_index_spec(10, x.shape[1], "flat"))
    D, I = index.search(xq[:3], 5)
    assert D.shape == (3, 0) and I.shape == (3, 0)


def recall_at_10(index, data, table, **kw):
    x, ids, xq = data
    _, I_ref, _ = brute_force(x, ids, xq, 10)
    _, I = index.search(xq, 10, vectors=table, **kw)
    return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, I_ref)])


# one neighbour of the 2500 in a recall@10 measurement: room for the fast-scan's 8-bit score ties
ONE_NEIGHBOUR = 1 / 2500 + 1e-9


def test_ivfpq_recall_grows_with_nprobe_up_to_a_floor(ivf, data, table):
    by_nprobe = [recall_at_10(ivf, data, table, nprobe=p, rerank=16) for p in (1, 4, 16, 64)]
    assert all(a <= b + ONE_NEIGHBOUR for a, b in zip(by_nprobe, by_nprobe[1:])), by_nprobe
    assert by_nprobe[0] < by_nprobe[-1] - 0.1  # the knob matters
    assert by_nprobe[-1] >= 0.97  # every cell visited: only the PQ candidate cut loses neighbours


def test_ivfpq_recall_grows_with_rerank(ivf, data, table):
    by_rerank = [recall_at_10(ivf, data, table, nprobe=64, rerank=r) for r in (1, 2, 8, 32)]
    assert all(a <= b + ONE_NEIGHBOUR for a, b in zip(by_rerank, by_rerank[1:])), by_rerank
    assert by_rerank[0] < 0.8 < by_rerank[-1]  # 4-bit codes alone misorder close impostors; re-rank fixes it
    assert by_rerank[-1] >= 0.99


def test_reranked_scores_are_exact_dot_products_best_first(ivf, data, table):
    x, ids, xq = data
    D, I = ivf.search(xq[:40], 10, vectors=table)
    row_of = {int(i): r for r, i in enumerate(ids)}
    for q in range(40):
        assert (I[q] >= 0).all()
        exact = x[[row_of[int(i)] for i in I[q]]] @ xq[q]
        assert np.allclose(D[q], exact, atol=1e-6)
        assert np.all(np.diff(D[q]) <= 0)


def test_the_rerank_reads_candidates_from_every_shard_and_drops_unknown_ones(ivf, data):
    """Vectors split over three memory-mapped matrices, as a gallery's shards are, answer like one matrix;
    a candidate the table does not hold (a record removed since) never comes back."""
    x, ids, xq = data
    whole = VectorTable([ids], [x], x.shape[1])
    cuts = [0, 1000, 5000, len(x)]
    split = VectorTable([ids[a:b] for a, b in zip(cuts, cuts[1:])], [x[a:b] for a, b in zip(cuts, cuts[1:])], x.shape[1])
    D, I = ivf.search(xq, 10, nprobe=16, rerank=8, vectors=whole)
    D2, I2 = ivf.search(xq, 10, nprobe=16, rerank=8, vectors=split)
    np.testing.assert_array_equal(I, I2)
    np.testing.assert_array_equal(D, D2)
    served = ids[~np.isin(ids, I[:, 0])]  # every query's best record left out
    partial = VectorTable([served], [x[np.isin(ids, served)]], x.shape[1])
    D3, I3 = ivf.search(xq, 10, nprobe=16, rerank=8, vectors=partial)
    assert not np.isin(I3, I[:, 0]).any() and np.isin(I3[I3 >= 0], served).all()
    assert (D3[:, 0] <= D[:, 0]).all()


def test_without_the_vectors_ivfpq_scores_are_approximate(ivf, data):
    x, ids, xq = data
    D, I = ivf.search(xq[:40], 10)
    row_of = {int(i): r for r, i in enumerate(ids)}
    exact = np.stack([x[[row_of[int(i)] for i in I[q]]] @ xq[q] for q in range(40)])
    assert not np.allclose(D, exact, atol=1e-4)  # so the re-rank test above really checks something


def test_per_call_knobs_leave_the_index_defaults_unchanged(ivf, data, table):
    _, _, xq = data
    before = (ivf.spec, faiss.extract_index_ivf(ivf.index).nprobe)
    default = ivf.search(xq[:50], 5, vectors=table)
    ivf.search(xq[:50], 5, nprobe=64, rerank=32, vectors=table)
    ivf.search(xq[:50], 5, nprobe=1, rerank=1, vectors=table)
    assert (ivf.spec, faiss.extract_index_ivf(ivf.index).nprobe) == before
    again = ivf.search(xq[:50], 5, vectors=table)
    assert np.array_equal(default[1], again[1]) and np.array_equal(default[0], again[0])


def test_no_knobs_means_the_spec_defaults(ivf, data, table):
    _, _, xq = data
    a = ivf.search(xq, 10, vectors=table)
    b = ivf.search(xq, 10, nprobe=IVF["nprobe"], rerank=IVF["rerank"], vectors=table)
    c = ivf.search(xq, 10, nprobe=1, rerank=1, vectors=table)
    assert np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("bad", [dict(nprobe=-1), dict(rerank=-2)])
def test_knobs_below_one_are_refused(ivf, data, table, bad):
    _, _, xq = data
    with pytest.raises(InvalidInputError, match="nprobe and rerank must be >= 1"):
        ivf.search(xq[:2], 5, vectors=table, **bad)


def test_save_load_round_trip_gives_identical_answers(ivf, data, table, tmp_path):
    x, ids, xq = data
    ivf.save(tmp_path / "ivf.faiss")
    back = VectorIndex.load(tmp_path / "ivf.faiss", ivf.spec, gpu=False)
    assert back.ntotal == ivf.ntotal and back.is_trained
    for kw in ({}, {"nprobe": 3, "rerank": 2}):
        a, b = ivf.search(xq, 10, vectors=table, **kw), back.search(xq, 10, vectors=table, **kw)
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    flat = flat_index(x, ids)
    flat.save(tmp_path / "flat.faiss")
    again = VectorIndex.load(tmp_path / "flat.faiss", flat.spec)
    a, b = flat.search(xq, 10), again.search(xq, 10)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    assert not list(tmp_path.glob("*.tmp"))


def test_loading_a_damaged_index_file_is_corrupt(ivf, tmp_path):
    ivf.save(tmp_path / "i.faiss")
    (tmp_path / "i.faiss").write_bytes((tmp_path / "i.faiss").read_bytes()[:100])
    with pytest.raises(CorruptGalleryError, match="cannot read FAISS index"):
        VectorIndex.load(tmp_path / "i.faiss", ivf.spec)
    with pytest.raises(CorruptGalleryError, match="missing"):
        VectorIndex.load(tmp_path / "none.faiss", ivf.spec)


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_remove_takes_ids_out_of_every_answer(data, table, kind):
    x, ids, xq = data
    if kind == "flat":
        index = flat_index(x, ids)
    else:
        spec = choose_index_spec(len(x), x.shape[1], "ivfpq", **IVF)
        index = build_index(spec, x, [(ids, x)])
    gone = ids[:300]
    assert index.remove(gone) == 300 and index.ntotal == len(x) - 300
    assert index.remove(gone[:5]) == 0  # already removed
    _, I = index.search(np.r_[x[:300], xq], 20, nprobe=64, vectors=table)
    assert not set(I.ravel().tolist()) & set(gone.tolist())
    keep = np.arange(300, len(x))
    D_ref, I_ref, S = brute_force(x[keep], ids[keep], xq, 10)
    D, I = index.search(xq, 10, nprobe=64, rerank=64, vectors=table)
    if kind == "flat":
        assert_same_top_k(D, I, D_ref, I_ref, S, ids[keep])


def test_add_extends_without_retraining(data):
    x, ids, xq = data
    spec = choose_index_spec(len(x), x.shape[1], "ivfpq", **IVF)
    index = build_index(spec, x[:4000], [(ids[:-100], x[:-100])])
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index.index))
    centroids = faiss.serialize_index(ivf.quantizer).copy()
    codebooks = faiss.vector_to_array(ivf.pq.centroids).copy()
    index.add(ids[-100:], x[-100:])
    assert index.ntotal == len(x)
    assert np.array_equal(faiss.serialize_index(ivf.quantizer), centroids)
    assert np.array_equal(faiss.vector_to_array(ivf.pq.centroids), codebooks)
    _, I = index.search(x[-100:], 1, nprobe=64, rerank=16, vectors=VectorTable([ids], [x], x.shape[1]))
    assert np.array_equal(I[:, 0], ids[-100:])  # the added vectors are found, each as its own nearest


@pytest.mark.gpu
def test_gpu_flat_answers_like_cpu(data):
    x, ids, xq = data
    cpu = flat_index(x, ids, gpu=False)
    gpu = flat_index(x, ids, gpu=True)
    Dc, Ic = cpu.search(xq, 10)
    Dg, Ig = gpu.search(xq, 10)
    assert gpu._searcher() is not gpu.index  # really searched a GPU copy, not the CPU fallback
    S = xq @ x.T
    assert_same_top_k(Dg, Ig, Dc, Ic, S, ids, tol=1e-4)


@pytest.mark.gpu
def test_gpu_trained_ivfpq_answers_like_cpu(data, table):
    x, ids, xq = data
    spec = choose_index_spec(len(x), x.shape[1], "ivfpq", **IVF)
    sample = x[training_sample(len(x), spec)]
    cpu = build_index(spec, sample, [(ids, x)], gpu=False)
    gpu = build_index(spec, sample, [(ids, x)], gpu=True)  # k-means on the GPU, search where supported
    kw = dict(nprobe=64, rerank=32, vectors=table)
    D_ref, I_ref, S = brute_force(x, ids, xq, 10)
    for index in (cpu, gpu):
        _, I = index.search(xq, 10, **kw)
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, I_ref)]) >= 0.99


def test_per_call_nprobe_survives_faiss_torch_utils(ivf, data, table):
    """pytorch-metric-learning patches faiss.Index.search process-wide; nprobe per call must still work."""
    pytest.importorskip("torch")
    import faiss.contrib.torch_utils  # noqa: F401  (patches faiss.Index.search process-wide)

    few = recall_at_10(ivf, data, table, nprobe=1, rerank=16)
    many = recall_at_10(ivf, data, table, nprobe=64, rerank=16)
    assert few < many


def test_set_threads_caps_faiss_torch_and_the_blas_that_exact_search_multiplies_with():
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from gallery.index import set_threads

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    with threadpool_limits(limits=None):  # the BLAS limits are put back on leaving
        try:
            set_threads(1)
            blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
            assert blas and all(lib["num_threads"] == 1 for lib in blas)
            assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
        finally:
            torch.set_num_threads(before[0])
            faiss.omp_set_num_threads(before[1])


def test_ivfpq_rotates_vectors_at_random_before_its_cells_and_codes_keeping_every_inner_product(ivf, data):
    x, _, _ = data
    rotation = rotation_of(ivf.index)
    assert ivf.factory == ivf.spec.factory == f"RR{x.shape[1]},IVF64,PQ32x4fs"
    assert rotation is not None and rotation.is_trained and rotation.is_orthonormal
    y = rotation.apply(x[:50])
    assert not np.allclose(y, x[:50], atol=1e-2)
    assert np.allclose(y @ y.T, x[:50] @ x[:50].T, atol=1e-5)


def test_an_ivfpq_index_written_before_the_rotation_still_searches_and_reports_its_cells(data, table, tmp_path):
    x, ids, _ = data
    spec = choose_index_spec(len(x), x.shape[1], "ivfpq", **IVF)
    old = VectorIndex(faiss.index_factory(spec.dim, f"IVF{spec.nlist},PQ{spec.pq_m}x4fs", faiss.METRIC_INNER_PRODUCT), spec)
    build_index(spec, x[training_sample(len(x), spec)], [(ids, x)], trained=old)
    old.save(tmp_path / "old.faiss")
    loaded = VectorIndex.load(tmp_path / "old.faiss", spec)
    assert rotation_of(loaded.index) is None
    assert loaded.factory == f"IVF{spec.nlist},PQ{spec.pq_m}x4fs" and spec.factory.startswith("RR")
    _, I = loaded.search(x[:100], 1, nprobe=64, rerank=16, vectors=table)
    assert np.array_equal(I[:, 0], ids[:100])
    quantizer = faiss.extract_index_ivf(loaded.index).quantizer
    assert np.array_equal(centroids_of(loaded), quantizer.reconstruct_n(0, spec.nlist))
