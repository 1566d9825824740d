"""Gallery: enrolled identities on disk, searchable 1:N with an open-set decision.

Every change (enrol, remove, rebuild the index) writes new files under new names and commits by
replacing the manifest last, so a crash or Ctrl-C at any point leaves the previous gallery readable.
An interrupted enrolment leaves a journal; running the same enrolment again resumes it.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from .calibration import Calibration
from .errors import GalleryError, InvalidInputError, ModelMismatchError
from .index import IndexSpec, VectorIndex, build_index, choose_index_spec, training_sample
from .search import rank_identities, decide, resolve_threshold
from .store import IndexInfo, Manifest, ShardStore, read_manifest, write_manifest
from .store.files import sha256_file
from .store.journal import Journal, clear_journal, read_journal, write_journal
from .store.manifest import manifest_path
from .store.shards import FORMATS
from .types import Records, SearchResult
from .vectors import as_embeddings, as_labels

LOG = logging.getLogger(__name__)

DEFAULT_MODEL = "external"
DEFAULT_ROWS_PER_SHARD = 100_000
INDEX_DIR = "index"
LOCK_NAME = ".lock"
#: Vectors added to the index per step (bounds memory and drives the progress bar).
ADD_BATCH = 65_536
#: First guess of records per identity to fetch when ranking k identities; widened when too few.
RECORDS_PER_IDENTITY_GUESS = 4


@contextlib.contextmanager
def _writer_lock(root: Path) -> Iterator[None]:
    """One writer per gallery folder; a second one fails at once instead of interleaving files."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GalleryError(f"{root}: another process is writing to this gallery; wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def _progress(progress: Optional[bool], **kw) -> tqdm:
    return tqdm(disable=None if progress is None else not progress, dynamic_ncols=True, **kw)


def _fingerprint(*parts) -> str:
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


def _spec_of(info: IndexInfo, dim: int) -> IndexSpec:
    return IndexSpec(kind=info.kind, dim=dim, **info.params)


class Gallery:
    """A gallery folder opened for search and enrolment.

    >>> g = Gallery.from_vectors(vectors, identities, "out_dir", index="auto")   # doctest: +SKIP
    >>> results = g.search(query_vectors, k=5)                                    # doctest: +SKIP
    >>> results[0].identity  # the decided identity, or None for "unknown"      # doctest: +SKIP
    """

    def __init__(self, root: Path | str, manifest: Manifest, *, gpu: Optional[bool] = None):
        self.root = Path(root)
        self.manifest = manifest
        self._gpu = gpu
        self._store = ShardStore(self.root, manifest.shard_format)
        self._load()

    # ------------------------------------------------------------------ opening and creating

    @classmethod
    def open(cls, root: Path | str, *, gpu: Optional[bool] = None) -> "Gallery":
        """Open the gallery in ``root`` (``gpu``: None = use a GPU when faiss sees one)."""
        return cls(root, read_manifest(Path(root)), gpu=gpu)

    @classmethod
    def from_vectors(
        cls,
        vectors,
        identities: Sequence,
        root: Path | str,
        *,
        index: str = "auto",
        model: str = DEFAULT_MODEL,
        sources: Optional[Sequence] = None,
        face_index: Optional[Sequence[int]] = None,
        shard_format: str = "parquet",
        rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
        overwrite: bool = False,
        nlist: Optional[int] = None,
        pq_m: Optional[int] = None,
        nprobe: Optional[int] = None,
        rerank: Optional[int] = None,
        gpu: Optional[bool] = None,
        progress: Optional[bool] = None,
    ) -> "Gallery":
        """Build a gallery in ``root`` from embeddings and their identity labels.

        Vectors are L2-normalised before they are written. ``overwrite=True`` replaces an existing
        gallery, which stays readable until the new one is complete. An interrupted build resumes when
        called again with the same arguments.
        """
        root = Path(root)
        if shard_format not in FORMATS:
            raise InvalidInputError(f"unknown shard format {shard_format!r}; choose one of: {', '.join(FORMATS)}")
        if rows_per_shard < 1:
            raise InvalidInputError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        x = as_embeddings(vectors)
        batch = _batch(x, identities, sources, face_index)
        choose_index_spec(len(x), x.shape[1], index, nlist=nlist, pq_m=pq_m, nprobe=nprobe, rerank=rerank)
        old = None
        if manifest_path(root).is_file():
            if not overwrite:
                raise GalleryError(
                    f"{root}: already holds a gallery; add to it with Gallery.open(...).add_vectors, or pass overwrite=True"
                )
            old = read_manifest(root)
        elif root.exists() and not root.is_dir():
            raise InvalidInputError(f"{root}: exists and is not a folder")
        base = Manifest(model=model, dim=x.shape[1], shard_format=shard_format, rows_per_shard=rows_per_shard)
        if old is not None:
            base.generation, base.next_id, base.next_file = old.generation, old.next_id, old.next_file
        index_params = dict(kind=index, nlist=nlist, pq_m=pq_m, nprobe=nprobe, rerank=rerank)
        _enrol_batch(root, base, old, batch, replace=True, index_params=index_params, gpu=gpu, progress=progress)
        return cls.open(root, gpu=gpu)

    @classmethod
    def enrol(
        cls,
        vectors,
        identities: Sequence,
        root: Path | str,
        *,
        replace: bool = False,
        model: str = DEFAULT_MODEL,
        sources: Optional[Sequence] = None,
        progress: Optional[bool] = None,
        **build_options,
    ) -> "Gallery":
        """Add to the gallery in ``root``, creating it (with ``build_options``) if there is none yet.

        ``replace=True`` rebuilds it from these vectors alone.
        """
        root = Path(root)
        if manifest_path(root).is_file() and not replace:
            g = cls.open(root, gpu=build_options.get("gpu"))
            g.add_vectors(vectors, identities, sources=sources, model=model, progress=progress)
            return g
        return cls.from_vectors(
            vectors, identities, root, model=model, sources=sources, overwrite=replace, progress=progress, **build_options
        )

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        m = self.manifest
        id_lists, label_lists = self._store.labels(m.shards)
        ids = np.concatenate(id_lists) if id_lists else np.empty(0, np.int64)
        labels = np.concatenate(label_lists) if label_lists else np.empty(0, dtype=object)
        self._names, codes = np.unique(labels.astype(str), return_inverse=True) if len(labels) else (np.empty(0, str), np.empty(0, np.int64))
        self._identity_of = np.full(max(m.next_id, 1), -1, dtype=np.int32)
        self._identity_of[ids] = codes
        self._record_ids = ids
        self._codes = codes.astype(np.int32)
        self._records_of = None
        self._vectors = self._store.vectors(m.shards, m.dim, ids=id_lists)
        self._index = VectorIndex.load(self.root / m.index.file, _spec_of(m.index, m.dim), gpu=self._gpu) if m.index else None

    def _reload(self) -> None:
        self.manifest = read_manifest(self.root)
        self._store = ShardStore(self.root, self.manifest.shard_format)
        self._load()

    # ------------------------------------------------------------------ properties

    @property
    def model(self) -> str:
        return self.manifest.model

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def identities(self) -> list[str]:
        """Enrolled identity labels, sorted."""
        return [str(s) for s in self._names]

    @property
    def index_spec(self) -> Optional[IndexSpec]:
        return _spec_of(self.manifest.index, self.dim) if self.manifest.index else None

    def __len__(self) -> int:
        return len(self._record_ids)

    def __repr__(self) -> str:
        kind = self.manifest.index.kind if self.manifest.index else "none"
        return f"Gallery({str(self.root)!r}, records={len(self)}, identities={len(self._names)}, model={self.model!r}, index={kind!r})"

    @property
    def calibration(self) -> Optional[Calibration]:
        """The stored open-set calibration, if `gallery calibrate` has run."""
        data = self.manifest.thresholds.get("open_set")
        return Calibration.from_json(data) if data else None

    def threshold(self, threshold: Optional[float] = None) -> tuple[float, str]:
        """The open-set threshold a search uses, and its source ("call", "calibrated", "model-default", "fallback").

        A calibrated threshold is carried to the gallery's current number of identities by its tail fit.
        """
        cal = self.calibration
        calibrated = cal.threshold_for(len(self._names)) if cal is not None else None
        return resolve_threshold(threshold, calibrated, self.model)

    def records(self) -> tuple[np.ndarray, np.ndarray]:
        """Record ids and their identity labels, in storage order."""
        return self._record_ids.copy(), self._names[self._codes].astype(object)

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored (unit-norm float32) vectors of the given record ids."""
        return self._vectors.gather(np.asarray(ids, dtype=np.int64))

    def set_calibration(self, calibration: Calibration) -> None:
        """Store ``calibration`` in the manifest; searches use it from then on."""
        if calibration.model != self.model:
            raise ModelMismatchError(f"{self.root}: calibration is for model {calibration.model!r}, the gallery holds {self.model!r}")
        with _writer_lock(self.root):
            m = read_manifest(self.root)
            m.thresholds["open_set"] = calibration.to_json()
            write_manifest(self.root, m)
        self.manifest = read_manifest(self.root)

    # ------------------------------------------------------------------ search

    def search(
        self,
        queries,
        k: int = 5,
        *,
        threshold: Optional[float] = None,
        nprobe: Optional[int] = None,
        rerank: Optional[int] = None,
        aggregate: str = "max",
        top_n: int = 3,
    ) -> list[SearchResult]:
        """Rank the ``k`` most similar enrolled identities for each query row, and decide known or unknown.

        Scores are cosine similarities; a result's ``identity`` is its best match when
        ``score >= threshold``, else None. ``nprobe`` and ``rerank`` tune an ivfpq index for this call.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        xq = as_embeddings(queries, dim=self.dim, what="queries")
        t, source = self.threshold(threshold)
        if self._index is None or len(self) == 0:
            return decide([[] for _ in range(len(xq))], t, source)
        n_ids = len(self._names)
        k_ids = min(int(k), n_ids)
        kr = min(len(self), k_ids * RECORDS_PER_IDENTITY_GUESS)
        D, I = self._index.search(xq, kr, nprobe=nprobe, rerank=rerank, vectors=self._vectors)
        rescore = self._rescore(xq) if aggregate == "mean" else None
        ranked = rank_identities(D, I, self._identity_of, self._names, k_ids, aggregate=aggregate, top_n=top_n, rescore=rescore)
        short = [q for q, m in enumerate(ranked) if len(m) < k_ids]
        while short and kr < len(self):
            kr = min(len(self), kr * 4)
            rows = np.asarray(short)
            D, I = self._index.search(xq[rows], kr, nprobe=nprobe, rerank=rerank, vectors=self._vectors)
            sub_rescore = self._rescore(xq[rows]) if aggregate == "mean" else None
            again = rank_identities(D, I, self._identity_of, self._names, k_ids, aggregate=aggregate, top_n=top_n, rescore=sub_rescore)
            for q, m in zip(short, again):
                ranked[q] = m
            short = [q for q in short if len(ranked[q]) < k_ids]
        return decide(ranked, t, source)

    def _rescore(self, xq: np.ndarray):
        """Exact scores of every record of given identities, for mean-of-top-n ranking."""
        if self._records_of is None:
            order = np.argsort(self._codes, kind="stable")
            bounds = np.searchsorted(self._codes[order], np.arange(len(self._names) + 1))
            self._records_of = [self._record_ids[order[bounds[c] : bounds[c + 1]]] for c in range(len(self._names))]

        def rescore(q: int, codes: list[int]):
            out = []
            for c in codes:
                ids = self._records_of[c]
                scores = self._vectors.gather(ids) @ xq[q]
                out.append((c, ids.tolist(), scores.tolist()))
            return out

        return rescore

    # ------------------------------------------------------------------ changes

    def add_vectors(
        self,
        vectors,
        identities: Sequence,
        *,
        sources: Optional[Sequence] = None,
        face_index: Optional[Sequence[int]] = None,
        model: Optional[str] = None,
        progress: Optional[bool] = None,
    ) -> np.ndarray:
        """Enrol more vectors (new or existing identities) without retraining the index; returns their record ids."""
        if model is not None and model != self.model:
            raise ModelMismatchError(
                f"{self.root}: gallery holds {self.model!r} embeddings; vectors from model {model!r} cannot be mixed in"
            )
        x = as_embeddings(vectors, dim=self.dim)
        batch = _batch(x, identities, sources, face_index)
        base = read_manifest(self.root)
        first = base.next_id
        _enrol_batch(self.root, base, base, batch, replace=False, gpu=self._gpu, progress=progress)
        self._reload()
        return np.arange(first, first + len(x), dtype=np.int64)

    def remove(self, identities: Sequence[str], *, progress: Optional[bool] = None) -> int:
        """Remove identities from the index and erase their records from disk; returns records removed.

        Shards holding their rows are rewritten without them and the old files are overwritten with
        zeros before deletion, so the removed vectors and labels are gone from the gallery folder.
        """
        if isinstance(identities, str):
            identities = [identities]
        wanted = list(dict.fromkeys(str(s) for s in identities))
        known = set(self.identities)
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise InvalidInputError(f"{self.root}: no such identities: {', '.join(unknown[:10])}; nothing was removed")
        codes = np.searchsorted(self._names, wanted)
        remove_ids = self._record_ids[np.isin(self._codes, codes)]
        with _writer_lock(self.root):
            base = read_manifest(self.root)
            _erase_strays(self.root, base, None)
            new = copy.deepcopy(base)
            shards = []
            bar = _progress(progress, total=len(base.shards), desc="compacting shards", unit="shard")
            for info in base.shards:
                overlaps = np.any((remove_ids >= info.first_id) & (remove_ids <= info.last_id))
                if overlaps:
                    info = self._store.rewrite_without(info, remove_ids, new.next_file)
                    new.next_file += 1
                if info is not None:
                    shards.append(info)
                bar.update()
            bar.close()
            new.shards = shards
            if base.index is not None:
                index = VectorIndex.load(self.root / base.index.file, _spec_of(base.index, base.dim), gpu=self._gpu)
                index.remove(remove_ids)
                new.index = _save_index(self.root, index, new, base.index.trained_on)
            _commit(self.root, new, base)
        self._reload()
        return int(len(remove_ids))

    def rebuild_index(
        self,
        index: str = "auto",
        *,
        nlist: Optional[int] = None,
        pq_m: Optional[int] = None,
        nprobe: Optional[int] = None,
        rerank: Optional[int] = None,
        progress: Optional[bool] = None,
    ) -> IndexSpec:
        """Retrain and rebuild the index from the stored vectors (after large growth, or to change kind)."""
        spec = choose_index_spec(len(self), self.dim, index, nlist=nlist, pq_m=pq_m, nprobe=nprobe, rerank=rerank)
        with _writer_lock(self.root):
            base = read_manifest(self.root)
            _erase_strays(self.root, base, None)
            new = copy.deepcopy(base)
            sample = None
            if spec.kind != "flat":
                rows = training_sample(len(self), spec)
                sample = self._vectors.gather(self._record_ids[rows])
            built = build_index(spec, sample, self._stored_batches(progress), gpu=self._gpu)
            new.index = _save_index(self.root, built, new, len(sample) if sample is not None else 0)
            _commit(self.root, new, base)
        self._reload()
        return spec

    def _stored_batches(self, progress: Optional[bool]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        bar = _progress(progress, total=len(self), desc="indexing", unit="vec")
        for s in range(0, len(self), ADD_BATCH):
            ids = self._record_ids[s : s + ADD_BATCH]
            yield ids, self._vectors.gather(ids)
            bar.update(len(ids))
        bar.close()

    def verify(self) -> None:
        """Recompute every checksum the manifest records; raise CorruptGalleryError on the first mismatch."""
        self._store.verify(self.manifest.shards)
        info = self.manifest.index
        if info is not None and sha256_file(self.root / info.file) != info.sha256:
            from .errors import CorruptGalleryError

            raise CorruptGalleryError(f"{self.root / info.file}: checksum mismatch; run `gallery rebuild-index`")

    # ------------------------------------------------------------------ reporting

    def info(self) -> dict:
        """Counts, model, index, thresholds, and disk and RAM sizes, for `gallery info`."""
        m = self.manifest
        t, source = self.threshold()
        disk = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        index_ram = self._index.memory_bytes() if self._index is not None else 0
        labels_ram = self._identity_of.nbytes + self._record_ids.nbytes + self._codes.nbytes + sum(len(s) for s in self._names)
        out = {
            "path": str(self.root),
            "format_version": m.format_version,
            "model": m.model,
            "dim": m.dim,
            "records": len(self),
            "identities": len(self._names),
            "shards": len(m.shards),
            "shard_format": m.shard_format,
            "rows_per_shard": m.rows_per_shard,
            "index": None,
            "threshold": {"value": t, "source": source},
            "calibration": m.thresholds.get("open_set"),
            "disk_bytes": disk,
            "ram_bytes": {"index": index_ram, "labels": int(labels_ram), "per_vector": (index_ram + labels_ram) / max(len(self), 1)},
        }
        if m.index is not None:
            out["index"] = {"kind": m.index.kind, "factory": m.index.factory, "ntotal": m.index.ntotal, "trained_on": m.index.trained_on, **m.index.params}
            suggested = choose_index_spec(len(self), m.dim, "auto") if len(self) else None
            if suggested is not None and suggested.kind != m.index.kind:
                out["index"]["advice"] = f"at {len(self)} vectors the auto rule picks {suggested.kind}; run `gallery rebuild-index`"
        return out


# ---------------------------------------------------------------------- enrolment machinery


def _batch(x: np.ndarray, identities, sources, face_index) -> Records:
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


def _erase_strays(root: Path, manifest: Optional[Manifest], journal: Optional[Journal]) -> None:
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


def _save_index(root: Path, index: VectorIndex, manifest: Manifest, trained_on: int) -> IndexInfo:
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


def _commit(root: Path, new: Manifest, old: Optional[Manifest]) -> None:
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
        self.key = _fingerprint(key, base.model, base.dim, base.shard_format, base.rows_per_shard, replace,
                                sorted(self.index_params.items()))
        self._pending: list[Records] = []
        self._total = total
        self._lock = _writer_lock(self.root)
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
        _erase_strays(self.root, self.old, journal)
        write_journal(self.root, journal)
        self.journal = journal
        self._next_id = self.base.next_id + journal.rows
        self._bar = _progress(self.progress, total=self._total, initial=journal.rows, desc="writing shards", unit="vec")

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
            index = VectorIndex.load(self.root / base.index.file, _spec_of(base.index, base.dim), gpu=self.gpu)
            trained_on = base.index.trained_on
        else:
            params = dict(self.index_params)
            spec = choose_index_spec(max(added, 1), base.dim, params.pop("kind", "auto"), **params)
            index, trained_on = _trained_index(self.root, spec, ids, vectors, journal, self.gpu)
        bar = _progress(self.progress, total=added, desc="indexing", unit="vec")
        for s in range(0, added, ADD_BATCH):
            index.add(ids[s : s + ADD_BATCH], vectors.gather(ids[s : s + ADD_BATCH]))
            bar.update(min(ADD_BATCH, added - s))
        bar.close()
        new.next_file = journal.next_file
        new.index = _save_index(self.root, index, new, trained_on)
        _commit(self.root, new, self.old)
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


def _enrol_batch(root: Path, base: Manifest, old: Optional[Manifest], batch: Records, **options) -> Manifest:
    """Enrol an in-memory batch; rerunning the same batch after an interruption resumes it."""
    key = _fingerprint("vectors", batch.vectors, batch.identities, batch.sources, batch.face_index)
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
