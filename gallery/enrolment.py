"""What gets enrolled: batches of records with new ids, shards written as they fill, the index extended.

An enrolment runs inside a :class:`~gallery.store.change.GalleryChange`, which holds the writer lock,
reads the manifest under it and commits; rerunning the same enrolment after an interruption resumes
after the shards it had written. Photo builds checkpoint every few seconds, so a Ctrl-C loses little.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import InvalidInputError, ModelMismatchError
from .index import choose_index_spec
from .index.codes import with_measured_codes
from .index.coverage import with_measured_nprobe
from .index.files import add_vectors, load_index, save_index, trained_index
from .progress import notify, progress_bar
from .store import Manifest
from .store.change import GalleryChange
from .store.reports import append_source_log, erase_source_logs, read_source_log, source_log_path
from .types import Records
from .vectors import as_labels
from .wording import counted

LOG = logging.getLogger(__name__)


def fingerprint(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        if isinstance(p, np.ndarray) and p.dtype != object:
            h.update(np.ascontiguousarray(p).view(np.uint8).reshape(-1))
        elif isinstance(p, np.ndarray):
            h.update("\0".join(map(str, p.tolist())).encode("utf-8"))
        else:
            h.update(repr(p).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def records_batch(x: np.ndarray, identities, sources, face_index) -> Records:
    n = len(x)
    labels = as_labels(identities, n)
    if sources is None:
        src = np.full(n, "", dtype=object)
    else:
        src = np.asarray([("" if s is None else str(s)) for s in sources], dtype=object)
        if len(src) != n:
            raise InvalidInputError(f"sources: got {len(src)} for {n} vectors; give exactly one per row")
    if face_index is None:
        faces = np.zeros(n, np.int32)
    else:
        faces = np.asarray(face_index, dtype=np.int32)
        if faces.shape != (n,):
            raise InvalidInputError(f"face_index: got shape {faces.shape} for {n} vectors; give one per row")
    return Records(ids=np.full(n, -1, np.int64), identities=labels, sources=src, face_index=faces, vectors=x)


def _creation_key(create: Optional[Manifest]) -> tuple:
    if create is None:
        return ()
    return (create.model, create.dim, create.shard_format, create.rows_per_shard, create.model_fingerprint)


class Enrolment:
    """Records in, ids assigned, shards written as they fill; :meth:`commit` extends the index and commits.

    A gallery that has an index keeps it and its trained quantizers (no retraining); a new one gets
    an index chosen by ``index_params`` (``kind`` "auto" by default) and trained on a sample.
    """

    def __init__(self, change: GalleryChange, *, index_params: Optional[dict] = None, gpu: Optional[bool] = None,
                 progress: Optional[bool] = None, total: Optional[int] = None):
        self.change = change
        self.manifest = change.manifest
        self.index_params = dict(index_params or {})
        self.gpu, self.progress = gpu, progress
        self._pending: list[Records] = []
        self._next_id = self.manifest.next_id + change.rows_written
        self._bar = progress_bar(progress, total=total, initial=change.rows_written, desc="writing shards", unit="vec")

    @property
    def rows_written(self) -> int:
        """Rows already in shards, including those an interrupted run had written."""
        return self.change.rows_written

    def written_sources(self) -> set[str]:
        """Sources of the rows already written (to skip them when resuming a build from files)."""
        store = self.change.store
        return {str(s) for r in store.iter_records(self.change.new_shards, columns=["source"]) for s in r.sources}

    def write(self, batch: Records) -> None:
        """Queue records (ids are assigned here) and write every full shard."""
        if len(batch) == 0:
            return
        batch = batch.take(slice(None))
        batch.ids = self._next_id + np.arange(len(batch), dtype=np.int64)
        batch.model = self.manifest.model
        self._next_id += len(batch)
        self._pending.append(batch)
        while sum(len(b) for b in self._pending) >= self.manifest.rows_per_shard:
            self._write_shard(self.manifest.rows_per_shard)

    def flush(self) -> None:
        """Write whatever is queued as a (possibly short) shard, so an interruption loses none of it."""
        if self._pending:
            self._write_shard(sum(len(b) for b in self._pending))

    def _write_shard(self, rows: int) -> None:
        queued = Records.concat(self._pending)
        part, rest = queued.take(slice(0, rows)), queued.take(slice(rows, None))
        self._pending = [rest] if len(rest) else []
        self.change.write_shard(part)
        self._bar.update(len(part))

    def commit(self) -> Manifest:
        """Write the last shard, add the new rows to the index (training one if needed), commit the change."""
        self.flush()
        self._bar.close()
        change, m = self.change, self.manifest
        root, store, shards = change.root, change.store, change.new_shards
        params = dict(self.index_params)
        measure = m.index is None  # a new index: its nprobe and codes come from the labels, unless given
        records = list(store.iter_records(shards, columns=["id", "identity"] if measure else ["id"]))
        id_lists = [r.ids for r in records]
        vectors = store.vectors(shards, m.dim, ids=id_lists)
        ids = np.concatenate(id_lists) if id_lists else np.empty(0, np.int64)
        if m.index is not None:
            index = load_index(root, m.index, m.dim, gpu=self.gpu)
            trained_on = m.index.trained_on
        else:
            spec = choose_index_spec(max(len(ids), 1), m.dim, params.pop("kind", "auto"), **params)
            checkpoint = change.journal.trained_index
            index, trained_on, name = trained_index(root, spec, ids, vectors, gpu=self.gpu, checkpoint=checkpoint,
                                                    seq=change.next_seq())
            if name is not None and name != checkpoint:
                change.keep(name)
        add_vectors(index, ids, vectors, progress=self.progress)
        if measure and records:
            labels = np.concatenate([r.identities for r in records])
            if not params.get("nprobe"):
                with_measured_nprobe(index, ids, labels, vectors)
            index = with_measured_codes(index, ids, labels, vectors, recode=not params.get("pq_m"),
                                        progress=self.progress)
        m.index = save_index(root, index, change.next_seq(), trained_on)
        return change.commit()


def enrol_batch(root: Path, batch: Records, *, create: Optional[Manifest] = None, replace: bool = False,
                wait: float = 0.0, group_access: bool = False, model: Optional[str] = None,
                index_params: Optional[dict] = None, gpu: Optional[bool] = None,
                progress: Optional[bool] = None) -> Manifest:
    """Enrol an in-memory batch into ``root`` (a new gallery when ``create`` is given); rerunning the same
    batch after an interruption resumes it. ``model`` is checked against the gallery's under the lock."""
    key = fingerprint("vectors", batch.vectors, batch.identities, batch.sources, batch.face_index,
                      _creation_key(create), sorted((index_params or {}).items()))
    with GalleryChange(root, operation="enrolment", key=key, create=create, replace=replace, wait=wait,
                       group_access=group_access, add_hint="Gallery.open(...).add_vectors (`gallery import-vectors` adds)",
                       replace_hint="overwrite=True (`gallery import-vectors --replace`)") as change:
        m = change.manifest
        if model is not None and model != m.model:
            raise ModelMismatchError(f"{root}: gallery holds {m.model!r} embeddings; vectors from model {model!r} "
                                     "cannot be mixed in")
        if batch.vectors.shape[1] != m.dim:
            raise ModelMismatchError(f"{root}: gallery holds {m.dim}-d embeddings, got {batch.vectors.shape[1]}-d vectors")
        run = Enrolment(change, index_params=index_params, gpu=gpu, progress=progress, total=len(batch))
        for s in range(run.rows_written, len(batch), m.rows_per_shard):
            run.write(batch.take(slice(s, s + m.rows_per_shard)))
        return run.commit()


#: How an enrolment photo with several faces is handled: enrol its largest face, all of them, or none.
FACE_POLICIES = ("largest", "all", "single")
#: A photo build writes what it has at least this often, so a crash loses at most this much work; the
#: commit merges these short shards into full ones.
CHECKPOINT_SECONDS = 2.0


def photo_outcome(item, faces: str) -> tuple[dict, list[int]]:
    """The report entry of one embedded photo and the indices of the faces to enrol."""
    photo = item.photo
    entry = {"source": photo.source, "identity": photo.identity, "faces": item.n_faces,
             "boxes": [list(f.box) for f in item.faces], "enrolled": [], "status": "enrolled", "reason": None}
    if item.error is not None:
        entry.update(status="skipped", reason="unreadable", error=item.error)
        return entry, []
    if item.n_faces == 0:
        entry.update(status="skipped", reason="no face found")
        return entry, []
    if item.n_faces > 1 and faces == "single":
        entry.update(status="skipped", reason="several faces")
        return entry, []
    chosen = list(range(item.n_faces)) if faces == "all" else [0]
    entry["enrolled"] = chosen
    return entry, chosen


def summarise(entries: list[dict], ignored: list[tuple[str, str]]) -> dict:
    skipped: dict[str, int] = {}
    for e in entries:
        if e["status"] != "enrolled":
            skipped[e["reason"]] = skipped.get(e["reason"], 0) + 1
    return {
        "images": len(entries),
        "faces": sum(e["faces"] for e in entries),
        "enrolled": sum(len(e["enrolled"]) for e in entries),
        "skipped": dict(sorted(skipped.items())),
        "ignored_files": len(ignored),
    }


def summary_line(summary: dict) -> str:
    """``9 images, 10 faces, 9 enrolled; skipped: 1 no face found; 2 non-image files ignored``."""
    text = f"{counted(summary['images'], 'image')}, {counted(summary['faces'], 'face')}, {summary['enrolled']} enrolled"
    if summary["skipped"]:
        text += "; skipped: " + ", ".join(f"{n} {why}" for why, n in summary["skipped"].items())
    if summary.get("ignored_files"):
        text += f"; {counted(summary['ignored_files'], 'non-image file')} ignored"
    return text


def passed_over(report: dict) -> dict[str, list[str]]:
    """The photos a build skipped and the files it ignored, by reason, in report order, so a person can be
    told their names (``{"unreadable": ["bob/2.jpg"], "no face found": [...], "not an image file": [...]}``)."""
    out: dict[str, list[str]] = {}
    for entry in report.get("sources") or []:
        if entry.get("status") == "skipped":
            out.setdefault(entry.get("reason") or "skipped", []).append(entry["source"])
    for entry in report.get("ignored") or []:
        out.setdefault(entry.get("reason") or "ignored", []).append(entry["file"])
    return out


def enrol_photos(
    root: Path,
    photos,
    encoder,
    *,
    create: Optional[Manifest] = None,
    replace: bool = False,
    wait: float = 0.0,
    group_access: bool = False,
    faces: str = "largest",
    detector: Optional[dict] = None,
    workers: Optional[int] = None,
    index_params: Optional[dict] = None,
    gpu: Optional[bool] = None,
    progress: Optional[bool] = None,
    engine: str = "local",
    address: Optional[str] = None,
) -> tuple[Manifest, dict]:
    """Embed and enrol a :class:`~gallery.embed.PhotoList` (into a new gallery when ``create`` is given);
    returns the new manifest and the build report.

    ``engine="ray"`` embeds on a Ray cluster (``address``, else ``RAY_ADDRESS``, else a local one); the
    shards and manifest are written here either way. Rerunning the same build after an interruption
    skips the photos it had already handled, and says so.
    """
    if faces not in FACE_POLICIES:
        raise InvalidInputError(f"faces must be one of {', '.join(FACE_POLICIES)}, got {faces!r}")
    detector = dict(detector or {})
    key = fingerprint("photos", [(p.source, p.identity) for p in photos.photos], faces, encoder.fingerprint,
                      sorted(detector.items()), _creation_key(create), sorted((index_params or {}).items()))
    with GalleryChange(root, operation="enrolment", key=key, create=create, replace=replace, wait=wait,
                       group_access=group_access, add_hint="`gallery add` (Gallery.add_photos)",
                       replace_hint="`gallery build --overwrite` (overwrite=True)") as change:
        m = change.manifest
        if m.model_fingerprint != encoder.fingerprint or m.dim != encoder.dim:
            raise ModelMismatchError(f"{root}: embeddings were made by {m.model!r} (fingerprint {m.model_fingerprint}); "
                                     f"{encoder.spec!r} has fingerprint {encoder.fingerprint} and cannot be mixed in")
        run = Enrolment(change, index_params=index_params, gpu=gpu, progress=False)
        log = source_log_path(root, change.key)
        erase_source_logs(root, keep=log)
        logged = read_source_log(log) if change.resumed else {}
        done = run.written_sources() | {s for s, e in logged.items() if not e.get("enrolled")}
        todo = [p for p in photos.photos if p.source not in done]
        if len(todo) < len(photos.photos):
            notify(progress, f"resuming: {len(photos.photos) - len(todo)} of {len(photos.photos)} photos already done")
        last_flush = time.monotonic()
        if engine == "ray":
            from .distributed.embedding import cluster_detector, embed_photos

            used = cluster_detector(detector, address)
            embedded = embed_photos(todo, encoder, detector=used, address=address, progress=progress, total=len(todo))
        else:
            from .embed import embed_photos
            from .embed.pipeline import resolve_detector

            used = resolve_detector(detector, getattr(encoder, "device", None))
            embedded = embed_photos(todo, encoder, detector=used, workers=workers, progress=progress, total=len(todo))
        for item in embedded:
            entry, chosen = photo_outcome(item, faces)
            append_source_log(log, [entry], mode=change.mode)
            if chosen:
                n = len(chosen)
                run.write(records_batch(item.vectors[chosen], [item.photo.identity] * n, [item.photo.source] * n, chosen))
            if time.monotonic() - last_flush > CHECKPOINT_SECONDS:
                run.flush()
                last_flush = time.monotonic()
        logged = read_source_log(log)
        entries = [logged[p.source] for p in photos.photos if p.source in logged]
        summary = summarise(entries, photos.ignored)
        summary["resumed"] = len(photos.photos) - len(todo)
        if create is not None and summary["enrolled"] == 0:
            raise InvalidInputError(f"no face was enrolled from {counted(len(photos.photos), 'photo')} ({summary_line(summary)}); "
                                    "nothing was written")
        change.report = {"operation": "add" if create is None else "build", "generation": m.generation + 1,
                         "model": encoder.name, "photos_root": str(photos.root) if photos.root else None,
                         "faces_policy": faces, "detector": used, "summary": summary, "sources": entries,
                         "ignored": [{"file": f, "reason": why} for f, why in photos.ignored]}
        manifest = run.commit()
    return manifest, change.report
