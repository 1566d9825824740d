"""Synthetic identity-clustered unit vectors, for tests and scale benchmarks (never a stand-in for a model).

Real face embeddings are not isotropic: their variance decays across directions, which widens the
impostor score distribution far beyond the 1/sqrt(d) of random vectors. Here identity centres are drawn
from a Gaussian whose variance along direction j is proportional to (j + 1) ** -spectrum_decay, and each
image is its centre plus noise (by default of the same shape), scaled so two images of one identity have cosine
``genuine`` on average. With the default decay 0.5 impostor scores have a standard deviation of about
0.11 at d=128 and 0.06 at d=512, genuine scores centre on ``genuine`` with a spread set by
``genuine_spread``.

How an identity's images vary is a separate choice, ``noise_decay``: by default the noise has the
identity spectrum's shape, so images wander most along the directions that also tell identities
apart (the hard case for an inverted file, whose cells follow those directions); ``noise_decay=0``
spreads it evenly over all directions, as within-identity variation that the top directions do not
carry. Both give the same mean genuine cosine; they differ in how stable an image's IVF cell is.

Identities also differ in how tight they are (one person photographs alike, another does not):
``tightness_spread`` scales each identity's noise by a log-normal factor ``exp(tightness_spread * z)``,
so some identities' images agree closely and others barely, at about the same median genuine
cosine (at 0.5 and d=512 the tightest tenth of identities have genuine cosine 0.88, the loosest
tenth 0.20, the median 0.59). A loose identity's images scatter over more IVF cells and lie closer to the open-set
threshold, the case a fixed nprobe or shortlist is most likely to miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from .errors import InvalidInputError

#: Rows generated per step, so million-vector sets never hold float64 temporaries.
CHUNK = 65_536


@dataclass
class SyntheticSet:
    """Gallery vectors with their identity labels, plus the generator state needed to draw probes."""

    vectors: np.ndarray
    identities: np.ndarray
    centres: np.ndarray
    scale: np.ndarray
    noise_shape: np.ndarray
    noise: float
    genuine_spread: float
    seed: int
    #: Log-normal spread of the identities' noise scale (0: every identity equally tight).
    tightness_spread: float = 0.0
    #: Each identity's noise scale factor (ones when ``tightness_spread`` is 0).
    tightness: Optional[np.ndarray] = None

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _images(centres: np.ndarray, scale: np.ndarray, noise, spread: float, rng: np.random.Generator) -> np.ndarray:
    """One image per centre; ``noise`` is a scalar or one noise scale per centre."""
    out = np.empty(centres.shape, np.float32)
    noise = np.broadcast_to(np.asarray(noise, np.float32).reshape(-1, 1), (len(centres), 1))
    for s in range(0, len(centres), CHUNK):
        c = centres[s : s + CHUNK]
        e = _unit(rng.standard_normal(c.shape, dtype=np.float32) * scale)
        sigma = noise[s : s + CHUNK] * np.exp(spread * rng.standard_normal((len(c), 1), dtype=np.float32))
        out[s : s + CHUNK] = _unit(c + sigma * e)
    return out


def synthetic_gallery(
    n_identities: int,
    images_per_identity: Union[int, tuple[int, int]] = 3,
    dim: int = 128,
    *,
    genuine: float = 0.6,
    genuine_spread: float = 0.25,
    spectrum_decay: float = 0.5,
    noise_decay: Optional[float] = None,
    tightness_spread: float = 0.0,
    seed: int = 0,
) -> SyntheticSet:
    """Draw ``n_identities`` identities with ``images_per_identity`` images each (an int, or a (lo, hi) range).

    ``genuine`` is the mean cosine between two images of one identity, in (0, 1); ``noise_decay``
    (default: ``spectrum_decay``) shapes how its images vary around it; ``tightness_spread`` makes
    identities differ in how much their images vary.
    """
    if not 0.0 < genuine < 1.0:
        raise InvalidInputError(f"genuine must lie in (0, 1), got {genuine}")
    if n_identities < 1 or dim < 2:
        raise InvalidInputError(f"need n_identities >= 1 and dim >= 2, got {n_identities} and {dim}")
    rng = np.random.default_rng(seed)
    scale = ((np.arange(dim) + 1.0) ** (-spectrum_decay / 2)).astype(np.float32)
    noise_decay = spectrum_decay if noise_decay is None else noise_decay
    noise_shape = ((np.arange(dim) + 1.0) ** (-noise_decay / 2)).astype(np.float32)
    centres = np.empty((n_identities, dim), np.float32)
    for s in range(0, n_identities, CHUNK):
        m = min(CHUNK, n_identities - s)
        centres[s : s + m] = _unit(rng.standard_normal((m, dim), dtype=np.float32) * scale)
    if isinstance(images_per_identity, (tuple, list)):
        lo, hi = images_per_identity
        counts = rng.integers(lo, hi + 1, size=n_identities)
    else:
        counts = np.full(n_identities, int(images_per_identity))
    owner = np.repeat(np.arange(n_identities), counts)
    # two images at noise sigma each have cosine ~ 1 / (1 + sigma^2)
    noise = float(np.sqrt(1.0 / genuine - 1.0))
    tightness = _tightness(n_identities, tightness_spread, np.random.default_rng((seed, 17)))
    vectors = _images(centres[owner], noise_shape, noise * tightness[owner], genuine_spread, rng)
    width = len(str(n_identities - 1))
    labels = np.asarray([f"id-{i:0{width}d}" for i in range(n_identities)], dtype=object)
    return SyntheticSet(vectors, labels[owner], centres, scale, noise_shape, noise, genuine_spread, seed,
                        tightness_spread, tightness)


def _tightness(n: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    if spread < 0:
        raise InvalidInputError(f"tightness_spread must be >= 0, got {spread}")
    if spread == 0:
        return np.ones(n, np.float32)
    return np.exp(spread * rng.standard_normal(n)).astype(np.float32)


def synthetic_probes(data: SyntheticSet, n_mated: int, n_nonmated: int = 0, *, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """New images of enrolled identities (mated) and of identities never enrolled (non-mated).

    Returns (vectors, labels) where a non-mated probe's label is None.
    """
    rng = np.random.default_rng((data.seed, seed))
    labels_of = {}
    for lab in data.identities:
        labels_of.setdefault(lab, len(labels_of))
    names = np.asarray(list(labels_of), dtype=object)
    who = rng.integers(0, len(data.centres), size=n_mated)
    tight = data.tightness if data.tightness is not None else np.ones(len(data.centres), np.float32)
    mated = _images(data.centres[who], data.noise_shape, data.noise * tight[who], data.genuine_spread, rng)
    strangers = _unit(rng.standard_normal((n_nonmated, data.dim), dtype=np.float32) * data.scale)
    stranger_tight = _tightness(n_nonmated, data.tightness_spread, np.random.default_rng((data.seed, seed, 17)))
    nonmated = _images(strangers.astype(np.float32), data.noise_shape, data.noise * stranger_tight,
                       data.genuine_spread, rng)
    vectors = np.concatenate([mated, nonmated]).astype(np.float32)
    labels = np.concatenate([names[who], np.full(n_nonmated, None, dtype=object)])
    return vectors, labels
