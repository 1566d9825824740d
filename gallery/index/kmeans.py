"""Spherical k-means whose assignment step is :func:`exact_search`: IVF training at sgemm speed.

FAISS trains an inner-product IVF's coarse quantizer with spherical k-means (``cp.spherical``)
whose every iteration is a flat search of the sample against the centroids, through the same
BLAS as flat search. This is that algorithm with torch's matmul for the search; the centroids are
then handed to FAISS (a quantizer that already holds ``nlist`` centroids is not retrained).
"""

from __future__ import annotations

import logging

import numpy as np

from .exact import as_tensor, exact_search

LOG = logging.getLogger(__name__)


def spherical_kmeans(x: np.ndarray, k: int, *, niter: int = 10, seed: int = 1234, device: str = "cpu") -> np.ndarray:
    """``k`` unit-norm centroids of the rows of ``x`` (each row assigned to its highest inner product).

    Starts from ``k`` distinct random rows; a centroid left empty takes over half of the largest
    cluster (FAISS's split), so every centroid keeps points.

    >>> x = np.eye(3, dtype=np.float32).repeat(5, axis=0)
    >>> sorted(spherical_kmeans(x, 3, niter=3).argmax(1).tolist())
    [0, 1, 2]
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n, got k = {k}, n = {n}")
    rng = np.random.default_rng(seed)
    C = x[np.sort(rng.choice(n, size=k, replace=False))].copy()
    xt = as_tensor(x, device)
    for it in range(niter):
        assign = exact_search(C, xt, 1, device=device)[1][:, 0]
        C = _means(xt, assign, k)
        counts = np.bincount(assign, minlength=k)
        _split_empty(C, counts, x, assign, rng)
        C /= np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    return C


def _means(xt, assign: np.ndarray, k: int) -> np.ndarray:
    import torch

    C = torch.zeros((k, xt.shape[1]), dtype=xt.dtype, device=xt.device)
    C.index_add_(0, torch.from_numpy(assign).to(xt.device), xt)
    return C.cpu().numpy()


def _split_empty(C: np.ndarray, counts: np.ndarray, x: np.ndarray, assign: np.ndarray, rng) -> None:
    """Give every empty centroid a point of the currently largest cluster, nudged apart from its centre."""
    for c in np.flatnonzero(counts == 0):
        big = int(np.argmax(counts))
        members = np.flatnonzero(assign == big)
        C[c] = x[rng.choice(members)] + 1e-3 * rng.standard_normal(x.shape[1]).astype(np.float32)
        counts[c], counts[big] = counts[big] // 2, counts[big] - counts[big] // 2
