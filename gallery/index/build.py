"""VectorIndex: the gallery's FAISS index (flat or IVF-PQ with exact re-rank), its training, and its files.

The index files are FAISS's; the arithmetic that must run at the machine's matrix-multiply speed
does not go through FAISS's BLAS: flat search reads the vectors out of the ``IndexFlat`` and searches
them with :func:`~gallery.index.exact.exact_search`, and IVF training runs
:func:`~gallery.index.kmeans.spherical_kmeans` and hands FAISS the centroids.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Optional, Protocol

import faiss
import numpy as np

from ..errors import CorruptGalleryError, InvalidInputError
from ..store.files import write_atomic
from . import gpu as gpu_mod
from .exact import as_tensor, exact_search, rescored
from .kmeans import spherical_kmeans
from .spec import IndexSpec

LOG = logging.getLogger(__name__)

#: Training sample per IVF cell (FAISS's k-means uses at most 256 points per centroid).
TRAIN_POINTS_PER_CELL = 64
#: Answers within this of a query's best float32 score are rescored as exact search scores them: a
#: float32 sum over d=512 products of unit vectors errs by a few 1e-6, so no other answer can rank first.
RESCORE_MARGIN = 1e-4


class VectorSource(Protocol):
    """Anything that returns stored vectors by record id (the store's memory-mapped VectorTable)."""

    def gather(self, ids: np.ndarray) -> np.ndarray: ...

    def locate(self, ids: np.ndarray) -> Iterable[tuple[np.ndarray, np.ndarray]]: ...


class VectorIndex:
    """A FAISS inner-product index over record ids, with per-call search knobs.

    For ``ivfpq`` the product-quantised scores only choose candidates: ``rerank * k`` of them get exact
    cosine scores from the float vectors of a :class:`VectorSource`, so answers equal exact search
    whenever the true neighbours are among the candidates.
    """

    def __init__(self, index: faiss.Index, spec: IndexSpec, *, gpu: Optional[bool] = None):
        self.index = index
        self.spec = spec
        self._asked_gpu = gpu
        self._torch_device: Optional[str] = gpu_mod.torch_device(gpu) if gpu else None
        self._gpu = gpu_mod.use_gpu(gpu) if spec.kind != "flat" else False
        self._search_index: Optional[faiss.Index] = None
        self._exact: Optional[tuple] = None

    @classmethod
    def create(cls, spec: IndexSpec, *, gpu: Optional[bool] = None) -> "VectorIndex":
        index = faiss.index_factory(spec.dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
        return cls(index, spec, gpu=gpu)

    @property
    def _device(self) -> str:
        """torch's device for exact search and k-means, found on first use: reading a gallery's
        description (``gallery info``) need not import torch."""
        if self._torch_device is None:
            self._torch_device = gpu_mod.torch_device(self._asked_gpu)
        return self._torch_device

    @property
    def factory(self) -> str:
        """What this index holds, as a FAISS factory string: the spec's, less the rotation for an ivfpq
        file written before :attr:`~gallery.index.spec.IndexSpec.factory` named one, and ``OPQ{m}_{d}``
        where the codes measure replaced the random rotation with a trained one (the manifest describes
        the file, which an enrolment extends as it is)."""
        if self.spec.kind != "ivfpq":
            return self.spec.factory
        rotation = rotation_of(self.index)
        rest = self.spec.factory.split(",", 1)[1]
        if rotation is None:
            return rest
        if not isinstance(rotation, faiss.RandomRotationMatrix):  # FAISS stores a trained one as a LinearTransform
            return f"OPQ{self.spec.pq_m}_{self.spec.dim},{rest}"
        return self.spec.factory

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, sample: np.ndarray, *, seed: int = 1234) -> None:
        """Train the coarse quantizer (spherical k-means through :func:`exact_search`, as FAISS's own for an inner-product
        IVF) and then FAISS's PQ codebooks on ``sample``."""
        if self.is_trained:
            return
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        ivf = faiss.extract_index_ivf(self.index)
        LOG.info("training %s on %d vectors", self.factory, len(sample))
        rotation = rotation_of(self.index)
        if rotation is not None and not rotation.is_trained:
            rotation.init(seed)
        if ivf.quantizer.ntotal == 0:  # FAISS does not retrain a quantizer that holds nlist centroids
            cap = min(len(sample), ivf.nlist * ivf.cp.max_points_per_centroid)
            rows = np.random.default_rng(seed).choice(len(sample), cap, replace=False) if cap < len(sample) else slice(None)
            points = sample[rows] if rotation is None else rotation.apply(sample[rows])
            ivf.quantizer.add(spherical_kmeans(points, ivf.nlist, niter=ivf.cp.niter, seed=seed, device=self._device))
        ivf.cp.seed = seed
        self.index.train(sample)

    def with_codes(self, pq_m: int, sample: np.ndarray, *, rotation: Optional[np.ndarray] = None) -> "VectorIndex":
        """An empty ivfpq index with ``pq_m`` sub-quantisers trained on ``sample``, over this one's cells and
        rotation, or over ``rotation`` (an orthogonal (d, d) matrix, applied as ``x @ rotation.T``) where
        one is given: a rotation keeps every inner product, so the cells hold the same vectors (up to a
        float32 rounding of a tie) and every exact score is the same."""
        spec = replace(self.spec, pq_m=int(pq_m))
        if self.spec.kind != "ivfpq" or spec.dim % spec.pq_m:
            raise InvalidInputError(f"cannot give a {self.spec.kind} index of dimension {spec.dim} PQ{pq_m} codes")
        ours = rotation_of(self.index)
        centroids = quantizer_centroids(self.index)  # in the space of the cells: rotated where ``ours`` is
        if rotation is None and ours is not None and not isinstance(ours, faiss.RandomRotationMatrix):
            rotation = faiss.vector_to_array(ours.A).reshape(spec.dim, spec.dim)
        if rotation is not None:
            rotation = np.ascontiguousarray(rotation, dtype=np.float32)
            if ours is None or rotation.shape != (spec.dim, spec.dim):
                raise InvalidInputError(f"a trained rotation needs a rotated index and a {spec.dim} x {spec.dim} matrix")
            rest = self.spec.factory.split(",", 1)[1].replace(f"PQ{self.spec.pq_m}x", f"PQ{pq_m}x")
            out = VectorIndex(faiss.index_factory(spec.dim, f"OPQ{pq_m}_{spec.dim},{rest}", faiss.METRIC_INNER_PRODUCT),
                              spec, gpu=self._asked_gpu)
            theirs = rotation_of(out.index)
            faiss.copy_array_to_vector(rotation.ravel(), theirs.A)
            theirs.is_trained = theirs.is_orthonormal = True
            centroids = ours.reverse_transform(centroids) @ rotation.T
        elif ours is None:  # a file written before the rotation: keep its cells, without one
            out = VectorIndex(faiss.index_factory(spec.dim, self.factory.replace(f"PQ{self.spec.pq_m}x", f"PQ{pq_m}x"),
                                                  faiss.METRIC_INNER_PRODUCT), spec, gpu=self._asked_gpu)
        else:
            out = VectorIndex.create(spec, gpu=self._asked_gpu)
            theirs = rotation_of(out.index)
            faiss.copy_array_to_vector(faiss.vector_to_array(ours.A), theirs.A)
            theirs.is_trained, theirs.is_orthonormal = True, ours.is_orthonormal
        faiss.extract_index_ivf(out.index).quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        out.train(sample)
        return out

    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Add vectors under their record ids; an IVF index keeps its trained quantizers (no retraining)."""
        self.index.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
        self._search_index = self._exact = None

    def remove(self, ids: np.ndarray) -> int:
        """Remove the vectors of ``ids``; returns how many were removed."""
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        removed = int(self.index.remove_ids(sel))
        self._search_index = self._exact = None
        return removed

    def _searcher(self) -> faiss.Index:
        if self._search_index is None:
            self._search_index = gpu_mod.to_gpu(self.index) if self._gpu else self.index
        return self._search_index

    def flat_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, ids) of a flat index, read out of its FAISS storage without a copy."""
        index = faiss.downcast_index(self.index)
        ids = faiss.vector_to_array(index.id_map) if isinstance(index, faiss.IndexIDMap) else None
        flat = faiss.downcast_index(index.index) if ids is not None else index
        n, d = int(flat.ntotal), int(flat.d)
        xb = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d) if n else np.empty((0, d), np.float32)
        return xb, ids if ids is not None else np.arange(n, dtype=np.int64)

    def _exact_searcher(self) -> tuple:
        if self._exact is None:
            xb, ids = self.flat_vectors()
            self._exact = (as_tensor(xb, self._device), ids)
        return self._exact

    def search(
        self,
        xq: np.ndarray,
        k: int,
        *,
        nprobe: Optional[int] = None,
        rerank: Optional[int] = None,
        vectors: Optional[VectorSource] = None,
        shortlist: Optional[int] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query, best first; missing slots have id -1 and score -inf.

        Flat search is exact (ties go to the vector stored first). For ivfpq, ``max(rerank * k,
        shortlist)`` candidates get exact scores from ``vectors``. ``nprobe``, ``rerank`` and
        ``shortlist`` apply to this call only; the index's defaults are left unchanged.
        """
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        k = int(min(k, self.ntotal))
        nq = len(xq)
        if k <= 0:
            return np.full((nq, 0), -np.inf, np.float32), np.full((nq, 0), -1, np.int64)
        if self.spec.kind == "flat":
            xb, ids = self._exact_searcher()
            return exact_search(xb, xq, k, ids=ids, device=self._device)
        nprobe = int(nprobe or self.spec.nprobe)
        rerank = int(rerank or self.spec.rerank)
        if nprobe < 1 or rerank < 1:
            raise InvalidInputError(f"nprobe and rerank must be >= 1, got nprobe = {nprobe}, rerank = {rerank}")
        if shortlist is not None and shortlist < 1:
            raise InvalidInputError(f"shortlist must be >= 1, got {shortlist}")
        params = faiss.SearchParametersIVF(nprobe=min(nprobe, self.spec.nlist))
        kc = int(min(self.spec.candidates(k, rerank, shortlist), self.ntotal)) if vectors is not None else k
        D, I = knn(self._searcher(), xq, kc, params)
        if vectors is None:
            return _mark_missing(D, I)
        return _rerank_exact(xq, I, k, vectors)

    def memory_bytes(self) -> int:
        """Bytes the index occupies in RAM (its serialised size, which FAISS keeps resident)."""
        return int(faiss.serialize_index(self.index).size)

    def trained_copy(self) -> "VectorIndex":
        """The same trained quantizers holding no vectors: what every shard of a sharded gallery adds its slice to."""
        copy = faiss.clone_index(self.index)
        copy.reset()
        return VectorIndex(copy, self.spec, gpu=self._gpu)

    def to_bytes(self) -> np.ndarray:
        """The index serialised (uint8), to ship to another process."""
        return faiss.serialize_index(self.index)

    @classmethod
    def from_bytes(cls, data: np.ndarray, spec: IndexSpec, *, gpu: Optional[bool] = None) -> "VectorIndex":
        return cls(faiss.deserialize_index(np.asarray(data, dtype=np.uint8)), spec, gpu=gpu)

    def save(self, path: Path, *, mode: Optional[int] = None) -> None:
        write_atomic(Path(path), lambda tmp: faiss.write_index(self.index, str(tmp)), mode=mode)

    @classmethod
    def load(cls, path: Path, spec: IndexSpec, *, gpu: Optional[bool] = None) -> "VectorIndex":
        path = Path(path)
        if not path.is_file():
            raise CorruptGalleryError(f"{path}: index file named in the manifest is missing; run `gallery rebuild-index`")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise CorruptGalleryError(f"{path}: cannot read FAISS index ({str(e).splitlines()[0]})") from None
        return cls(index, spec, gpu=gpu)


def rotation_of(index: faiss.Index) -> Optional[faiss.LinearTransform]:
    """The orthogonal rotation an IVF-PQ index applies before its cells and codes: a
    ``RandomRotationMatrix``, or the ``LinearTransform`` a trained one (OPQ, gallery.index.codes) is read
    back as; None for flat indexes and IVF-PQ indexes written before
    :attr:`~gallery.index.spec.IndexSpec.factory` named one."""
    index = faiss.downcast_index(index)
    if not isinstance(index, faiss.IndexPreTransform):
        return None
    return faiss.downcast_VectorTransform(index.chain.at(0))


def quantizer_centroids(index: faiss.Index) -> np.ndarray:
    """A copy of an IVF index's centroids (nlist, d), in the space of its cells (rotated, where it rotates),
    read in place: ``faiss.contrib.torch_utils`` may wrap ``reconstruct_n``."""
    ivf = faiss.extract_index_ivf(index)
    xb = faiss.rev_swig_ptr(faiss.downcast_index(ivf.quantizer).get_xb(), ivf.nlist * ivf.d)
    return xb.reshape(ivf.nlist, ivf.d).copy()


def knn(index: faiss.Index, xq: np.ndarray, k: int, params: Optional[faiss.SearchParameters] = None):
    """``index.search`` through FAISS's SWIG entry point.

    pytorch-metric-learning imports ``faiss.contrib.torch_utils``, which replaces ``Index.search`` for
    the whole process with a version that drops per-call parameters; this keeps nprobe per call.
    """
    n = len(xq)
    D = np.empty((n, k), dtype=np.float32)
    I = np.empty((n, k), dtype=np.int64)
    index.search_c(n, faiss.swig_ptr(xq), k, faiss.swig_ptr(D), faiss.swig_ptr(I), params)
    return D, I


def _mark_missing(D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    D = D.astype(np.float32, copy=True)
    D[I < 0] = -np.inf
    return D, I


def candidate_scores(xq: np.ndarray, cand: np.ndarray, vectors: VectorSource) -> np.ndarray:
    """float32 inner products of each query with its candidates' stored vectors (-inf where an id is -1).

    FAISS scores each (query, candidate) pair in place in the memory-mapped shards, on every thread it
    may use: gathering the candidates' vectors into one array first took 5x as long (1M x 512, 160
    candidates: 0.31 s against 0.06 s per 1000 queries on 2 cores, measured)."""
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    nq, nc = cand.shape
    scores = np.full((nq, nc), -np.inf, np.float32)
    part = np.empty_like(scores)
    for mat, rows in vectors.locate(cand):
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        mat = np.ascontiguousarray(mat, dtype=np.float32)  # a memory-mapped shard already is: not copied
        faiss.fvec_inner_products_by_idx(faiss.swig_ptr(part), faiss.swig_ptr(xq), faiss.swig_ptr(mat),
                                         faiss.swig_ptr(rows), xq.shape[1], nq, nc)  # -inf where rows is -1
        np.maximum(scores, part, out=scores)
    return scores


def _rerank_exact(xq: np.ndarray, cand: np.ndarray, k: int, vectors: VectorSource) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each query's candidates by exact inner product with their stored float vectors.

    The best answer's score is the one :func:`~gallery.index.exact.exact_search` gives that pair, so a
    flat and an ivfpq gallery decide a probe on the same score and an inclusive threshold set on exact
    search accepts through the index no stranger it rejected: FAISS's float32 sums run in another order
    and can land one ulp apart. Only the answers that could rank first are rescored: gathering all k
    answers' vectors for it cost a third of a search on a 1M steep gallery.
    """
    nq, nc = cand.shape
    scores = candidate_scores(xq, cand, vectors)
    kk = min(k, nc)
    top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < nc else np.tile(np.arange(kk), (nq, 1))
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    D = np.full((nq, k), -np.inf, np.float32)
    I = np.full((nq, k), -1, np.int64)
    D[:, :kk] = np.take_along_axis(scores, top, axis=1)
    I[:, :kk] = np.take_along_axis(cand, top, axis=1)
    I[~np.isfinite(D)] = -1
    q, j = np.nonzero((D >= D[:, :1] - RESCORE_MARGIN) & (I >= 0))  # the answers that could rank first
    if len(q):
        D[q, j] = rescored(xq[q], vectors.gather(I[q, j])[:, None, :])[:, 0]
        rows = np.unique(q)
        order = np.argsort(-D[rows], axis=1, kind="stable")
        D[rows], I[rows] = np.take_along_axis(D[rows], order, axis=1), np.take_along_axis(I[rows], order, axis=1)
    return D, I


def set_threads(n: int) -> None:
    """Threads FAISS, torch and the BLAS libraries (numpy's runs exact search) may use in this process
    (a shard actor shares its machine with the other shards)."""
    import torch
    from threadpoolctl import threadpool_limits

    n = max(1, int(n))
    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)
    threadpool_limits(n, user_api="blas")


def training_sample(n: int, spec: IndexSpec, *, seed: int = 1234) -> np.ndarray:
    """Row numbers of a random training sample for ``spec`` out of ``n`` vectors."""
    size = min(n, max(spec.nlist * TRAIN_POINTS_PER_CELL, 16 * 256))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)) if size < n else np.arange(n)


def build_index(
    spec: IndexSpec,
    sample: Optional[np.ndarray],
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    gpu: Optional[bool] = None,
    trained: Optional[VectorIndex] = None,
) -> VectorIndex:
    """Train on ``sample`` (unless ``trained`` is given, e.g. a checkpoint) and add (ids, x) ``batches``."""
    index = trained if trained is not None else VectorIndex.create(spec, gpu=gpu)
    if not index.is_trained:
        if sample is None:
            raise ValueError("an untrained index needs a training sample")
        index.train(sample)
    for ids, x in batches:
        index.add(ids, x)
    return index
