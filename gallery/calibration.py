"""Open-set threshold calibration at a target FPIR, and its extrapolation to other gallery sizes.

The threshold is the lowest score that at most ``target_fpir`` of non-mated searches reach
(:func:`gallery.metrics.fpir_threshold`). It holds for the gallery size it was measured at: a non-mated
search's best score is the maximum over N identities' scores, so it grows with N.

To carry it to another size, the upper tail of one identity's impostor score is modelled with a
generalised Pareto distribution (peaks over threshold): each non-mated search returns its ``k`` best
identity scores out of N. ``u`` is set so that there is about one exceedance per search (the tail
that decides large galleries) and no lower than any search's k-th score (so every exceedance is
observed); ``zeta = P(score > u)`` is (exceedances) / (searches * N) and the exceedances are fitted by
probability-weighted moments (Hosking and Wallis, 1987). For a gallery of N' identities the FPIR of
threshold t is ``1 - (1 - p(t)) ** N'`` with ``p(t) = zeta * (1 + xi * (t - u) / sigma) ** (-1 / xi)``,
which is solved for t. Bounded scores give ``xi < 0``, which the fit allows.

The tail model's own threshold at the calibration size differs from the measured one (the fit is of
one identity's tail, pooled over searches), and that error would be carried to every size. So the
threshold at N' is anchored on what was measured: ``t(N') = t_measured + t_tail(N') - t_tail(N)``, the
measured threshold plus the rise the tail predicts (method ``anchored-tail``). benchmarks/README.md
has the validation grid (galleries grown 4x, 10x and 20x, several seeds, two targets).

A calibration needs evidence: at least :data:`gallery.metrics.identification.MIN_FALSE_ACCEPTS`
false accepts allowed by the target among its non-mated searches, the rule evaluation uses too.
Below it, calibration refuses (or, when forced, records it); every calibration carries the exact 95%
interval of the FPIR it achieved.

The threshold holds for the index it was measured through: an approximate index that misses an
impostor answers "unknown" where exact search would accept it, so its FPIR at a threshold differs.
Calibration therefore searches with the gallery's own index and search settings, and
leave-identities-out builds its temporary gallery with the same index kind and parameters.

An inverted file's cells are measured for rank-1 when it is built, but an open-set decision needs
more where the threshold falls among mated scores: the cells must hold an image of the person that
clears it (gallery.index.coverage). So for an ivfpq gallery calibration sets a first threshold,
measures the cells that threshold needs on the gallery's own images, and where they are more than
the gallery visits, searches again over them and sets the threshold there: the calibration records
those cells (``nprobe`` of ``nlist``) and storing it raises the gallery's nprobe to them, so the
threshold holds for the index as it then searches.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from .errors import CorruptGalleryError, InvalidInputError
from .metrics.identification import (
    fnir,
    fpir,
    fpir_interval,
    fpir_threshold,
    lowest_supported_fpir,
    nonmated_needed,
    search_outcomes,
)
from .index.spec import MIN_IVFPQ_VECTORS, MIN_TRAIN_POINTS_PER_CELL
from .search import MODEL_THRESHOLDS

LOG = logging.getLogger(__name__)

#: Identity scores kept per non-mated search for the tail fit.
TAIL_K = 50
#: Fewer exceedances than this make the fit too uncertain to extrapolate with.
MIN_EXCEEDANCES = 30


@dataclass(frozen=True)
class TailFit:
    """Generalised Pareto tail of one identity's impostor score above ``u``."""

    u: float
    xi: float
    sigma: float
    zeta: float
    exceedances: int
    identities: int

    def threshold(self, n_identities: int, target_fpir: float) -> Optional[float]:
        """Predicted threshold for ``target_fpir`` at ``n_identities``; None when it falls below ``u``."""
        p = -np.expm1(np.log1p(-target_fpir) / n_identities)  # 1 - (1 - fpir) ** (1 / N)
        if p >= self.zeta:
            return None
        ratio = p / self.zeta
        if abs(self.xi) < 1e-9:
            return float(self.u - self.sigma * np.log(ratio))
        return float(self.u + self.sigma / self.xi * (ratio ** (-self.xi) - 1.0))


def gpd_pwm(y: np.ndarray) -> tuple[float, float]:
    """Shape xi and scale sigma of a generalised Pareto sample by probability-weighted moments."""
    y = np.sort(np.asarray(y, dtype=np.float64))
    n = len(y)
    a0 = y.mean()
    a1 = float((y * (1.0 - (np.arange(1, n + 1) - 0.35) / n)).mean())
    return 2.0 - a0 / (a0 - 2.0 * a1), 2.0 * a0 * a1 / (a0 - 2.0 * a1)


def fit_tail(top_scores: np.ndarray, n_identities: int) -> Optional[TailFit]:
    """Fit the tail from each non-mated search's best identity scores (rows, descending)."""
    top_scores = np.asarray(top_scores, dtype=np.float64)
    if top_scores.ndim != 2 or top_scores.shape[1] < 2 or top_scores.shape[1] >= n_identities:
        return None
    pooled = np.sort(top_scores.ravel())[::-1]
    u = float(max(pooled[min(len(top_scores), len(pooled) - 1)], top_scores[:, -1].max()))
    y = np.sort(top_scores[top_scores > u] - u)
    if len(y) < MIN_EXCEEDANCES:
        return None
    n = len(y)
    xi, sigma = gpd_pwm(y)
    if not np.isfinite(xi) or sigma <= 0:
        return None
    zeta = n / (len(top_scores) * n_identities)
    return TailFit(u=u, xi=float(xi), sigma=float(sigma), zeta=float(zeta), exceedances=n, identities=n_identities)


@dataclass(frozen=True)
class Calibration:
    """A calibrated open-set threshold with the data it came from (stored in the manifest)."""

    value: float
    target_fpir: float
    achieved_fpir: float
    fnir: Optional[float]
    model: str
    gallery_identities: int
    n_mated: int
    n_nonmated: int
    protocol: str
    tail: Optional[TailFit]
    created: float
    #: How the threshold is carried to other gallery sizes (see the module docstring).
    method: str = "anchored-tail"
    #: Exact 95% interval of the FPIR achieved on the calibration searches.
    fpir_low: Optional[float] = None
    fpir_high: Optional[float] = None
    #: "sufficient", or why not (a calibration forced past the evidence rule says so here).
    evidence: str = "sufficient"
    #: For an ivfpq gallery: the cells per query (of ``nlist``) the threshold was measured with.
    nprobe: Optional[int] = None
    nlist: Optional[int] = None

    def __post_init__(self) -> None:
        if self.fpir_low is None or self.fpir_high is None:  # written by a release before the interval
            lo, hi = fpir_interval(round(self.achieved_fpir * self.n_nonmated), self.n_nonmated)
            object.__setattr__(self, "fpir_low", lo)
            object.__setattr__(self, "fpir_high", hi)

    def to_json(self) -> dict:
        return asdict(self)

    def provenance(self, n_identities: int) -> dict:
        """Where a threshold from this calibration comes from, for every answer that uses it."""
        return {"target_fpir": self.target_fpir, "calibrated_identities": self.gallery_identities,
                "gallery_identities": int(n_identities), "method": self.method if self.tail is not None else "measured",
                "n_nonmated": self.n_nonmated, "n_mated": self.n_mated, "protocol": self.protocol,
                "achieved_fpir": self.achieved_fpir, "fpir_interval": [self.fpir_low, self.fpir_high],
                "evidence": self.evidence}

    @classmethod
    def from_json(cls, data: dict, *, source: Path | str = "manifest.json",
                  field: str = "thresholds.open_set") -> "Calibration":
        """Read what :meth:`to_json` wrote, every field type-checked: the manifest holding it is untrusted.

        A bad field raises a one-line :class:`CorruptGalleryError` naming ``source`` and the field.
        """
        values = _checked_fields(cls, data, field, source)
        tail = values["tail"]
        return cls(**{**values, "tail": TailFit(**_checked_fields(TailFit, tail, f"{field}.tail", source)) if tail else None})

    def nprobe_for(self, nlist: int) -> Optional[int]:
        """The cells per query the threshold was measured with, as a share of an index of ``nlist`` cells
        (leave-identities-out measures on a smaller gallery, which may have fewer); None when not measured."""
        if not self.nprobe or not self.nlist:
            return None
        return int(min(nlist, max(1, math.ceil(self.nprobe * nlist / self.nlist))))

    def threshold_for(self, n_identities: int) -> float:
        """The threshold a gallery of ``n_identities`` needs for the same FPIR: the measured one at the
        calibration size, plus the rise (or fall) the tail fit predicts from there."""
        if n_identities == self.gallery_identities or self.tail is None:
            return self.value
        predicted = self.tail.threshold(n_identities, self.target_fpir)
        if predicted is None:
            return self.value
        at_calibration = self.tail.threshold(self.gallery_identities, self.target_fpir)
        if at_calibration is None:  # the target sits below the fitted tail at the calibration size
            return max(self.value, predicted) if n_identities > self.gallery_identities else self.value
        return float(min(1.0, max(-1.0, self.value + predicted - at_calibration)))


def _checked_fields(cls: type, data: object, field: str, source: Path | str) -> dict:
    """``data`` as keyword arguments of dataclass ``cls``: every field present, of its annotated type, no other."""
    def damaged(name: str, what: str) -> CorruptGalleryError:
        return CorruptGalleryError(f"{source}: {name} {what}; the file was edited or damaged")

    def short(value: object) -> str:
        return repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."

    if not isinstance(data, dict):
        raise damaged(field, f"is {short(data)}, expected a JSON object")
    kinds = {f.name: str(f.type) for f in fields(cls)}
    has_default = {f.name for f in fields(cls) if f.default is not MISSING}
    for key in data:
        if key not in kinds:
            raise damaged(f"{field}.{key}", f"is not a field of {field} (fields: {', '.join(kinds)})")
    for key, kind in kinds.items():
        if key not in data:
            if key in has_default:  # added by a later release: older manifests do not have it
                continue
            raise damaged(f"{field}.{key}", "is missing")
        value, optional = data[key], kind.startswith("Optional[")
        base = kind[len("Optional["):-1] if optional else kind
        if value is None and optional:
            continue
        if base == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            expected = "a finite number"
        elif base == "int":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            expected = "an integer >= 0"
        elif base == "str":
            ok, expected = isinstance(value, str), "a string"
        else:  # a nested dataclass (the tail fit), checked by its own from_json
            ok, expected = isinstance(value, dict), "a JSON object"
        if not ok:
            raise damaged(f"{field}.{key}", f"is {short(value)}, expected {expected}" + (" or null" if optional else ""))
    return dict(data)


class InsufficientEvidenceError(InvalidInputError):
    """Too few non-mated searches for the target FPIR (see :func:`gallery.metrics.nonmated_needed`)."""


def evidence_rule(n_nonmated: int, target_fpir: float, *, allow_few: bool) -> str:
    """"sufficient" when ``n_nonmated`` searches support ``target_fpir``; else refuse, or with ``allow_few``
    say why not (it is stored in the calibration)."""
    needed = nonmated_needed(target_fpir)
    if n_nonmated >= needed:
        return "sufficient"
    lowest = lowest_supported_fpir(n_nonmated)
    supports = f"which support FPIR >= {lowest:.2g}" if lowest is not None else "which support no target FPIR"
    why = (f"FPIR {target_fpir:g} needs at least {needed:,} non-mated searches; these probes give {n_nonmated:,}, "
           f"{supports}")
    if not allow_few:
        more = f"choose --target-fpir {lowest:.2g} or more, " if lowest is not None and lowest < 1 else ""
        raise InsufficientEvidenceError(f"calibration refused: {why}. Add probes of people not enrolled, {more}"
                                        "or pass --allow-few-searches (allow_few=True), which the calibration records")
    LOG.warning("calibrating on too little evidence: %s", why)
    return f"insufficient, forced: {why}"


def _measure(gallery, vectors, labels, target_fpir: float, protocol: str, report_identities: int,
             allow_few: bool) -> Calibration:
    enrolled = set(gallery.identities)
    k = min(TAIL_K, len(enrolled))
    results = gallery.search(vectors, k=k, threshold=1.0)
    out = search_outcomes(results, labels, enrolled)
    if len(out.nonmated_best) == 0:
        raise InsufficientEvidenceError("calibration needs non-mated searches: probes whose identity is not enrolled")
    evidence = evidence_rule(len(out.nonmated_best), target_fpir, allow_few=allow_few)
    t = fpir_threshold(out.nonmated_best, target_fpir)
    spec = gallery.index_spec
    nprobe = spec.nprobe if spec is not None and spec.kind == "ivfpq" else None
    cells = gallery.cells_for_threshold(t) if nprobe is not None else None
    if cells is not None and cells > nprobe:
        LOG.info("the threshold %.6f needs %d of %d cells per query (the gallery visits %d): measuring again there",
                 t, cells, spec.nlist, nprobe)
        nprobe = cells
        results = gallery.search(vectors, k=k, threshold=1.0, nprobe=nprobe)
        out = search_outcomes(results, labels, enrolled)
        t = fpir_threshold(out.nonmated_best, target_fpir)
    default = MODEL_THRESHOLDS.get(gallery.model)
    if default is not None and t < default.value:
        LOG.warning("the calibrated threshold %.6f is below %s's measured default %.4f (%s)", t, gallery.model,
                    default.value, default.evidence)
    nonmated = [r for r, lab in zip(results, labels) if lab is None or str(lab) not in enrolled]
    top = np.asarray([[m.score for m in r.matches] for r in nonmated if len(r.matches) == k]) if k > 1 else np.empty((0, 0))
    achieved = fpir(out.nonmated_best, t)
    lo, hi = fpir_interval(int(np.sum(out.nonmated_best >= t)), len(out.nonmated_best))
    return Calibration(
        fpir_low=lo,
        fpir_high=hi,
        evidence=evidence,
        value=t,
        target_fpir=float(target_fpir),
        achieved_fpir=achieved,
        fnir=fnir(out, t) if len(out.mated_rank) else None,
        model=gallery.model,
        gallery_identities=report_identities,
        n_mated=int(len(out.mated_rank)),
        n_nonmated=int(len(out.nonmated_best)),
        protocol=protocol,
        tail=fit_tail(top, len(enrolled)) if len(top) else None,
        created=time.time(),
        nprobe=nprobe,
        nlist=spec.nlist if nprobe is not None else None,
    )


def calibrate(gallery, vectors, labels: Sequence[Optional[str]], *, target_fpir: float = 1e-3,
              allow_few: bool = False) -> Calibration:
    """Calibrate on labelled probes: those whose label is enrolled are mated searches, the rest non-mated.

    Refuses (:class:`InsufficientEvidenceError`) when there are too few non-mated searches for the
    target, unless ``allow_few``, which the calibration then records.
    """
    if len(vectors) != len(labels):
        raise InvalidInputError(f"probes: got {len(labels)} labels for {len(vectors)} vectors")
    return _measure(gallery, vectors, list(labels), target_fpir, "probes", len(gallery.identities), allow_few)


@contextlib.contextmanager
def leave_identities_out(gallery, *, holdout: float = 0.2, seed: int = 0) -> Iterator[tuple]:
    """A temporary gallery without some identities, and probes: (sub_gallery, probe_vectors, probe_labels).

    A random ``holdout`` fraction of identities is set aside: their images are the non-mated searches.
    Of the remaining identities, those with two or more images lend one image each as a mated search.
    """
    if not 0.0 < holdout < 1.0:
        raise InvalidInputError(f"holdout must lie in (0, 1), got {holdout}")
    ids, identities = gallery.records()
    names, codes = np.unique(identities, return_inverse=True)
    if len(names) < 10:
        raise InvalidInputError(f"{gallery.root}: leave-identities-out needs at least 10 identities, found {len(names)}")
    rng = np.random.default_rng(seed)
    held = np.zeros(len(names), bool)
    held[rng.choice(len(names), size=max(1, int(round(holdout * len(names)))), replace=False)] = True
    first_of = np.full(len(names), -1)
    counts = np.bincount(codes)
    for row in rng.permutation(len(ids)):
        c = codes[row]
        if not held[c] and counts[c] >= 2 and first_of[c] < 0:
            first_of[c] = row
    probe_rows = np.r_[first_of[first_of >= 0], np.flatnonzero(held[codes])]
    keep = np.ones(len(ids), bool)
    keep[probe_rows] = False
    vectors = gallery.vectors_of(ids)
    with tempfile.TemporaryDirectory(prefix="gallery-leave-out-") as tmp:  # the gallery's own class builds the copy
        sub = type(gallery).from_vectors(vectors[keep], identities[keep], tmp, model=gallery.model, progress=False,
                                         **same_index(gallery.index_spec, int(keep.sum())))
        yield sub, vectors[probe_rows], [str(identities[r]) for r in probe_rows]


def same_index(spec, n: int) -> dict:
    """``from_vectors`` arguments that build a gallery of ``n`` vectors with ``spec``'s index kind and
    search settings (its nlist too, when ``n`` vectors can still train it; else the default for ``n``)."""
    if spec is None:
        return {}
    if spec.kind != "ivfpq" or n < MIN_IVFPQ_VECTORS:
        return {"index": "flat"}
    nlist = spec.nlist if spec.nlist * MIN_TRAIN_POINTS_PER_CELL <= n else None
    nprobe = spec.nprobe if nlist else None
    return {"index": "ivfpq", "nlist": nlist, "pq_m": spec.pq_m, "nprobe": nprobe, "rerank": spec.rerank}


def calibrate_leave_out(gallery, *, target_fpir: float = 1e-3, holdout: float = 0.2, seed: int = 0,
                        allow_few: bool = False) -> Calibration:
    """Calibrate on the gallery itself with :func:`leave_identities_out`.

    The threshold is measured on the smaller temporary gallery; the tail fit carries it to the real size.
    The held-out identities' images are the non-mated searches, so the evidence rule applies to them.
    """
    with leave_identities_out(gallery, holdout=holdout, seed=seed) as (sub, vectors, labels):
        return _measure(sub, vectors, labels, target_fpir, "leave-identities-out", len(sub.identities), allow_few)
