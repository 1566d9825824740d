"""Plain result and record types shared by the store, the index and the search layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

import numpy as np


class Match(NamedTuple):
    """One enrolled identity in a ranked answer.

    ``score`` is a cosine similarity in [-1, 1] (higher is more alike); ``records`` are the ids of the
    gallery records (images) of this identity that were found, best first, with their ``record_scores``.
    A named tuple, not a dataclass: a search builds k of them per probe, and a frozen dataclass cost
    about 1.2 us each against 0.4-0.6 us, some 5% of a search at 1M x 512 (a profile of Gallery.search).
    """

    identity: str
    score: float
    records: tuple[int, ...] = ()
    record_scores: tuple[float, ...] = ()
    #: For a photo gallery: the source photo of each of ``records`` (the best first), as enrolled.
    sources: tuple[str, ...] = ()

    def with_sources(self, sources: Sequence[str]) -> "Match":
        return self._replace(sources=tuple(sources))


@dataclass(frozen=True)
class SearchResult:
    """The answer for one query vector.

    ``identity`` is the decided identity, or ``None`` ("unknown") when the best score is below
    ``threshold``: a match is ``score >= threshold``. ``provenance`` says where the threshold came from
    (for a calibrated one: target FPIR, gallery sizes, evidence; for the fallback: a warning and the fix).
    """

    matches: tuple[Match, ...]
    threshold: float
    threshold_source: str
    provenance: dict = field(default_factory=dict)

    @property
    def best(self) -> Optional[Match]:
        return self.matches[0] if self.matches else None

    @property
    def identity(self) -> Optional[str]:
        best = self.best
        if best is None or best.score < self.threshold:
            return None
        return best.identity

    @property
    def is_known(self) -> bool:
        return self.identity is not None

    @property
    def margin(self) -> Optional[float]:
        """How far the best identity's score is ahead of the second's (None with fewer than two)."""
        if len(self.matches) < 2:
            return None
        return self.matches[0].score - self.matches[1].score

    def to_dict(self) -> dict:
        return {
            "identity": self.identity,
            "score": self.best.score if self.best is not None else None,
            "margin": self.margin,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "threshold_provenance": self.provenance,
            "matches": [
                {
                    "identity": m.identity,
                    "score": m.score,
                    "records": list(m.records),
                    "record_scores": list(m.record_scores),
                    **({"source": m.sources[0], "sources": list(m.sources)} if m.sources else {}),
                }
                for m in self.matches
            ],
        }


@dataclass(frozen=True)
class FaceResult:
    """The answer for one face in a probe photo: where it is (``(left, top, right, bottom)`` pixels) and who."""

    box: tuple[int, int, int, int]
    result: SearchResult

    @property
    def identity(self) -> Optional[str]:
        return self.result.identity

    def to_dict(self) -> dict:
        return {"box": list(self.box), **self.result.to_dict()}


@dataclass(frozen=True)
class PhotoResult:
    """Every face found in one probe photo, largest first, or the reason the photo could not be read."""

    source: str
    faces: tuple[FaceResult, ...]
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return {"source": self.source, "error": self.error, "faces": [f.to_dict() for f in self.faces]}


@dataclass
class Records:
    """A batch of embedding records, column-wise, as the store writes and reads them.

    ``vectors`` are float32 and L2-normalised; ``ids`` are stable int64 record ids assigned by the gallery.
    """

    ids: np.ndarray
    identities: np.ndarray
    sources: np.ndarray
    face_index: np.ndarray
    vectors: np.ndarray
    model: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: Sequence[int] | np.ndarray | slice) -> "Records":
        return Records(
            ids=self.ids[rows],
            identities=self.identities[rows],
            sources=self.sources[rows],
            face_index=self.face_index[rows],
            vectors=self.vectors[rows],
            model=self.model,
        )

    @classmethod
    def concat(cls, parts: Sequence["Records"]) -> "Records":
        """The rows of ``parts`` one after another (the model of the first)."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            ids=np.concatenate([p.ids for p in parts]),
            identities=np.concatenate([p.identities for p in parts]),
            sources=np.concatenate([p.sources for p in parts]),
            face_index=np.concatenate([p.face_index for p in parts]),
            vectors=np.concatenate([p.vectors for p in parts]),
            model=parts[0].model,
        )


class IdMap:
    """Record id -> value (a row, an identity code), -1 for ids it does not hold.

    Record ids are assigned in sequence, so when the ids held cover most of the id range a dense array
    (4 bytes per id ever assigned) answers in O(1); a shard of a sharded gallery holds a small part of
    the range, and keeps its ids sorted instead (12 bytes per id held), answering by binary search.
    """

    def __init__(self, ids: np.ndarray, values: np.ndarray, capacity: int):
        ids = np.asarray(ids, dtype=np.int64)
        values = np.asarray(values)
        dtype = np.int32 if (len(values) == 0 or int(values.max(initial=0)) < 2**31 - 1) else np.int64
        self.capacity = int(max(capacity, 0))
        self.dense = self.capacity <= 3 * len(ids) + 1024
        if self.dense:
            self._table = np.full(self.capacity, -1, dtype=dtype)
            self._table[ids] = values
        else:
            order = np.argsort(ids, kind="stable")
            self._keys, self._values = ids[order], values[order].astype(dtype)

    @property
    def nbytes(self) -> int:
        return int(self._table.nbytes if self.dense else self._keys.nbytes + self._values.nbytes)

    def __getitem__(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if self.dense:
            if self.capacity == 0:
                return np.full(ids.shape, -1, np.int64)
            inside = (ids >= 0) & (ids < self.capacity)
            return np.where(inside, self._table[np.where(inside, ids, 0)], -1)
        if len(self._keys) == 0:
            return np.full(ids.shape, -1, np.int64)
        at = np.minimum(np.searchsorted(self._keys, ids), len(self._keys) - 1)
        return np.where(self._keys[at] == ids, self._values[at], -1)
