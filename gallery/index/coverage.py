"""How many IVF cells a search must visit on this gallery, measured on the gallery's own labelled images.

Whether a probe's mate lies in the probe's nearest cells depends on the data, not on the gallery's
size: where an identity's images vary along the directions the cells follow, they fall in cells far
apart, and a fixed share of the cells loses mates (benchmarks/ivf_cells.py: an eighth of the cells
held the exact answer's identity for 99.9% of mated probes on one data model and 95.8% on another).
So when an inverted file is built, each of a sample of enrolled images is taken as a probe, and the
rank of the best-ranked cell that holds another image of its identity is read off the quantizer:
``nprobe`` is the rank that covers :data:`COVERAGE` of them. It counts cells, so it costs one small
matrix product (with a threshold, below, also one dot product per image and mate).

A held-out image has one mate fewer than a new probe of that identity, so the measure errs toward
visiting more cells, but not far enough for the rank-1 target: covering 99.5% of sampled images gave
108 of 1024 cells on a 1M x 512 gallery of gallery.synthetic where images vary evenly and 504 where
they vary along the identities' directions, and rank-1 = exact on 99.7% and 99.6% of new mated
probes. Covering :data:`COVERAGE` = 99.9% gave 182 and 688 cells and 100% on both, with the auto
gallery at 22-28x and 9-12x exact search on a Zen 4 (benchmarks/search_scale.py,
benchmarks/ivf_codes.py --coverage).

Finding some image of the identity is what rank-1 needs; an open-set decision needs one that clears
the threshold. Where the threshold sits among mated scores (one data model rejects 11% of mated
probes at FPIR 1%) the cells alone lost 0.075 point of FNIR at 26 cells; counting an image as
covered only by a mate above the threshold, where exact search accepts it, gave 35 cells and 0.04
(benchmarks/ivf_coverage.py; 0-6% more cells on the other data). The threshold is known once a
gallery is calibrated, so ``gallery calibrate`` measures the cells for it (gallery.calibration).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import faiss
import numpy as np

from ..types import IdMap
from .build import VectorIndex, VectorSource, quantizer_centroids, rotation_of
from .spec import MIN_NPROBE

#: Share of sampled enrolled images whose identity must have another image in the cells visited (see
#: the module docstring for why 0.999 and not 0.995).
COVERAGE = 0.999
#: Images sampled as probes; fewer than MIN_SAMPLE with a mate and the measure is not trusted. The
#: measure is a tail quantile: on one 1M x 512 gallery, 4000 images gave 108-131 cells over four
#: seeds and 64000 gave 99-109 (1.7 s).
SAMPLE = 64_000
MIN_SAMPLE = 500
#: Bound on the (probe, cell) scores and (pair, cell) comparisons held in memory at once.
_CHUNK_CELLS = 1 << 24


def cell_of(index: VectorIndex) -> tuple[np.ndarray, np.ndarray]:
    """(record ids, the IVF cell holding each), read from the inverted lists."""
    ivf = faiss.extract_index_ivf(index.index)
    ids, cells = [], []
    for cell in range(ivf.nlist):
        size = ivf.invlists.list_size(cell)
        if size:
            ptr = ivf.invlists.get_ids(cell)
            ids.append(faiss.rev_swig_ptr(ptr, size).copy())
            ivf.invlists.release_ids(cell, ptr)
            cells.append(np.full(size, cell, np.int64))
    if not ids:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(ids), np.concatenate(cells)


def centroids_of(index: VectorIndex) -> np.ndarray:
    """The IVF cells' centroids (nlist, d) in the space of the stored vectors: turned back where the
    index rotates vectors before its cells (a rotation keeps every inner product, so the cells' ranks
    are the same)."""
    centroids = quantizer_centroids(index.index)
    rotation = rotation_of(index.index)
    return centroids if rotation is None else rotation.reverse_transform(centroids)


def cells_for_coverage(
    index: VectorIndex,
    ids: np.ndarray,
    identities: np.ndarray,
    vectors: VectorSource,
    *,
    coverage: float = COVERAGE,
    threshold: Optional[float] = None,
    sample: int = SAMPLE,
    seed: int = 0,
) -> Optional[int]:
    """The fewest cells per query in which ``coverage`` of sampled enrolled images find another image of
    their identity, or None when fewer than :data:`MIN_SAMPLE` indexed images have one.

    With an open-set ``threshold``, an image whose best-scoring mate clears it is covered only by a
    mate that clears it too: exact search would accept its identity, and a weaker image of the same
    person found instead would leave it "unknown". ``ids`` and ``identities`` are the records and their
    labels; records the index does not hold are ignored.
    """
    held, held_cell = cell_of(index)
    ids = np.asarray(ids, dtype=np.int64)
    cell = IdMap(held, held_cell, int(held.max(initial=-1)) + 1)[ids]
    inside = cell >= 0
    ids, cell = ids[inside], cell[inside]
    _, code = np.unique(np.asarray(identities, dtype=object)[inside].astype(str), return_inverse=True)
    by_code = np.argsort(code, kind="stable")
    starts = np.searchsorted(code[by_code], np.arange(code.max(initial=-1) + 2))
    size = np.diff(starts)[code]
    eligible = np.flatnonzero(size >= 2)
    if len(eligible) < MIN_SAMPLE:
        return None
    rng = np.random.default_rng(seed)
    probes = np.sort(rng.choice(eligible, min(sample, len(eligible)), replace=False))
    ivf = faiss.extract_index_ivf(index.index)
    centroids = centroids_of(index)
    pair_probe, mate = _mate_pairs(probes, by_code, starts, code, size)
    needed = np.full(len(probes), ivf.nlist, np.int64)
    block = max(1, _CHUNK_CELLS // ivf.nlist)
    for b in range(0, len(probes), block):
        x = vectors.gather(ids[probes[b : b + block]])
        scores = x @ centroids.T
        lo, hi = np.searchsorted(pair_probe, [b, b + block])
        p, m = pair_probe[lo:hi] - b, mate[lo:hi]
        rank = np.empty(hi - lo, np.int64)
        similarity = np.empty(hi - lo, np.float32) if threshold is not None else None
        for s in range(0, hi - lo, block):
            ps, ms = p[s : s + block], m[s : s + block]
            rank[s : s + len(ps)] = (scores[ps] > scores[ps, cell[ms]][:, None]).sum(axis=1) + 1
            if similarity is not None:
                similarity[s : s + len(ps)] = np.einsum("ij,ij->i", x[ps], vectors.gather(ids[ms]))
        counted = slice(None) if similarity is None else _counted_at(threshold, similarity, p, len(x))
        np.minimum.at(needed, p[counted] + b, rank[counted])
    return int(np.quantile(needed, coverage, method="higher"))


def _counted_at(threshold: float, similarity: np.ndarray, p: np.ndarray, n_probes: int) -> np.ndarray:
    """Which (probe, mate) pairs may cover their probe at ``threshold``: where the probe's best mate clears
    it, only mates that clear it too; elsewhere every mate."""
    best = np.full(n_probes, -np.inf, np.float32)
    np.maximum.at(best, p, similarity)
    return (similarity >= threshold) | (best[p] < threshold)


def measured_nprobe(index: VectorIndex, ids: np.ndarray, identities: np.ndarray, vectors: VectorSource, *,
                    threshold: Optional[float] = None) -> Optional[int]:
    """:func:`cells_for_coverage` within [:data:`~gallery.index.spec.MIN_NPROBE`, nlist]; None for a flat
    or empty index, or when the gallery cannot measure it."""
    if index.spec.kind == "flat" or index.ntotal == 0:
        return None
    cells = cells_for_coverage(index, ids, identities, vectors, threshold=threshold)
    return None if cells is None else int(min(max(cells, MIN_NPROBE), index.spec.nlist))


def with_measured_nprobe(index: VectorIndex, ids: np.ndarray, identities: np.ndarray, vectors: VectorSource, *,
                         threshold: Optional[float] = None) -> VectorIndex:
    """``index`` with its default ``nprobe`` set by :func:`measured_nprobe`; kept as it is when the gallery
    cannot measure it."""
    nprobe = measured_nprobe(index, ids, identities, vectors, threshold=threshold)
    if nprobe is not None:
        index.spec = replace(index.spec, nprobe=nprobe)
    return index


def _mate_pairs(probes, by_code, starts, code, size) -> tuple[np.ndarray, np.ndarray]:
    """Every (probe number, position of another image of its identity) pair, grouped by probe."""
    counts = size[probes]
    pair_probe = np.repeat(np.arange(len(probes)), counts)
    offset = np.arange(len(pair_probe)) - np.repeat(np.cumsum(counts) - counts, counts)
    mate = by_code[np.repeat(starts[code[probes]], counts) + offset]
    keep = mate != probes[pair_probe]
    return pair_probe[keep], mate[keep]
