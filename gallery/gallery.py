"""Gallery: enrolled identities on disk, searchable 1:N with an open-set decision.

Changes go through :mod:`gallery.enrolment`, which keeps the previous gallery readable until a change
commits and resumes an interrupted enrolment when it is run again.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from .calibration import Calibration
from .distributed import check_engine
from .enrolment import (
    ADD_BATCH,
    commit,
    enrol_batch,
    enrol_photos,
    erase_strays,
    progress_bar,
    records_batch,
    save_index,
    spec_of,
    writer_lock,
)
from .errors import GalleryError, InvalidInputError, ModelMismatchError
from .index import IndexSpec, VectorIndex, build_index, choose_index_spec, training_sample
from .search import IdentitySearcher, decide, resolve_threshold
from .store import Manifest, ShardStore, read_manifest, write_manifest
from .store.files import sha256_file
from .store.manifest import manifest_path
from .store.reports import scrub_reports
from .store.shards import FORMATS
from .types import FaceResult, PhotoResult, SearchResult
from .vectors import as_embeddings

LOG = logging.getLogger(__name__)

DEFAULT_MODEL = "external"
DEFAULT_ROWS_PER_SHARD = 100_000


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
        self._seen = self._manifest_stamp()
        self._encoder = None
        self._faces_of: Optional[dict] = None
        self.last_report: Optional[dict] = None
        self._load()

    # ------------------------------------------------------------------ opening and creating

    @classmethod
    def open(cls, root: Path | str, *, gpu: Optional[bool] = None, engine: str = "local",
             shards: Optional[int] = None, address: Optional[str] = None) -> "Gallery":
        """Open the gallery in ``root`` (``gpu``: None = use a GPU when faiss sees one).

        ``engine="ray"`` searches it on ``shards`` Ray actors, each holding the identities of one shard
        (a :class:`gallery.distributed.sharded.ShardedGallery`), on the cluster at ``address`` (else
        ``RAY_ADDRESS``, else a local one); answers are the local engine's.
        """
        check_engine(engine)
        manifest = read_manifest(Path(root))
        if engine == "ray":
            from .distributed.sharded import ShardedGallery

            return ShardedGallery(root, manifest, shards=shards or 1, address=address, gpu=gpu)
        if shards not in (None, 1):
            raise InvalidInputError(f"shards={shards} needs engine='ray'; the local engine searches one index")
        return cls(root, manifest, gpu=gpu)

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
        batch = records_batch(x, identities, sources, face_index)
        choose_index_spec(len(x), x.shape[1], index, nlist=nlist, pq_m=pq_m, nprobe=nprobe, rerank=rerank)
        base, old = _new_manifest(root, overwrite, "Gallery.open(...).add_vectors", model=model, dim=x.shape[1],
                                  shard_format=shard_format, rows_per_shard=rows_per_shard)
        index_params = dict(kind=index, nlist=nlist, pq_m=pq_m, nprobe=nprobe, rerank=rerank)
        enrol_batch(root, base, old, batch, replace=True, index_params=index_params, gpu=gpu, progress=progress)
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

    @classmethod
    def from_photos(
        cls,
        photos: Path | str,
        root: Path | str,
        *,
        model: str = "dlib-resnet",
        faces: str = "largest",
        detector: str = "hog",
        landmarks: Optional[int] = None,
        upsample: Optional[int] = None,
        max_side: Optional[int] = None,
        workers: Optional[int] = None,
        device: Optional[str] = None,
        overwrite: bool = False,
        index: str = "auto",
        shard_format: str = "parquet",
        rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
        gpu: Optional[bool] = None,
        progress: Optional[bool] = None,
        engine: str = "local",
        address: Optional[str] = None,
    ) -> "Gallery":
        """Build a gallery in ``root`` from a photo folder laid out ``<identity>/<photos>`` (or a CSV of path,identity).

        Every photo's faces are detected, aligned and encoded with ``model`` (see
        :func:`gallery.embed.get_encoder`); ``faces`` says which face of a photo with several is
        enrolled ("largest", "all", or "single" to skip such photos). The outcome of every photo is in
        :attr:`last_report` and in ``report-<generation>.json`` beside the manifest. An interrupted
        build resumes when called again with the same arguments. ``engine="ray"`` embeds on a Ray
        cluster (``address``, else ``RAY_ADDRESS``, else a local one) and writes the same gallery.
        """
        from .embed import get_encoder, list_photos

        check_engine(engine)
        root = Path(root)
        if shard_format not in FORMATS:
            raise InvalidInputError(f"unknown shard format {shard_format!r}; choose one of: {', '.join(FORMATS)}")
        found = list_photos(photos)
        if not found.photos:
            raise InvalidInputError(f"{photos}: no photos found (expected <identity>/<image files>)")
        encoder = get_encoder(model, device=device)
        base, old = _new_manifest(root, overwrite, "`gallery add` (Gallery.add_photos)", model=encoder.name,
                                  dim=encoder.dim, shard_format=shard_format, rows_per_shard=rows_per_shard,
                                  model_fingerprint=encoder.fingerprint, model_spec=encoder.spec)
        _, report = enrol_photos(root, base, old, found, encoder, replace=True, faces=faces,
                                 detector=_detector_options(detector, landmarks, upsample, max_side), workers=workers,
                                 index_params={"kind": index}, gpu=gpu, progress=progress, engine=engine,
                                 address=address)
        g = Gallery.open(root, gpu=gpu)
        g._encoder, g.last_report = encoder, report
        return g

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        m = self.manifest
        id_lists, ids, labels = self._store.all_labels(m.shards)
        self._vectors = self._store.vectors(m.shards, m.dim, ids=id_lists)
        index = VectorIndex.load(self.root / m.index.file, spec_of(m.index, m.dim), gpu=self._gpu) if m.index else None
        self._searcher = IdentitySearcher(index, self._vectors, ids, labels, m.next_id)

    def _manifest_stamp(self) -> Optional[tuple[int, int]]:
        try:
            st = os.stat(manifest_path(self.root))
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _reload(self) -> None:
        self._faces_of = None
        self._seen = self._manifest_stamp()
        self.manifest = read_manifest(self.root)
        self._store = ShardStore(self.root, self.manifest.shard_format)
        self._load()

    # ------------------------------------------------------------------ properties

    @property
    def _names(self) -> np.ndarray:
        return self._searcher.names

    @property
    def _codes(self) -> np.ndarray:
        return self._searcher.codes

    @property
    def _record_ids(self) -> np.ndarray:
        return self._searcher.record_ids

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
        return spec_of(self.manifest.index, self.dim) if self.manifest.index else None

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
        with writer_lock(self.root):
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
        recheck_nprobe: Optional[int] = None,
        aggregate: str = "max",
        top_n: int = 3,
    ) -> list[SearchResult]:
        """Rank the ``k`` most similar enrolled identities for each query row, and decide known or unknown.

        Scores are cosine similarities; a result's ``identity`` is its best match when
        ``score >= threshold``, else None. ``nprobe``, ``rerank`` and ``recheck_nprobe`` (the cells
        searched again for queries whose best score is below the threshold) tune an ivfpq index for
        this call.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        if self._manifest_stamp() != self._seen:  # another process committed a change: its old files are erased
            self._reload()
        xq = as_embeddings(queries, dim=self.dim, what="queries")
        t, source = self.threshold(threshold)
        ranked = self._searcher.rank_open_set(xq, k, t, nprobe=nprobe, recheck_nprobe=recheck_nprobe, rerank=rerank,
                                              aggregate=aggregate, top_n=top_n)
        return decide(ranked, t, source)

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
        batch = records_batch(x, identities, sources, face_index)
        base = read_manifest(self.root)
        first = base.next_id
        enrol_batch(self.root, base, base, batch, replace=False, gpu=self._gpu, progress=progress)
        self._reload()
        return np.arange(first, first + len(x), dtype=np.int64)

    def encoder(self, model: Optional[str] = None, *, device: Optional[str] = None):
        """The encoder that made this gallery's embeddings (loaded once), checked against its fingerprint.

        ``model`` overrides the stored spec, e.g. when the weights file has moved.
        """
        from .embed import get_encoder

        spec = model or self.manifest.model_spec
        if spec is None:
            raise ModelMismatchError(f"{self.root}: holds vectors from model {self.model!r}, not photos; search it with vectors")
        if self._encoder is not None and model is None:
            return self._encoder
        enc = get_encoder(spec, device=device)
        if enc.fingerprint != self.manifest.model_fingerprint or enc.dim != self.dim:
            raise ModelMismatchError(
                f"{self.root}: embeddings were made by {self.model!r} (fingerprint {self.manifest.model_fingerprint}); "
                f"{enc.spec!r} has fingerprint {enc.fingerprint} and cannot be mixed in"
            )
        if model is None:
            self._encoder = enc
        return enc

    def add_photos(
        self,
        photos: Path | str,
        *,
        model: Optional[str] = None,
        faces: str = "largest",
        detector: str = "hog",
        landmarks: Optional[int] = None,
        upsample: Optional[int] = None,
        max_side: Optional[int] = None,
        workers: Optional[int] = None,
        device: Optional[str] = None,
        progress: Optional[bool] = None,
        engine: str = "local",
        address: Optional[str] = None,
    ) -> dict:
        """Enrol more photos (new or existing identities) with the gallery's own model; returns the build report.

        The index is extended, not retrained, so adding people never needs a rebuild. ``engine`` and
        ``address`` as for :meth:`from_photos`.
        """
        from .embed import list_photos

        check_engine(engine)
        found = list_photos(photos)
        if not found.photos:
            raise InvalidInputError(f"{photos}: no photos found (expected <identity>/<image files>)")
        encoder = self.encoder(model, device=device)
        base = read_manifest(self.root)
        _, report = enrol_photos(self.root, base, base, found, encoder, replace=False, faces=faces,
                                 detector=_detector_options(detector, landmarks, upsample, max_side), workers=workers,
                                 gpu=self._gpu, progress=progress, engine=engine, address=address)
        self._reload()
        self.last_report = report
        return report

    def search_images(
        self,
        paths,
        k: int = 5,
        *,
        threshold: Optional[float] = None,
        detector: str = "hog",
        upsample: Optional[int] = None,
        max_side: Optional[int] = None,
        workers: Optional[int] = None,
        device: Optional[str] = None,
        progress: Optional[bool] = None,
        **search_options,
    ) -> list[PhotoResult]:
        """Search every face of every probe photo: one :class:`PhotoResult` per photo, its faces largest first.

        ``paths`` is an image, a folder, a text file listing images, or a list of those. All faces
        are searched in one batched call; options as for :meth:`search`.
        """
        from .embed import embed_photos, gather_photos

        items = [paths] if isinstance(paths, (str, Path)) else list(paths)
        found = gather_photos(items, labelled=False)
        encoder = self.encoder(device=device)
        options = _detector_options(detector, None, upsample, max_side)
        embedded = list(embed_photos(found.photos, encoder, detector=options, workers=workers, progress=progress,
                                     total=len(found.photos), desc="reading probes"))
        vectors = [e.vectors for e in embedded if e.n_faces]
        results = self.search(np.concatenate(vectors), k=k, threshold=threshold, **search_options) if vectors else []
        out, at = [], 0
        for e in embedded:
            faces = tuple(FaceResult(f.box, results[at + i]) for i, f in enumerate(e.faces))
            at += e.n_faces
            out.append(PhotoResult(e.photo.source, faces, e.error))
        return out

    def embed_labelled_photos(self, photos: Path | str, *, workers: Optional[int] = None,
                              progress: Optional[bool] = None) -> tuple[np.ndarray, list[str]]:
        """Probe vectors from a labelled photo folder (or CSV), with the gallery's model: the largest face of
        each photo and its label. For calibration and evaluation; photos without a face are left out."""
        from .embed import embed_photos, list_photos

        found = list_photos(photos)
        vectors, labels = [], []
        for e in embed_photos(found.photos, self.encoder(), workers=workers, progress=progress, total=len(found.photos)):
            if e.n_faces:
                vectors.append(e.vectors[0])
                labels.append(e.photo.identity)
        if not vectors:
            raise InvalidInputError(f"{photos}: no face found in any of {len(found.photos)} photos")
        return np.stack(vectors), labels

    def thumbnail(self, record_id: int, size: int = 64) -> Optional[np.ndarray]:
        """The face of a photo-built record, cropped from its source photo (None when the photo is gone)."""
        from .embed import face_thumbnail
        from .store.reports import REPORT_GLOB, read_report

        if self._faces_of is None:
            self._faces_of = {}
            for path in sorted(self.root.glob(REPORT_GLOB)):
                report = read_report(path)
                root = report.get("photos_root")
                for e in report.get("sources", []) if root else []:
                    self._faces_of[e["source"]] = (Path(root) / e["source"], e["boxes"])
            wanted = {}
            for r in self._store.iter_records(self.manifest.shards, columns=["id", "source", "face_index"]):
                for i, s, f in zip(r.ids, r.sources, r.face_index):
                    wanted[int(i)] = (str(s), int(f))
            self._source_of = wanted
        source, face = self._source_of.get(int(record_id), (None, 0))
        path, boxes = self._faces_of.get(source, (None, []))
        if path is None or face >= len(boxes):
            return None
        try:
            return face_thumbnail(path, boxes[face], size)
        except InvalidInputError:
            return None

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
        with writer_lock(self.root):
            base = read_manifest(self.root)
            erase_strays(self.root, base, None)
            new = copy.deepcopy(base)
            shards = []
            bar = progress_bar(progress, total=len(base.shards), desc="compacting shards", unit="shard")
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
                index = VectorIndex.load(self.root / base.index.file, spec_of(base.index, base.dim), gpu=self._gpu)
                index.remove(remove_ids)
                new.index = save_index(self.root, index, new, base.index.trained_on)
            commit(self.root, new, base)
            scrub_reports(self.root, set(wanted))
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
        with writer_lock(self.root):
            base = read_manifest(self.root)
            erase_strays(self.root, base, None)
            new = copy.deepcopy(base)
            sample = None
            if spec.kind != "flat":
                rows = training_sample(len(self), spec)
                sample = self._vectors.gather(self._record_ids[rows])
            built = build_index(spec, sample, self._stored_batches(progress), gpu=self._gpu)
            new.index = save_index(self.root, built, new, len(sample) if sample is not None else 0)
            commit(self.root, new, base)
        self._reload()
        return spec

    def _stored_batches(self, progress: Optional[bool]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        bar = progress_bar(progress, total=len(self), desc="indexing", unit="vec")
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
        index = self._searcher.index
        index_ram = index.memory_bytes() if index is not None else 0
        labels_ram = self._searcher.memory_bytes() - index_ram
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


def _new_manifest(root: Path, overwrite: bool, add_with: str, **fields) -> tuple[Manifest, Optional[Manifest]]:
    """The manifest a new gallery in ``root`` starts from, and the one it replaces (``overwrite``) if any.

    File and id numbering continue the old gallery's, so none of its files is overwritten in place.
    """
    old = None
    if manifest_path(root).is_file():
        if not overwrite:
            raise GalleryError(f"{root}: already holds a gallery; add to it with {add_with}, or pass overwrite=True")
        old = read_manifest(root)
    elif root.exists() and not root.is_dir():
        raise InvalidInputError(f"{root}: exists and is not a folder")
    base = Manifest(**fields)
    if old is not None:
        base.generation, base.next_id, base.next_file = old.generation, old.next_id, old.next_file
    return base, old


def _detector_options(method: str, landmarks: Optional[int], upsample: Optional[int], max_side: Optional[int]) -> dict:
    options = {"method": method, "landmarks": landmarks, "upsample": upsample, "max_side": max_side}
    return {k: v for k, v in options.items() if v is not None}
