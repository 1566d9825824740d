"""The cells a search visits are measured on the gallery's own labelled images, and hold their mates."""

import faiss
import numpy as np
import pytest

from gallery.index import build_index, choose_index_spec, training_sample
from gallery.index.build import knn, rotation_of
from gallery.index.coverage import cell_of, cells_for_coverage, centroids_of, with_measured_nprobe
from gallery.index.spec import MIN_NPROBE
from gallery.store.shards import VectorTable
from gallery.synthetic import synthetic_gallery

NLIST = 64


def indexed(noise_decay=None, identities=3000, images=3, seed=5):
    d = synthetic_gallery(identities, images, 64, genuine=0.6, noise_decay=noise_decay, seed=seed)
    ids = np.arange(len(d.vectors), dtype=np.int64) * 2 + 7  # sparse, not row numbers
    spec = choose_index_spec(len(ids), 64, "ivfpq", nlist=NLIST, pq_m=16)
    index = build_index(spec, d.vectors[training_sample(len(ids), spec)], [(ids, d.vectors)], gpu=False)
    return index, ids, d.identities, VectorTable([ids], [d.vectors], 64), d.vectors


@pytest.fixture(scope="module")
def shaped():
    return indexed()


@pytest.fixture(scope="module")
def even():
    return indexed(noise_decay=0.0)


def as_the_cells_see_it(index, x):
    """``x`` after the random rotation FAISS applies before the quantizer."""
    return rotation_of(index.index).apply(x)


def cells_needed_by_hand(index, ids, labels, x, threshold=None):
    """Per enrolled image with a mate: the rank of the best-ranked cell holding another image of its identity
    (with a threshold its best mate clears, one that clears it too), from the quantizer's own top-1
    assignment of every image and a full sort of the centroids."""
    ivf = faiss.extract_index_ivf(index.index)
    x = as_the_cells_see_it(index, x)
    _, home = knn(ivf.quantizer, x, 1)
    _, order = knn(ivf.quantizer, x, ivf.nlist)
    needed = []
    for i in range(len(ids)):
        mates = [j for j in np.flatnonzero(labels == labels[i]) if j != i]
        if mates:
            rank_of = {int(c): r + 1 for r, c in enumerate(order[i])}
            if threshold is not None and max(float(x[i] @ x[j]) for j in mates) >= threshold:
                mates = [j for j in mates if float(x[i] @ x[j]) >= threshold]
            needed.append(min(rank_of[int(home[j, 0])] for j in mates))
    return np.asarray(needed)


def test_each_record_is_found_in_the_cell_the_quantizer_assigns_it(shaped):
    index, ids, _, _, x = shaped
    held, cell = cell_of(index)
    _, home = knn(faiss.extract_index_ivf(index.index).quantizer, as_the_cells_see_it(index, x), 1)
    assert sorted(held.tolist()) == sorted(ids.tolist())
    assert np.array_equal(cell[np.argsort(held)], home[np.argsort(ids), 0])


def test_the_centroids_are_read_back_in_the_space_of_the_stored_vectors(shaped):
    index, ids, _, _, x = shaped
    held, cell = cell_of(index)
    nearest = (x @ centroids_of(index).T).argmax(axis=1)
    assert np.mean(nearest[np.argsort(ids)] == cell[np.argsort(held)]) > 0.999  # ties aside
    unrotated = faiss.rev_swig_ptr(faiss.downcast_index(faiss.extract_index_ivf(index.index).quantizer).get_xb(), x.shape[1])
    assert not np.allclose(centroids_of(index)[0], unrotated, atol=1e-3)


@pytest.mark.parametrize("threshold", [None, 0.6])
def test_the_measure_is_the_coverage_quantile_of_a_count_by_hand(shaped, threshold):
    index, ids, labels, table, x = shaped
    measured = cells_for_coverage(index, ids, labels, table, coverage=0.99, threshold=threshold, sample=len(ids))
    by_hand = cells_needed_by_hand(index, ids, labels, x, threshold)
    assert measured == int(np.quantile(by_hand, 0.99, method="higher"))


def test_a_threshold_among_the_mated_scores_needs_cells_that_hold_a_mate_above_it(shaped):
    """An image whose best mate clears the threshold is accepted by exact search; a weaker image of the
    same person in the cells visited would leave it unknown, so the cells must hold a mate above it."""
    index, ids, labels, table, x = shaped
    mate_scores = [float(x[i + a] @ x[i + b]) for i in range(0, len(x), 3) for a, b in ((0, 1), (0, 2), (1, 2))]
    among = float(np.median(mate_scores))
    plain = cells_for_coverage(index, ids, labels, table, coverage=0.99)
    assert cells_for_coverage(index, ids, labels, table, coverage=0.99, threshold=among) > plain
    below_all = min(mate_scores) - 0.01  # every image's identity is accepted through any mate
    assert cells_for_coverage(index, ids, labels, table, coverage=0.99, threshold=below_all) == plain
    above_all = 1.01  # no identity is accepted: rank-1 alone decides
    assert cells_for_coverage(index, ids, labels, table, coverage=0.99, threshold=above_all) == plain


@pytest.mark.parametrize("threshold", [None, 0.6])
def test_the_measure_taken_a_few_probes_at_a_time_is_the_same(shaped, monkeypatch, threshold):
    """Large galleries have many cells: the probes' cell scores are held a block at a time."""
    import gallery.index.coverage as coverage

    index, ids, labels, table, x = shaped
    whole = cells_for_coverage(index, ids, labels, table, coverage=0.99, threshold=threshold, sample=len(ids))
    monkeypatch.setattr(coverage, "_CHUNK_CELLS", NLIST * 100)  # 100 probes per block, 90 blocks
    assert cells_for_coverage(index, ids, labels, table, coverage=0.99, threshold=threshold, sample=len(ids)) == whole


def test_images_that_vary_along_the_identity_directions_need_more_cells(shaped, even):
    hard = cells_for_coverage(*shaped[:4])
    easy = cells_for_coverage(*even[:4])
    assert easy < hard <= NLIST


def test_records_the_index_does_not_hold_are_left_out(shaped):
    index, ids, labels, table, _ = shaped
    stray = np.concatenate([ids, [10**9, 10**9 + 1]])
    assert cells_for_coverage(index, stray, np.concatenate([labels, ["x", "x"]]), table) == \
        cells_for_coverage(index, ids, labels, table)


def test_a_gallery_of_one_image_per_identity_keeps_the_default():
    index, ids, labels, table, _ = indexed(identities=3000, images=1)
    assert cells_for_coverage(index, ids, labels, table) is None
    before = index.spec
    assert with_measured_nprobe(index, ids, labels, table).spec == before


def test_the_measured_nprobe_is_the_index_default_within_its_bounds(shaped):
    index, ids, labels, table, _ = shaped
    with_measured_nprobe(index, ids, labels, table)
    assert index.spec.nprobe == min(max(cells_for_coverage(index, ids, labels, table), MIN_NPROBE), NLIST)
