"""Choosing an index: a pure function from gallery size and dimension to a printable FAISS spec.

The rule behind ``kind="auto"``:

* ``flat`` (exact inner product) while ``n * d <= AUTO_FLAT_MAX_CELLS`` (64M floats: 500k vectors at
  d=128, 125k at d=512). Exact search over that many floats still answers a batch of queries in
  milliseconds per query on two cores, and needs no training.
* ``ivfpq`` above it: a random rotation, then an inverted file with ``nlist`` cells over 4-bit
  fast-scan product-quantised codes, whose candidates are re-ranked exactly with the float vectors
  memory-mapped from the shards.

Defaults for ivfpq, all overridable: ``nlist`` is the power of two nearest ``sqrt(n)``, kept within
[16, 65536] and at most ``n / 39`` (FAISS wants 39 training points per cell); ``pq_m = d / 4``
sub-quantisers of 4 bits, kept within [16, 64] (16 bytes per vector at d=128, 32 at d=512; fewer
lose the mate among close impostors at d=128), doubled where the gallery's own images show the codes
lose answers (below); ``nprobe = nlist / 8`` cells (at least 16, at most nlist) until the gallery's
own images have been measured (below); ``shortlist = 160``: at least that many candidates get exact
scores from the float vectors (more when ``rerank * k`` is larger, ``rerank = 2``), until measured;
and no recheck (``recheck_nprobe = 0``; a per-call option).

The rule, and the measurement behind it (benchmarks/search_scale.py, 1M x 512, 333k identities,
1000 probes per traffic mix, three data models of gallery/synthetic.py; benchmarks/README.md has
the tables):

* **A search must cost the same whoever is asking.** The former default searched every query whose
  best score fell below the threshold again over all cells. Every stranger does, so at 10% mated
  traffic it ran at 6x exact search instead of 45x, and it bought nothing an open-set decision
  needs: a stranger whose approximate search misses the impostor exact search would have accepted
  is answered "unknown", which is right. So there is no recheck; queries/s are the same at 100%,
  50% and 10% mated traffic, and what is compared with exact search is FNIR, FPIR and
  wrong-identity accepts at the same threshold.
* **The shortlist, not k, decides whether the mate survives the 4-bit codes.** Exhaustive PQ64x4fs
  codes with 80 exactly re-ranked candidates agreed with exact search on 99.8% of mated probes, with
  160 on all of them. At nprobe 128, 80 lost 0-0.6 points against 160, and 320 won 1.5 points on
  the varied data at 1.4-1.7x the cost (measured when the re-rank still gathered the candidates'
  vectors into one array; it now reads them in place, and the scan of the cells costs most).
* **The codes see the vectors rotated at random** (``RR{d}`` in the factory). The 4-bit product
  quantizer cuts a vector into ``pq_m`` runs of consecutive coordinates with 16 centroids each;
  where an embedding's variance sits in few coordinates, the first runs carry most of it and the
  codes push mates out of the shortlist. A random orthogonal rotation spreads it over all runs and
  keeps every inner product, so the cells, the re-rank, the scores and every threshold are what they
  were. Where identities differ along a few directions (``spectrum_decay=1.0``) it took rank-1 =
  exact from 99.5% to 99.9% at the measured cells, with exact's FNIR and no exact accept lost; on
  the varied data it halved the accepts the codes lose; on the even and default data it changed no
  answer (``benchmarks/ivf_codes.py``). It costs about 4 ms per 1000 probes and 1 MB.
* **How fine the codes and how long the shortlist follow what the codes lose on this gallery.** Once
  the cells are measured, :func:`~gallery.index.codes.with_measured_codes` searches a sample of the
  gallery's own images and compares each answer with the exact one within the same cells. The
  shortlist is the shortest of 120, 160, 320, 640 and 1000 at which at most 0.1% of them change; where
  the d/4 codes need more than 320, they are rebuilt with d/2 sub-quantisers over the same rotation
  and cells. At 1M x 512 the even data keeps PQ64x4fs with 120 candidates, the default data PQ64x4fs
  with 160. Where identities differ along a few directions the build chose PQ128x4fs, with 160 until
  120 was offered and then 120 (the same answers on 5000 new mated probes and 5000 strangers; 16%
  more queries/s in one timing of the ranking at its 35 cells, within the machine's noise in
  search_scale.py; 80 lost two rank-1 answers and made a wrong-identity accept, so no shorter list
  is offered). With 160: rank-1 = exact on 99.98% of 5000
  new mated probes (99.9% of 1000 with PQ64x4fs); where they vary in tightness PQ128x4fs with 1000:
  99.90% and FNIR +0.10 point (97.7% and +0.8 point with PQ64x4fs and 160; PQ64x4fs with 1000
  candidates gave 98.5%, ``benchmarks/ivf_codes.py``).
* **nprobe follows how one identity's images spread over the cells, which depends on the data.**
  Where within-identity variation is spread evenly over the directions (``noise_decay=0``), an
  eighth of the cells gave rank-1 equal to exact on 1000 of 1000 mated probes and exact's FNIR
  (64 cells: 99.6%) at 1M, and 99.7% at 2M x 512 (a million identities; a quarter of the cells:
  100%). Where the variation has the identity spectrum's shape (the generator's default) or
  identities differ in tightness (``tightness_spread=0.4``), images of one person fall in cells far
  apart: an eighth of the cells agrees on 88-96% and half of them on 95-99.7%. That is the partition,
  not the codes (``benchmarks/ivf_cells.py`` counts whether the exact answer's identity has an image
  in the cells searched): spilling every image into a second cell, or placing an identity's images
  in the cell of their mean, finds no more mates at equal scan cost, and an HNSW graph over the same
  vectors found fewer. So a fixed share of the cells cannot be right for every gallery: once an
  inverted file is filled (a new gallery, ``gallery rebuild-index``), unless ``nprobe`` was given,
  :func:`~gallery.index.coverage.with_measured_nprobe` sets it to the fewest cells in which 99.9% of
  a sample of the gallery's own images find another image of their identity (measured on the
  quantizer alone). A held-out image has one mate fewer than a new probe, yet 99.5% was not enough:
  rank-1 = exact on 99.7% (even) and 99.6% (default) of new mated probes; 99.9% gave 100% on both.
  ``nlist / 8`` stays where too few images have a mate to measure. ``gallery calibrate`` measures
  FPIR through whichever index the gallery searches with, so its threshold holds either way.
* **What it costs**, at 1M x 512 on two cores (a Zen 3, AVX2; benchmarks/README.md): the auto
  gallery answers 24-32x as many queries as exact search at the machine's matmul limit on the even
  data (182-184 of 1024 cells, PQ64x4fs, 160 or 120 candidates; rank-1 = exact on 99.98% of 5000
  mated probes, FNIR +0.02 point), 10-12x on the default data (689 cells, PQ64x4fs, 160; 99.98%,
  +0.04; the fixed eighth of the cells gave 34-37x and 96.5% in the same run), 4-6x on the varied
  data (859 cells, PQ128x4fs, 1000 candidates; 99.90%, +0.10) and 47-50x on the steep data (28
  cells, PQ128x4fs, 160; 99.98%, FNIR +0.14 point: the cells miss the best image of some identities
  ranked first), with FPIR and wrong-identity accepts at most exact's, at 100%, 50% and 10% mated
  traffic. Once calibrated, a gallery visits the cells its threshold needs (gallery.calibration):
  steep 35 (100% rank-1, FNIR +0.06 point, 30-49x over three runs, the last with 120 candidates),
  varied 904 (99.94%, +0.04, 4.0-4.3x). The fast-scan of the cells takes most of a search; the exact
  re-rank read in place from the memory-mapped shards and the identity grouping the rest. At 40x the
  budget is about 0.2 ms a query at 1M: on the Zen 3 the scan of steep's 35 cells takes 130-150 us
  of it, and on a Zen 4 the scan of the 182 cells the even data needs took about 0.23 ms alone.

Manifests written before this rule keep the knobs they stored (a stored ``recheck_nprobe`` still
rechecks), and index files written before the rotation search without it; ``gallery rebuild-index``
gives them these defaults.
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
#: Default nprobe: nlist / NPROBE_DIVISOR cells, at least MIN_NPROBE (see the module docstring).
NPROBE_DIVISOR = 8
MIN_NPROBE = 16
#: Default shortlist: candidates re-ranked exactly per query at least (see the module docstring).
SHORTLIST = 160


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
    #: Fewest candidates re-ranked exactly per query, whatever ``k``; 0 (manifests written before it was
    #: measured): :data:`SHORTLIST`.
    shortlist: int = 0

    @property
    def factory(self) -> str:
        """The FAISS index_factory string (flat is wrapped in IDMap2 for stable ids; ivfpq rotates the
        vectors at random first, see the module docstring)."""
        if self.kind == "flat":
            return "IDMap2,Flat"
        return f"RR{self.dim},IVF{self.nlist},PQ{self.pq_m}x4fs"

    def probes(self, nprobe: Optional[int] = None, recheck_nprobe: Optional[int] = None) -> tuple[int, int]:
        """(cells per query, cells for the opt-in recheck of queries below the threshold) for one search;
        no recheck, or one no wider than the first search, is returned as 0. Flat indexes have neither."""
        if self.kind == "flat":
            return 0, 0
        first = min(int(nprobe or self.nprobe), self.nlist)
        wide = min(int(recheck_nprobe or self.recheck_nprobe), self.nlist)
        return first, wide if wide > first else 0

    def candidates(self, k: int, rerank: Optional[int] = None, shortlist: Optional[int] = None) -> int:
        """How many approximate candidates get exact scores when ``k`` are asked for."""
        return max(k * int(rerank or self.rerank or 1), int(shortlist or self.shortlist or SHORTLIST))

    def params(self) -> dict:
        """What the manifest stores (``index.params``)."""
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
    shortlist: Optional[int] = None,
) -> IndexSpec:
    """Pick the index for ``n`` vectors of dimension ``d``; explicit arguments override the defaults.

    >>> choose_index_spec(10_000, 128).factory
    'IDMap2,Flat'
    >>> choose_index_spec(1_000_000, 512).factory
    'RR512,IVF1024,PQ64x4fs'
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
    nprobe = nprobe or max(MIN_NPROBE, nlist // NPROBE_DIVISOR)
    recheck = min(recheck_nprobe or 0, nlist)
    return IndexSpec("ivfpq", d, nlist=nlist, pq_m=pq_m, nprobe=min(nprobe, nlist), rerank=rerank or 2,
                     recheck_nprobe=recheck, shortlist=shortlist or 0)
