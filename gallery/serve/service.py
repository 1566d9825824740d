"""What the service does, without HTTP: each operation takes checked arguments and returns a JSON-ready dict.

The routes in :mod:`gallery.serve.app` parse a request, call one of these in a worker thread (they
block: decoding, face finding, FAISS) and send the dict. Answers carry the fields of the CLI's
``--json`` plus ``known`` (the open-set decision as a boolean) and the ``generation`` they were
computed on.
"""

from __future__ import annotations

import bisect
import io
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..calibration import calibrate as calibrate_on_probes
from ..calibration import calibrate_leave_out
from ..gallery import Gallery
from ..types import FaceResult, PhotoResult, SearchResult
from ..vectors import as_embeddings
from .limits import Limits
from .live import LiveGallery
from .photos import Upload, check_image, embed_uploads, warm_up as warm_up_faces
from .problems import ApiError

MAX_IDENTITY_CHARS = 256
MAX_PAGE = 1000


def result_dict(r: SearchResult) -> dict:
    return {**r.to_dict(), "known": r.identity is not None}


def face_dict(f: FaceResult) -> dict:
    return {"box": list(f.box), **result_dict(f.result)}


def photo_dict(p: PhotoResult) -> dict:
    return {"source": p.source, "error": p.error, "faces": [face_dict(f) for f in p.faces]}


def threshold_dict(g: Gallery, threshold: Optional[float]) -> dict:
    value, source = g.threshold(threshold)
    return {"value": value, "source": source}


def check_identity(identity: str) -> str:
    """An identity label as the gallery stores it (trimmed), or a 422 that says what is wrong with it."""
    name = str(identity).strip()
    if not name:
        raise ApiError(422, "identity: must not be empty")
    if len(name) > MAX_IDENTITY_CHARS:
        raise ApiError(422, f"identity: {len(name)} characters is over the limit of {MAX_IDENTITY_CHARS}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ApiError(422, "identity: must not contain control characters")
    return name


def as_matrix(rows: Sequence[Sequence[float]], what: str) -> np.ndarray:
    """JSON rows as a float32 matrix, refusing ragged rows (the library checks dimension and values)."""
    if len(rows) == 0:
        raise ApiError(422, f"{what}: no rows given")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise ApiError(422, f"{what}: rows have different lengths ({', '.join(map(str, sorted(widths)[:5]))})")
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)


def warm_up(live: LiveGallery) -> None:
    """Load what the first photo search would wait for (the encoder and the face detector)."""
    with live.reading() as g:
        photos = g.manifest.model_spec is not None
    if photos:
        warm_up_faces(live.encoder())


class Service:
    """The operations of `gallery serve` on one :class:`LiveGallery`, within :class:`Limits`."""

    def __init__(self, live: LiveGallery, limits: Limits):
        self.live = live
        self.limits = limits

    # ------------------------------------------------------------------ checks

    def check_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.limits.max_k:
            raise ApiError(422, f"k: must be an integer from 1 to {self.limits.max_k}, got {k!r}")
        return k

    def check_threshold(self, threshold: Optional[float]) -> Optional[float]:
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise ApiError(422, f"threshold: must be a cosine from -1 to 1, got {threshold!r}")
        return threshold

    def check_vectors(self, rows: Sequence[Sequence[float]], what: str = "vectors") -> np.ndarray:
        if len(rows) > self.limits.max_vectors:
            raise ApiError(413, f"{what}: {len(rows)} rows is over the limit of {self.limits.max_vectors} per request")
        return as_embeddings(as_matrix(rows, what), dim=self.live_dim(), what=what)

    def check_uploads(self, uploads: list[Upload]) -> list[Upload]:
        if not uploads:
            raise ApiError(422, "photos: no file parts in the request; send them as multipart form fields named photos")
        if len(uploads) > self.limits.max_photos:
            raise ApiError(413, f"photos: {len(uploads)} files is over the limit of {self.limits.max_photos} per request")
        for u in uploads:
            check_image(u, self.limits.max_pixels)
        return uploads

    def live_dim(self) -> int:
        with self.live.reading() as g:
            return g.dim

    # ------------------------------------------------------------------ search

    def search_vectors(self, rows, k: int, threshold: Optional[float]) -> dict:
        """Top-k identities and the open-set decision for each row."""
        k, threshold = self.check_k(k), self.check_threshold(threshold)
        x = self.check_vectors(rows)
        with self.live.reading() as g:
            results = g.search(x, k=k, threshold=threshold)
            return {"generation": g.manifest.generation, "threshold": threshold_dict(g, threshold),
                    "results": [result_dict(r) for r in results]}

    def search_photos(self, uploads: list[Upload], k: int, threshold: Optional[float]) -> dict:
        """Every face of every photo: its box, top-k identities and the decision, all faces in one search."""
        k, threshold = self.check_k(k), self.check_threshold(threshold)
        embedded = embed_uploads(self.check_uploads(uploads), self.live.encoder())
        vectors = [e.vectors for e in embedded if e.n_faces]
        with self.live.reading() as g:
            results = g.search(np.concatenate(vectors), k=k, threshold=threshold) if vectors else []
            generation, t = g.manifest.generation, threshold_dict(g, threshold)
        photos, at = [], 0
        for e in embedded:
            faces = tuple(FaceResult(f.box, results[at + i]) for i, f in enumerate(e.faces))
            at += e.n_faces
            photos.append(PhotoResult(e.photo.source, faces, e.error))
        return {"generation": generation, "threshold": t, "photos": [photo_dict(p) for p in photos]}

    # ------------------------------------------------------------------ enrolment and removal

    def enrol_vectors(self, identity: str, rows, sources: Optional[list[str]]) -> dict:
        identity = check_identity(identity)
        x = self.check_vectors(rows)
        if sources is not None and len(sources) != len(x):
            raise ApiError(422, f"sources: got {len(sources)} for {len(x)} vectors; give one per vector or none")
        ids, generation = self.live.change(lambda g: g.add_vectors(x, [identity] * len(x), sources=sources))
        return {"identity": identity, "generation": generation, "records": [int(i) for i in ids]}

    def enrol_photos(self, identity: str, uploads: list[Upload]) -> dict:
        """Enrol the largest face of each photo; photos without a face are reported, not enrolled."""
        identity = check_identity(identity)
        encoder = self.live.encoder()
        embedded = embed_uploads(self.check_uploads(uploads), encoder)
        outcome = [{"source": e.photo.source, "faces": e.n_faces, "boxes": [list(f.box) for f in e.faces],
                    "enrolled": e.n_faces > 0, "reason": None if e.n_faces else "no face found"} for e in embedded]
        chosen = [e for e in embedded if e.n_faces]
        if not chosen:
            raise ApiError(422, f"photos: no face found in any of the {len(embedded)} photos; nothing was enrolled")
        x = np.stack([e.vectors[0] for e in chosen])
        sources = [f"upload/{identity}/{e.photo.source}" for e in chosen]

        def enrol(g: Gallery):
            if g.manifest.model_fingerprint != encoder.fingerprint:
                raise ApiError(409, "the gallery's model changed while the photos were being encoded; send them again")
            return g.add_vectors(x, [identity] * len(x), sources=sources)

        ids, generation = self.live.change(enrol)
        return {"identity": identity, "generation": generation, "records": [int(i) for i in ids], "photos": outcome}

    def remove(self, identity: str) -> dict:
        """Remove an identity and erase its records, as `gallery remove` does."""
        name = str(identity).strip()

        def remove(g: Gallery) -> int:
            names = g.identities
            at = bisect.bisect_left(names, name)
            if at == len(names) or names[at] != name:
                raise ApiError(404, f"no such identity: {name!r}; nothing was removed")
            return g.remove([name])

        removed, generation = self.live.change(remove)
        return {"identity": name, "generation": generation, "removed_records": removed}

    # ------------------------------------------------------------------ reading

    def identities(self, offset: int, limit: int, prefix: str) -> dict:
        if offset < 0:
            raise ApiError(422, f"offset: must be >= 0, got {offset}")
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError(422, f"limit: must be from 1 to {MAX_PAGE}, got {limit}")
        table = self.live.identity_table()
        total, page = table.page(offset, limit, prefix)
        return {"generation": table.generation, "total": total, "offset": offset, "limit": limit, "prefix": prefix,
                "identities": page}

    def info(self) -> dict:
        with self.live.reading() as g:
            return {"generation": g.manifest.generation, **g.info()}

    def calibration(self) -> dict:
        with self.live.reading() as g:
            cal = g.calibration
            return {"generation": g.manifest.generation, "calibrated": cal is not None,
                    "threshold": threshold_dict(g, None), "identities": len(g.identities),
                    "calibration": cal.to_json() if cal is not None else None}

    def calibrate(self, target_fpir: float, *, holdout: float, seed: int,
                  probe_rows=None, probe_labels: Optional[list[Optional[str]]] = None) -> dict:
        """Measure the threshold for ``target_fpir`` on labelled probes, or by leaving identities out; store it."""
        if not 0.0 < target_fpir < 1.0:
            raise ApiError(422, f"target_fpir: must lie in (0, 1), got {target_fpir!r}")
        if (probe_rows is None) != (probe_labels is None):
            raise ApiError(422, "probe_vectors and probe_labels: give both or neither")
        x = self.check_vectors(probe_rows, "probe_vectors") if probe_rows is not None else None
        with self.live.reading() as g:
            if x is not None:
                labels = [None if lab in (None, "", "-") else str(lab) for lab in probe_labels]
                cal = calibrate_on_probes(g, x, labels, target_fpir=target_fpir)
            else:
                cal = calibrate_leave_out(g, target_fpir=target_fpir, holdout=holdout, seed=seed)
        _, generation = self.live.change(lambda g: g.set_calibration(cal), reopen=True)
        status = self.calibration()
        return {**status, "generation": generation}

    def thumbnail_png(self, record_id: int, size: int) -> bytes:
        if not 16 <= size <= 512:
            raise ApiError(422, f"size: must be from 16 to 512 pixels, got {size}")
        face = self.live.thumbnail(record_id, size)
        if face is None:
            raise ApiError(404, f"record {record_id}: no thumbnail (no such record, or its source photo is not on the server)")
        out = io.BytesIO()
        Image.fromarray(face).save(out, format="PNG")
        return out.getvalue()
