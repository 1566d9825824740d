"""Choosing an index: a pure function from gallery size and dimension to a printable FAISS spec.

The rule behind ``kind="auto"``:

* ``flat`` (exact inner product) while ``n * d <= AUTO_FLAT_MAX_CELLS`` (64M floats: 500k vectors at
  d=128, 125k at d=512). Exact search over that many floats still answers a batch of queries in
  milliseconds per query on two cores, and needs no training.
* ``ivfpq`` above it: an inverted file with ``nlist`` cells over 4-bit fast-scan product-quantised
  codes, whose candidates are re-ranked exactly with the float vectors memory-mapped from the shards.

Defaults for ivfpq, all overridable: ``nlist`` is the power of two nearest ``sqrt(n)``, kept within
[16, 65536] and at most ``n / 39`` (FAISS wants 39 training points per cell); ``pq_m = d / 4``
sub-quantisers of 4 bits, kept within [16, 64] (16 bytes per vector at d=128, 32 at d=512; fewer
lose the mate among close impostors at d=128, more only slow the scan at d=512); ``nprobe = nlist / 8``
(at least 16, at most nlist), with every query whose best score falls below the open-set threshold
searched again over ``recheck_nprobe = nlist`` cells (see below); and
``rerank = 2``: ``2 * k`` candidates get exact scores (on 1M x 512, 1, 2 and 4 gave the same rank-1
agreement within 0.15 points, and each doubling cost about a quarter of the queries/s).

Why the recheck: a probe and its mate's images have cosine around 0.6, far less than in typical
nearest-neighbour benchmarks, so the mate often lies in a cell the probe is not nearest to, and
rank-1 agreement with exact search follows the fraction of cells visited, not the PQ codes. A search
that misses the mate finds only impostors, whose best score lies below the open-set threshold: the
answer would be "unknown". Searching exactly those queries again over all cells turns such misses
back into the exact answer, and costs little because a query that found its mate is not searched
again. On 1M x 512 synthetic identities with the hardest within-identity variation, an eighth of the
cells alone gave 96% agreement; with the recheck 99.9% at 23x the speed of exact search
(benchmarks/README.md has the tables).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

from ..errors import InvalidInputError

KINDS = ("auto", "flat", "ivfpq")
AUTO_FLAT_MAX_CELLS = 64_000_000
MIN_TRAIN_POINTS_PER_CELL = 39
MIN_IVFPQ_VECTORS = 1_000


@dataclass(frozen=True)
class IndexSpec:
    """What to build; ``nprobe`` and ``rerank`` are defaults a search call may override."""

    kind: str
    dim: int
    nlist: int = 0
    pq_m: int = 0
    nprobe: int = 0
    rerank: int = 0
    recheck_nprobe: int = 0

    @property
    def factory(self) -> str:
        """The FAISS index_factory string (flat is wrapped in IDMap2 for stable ids)."""
        if self.kind == "flat":
            return "IDMap2,Flat"
        return f"IVF{self.nlist},PQ{self.pq_m}x4fs"

    def probes(self, nprobe: Optional[int] = None, recheck_nprobe: Optional[int] = None) -> tuple[int, int]:
        """(cells per query, cells for the recheck of queries below the threshold) for one search; a recheck
        no wider than the first search is none (returned as 0). Flat indexes have neither."""
        if self.kind == "flat":
            return 0, 0
        first = min(int(nprobe or self.nprobe), self.nlist)
        wide = min(int(recheck_nprobe or self.recheck_nprobe or self.nlist), self.nlist)
        return first, wide if wide > first else 0

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("kind", "dim")}


def _nearest_power_of_two(x: float) -> int:
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def default_nlist(n: int) -> int:
    nlist = _nearest_power_of_two(math.sqrt(n))
    nlist = min(max(nlist, 16), 65536)
    while nlist > 1 and nlist * MIN_TRAIN_POINTS_PER_CELL > n:
        nlist //= 2
    return nlist


def default_pq_m(d: int) -> int:
    for m in range(min(max(d // 4, 16), 64, d), 0, -1):
        if d % m == 0:
            return m
    return 1


def choose_index_spec(
    n: int,
    d: int,
    kind: str = "auto",
    *,
    nlist: Optional[int] = None,
    pq_m: Optional[int] = None,
    nprobe: Optional[int] = None,
    rerank: Optional[int] = None,
    recheck_nprobe: Optional[int] = None,
) -> IndexSpec:
    """Pick the index for ``n`` vectors of dimension ``d``; explicit arguments override the defaults.

    >>> choose_index_spec(10_000, 128).factory
    'IDMap2,Flat'
    >>> choose_index_spec(1_000_000, 512).factory
    'IVF1024,PQ64x4fs'
    """
    if kind not in KINDS:
        raise InvalidInputError(f"unknown index kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if kind == "auto":
        kind = "flat" if n * d <= AUTO_FLAT_MAX_CELLS or n < MIN_IVFPQ_VECTORS else "ivfpq"
    if kind == "flat":
        return IndexSpec("flat", d)
    if n < MIN_IVFPQ_VECTORS:
        raise InvalidInputError(
            f"ivfpq needs at least {MIN_IVFPQ_VECTORS} vectors to train, but the gallery has {n}; use --index flat"
        )
    nlist = nlist or default_nlist(n)
    pq_m = pq_m or default_pq_m(d)
    if d % pq_m:
        raise InvalidInputError(f"pq_m = {pq_m} must divide the dimension d = {d}")
    if nlist * MIN_TRAIN_POINTS_PER_CELL > n:
        raise InvalidInputError(
            f"nlist = {nlist} needs at least {nlist * MIN_TRAIN_POINTS_PER_CELL} vectors to train, but there are {n}"
        )
    nprobe = nprobe or max(16, nlist // 8)
    recheck = min(recheck_nprobe or nlist, nlist)
    return IndexSpec("ivfpq", d, nlist=nlist, pq_m=pq_m, nprobe=min(nprobe, nlist), rerank=rerank or 2,
                     recheck_nprobe=recheck)
