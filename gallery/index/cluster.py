"""k-means on unit vectors with FAISS, for clustering metrics (NMI) and analysis."""

from __future__ import annotations

import faiss
import numpy as np

from .build import knn


def kmeans_assign(x: np.ndarray, k: int, *, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Cluster rows of ``x`` into ``k`` clusters (spherical k-means) and return each row's cluster."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = int(min(k, len(x)))
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, len(x) // max(k, 1) + 1))
    km.train(x)
    _, assign = knn(km.index, x, 1)
    return assign[:, 0].astype(np.int64)
