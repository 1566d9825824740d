"""All-pairs inner products in blocks, so metrics over n samples never hold the n x n matrix."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..errors import InvalidInputError
from ..vectors import as_embeddings

#: Rows per block; a block holds BLOCK x n float32 scores.
BLOCK = 1024


def labelled_embeddings(embeddings, labels) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm float32 rows and integer class codes, one per row."""
    x = as_embeddings(embeddings, what="embeddings")
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise InvalidInputError(f"labels: got shape {labels.shape} for {len(x)} embeddings; give one label per row")
    _, codes = np.unique(labels.astype(str) if labels.dtype == object else labels, return_inverse=True)
    return x, codes.astype(np.int64)


def pair_blocks(x: np.ndarray, codes: np.ndarray, block: int = BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (scores, same_label) over all unordered pairs i < j, a block of rows at a time (flattened)."""
    n = len(x)
    for s in range(0, n - 1, block):
        e = min(s + block, n)
        S = x[s:e] @ x[s:].T
        same = codes[s:e, None] == codes[None, s:]
        rows = np.arange(e - s)[:, None]
        upper = np.arange(n - s)[None, :] > rows
        yield S[upper], same[upper]
