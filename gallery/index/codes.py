"""How fine the 4-bit codes and how long the exact shortlist must be, measured on the gallery's own images.

An IVF-PQ search loses an answer in two places: the cells it visits (``nprobe``, measured by
:mod:`~gallery.index.coverage`) and the codes, whose approximate scores pick the few candidates that
get exact scores. What the codes lose depends on the data as much as what the cells lose. At 1M x 512
(gallery.synthetic; benchmarks/search_scale.py records what this module measured), PQ64x4fs codes
with 160 candidates changed 3 of 4000 sampled answers on the even and default data, but even with
320 candidates 0.30% where identities differ along a few directions (``spectrum_decay=1.0``) and
3.25% where they vary in tightness; PQ128x4fs codes changed 0.03% at 160 and 0.05% at 1000 there.
At 120 candidates the even data's codes still changed 0.075% (kept: 120), the default data's 0.125%
(160 kept). So the codes are chosen by measurement, as ``nprobe`` is.

Once an inverted file is filled, a sample of enrolled images is searched, each left out of its own
answer, and each answer is compared with the exact answer within the same cells: the best identity by
exact scores over every vector those cells hold, so that a disagreement is one only the codes cause.
The shortlist is the shortest of :data:`SHORTLISTS` at which at most :data:`CODE_LOSS` of the sample
disagree. Where the gallery's codes cannot reach that within the first three, the same number of
sub-quantisers is first trained over a rotation fitted to them (:func:`trained_rotation`, FAISS's
OPQ); where that is still not enough, the codes are rebuilt with twice the sub-quantisers over the
random rotation. Either keeps the cells (every exact score, hence every threshold, is unchanged), and
the shortlist is measured again; where nothing reaches the target, the finest codes and the longest
shortlist are kept and the loss is logged.

Why a trained rotation before finer codes: a random rotation spreads every direction over every
sub-quantiser, so where identities differ along a few directions each 8-dimensional sub-quantiser
sees a little of each and its 16 centroids fit none. On the steep data (1M x 512, ``spectrum_decay=1.0``)
PQ64x4fs codes changed 0.65% of the sampled answers at 160 candidates after the random rotation and
0.025% at 120 after OPQ, as few as PQ128x4fs; on 5000 new mated probes and 5000 strangers at its 35
cells: rank-1 = exact on 99.90% (120 candidates) and 99.94% (160), exact's FNIR + 0.06 point (PQ128x4fs's),
FPIR 0.94-0.98% against exact's 1%, no wrong-identity accept, at 1.7x PQ128x4fs's queries/s (a scan of
half the bytes). Its training costs about 90 s on two cores (65,536 residuals, FAISS's 50 iterations),
and the codes' rebuild about 30 s.

A left-out image has one mate fewer than a new probe of its identity, so the measure errs toward finer
codes: on the steep data PQ64x4fs with 160 candidates had agreed with exact search on 99.9% of 1000
new mated probes, and PQ128x4fs agree on 100% of them (4999 of 5000 on a larger pool, the one miss
the cells'). The measure costs one exact pass over the cells the
sample visits (15 s at 182 of 1024 cells, 52 s at 689 at 1M x 512 on two cores) and, where the codes
are rebuilt, their training and a second add (about 35 s at 1M).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Optional

import faiss
import numpy as np

from ..types import IdMap
from .build import VectorIndex, VectorSource, candidate_scores, knn, quantizer_centroids, rotation_of, training_sample
from .coverage import cell_of, centroids_of
from .files import add_vectors

LOG = logging.getLogger(__name__)

#: Share of sampled images whose answer the codes may change: the rank-1 target against exact search.
CODE_LOSS = 0.001
#: Shortlists tried, shortest first; the gallery's first codes try only :data:`FIRST_CODES_SHORTLISTS`
#: of them before finer codes are built (a longer re-rank costs more than a finer scan would). None is
#: shorter than 120: at 1M x 512 on the steep data 80 candidates passed the measure (0.05% of 4000
#: sampled answers changed) yet, on 5000 new mated probes, lost two rank-1 answers and made one
#: wrong-identity accept exact search does not make; 120 gave 160's answers there (16% faster in one
#: timing of the gallery's ranking at 35 cells; within the machine's noise in benchmarks/search_scale.py).
SHORTLISTS = (120, 160, 320, 640, 1000)
FIRST_CODES_SHORTLISTS = 3
#: Images sampled; under MIN_SAMPLE with another image of their identity the gallery keeps its codes.
SAMPLE = 4000
MIN_SAMPLE = 500
#: Bound on the (sampled image, vector) scores held at once when scoring the cells exactly.
_CHUNK_SCORES = 1 << 24


@dataclass(frozen=True)
class CodeLoss:
    """What the codes of one index lose on a sample: per shortlist, the share of sampled images whose
    best identity differs from the exact one within the cells visited."""

    pq_m: int
    nprobe: int
    sampled: int
    by_shortlist: dict

    def shortest(self, shortlists=SHORTLISTS) -> Optional[int]:
        """The shortest of ``shortlists`` whose loss is at most :data:`CODE_LOSS`, or None."""
        return next((s for s in shortlists if self.by_shortlist[s] <= CODE_LOSS), None)


def sample_with_mates(ids: np.ndarray, identities: np.ndarray, *, sample: int = SAMPLE, seed: int = 0) -> np.ndarray:
    """Positions in ``ids`` of up to ``sample`` records whose identity has another record."""
    _, code, count = np.unique(np.asarray(identities, dtype=object).astype(str), return_inverse=True,
                               return_counts=True)
    eligible = np.flatnonzero(count[code] >= 2)
    if len(eligible) <= sample:
        return eligible
    return np.sort(np.random.default_rng(seed).choice(eligible, sample, replace=False))


def exact_in_cells(index: VectorIndex, probe_ids: np.ndarray, probes: np.ndarray, nprobe: int,
                   vectors: VectorSource) -> np.ndarray:
    """Per probe, the id of the vector with the best exact score among those held by the ``nprobe``
    cells the probe visits, the probe's own record left out (-1 where the cells hold nothing else)."""
    held, held_cell = cell_of(index)
    nlist = faiss.extract_index_ivf(index.index).nlist
    scores = probes @ centroids_of(index).T
    if nprobe < nlist:
        visits = np.argpartition(-scores, nprobe - 1, axis=1)[:, :nprobe]
        by_cell = np.argsort(visits, axis=None, kind="stable")
        visitor = by_cell // nprobe
        visitor_starts = np.searchsorted(visits.ravel()[by_cell], np.arange(nlist + 1))
    best = np.full(len(probes), -np.inf, np.float32)
    best_id = np.full(len(probes), -1, np.int64)
    order = np.argsort(held_cell, kind="stable")
    starts = np.searchsorted(held_cell[order], np.arange(nlist + 1))
    for cell in range(nlist):
        members = held[order[starts[cell] : starts[cell + 1]]]
        if not len(members):
            continue
        who = visitor[visitor_starts[cell] : visitor_starts[cell + 1]] if nprobe < nlist else np.arange(len(probes))
        if not len(who):
            continue
        members = np.sort(members)
        x = vectors.gather(members)
        step = max(1, _CHUNK_SCORES // len(members))
        for s in range(0, len(who), step):
            q = who[s : s + step]
            part = probes[q] @ x.T
            own = np.minimum(np.searchsorted(members, probe_ids[q]), len(members) - 1)
            inside = np.flatnonzero(members[own] == probe_ids[q])
            part[inside, own[inside]] = -np.inf
            top = part.argmax(axis=1)
            value = part[np.arange(len(q)), top]
            better = value > best[q]
            best[q[better]], best_id[q[better]] = value[better], members[top[better]]
    return best_id


def code_loss(index: VectorIndex, probe_ids: np.ndarray, probes: np.ndarray, truth: np.ndarray,
              identity_of: IdMap, vectors: VectorSource, shortlists=SHORTLISTS) -> CodeLoss:
    """How often ``index``'s answer, with each of ``shortlists`` candidates scored exactly, names an
    identity other than ``truth`` (the identity codes of :func:`exact_in_cells`'s answers)."""
    depth = int(min(max(shortlists) + 1, index.ntotal))
    _, cand = index.search(probes, depth)  # no vectors: the codes' candidates, in the codes' order
    cand[cand == probe_ids[:, None]] = -1
    scores = candidate_scores(probes, cand, vectors)
    losses = {}
    for s in shortlists:
        top = cand[np.arange(len(cand)), scores[:, : s + 1].argmax(axis=1)]
        found = np.where(top >= 0, identity_of[np.maximum(top, 0)], -1)
        losses[s] = float(np.mean(found != truth))
    return CodeLoss(index.spec.pq_m, index.spec.nprobe, len(probes), losses)


def finer_pq_m(pq_m: int, d: int) -> Optional[int]:
    """Twice the sub-quantisers when they still divide ``d`` with at least 2 dimensions each, else None."""
    finer = 2 * pq_m
    return finer if d % finer == 0 and d // finer >= 2 else None


def trained_rotation(index: VectorIndex, sample: np.ndarray, pq_m: int) -> Optional[np.ndarray]:
    """An orthogonal (d, d) matrix under which ``pq_m`` 4-bit sub-quantisers fit the vectors they encode:
    FAISS's OPQ trained on the sample's residuals to their cells' centroids in the index's rotated space,
    composed with the index's rotation (so it applies to stored vectors). None without a rotation."""
    ours = rotation_of(index.index)
    if ours is None:
        return None
    d = index.spec.dim
    x = ours.apply(np.ascontiguousarray(sample, dtype=np.float32))
    _, cell = knn(faiss.extract_index_ivf(index.index).quantizer, x, 1)
    residuals = np.ascontiguousarray(x - quantizer_centroids(index.index)[cell[:, 0]])
    opq = faiss.OPQMatrix(d, pq_m)
    codes = faiss.ProductQuantizer(d, pq_m, 4)  # the codes the index scans, not OPQ's 8-bit default
    opq.pq = codes
    opq.train(residuals)
    ours_a = faiss.vector_to_array(ours.A).reshape(d, d)
    return faiss.vector_to_array(opq.A).reshape(d, d) @ ours_a


def _recoded(index: VectorIndex, ids: np.ndarray, vectors: VectorSource, pq_m: int, *, trained: bool,
             progress: Optional[bool]) -> VectorIndex:
    """``index``'s vectors under new codes: ``pq_m`` sub-quantisers, over a rotation trained for them or
    over the index's own."""
    sample = vectors.gather(ids[training_sample(len(ids), index.spec)])
    rotation = trained_rotation(index, sample, pq_m) if trained else None
    recoded = index.with_codes(pq_m, sample, rotation=rotation)
    add_vectors(recoded, np.sort(cell_of(index)[0]), vectors, progress=progress)
    return recoded


def with_measured_codes(index: VectorIndex, ids: np.ndarray, identities: np.ndarray, vectors: VectorSource, *,
                        recode: bool = True, progress: Optional[bool] = None, seed: int = 0) -> VectorIndex:
    """``index`` with its shortlist measured (see the module docstring), or, where its codes lose too
    much and ``recode`` allows, a new index over the same cells with a trained rotation or finer codes,
    holding the same vectors. Kept as it is for flat indexes and where too few images have a mate to measure."""
    if index.spec.kind == "flat" or index.ntotal == 0:
        return index
    started = time.perf_counter()
    ids = np.asarray(ids, dtype=np.int64)
    picked = sample_with_mates(ids, identities, seed=seed)
    if len(picked) < MIN_SAMPLE:
        return index
    _, code = np.unique(np.asarray(identities, dtype=object).astype(str), return_inverse=True)
    identity_of = IdMap(ids, code, int(ids.max(initial=-1)) + 1)
    probe_ids = ids[picked]
    probes = np.ascontiguousarray(vectors.gather(probe_ids), dtype=np.float32)
    reference = exact_in_cells(index, probe_ids, probes, index.spec.nprobe, vectors)
    truth = np.where(reference >= 0, identity_of[np.maximum(reference, 0)], -1)

    def measured(candidate: VectorIndex) -> CodeLoss:
        return code_loss(candidate, probe_ids, probes, truth, identity_of, vectors)

    loss = measured(index)
    finer = finer_pq_m(index.spec.pq_m, index.spec.dim) if recode else None
    first = SHORTLISTS[:FIRST_CODES_SHORTLISTS] if finer is not None else SHORTLISTS
    shortlist = loss.shortest(first)
    if shortlist is None and recode and rotation_of(index.index) is not None:
        LOG.info("PQ%dx4fs codes change %.2f%% of sampled answers at %d candidates; training a rotation for them",
                 loss.pq_m, 100 * loss.by_shortlist[first[-1]], first[-1])
        rotated = _recoded(index, ids, vectors, index.spec.pq_m, trained=True, progress=progress)
        rotated_loss = measured(rotated)
        LOG.info("with a trained rotation: %.2f%% at %d candidates", 100 * rotated_loss.by_shortlist[first[-1]], first[-1])
        if rotated_loss.shortest(first) is not None:
            index, loss = rotated, rotated_loss
            shortlist = loss.shortest(first)
    if shortlist is None and finer is not None:
        LOG.info("PQ%dx4fs codes change %.2f%% of sampled answers at %d candidates; building PQ%dx4fs codes",
                 loss.pq_m, 100 * loss.by_shortlist[first[-1]], first[-1], finer)
        index = _recoded(index, ids, vectors, finer, trained=False, progress=progress)
        loss = measured(index)
        shortlist = loss.shortest()
    if shortlist is None:
        shortlist = max(SHORTLISTS)
        LOG.warning("PQ%dx4fs codes change %.2f%% of sampled answers even at %d candidates (target %.1f%%)",
                    loss.pq_m, 100 * loss.by_shortlist[shortlist], shortlist, 100 * CODE_LOSS)
    index.spec = replace(index.spec, shortlist=shortlist)
    LOG.info("%s codes with %d candidates: %.2f%% of %d sampled answers changed (measured in %.0f s)",
             index.factory, shortlist, 100 * loss.by_shortlist[shortlist], loss.sampled, time.perf_counter() - started)
    return index
