"""Checking and L2-normalising embedding matrices at the boundary, so inner product equals cosine."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .errors import InvalidInputError

#: Vectors whose norm is below this are treated as zero: they have no direction to compare.
MIN_NORM = 1e-6
#: A row whose norm is within this of 1 is already unit as far as float32 can tell (a float32
#: normalisation leaves it about 1e-7 off) and is kept bit for bit: dividing it again would move a
#: quarter of such rows by an ulp, so the same vector would score differently inside the gallery and out.
UNIT_TOLERANCE = 1e-6
#: Rows checked at a time, so a million-row matrix needs no full-size temporaries.
BLOCK = 65_536


def as_embeddings(x, *, dim: Optional[int] = None, what: str = "vectors") -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 (n, d) matrix of unit rows, or raise on bad input.

    Rows already of unit norm (within :data:`UNIT_TOLERANCE`) are returned as given, so normalising
    twice changes nothing and vectors normalised by an embedder are stored as it wrote them.

    Rejects non-2-D input, a dimension other than ``dim``, NaN or inf, and zero rows, naming the first
    offending row so the user can find it.
    """
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{what}: cannot be read as a float32 matrix ({e})") from None
    if x.ndim == 1 and dim is not None and x.shape[0] == dim:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidInputError(f"{what}: expected a 2-D (n, d) matrix, got shape {x.shape}")
    n, d = x.shape
    if n == 0:
        raise InvalidInputError(f"{what}: no rows given")
    if dim is not None and d != dim:
        raise InvalidInputError(f"{what}: dimension {d} does not match the gallery's dimension {dim}")
    finite = np.ones(n, bool)
    norms = np.empty(n, np.float64)
    for s in range(0, n, BLOCK):
        block = x[s : s + BLOCK]
        finite[s : s + BLOCK] = np.isfinite(block).all(axis=1)
        norms[s : s + BLOCK] = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(
            f"{what}: row {row} contains NaN or inf ({int((~finite).sum())} such rows); remove or fix them"
        )
    zero = norms < MIN_NORM
    if zero.any():
        row = int(np.flatnonzero(zero)[0])
        raise InvalidInputError(
            f"{what}: row {row} is a zero vector ({int(zero.sum())} such rows); it has no direction to compare"
        )
    out = np.array(x, dtype=np.float32, order="C", copy=True)
    scale = norms.astype(np.float32)
    scale[np.abs(norms - 1.0) <= UNIT_TOLERANCE] = 1.0  # x / 1 is x: those rows keep every bit
    out /= scale[:, None]
    return out


def as_labels(labels: Sequence, n: int, *, what: str = "identities") -> np.ndarray:
    """Return identity labels as a 1-D array of non-empty str, one per vector row."""
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 1:
        raise InvalidInputError(f"{what}: expected one label per row, got shape {arr.shape}")
    if len(arr) != n:
        raise InvalidInputError(f"{what}: got {len(arr)} labels for {n} vectors; give exactly one per row")
    out = np.empty(n, dtype=object)
    for i, v in enumerate(arr):
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        s = "" if v is None else str(v).strip()
        if not s:
            raise InvalidInputError(f"{what}: row {i} has an empty label")
        out[i] = s
    return out
