"""The index choice is a pure, documented function of gallery size and dimension."""

import pytest

from gallery import InvalidInputError
from gallery.index import AUTO_FLAT_MAX_CELLS, choose_index_spec


@pytest.mark.parametrize(
    "n, d, kind, nlist, pq_m",
    [
        (10, 128, "flat", 0, 0),
        (10_000, 128, "flat", 0, 0),
        (500_000, 128, "flat", 0, 0),  # n * d = 64M: still exact
        (500_001, 128, "ivfpq", 512, 16),
        (125_000, 512, "flat", 0, 0),
        (200_000, 512, "ivfpq", 512, 64),
        (1_000_000, 512, "ivfpq", 1024, 64),
        (1_000_000, 128, "ivfpq", 1024, 16),
        (100_000_000, 512, "ivfpq", 8192, 64),
    ],
)
def test_auto_rule(n, d, kind, nlist, pq_m):
    spec = choose_index_spec(n, d)
    assert (spec.kind, spec.nlist, spec.pq_m) == (kind, nlist, pq_m)
    assert (spec.kind == "flat") == (n * d <= AUTO_FLAT_MAX_CELLS)


def test_factory_strings():
    assert choose_index_spec(100, 64).factory == "IDMap2,Flat"
    assert choose_index_spec(1_000_000, 512).factory == "IVF1024,PQ64x4fs"
    assert choose_index_spec(1_000_000, 512).nprobe == 256


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
