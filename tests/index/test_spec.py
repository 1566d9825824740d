"""The index choice is a pure, documented function of gallery size and dimension."""

import pytest

from gallery import InvalidInputError
from gallery.index import AUTO_FLAT_MAX_CELLS, IndexSpec, choose_index_spec
from gallery.index.files import spec_of
from gallery.store.manifest import IndexInfo


@pytest.mark.parametrize(
    "n, d, kind, nlist, pq_m",
    [
        (10, 128, "flat", 0, 0),
        (10_000, 128, "flat", 0, 0),
        (500_000, 128, "flat", 0, 0),  # n * d = 64M: still exact
        (500_001, 128, "ivfpq", 512, 32),
        (125_000, 512, "flat", 0, 0),
        (200_000, 512, "ivfpq", 512, 64),
        (1_000_000, 512, "ivfpq", 1024, 64),
        (1_000_000, 128, "ivfpq", 1024, 32),
        (100_000_000, 512, "ivfpq", 8192, 64),
    ],
)
def test_auto_rule(n, d, kind, nlist, pq_m):
    spec = choose_index_spec(n, d)
    assert (spec.kind, spec.nlist, spec.pq_m) == (kind, nlist, pq_m)
    assert (spec.kind == "flat") == (n * d <= AUTO_FLAT_MAX_CELLS)


def test_factory_strings():
    assert choose_index_spec(100, 64).factory == "IDMap2,Flat"
    assert choose_index_spec(1_000_000, 512).factory == "RR512,IVF1024,PQ64x4fs"
    assert choose_index_spec(1_000_000, 512).nprobe == 1024 // NPROBE_DIVISOR


def test_ivfpq_defaults_respect_training_needs():
    for n in (1_000, 5_000, 40_000, 3_000_000):
        spec = choose_index_spec(n, 64, "ivfpq")
        assert spec.nlist * 39 <= n and 1 <= spec.nprobe <= spec.nlist and spec.rerank >= 1


def test_overrides_win():
    spec = choose_index_spec(50_000, 64, "ivfpq", nlist=64, pq_m=8, nprobe=5, rerank=3)
    assert (spec.nlist, spec.pq_m, spec.nprobe, spec.rerank) == (64, 8, 5, 3)
    assert choose_index_spec(5_000_000, 64, "flat").kind == "flat"


@pytest.mark.parametrize(
    "args, message",
    [
        ((500, 64, "ivfpq"), "ivfpq needs at least 1000 vectors to train, but the gallery has 500; use --index flat"),
        ((5000, 64, "ivfpq"), None),
        ((5000, 64, "hnsw"), "unknown index kind 'hnsw'; choose one of: auto, flat, ivfpq"),
    ],
)
def test_errors(args, message):
    if message is None:
        choose_index_spec(*args)
        return
    with pytest.raises(InvalidInputError) as e:
        choose_index_spec(*args)
    assert str(e.value) == message


def test_bad_overrides():
    with pytest.raises(InvalidInputError, match="pq_m = 5 must divide the dimension d = 64"):
        choose_index_spec(5000, 64, "ivfpq", pq_m=5)
    with pytest.raises(InvalidInputError, match="nlist = 1024 needs at least 39936 vectors"):
        choose_index_spec(5000, 64, "ivfpq", nlist=1024)


# ---------------------------------------------------------------- the documented rule, independent of tuned defaults

from gallery.index.spec import MIN_IVFPQ_VECTORS, MIN_NPROBE, MIN_TRAIN_POINTS_PER_CELL, NPROBE_DIVISOR, SHORTLIST  # noqa: E402


@pytest.mark.parametrize("d", [32, 64, 128, 256, 512, 1024])
def test_auto_is_flat_exactly_while_n_times_d_fits_the_cell_budget(d):
    last_flat = AUTO_FLAT_MAX_CELLS // d
    assert choose_index_spec(last_flat, d).kind == "flat"
    assert choose_index_spec(last_flat + 1, d).kind == "ivfpq"


def test_auto_stays_flat_below_the_ivfpq_minimum_even_at_huge_dimension():
    n = MIN_IVFPQ_VECTORS - 1
    d = AUTO_FLAT_MAX_CELLS // n + 1  # n * d exceeds the cell budget, but too few vectors to train on
    assert n * d > AUTO_FLAT_MAX_CELLS and choose_index_spec(n, d).kind == "flat"


@pytest.mark.parametrize("n", [1_000, 1_500, 5_000, 39_999, 100_000, 1_000_000, 50_000_000])
@pytest.mark.parametrize("d", [48, 64, 128, 512])
def test_default_ivfpq_parameters_are_always_buildable(n, d):
    spec = choose_index_spec(n, d, "ivfpq")
    assert spec.kind == "ivfpq" and spec.dim == d
    assert spec.nlist >= 1 and spec.nlist & (spec.nlist - 1) == 0  # a power of two
    assert spec.nlist * MIN_TRAIN_POINTS_PER_CELL <= n
    assert d % spec.pq_m == 0
    assert spec.nprobe == min(max(MIN_NPROBE, spec.nlist // NPROBE_DIVISOR), spec.nlist)
    assert spec.recheck_nprobe == 0  # no recheck: a search costs the same whoever is asking
    assert spec.rerank == 2 and spec.candidates(10) == max(20, SHORTLIST)
    assert spec.factory == f"RR{d},IVF{spec.nlist},PQ{spec.pq_m}x4fs"


def test_every_override_is_honoured_and_printed_in_the_factory():
    spec = choose_index_spec(50_000, 96, "ivfpq", nlist=128, pq_m=24, nprobe=7, rerank=9, recheck_nprobe=64)
    assert (spec.kind, spec.nlist, spec.pq_m, spec.nprobe, spec.rerank) == ("ivfpq", 128, 24, 7, 9)
    assert spec.factory == "RR96,IVF128,PQ24x4fs"
    assert spec.params() == {"nlist": 128, "pq_m": 24, "nprobe": 7, "rerank": 9, "recheck_nprobe": 64,
                             "shortlist": 0}


def test_a_search_rechecks_only_when_asked_and_only_with_more_lists():
    spec = choose_index_spec(50_000, 64, "ivfpq", nlist=128, pq_m=16, nprobe=16)
    assert spec.probes() == (16, 0)
    assert spec.probes(nprobe=32, recheck_nprobe=64) == (32, 64)
    assert spec.probes(nprobe=128, recheck_nprobe=128) == (128, 0)  # already every list: nothing to recheck
    assert spec.probes(recheck_nprobe=8) == (16, 0)
    stored = IndexSpec("ivfpq", 64, nlist=128, pq_m=16, nprobe=16, recheck_nprobe=128)  # a manifest that asked for it
    assert stored.probes() == (16, 128)
    assert choose_index_spec(100, 64).probes() == (0, 0)


def test_the_shortlist_sets_the_fewest_exactly_scored_candidates_whatever_k():
    spec = choose_index_spec(50_000, 64, "ivfpq", nlist=128, pq_m=16, rerank=2)
    assert spec.candidates(5) == SHORTLIST and spec.candidates(SHORTLIST) == 2 * SHORTLIST
    assert spec.candidates(5, shortlist=30) == 30 and spec.candidates(5, rerank=8, shortlist=30) == 40
    assert choose_index_spec(50_000, 64, "ivfpq", nlist=128, pq_m=16, shortlist=64).candidates(5) == 64
    assert spec.params()["shortlist"] == 0  # stored: a gallery's measured shortlist outlives the process


def test_nprobe_override_is_capped_at_nlist():
    assert choose_index_spec(50_000, 64, "ivfpq", nlist=32, pq_m=16, nprobe=1000).nprobe == 32


def test_explicit_kind_wins_over_the_auto_rule():
    assert choose_index_spec(10 * AUTO_FLAT_MAX_CELLS, 64, "flat").kind == "flat"
    assert choose_index_spec(2_000, 64, "ivfpq", nlist=16, pq_m=16).kind == "ivfpq"
    flat = choose_index_spec(2_000, 64, "flat", nlist=16, pq_m=16, nprobe=4, rerank=2)  # ivfpq knobs do not apply
    assert (flat.nlist, flat.pq_m, flat.nprobe, flat.rerank, flat.factory) == (0, 0, 0, 0, "IDMap2,Flat")


def test_ivfpq_with_too_few_vectors_names_the_minimum_and_the_fix():
    with pytest.raises(InvalidInputError) as e:
        choose_index_spec(MIN_IVFPQ_VECTORS - 1, 64, "ivfpq", nlist=16, pq_m=16)
    assert str(e.value) == (
        f"ivfpq needs at least {MIN_IVFPQ_VECTORS} vectors to train, but the gallery has {MIN_IVFPQ_VECTORS - 1}; "
        "use --index flat"
    )
    choose_index_spec(MIN_IVFPQ_VECTORS, 64, "ivfpq", nlist=16, pq_m=16)  # the minimum itself is enough


@pytest.mark.parametrize("d, pq_m", [(64, 5), (64, 48), (100, 8), (128, 3)])
def test_pq_m_must_divide_the_dimension(d, pq_m):
    with pytest.raises(InvalidInputError) as e:
        choose_index_spec(10_000, d, "ivfpq", nlist=16, pq_m=pq_m)
    assert str(e.value) == f"pq_m = {pq_m} must divide the dimension d = {d}"


def test_nlist_needs_enough_training_points():
    n = 64 * MIN_TRAIN_POINTS_PER_CELL
    choose_index_spec(n, 64, "ivfpq", nlist=64, pq_m=16)
    with pytest.raises(InvalidInputError, match=f"nlist = 64 needs at least {n} vectors to train, but there are {n - 1}"):
        choose_index_spec(n - 1, 64, "ivfpq", nlist=64, pq_m=16)


def test_a_knob_stored_as_null_takes_its_default_and_the_rest_are_kept():
    info = IndexInfo("index/index-000001.faiss", "c" * 64, "ivfpq", "RR512,IVF1024,PQ64x4fs", 10, 10,
                     {"nlist": 1024, "pq_m": 64, "nprobe": 182, "rerank": 2, "recheck_nprobe": None, "shortlist": None})
    spec = spec_of(info, 512)
    assert (spec.nlist, spec.pq_m, spec.nprobe, spec.rerank) == (1024, 64, 182, 2)
    assert spec.recheck_nprobe == 0 and spec.candidates(40) == SHORTLIST
