"""Writing a gallery: one writer at a time, journaled shards, an index extended or trained, a manifest commit.

Every change writes new files under new names and commits by replacing the manifest last, so a crash
or Ctrl-C at any point leaves the previous gallery readable. Files that no manifest or journal names
are an aborted change's leftovers and are erased (they may hold biometric data).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from tqdm.auto import tqdm

from .errors import GalleryError, InvalidInputError
from .index import IndexSpec, VectorIndex, choose_index_spec, training_sample
from .store import IndexInfo, Manifest, ShardStore, write_manifest
from .store.files import erase_file, sha256_file
from .store.journal import Journal, clear_journal, read_journal, write_journal
from .store.reports import erase_reports, report_path
from .types import Records
from .vectors import as_labels

LOG = logging.getLogger(__name__)

INDEX_DIR = "index"
LOCK_NAME = ".lock"
#: Vectors added to the index per step (bounds memory and drives the progress bar).
ADD_BATCH = 65_536


#: Lock descriptors this process holds. A forked child (a photo worker) closes its copies at once:
#: flock belongs to the open file, so a child outliving a killed writer would otherwise keep the lock.
_LOCK_FDS: set[int] = set()


def _drop_inherited_locks() -> None:
    for fd in list(_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _LOCK_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """One writer per gallery folder; a second one fails at once instead of interleaving files."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    _LOCK_FDS.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GalleryError(f"{root}: another process is writing to this gallery; wait for it to finish") from None
        yield
    finally:
        _LOCK_FDS.discard(fd)
        os.close(fd)


def progress_bar(progress: Optional[bool], **kw) -> tqdm:
    return tqdm(disable=None if progress is None else not progress, dynamic_ncols=True, **kw)


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


def spec_of(info: IndexInfo, dim: int) -> IndexSpec:
    return IndexSpec(kind=info.kind, dim=dim, **info.params)


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


def erase_strays(root: Path, manifest: Optional[Manifest], journal: Optional[Journal]) -> None:
    """Erase shard and index files that neither the manifest nor the journal names (an aborted change's)."""
    keep: set[str] = set()
    if manifest is not None:
        keep |= {n for s in manifest.shards for n in (s.file, s.vectors_file)}
        if manifest.index is not None:
            keep.add(manifest.index.file)
    if journal is not None:
        keep |= journal.files()
    store = ShardStore(root, manifest.shard_format if manifest else "parquet")
    strays = store.stray_files(keep)
    index_dir = root / INDEX_DIR
    if index_dir.is_dir():
        strays += [f"{INDEX_DIR}/{p.name}" for p in sorted(index_dir.iterdir()) if f"{INDEX_DIR}/{p.name}" not in keep]
    if strays:
        LOG.info("erasing %d files left by an interrupted change", len(strays))
        store.erase(strays)


def save_index(root: Path, index: VectorIndex, manifest: Manifest, trained_on: int) -> IndexInfo:
    (root / INDEX_DIR).mkdir(exist_ok=True)
    name = f"{INDEX_DIR}/index-{manifest.next_file:06d}.faiss"
    manifest.next_file += 1
    index.save(root / name)
    return IndexInfo(
        file=name,
        sha256=sha256_file(root / name),
        kind=index.spec.kind,
        factory=index.spec.factory,
        ntotal=index.ntotal,
        trained_on=trained_on,
        params=index.spec.params(),
    )


def commit(root: Path, new: Manifest, old: Optional[Manifest]) -> None:
    """Write the manifest, then erase the files only the old manifest named."""
    write_manifest(root, new)
    clear_journal(root)
    if old is None:
        return
    store = ShardStore(root, old.shard_format)
    stale = store.files_of(old.shards) - store.files_of(new.shards)
    if old.index is not None and (new.index is None or new.index.file != old.index.file):
        stale.add(old.index.file)
    store.erase(sorted(stale))


class Enrolment:
    """One enrolment run: batches of records in, shards written as they fill, one commit at the end.

    Use it as a context manager (it holds the gallery's writer lock). A run with the same ``key`` on top
    of the same manifest generation as an interrupted one resumes it: :attr:`rows_written` and
    :meth:`written_sources` say what is already on disk, so the caller skips that input. ``replace``
    starts a new gallery (``old``'s files are erased at commit); otherwise rows are appended and the
    existing index is extended without retraining.
    """

    def __init__(
        self,
        root: Path,
        base: Manifest,
        old: Optional[Manifest],
        *,
        key: str,
        replace: bool,
        index_params: Optional[dict] = None,
        gpu: Optional[bool] = None,
        progress: Optional[bool] = None,
        total: Optional[int] = None,
    ):
        self.root, self.base, self.old = Path(root), base, old
        self.replace, self.gpu, self.progress = replace, gpu, progress
        self.index_params = dict(index_params or {})
        self.store = ShardStore(self.root, base.shard_format)
        self.key = fingerprint(key, base.model, base.dim, base.shard_format, base.rows_per_shard, replace,
                                sorted(self.index_params.items()))
        self._pending: list[Records] = []
        self._total = total
        self._lock = writer_lock(self.root)
        self.journal: Optional[Journal] = None
        self._bar: Optional[tqdm] = None

    def __enter__(self) -> "Enrolment":
        self._lock.__enter__()
        try:
            self._open_journal()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
        self._lock.__exit__(*exc)

    def _open_journal(self) -> None:
        journal = read_journal(self.root)
        if journal is not None and journal.fingerprint == self.key and journal.base_generation == self.base.generation:
            intact = []
            for info in journal.shards:
                if not self.store.is_intact(info):
                    break
                intact.append(info)
            journal.shards = intact
            LOG.info("resuming an interrupted enrolment: %d rows already written", journal.rows)
        else:
            journal = Journal("enrol", self.key, self.base.generation, next_file=self.base.next_file)
        erase_strays(self.root, self.old, journal)
        write_journal(self.root, journal)
        self.journal = journal
        self._next_id = self.base.next_id + journal.rows
        self._bar = progress_bar(self.progress, total=self._total, initial=journal.rows, desc="writing shards", unit="vec")

    @property
    def rows_written(self) -> int:
        """Rows already in shards, including those an interrupted run had written."""
        return self.journal.rows

    def written_sources(self) -> set[str]:
        """Sources of the rows already written (to skip them when resuming a build from files)."""
        return {str(s) for r in self.store.iter_records(self.journal.shards, columns=["source"]) for s in r.sources}

    def write(self, batch: Records) -> None:
        """Queue records (ids are assigned here) and write every full shard."""
        if len(batch) == 0:
            return
        batch = batch.take(slice(None))
        batch.ids = self._next_id + np.arange(len(batch), dtype=np.int64)
        batch.model = self.base.model
        self._next_id += len(batch)
        self._pending.append(batch)
        while sum(len(b) for b in self._pending) >= self.base.rows_per_shard:
            self._write_shard(self.base.rows_per_shard)

    def flush(self) -> None:
        """Write whatever is queued as a (possibly short) shard, so an interruption loses none of it."""
        if self._pending:
            self._write_shard(sum(len(b) for b in self._pending))

    def _write_shard(self, rows: int) -> None:
        queued = _concat(self._pending)
        part, rest = queued.take(slice(0, rows)), queued.take(slice(rows, None))
        self._pending = [rest] if len(rest) else []
        self.journal.shards.append(self.store.write_shard(part, self.journal.next_file))
        self.journal.next_file += 1
        write_journal(self.root, self.journal)
        self._bar.update(len(part))

    def commit(self) -> Manifest:
        """Write the last shard, add the new rows to the index (training one if needed), write the manifest."""
        self.flush()
        self._bar.close()
        base, journal = self.base, self.journal
        new = copy.deepcopy(base)
        new.shards = list(journal.shards) if self.replace else base.shards + journal.shards
        added = journal.rows
        new.next_id = base.next_id + added
        id_lists = [r.ids for r in self.store.iter_records(journal.shards, columns=["id"])]
        vectors = self.store.vectors(journal.shards, base.dim, ids=id_lists)
        ids = np.concatenate(id_lists) if id_lists else np.empty(0, np.int64)
        if not self.replace and base.index is not None:
            index = VectorIndex.load(self.root / base.index.file, spec_of(base.index, base.dim), gpu=self.gpu)
            trained_on = base.index.trained_on
        else:
            params = dict(self.index_params)
            spec = choose_index_spec(max(added, 1), base.dim, params.pop("kind", "auto"), **params)
            index, trained_on = _trained_index(self.root, spec, ids, vectors, journal, self.gpu)
        bar = progress_bar(self.progress, total=added, desc="indexing", unit="vec")
        for s in range(0, added, ADD_BATCH):
            index.add(ids[s : s + ADD_BATCH], vectors.gather(ids[s : s + ADD_BATCH]))
            bar.update(min(ADD_BATCH, added - s))
        bar.close()
        new.next_file = journal.next_file
        new.index = save_index(self.root, index, new, trained_on)
        commit(self.root, new, self.old)
        if self.replace:  # the replaced gallery's reports name its photos and people
            erase_reports(self.root, keep=report_path(self.root, new.generation))
        if journal.trained_index:
            (self.root / journal.trained_index).unlink(missing_ok=True)
        return new


def _concat(parts: list[Records]) -> Records:
    if len(parts) == 1:
        return parts[0]
    return Records(
        ids=np.concatenate([p.ids for p in parts]),
        identities=np.concatenate([p.identities for p in parts]),
        sources=np.concatenate([p.sources for p in parts]),
        face_index=np.concatenate([p.face_index for p in parts]),
        vectors=np.concatenate([p.vectors for p in parts]),
        model=parts[0].model,
    )


def enrol_batch(root: Path, base: Manifest, old: Optional[Manifest], batch: Records, **options) -> Manifest:
    """Enrol an in-memory batch; rerunning the same batch after an interruption resumes it."""
    key = fingerprint("vectors", batch.vectors, batch.identities, batch.sources, batch.face_index)
    with Enrolment(root, base, old, key=key, total=len(batch), **options) as run:
        for s in range(run.rows_written, len(batch), base.rows_per_shard):
            run.write(batch.take(slice(s, s + base.rows_per_shard)))
        return run.commit()


def _trained_index(
    root: Path, spec: IndexSpec, ids: np.ndarray, vectors, journal: Journal, gpu: Optional[bool]
) -> tuple[VectorIndex, int]:
    """A trained, empty index for ``spec``: from the journal's checkpoint if a previous run saved one."""
    if spec.kind == "flat":
        return VectorIndex.create(spec, gpu=gpu), 0
    rows = training_sample(len(ids), spec)
    if journal.trained_index and (root / journal.trained_index).is_file():
        LOG.info("resuming with the trained index from the interrupted run")
        return VectorIndex.load(root / journal.trained_index, spec, gpu=gpu), len(rows)
    index = VectorIndex.create(spec, gpu=gpu)
    index.train(vectors.gather(ids[rows]))
    (root / INDEX_DIR).mkdir(exist_ok=True)
    name = f"{INDEX_DIR}/trained-{journal.next_file:06d}.faiss"
    journal.next_file += 1
    index.save(root / name)
    journal.trained_index = name
    write_journal(root, journal)
    return index, len(rows)


#: How an enrolment photo with several faces is handled: enrol its largest face, all of them, or none.
FACE_POLICIES = ("largest", "all", "single")
#: A photo build writes what it has at least this often, so a crash loses at most this much work.
CHECKPOINT_SECONDS = 60.0


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
    text = f"{summary['images']} images, {summary['faces']} faces, {summary['enrolled']} enrolled"
    if summary["skipped"]:
        text += "; skipped: " + ", ".join(f"{n} {why}" for why, n in summary["skipped"].items())
    if summary.get("ignored_files"):
        text += f"; {summary['ignored_files']} non-image files ignored"
    return text


def enrol_photos(
    root: Path,
    base: Manifest,
    old: Optional[Manifest],
    photos,
    encoder,
    *,
    replace: bool,
    faces: str = "largest",
    detector: Optional[dict] = None,
    workers: Optional[int] = None,
    index_params: Optional[dict] = None,
    gpu: Optional[bool] = None,
    progress: Optional[bool] = None,
    engine: str = "local",
    address: Optional[str] = None,
) -> tuple[Manifest, dict]:
    """Embed and enrol a :class:`~gallery.embed.PhotoList`; returns the new manifest and the build report.

    ``engine="ray"`` embeds on a Ray cluster (``address``, else ``RAY_ADDRESS``, else a local one); the
    shards and manifest are written here either way. Rerunning the same build after an interruption
    skips the photos whose faces are already in shards.
    """
    from .store.reports import append_source_log, erase_source_logs, read_source_log, source_log_path, write_report

    if faces not in FACE_POLICIES:
        raise InvalidInputError(f"faces must be one of {', '.join(FACE_POLICIES)}, got {faces!r}")
    detector = dict(detector or {})
    key = fingerprint("photos", [(p.source, p.identity) for p in photos.photos], faces, encoder.fingerprint,
                      sorted(detector.items()))
    with Enrolment(root, base, old, key=key, replace=replace, index_params=index_params, gpu=gpu, progress=False) as run:
        log = source_log_path(root, run.key)
        erase_source_logs(root, keep=log)
        if run.rows_written == 0:
            erase_file(log)
        done = run.written_sources()
        todo = [p for p in photos.photos if p.source not in done]
        if done:
            LOG.info("resuming: %d of %d photos are already enrolled", len(photos.photos) - len(todo), len(photos.photos))
        last_flush = time.monotonic()
        if engine == "ray":
            from .distributed.embedding import embed_photos

            embedded = embed_photos(todo, encoder, detector=detector, address=address, progress=progress, total=len(todo))
        else:
            from .embed import embed_photos

            embedded = embed_photos(todo, encoder, detector=detector, workers=workers, progress=progress, total=len(todo))
        for item in embedded:
            entry, chosen = photo_outcome(item, faces)
            append_source_log(log, [entry])
            if chosen:
                n = len(chosen)
                run.write(records_batch(item.vectors[chosen], [item.photo.identity] * n, [item.photo.source] * n, chosen))
            if time.monotonic() - last_flush > CHECKPOINT_SECONDS:
                run.flush()
                last_flush = time.monotonic()
        logged = read_source_log(log)
        entries = [logged[p.source] for p in photos.photos if p.source in logged]
        summary = summarise(entries, photos.ignored)
        summary["resumed"] = len(done)
        if replace and summary["enrolled"] == 0:
            raise InvalidInputError(f"no face was enrolled from {len(photos.photos)} photos ({summary_line(summary)}); "
                                    "nothing was written")
        report = {"operation": "build" if replace else "add", "generation": base.generation + 1, "model": encoder.name,
                  "photos_root": str(photos.root) if photos.root else None,
                  "faces_policy": faces, "detector": detector, "summary": summary, "sources": entries,
                  "ignored": [{"file": f, "reason": why} for f, why in photos.ignored]}
        write_report(report_path(root, base.generation + 1), report)
        manifest = run.commit()
        erase_file(log)
    return manifest, report
