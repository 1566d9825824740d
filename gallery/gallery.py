"""Gallery: enrolled identities on disk, searchable 1:N with an open-set decision.

A thin facade: every change goes through :class:`gallery.store.change.GalleryChange` (one writer at a
time, the manifest read under its lock, files first and the manifest last), enrolment through
:mod:`gallery.enrolment`, the index through :mod:`gallery.index`, ranking through
:mod:`gallery.search`. Searches pick up other processes' commits before they run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .calibration import Calibration
from .distributed import check_engine
from .enrolment import enrol_batch, enrol_photos, records_batch
from .errors import CorruptGalleryError, InvalidInputError, ModelMismatchError
from .index import IndexSpec, build_index, choose_index_spec, training_sample
from .index.codes import with_measured_codes
from .index.coverage import measured_nprobe, with_measured_nprobe
from .index.files import add_vectors, index_path, load_index, save_index, spec_of
from .search import IdentitySearcher, decide, resolve_threshold, threshold_provenance
from .store import Manifest, ShardStore, read_manifest
from .store.change import NAMED_DIRS, GalleryChange, check_consistent
from .store.files import TMP_SUFFIX, sha256_file
from .store.journal import read_journal
from .store.locks import reading
from .store.manifest import manifest_path
from .store.shards import FORMATS
from .types import FaceResult, PhotoResult, SearchResult
from .vectors import as_embeddings

LOG = logging.getLogger(__name__)

DEFAULT_MODEL = "external"
DEFAULT_ROWS_PER_SHARD = 100_000

#: Builds the searcher of one opened generation: ``(root, manifest, store, gpu) -> IdentitySearcher``.
SearcherFactory = Callable[[Path, Manifest, ShardStore, Optional[bool]], IdentitySearcher]


def local_searcher(root: Path, manifest: Manifest, store: ShardStore, gpu: Optional[bool]) -> IdentitySearcher:
    """The local engine: the gallery's index loaded in this process over its memory-mapped vectors."""
    id_lists, ids, labels = store.all_labels(manifest.shards)
    vectors = store.vectors(manifest.shards, manifest.dim, ids=id_lists)
    index = load_index(root, manifest.index, manifest.dim, gpu=gpu) if manifest.index else None
    if index is not None and index.ntotal != len(ids):
        raise CorruptGalleryError(f"{root / manifest.index.file}: holds {index.ntotal} vectors, the shards "
                                  f"{len(ids)} records; restore the gallery's files or run `gallery rebuild-index`")
    return IdentitySearcher(index, vectors, ids, labels, manifest.next_id)


def _stored_calibration(root: Path, manifest: Manifest) -> Optional[Calibration]:
    """The open-set calibration ``manifest`` stores (read_manifest checked it), or None."""
    data = manifest.thresholds.get("open_set")
    return Calibration.from_json(data, source=manifest_path(root)) if data else None


class Gallery:
    """A gallery folder opened for search and enrolment.

    >>> g = Gallery.from_vectors(vectors, identities, "out_dir", index="auto")   # doctest: +SKIP
    >>> results = g.search(query_vectors, k=5)                                    # doctest: +SKIP
    >>> results[0].identity  # the decided identity, or None for "unknown"      # doctest: +SKIP
    """

    def __init__(self, root: Path | str, *, gpu: Optional[bool] = None, searchers: Optional[SearcherFactory] = None,
                 wait: float = 0.0):
        self.root = Path(root)
        self._gpu = gpu
        self._make_searcher = searchers or local_searcher
        #: Seconds a change waits for another writer before it fails naming it.
        self.wait = wait
        self._encoder = None
        self._warned_fallback = False
        self.last_report: Optional[dict] = None
        self._reload()

    # ------------------------------------------------------------------ opening and creating

    @classmethod
    def open(cls, root: Path | str, *, gpu: Optional[bool] = None, engine: str = "local",
             shards: Optional[int] = None, address: Optional[str] = None, wait: float = 0.0) -> "Gallery":
        """Open the gallery in ``root`` (``gpu``: None = use a GPU when faiss sees one).

        ``engine="ray"`` searches it on ``shards`` Ray actors, each holding the identities of one shard
        (see :mod:`gallery.distributed.sharded`), on the cluster at ``address`` (else ``RAY_ADDRESS``,
        else a local one); answers are the local engine's. ``wait``: seconds a change waits for another
        writer to finish.
        """
        check_engine(engine)
        if engine == "ray":
            from .distributed.sharded import ShardedSearchers

            return cls(root, gpu=gpu, searchers=ShardedSearchers(shards or 1, address=address), wait=wait)
        if shards not in (None, 1):
            raise InvalidInputError(f"shards={shards} needs engine='ray'; the local engine searches one index")
        return cls(root, gpu=gpu, wait=wait)

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
        wait: float = 0.0,
        group_access: bool = False,
    ) -> "Gallery":
        """Build a gallery in ``root`` from embeddings and their identity labels.

        Vectors are L2-normalised before they are written. ``overwrite=True`` replaces an existing
        gallery, which stays readable until the new one is complete. An interrupted build resumes when
        called again with the same arguments. The folder is private to its owner (0700, files 0600)
        unless ``group_access`` makes it readable by the owner's group (0750 / 0640).
        """
        root = Path(root)
        if shard_format not in FORMATS:
            raise InvalidInputError(f"unknown shard format {shard_format!r}; choose one of: {', '.join(FORMATS)}")
        if rows_per_shard < 1:
            raise InvalidInputError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        x = as_embeddings(vectors)
        batch = records_batch(x, identities, sources, face_index)
        choose_index_spec(len(x), x.shape[1], index, nlist=nlist, pq_m=pq_m, nprobe=nprobe, rerank=rerank)
        create = Manifest(model=model, dim=x.shape[1], shard_format=shard_format, rows_per_shard=rows_per_shard)
        index_params = dict(kind=index, nlist=nlist, pq_m=pq_m, nprobe=nprobe, rerank=rerank)
        enrol_batch(root, batch, create=create, replace=overwrite, wait=wait, group_access=group_access,
                    index_params=index_params, gpu=gpu, progress=progress)
        return cls(root, gpu=gpu, wait=wait)

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
            g = cls(root, gpu=build_options.get("gpu"), wait=build_options.get("wait", 0.0))
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
        detector: str = "auto",
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
        wait: float = 0.0,
        group_access: bool = False,
    ) -> "Gallery":
        """Build a gallery in ``root`` from a photo folder laid out ``<identity>/<photos>`` (or a CSV of path,identity).

        Every photo's faces are detected, aligned and encoded with ``model`` (see
        :func:`gallery.embed.get_encoder`); ``faces`` says which face of a photo with several is
        enrolled ("largest", "all", or "single" to skip such photos). ``detector`` is "hog", "cnn" or "auto"
        (dlib's CNN on the encoder's GPU when the encoder runs on CUDA, else HOG). The outcome of every photo is in
        :attr:`last_report` and in ``report-<generation>.json`` beside the manifest. An interrupted
        build resumes when called again with the same arguments. ``engine="ray"`` embeds on a Ray
        cluster (``address``, else ``RAY_ADDRESS``, else a local one) and writes the same gallery.
        ``wait`` and ``group_access`` as for :meth:`from_vectors`.
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
        create = Manifest(model=encoder.name, dim=encoder.dim, shard_format=shard_format, rows_per_shard=rows_per_shard,
                          model_fingerprint=encoder.fingerprint, model_spec=encoder.spec)
        _, report = enrol_photos(root, found, encoder, create=create, replace=overwrite, wait=wait,
                                 group_access=group_access, faces=faces,
                                 detector=_detector_options(detector, landmarks, upsample, max_side), workers=workers,
                                 index_params={"kind": index}, gpu=gpu, progress=progress, engine=engine,
                                 address=address)
        g = cls(root, gpu=gpu, wait=wait)
        g._encoder, g.last_report = encoder, report
        return g

    # ------------------------------------------------------------------ loading

    def _manifest_stamp(self) -> Optional[tuple[int, int]]:
        try:
            st = os.stat(manifest_path(self.root))
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _reload(self) -> None:
        """Open the current generation, holding the readers' lock so no commit erases its files meanwhile;
        a reader that still finds a file missing re-reads once if the manifest changed under it."""
        for attempt in range(2):
            seen = self._manifest_stamp()
            try:
                with reading(self.root):
                    manifest = read_manifest(self.root)
                    check_consistent(self.root, manifest)
                    store = ShardStore(self.root, manifest.shard_format)
                    calibration = _stored_calibration(self.root, manifest)
                    searcher = self._make_searcher(self.root, manifest, store, self._gpu)
            except CorruptGalleryError:
                if attempt or self._manifest_stamp() == seen:
                    raise
                LOG.info("%s: the gallery changed while it was opened; opening it again", self.root)
                continue
            break
        self.manifest, self._store, self._searcher, self._seen = manifest, store, searcher, seen
        self._calibration = calibration
        self._faces_of = None
        self._source_of: Optional[dict[int, tuple[str, int]]] = None

    def _refresh(self) -> None:
        """Pick up another process's commit (its superseded files are erased once it is opened)."""
        if self._manifest_stamp() != self._seen:
            self._reload()

    def close(self) -> None:
        """Release what the engine holds (the Ray engine's shard actors); a no-op for the local engine."""
        close = getattr(self._make_searcher, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
    def _vectors(self):
        return self._searcher.vectors

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
        """The stored open-set calibration, if `gallery calibrate` has run (read once per generation)."""
        return self._calibration

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
        """Store ``calibration`` in the manifest; searches use it from then on, over at least the cells
        per query its threshold was measured with (an ivfpq gallery's nprobe is raised to them)."""
        with GalleryChange(self.root, operation="calibrate", wait=self.wait) as change:
            m = change.manifest
            if calibration.model != m.model:
                raise ModelMismatchError(f"{self.root}: calibration is for model {calibration.model!r}, the gallery "
                                         f"holds {m.model!r}")
            m.thresholds["open_set"] = calibration.to_json()
            if m.index is not None and m.index.kind == "ivfpq":
                nprobe = calibration.nprobe_for(m.index.params["nlist"])
                if nprobe is not None and nprobe > m.index.params["nprobe"]:
                    m.index = dataclasses.replace(m.index, params={**m.index.params, "nprobe": nprobe})
            change.commit()
        self._reload()

    def cells_for_threshold(self, threshold: float) -> Optional[int]:
        """Cells per query in which the gallery's own images find a mate that clears ``threshold`` where
        exact search would accept them (gallery.index.coverage); None for a flat index or when too few
        identities have two images to measure it."""
        s = self._searcher
        if not isinstance(s, IdentitySearcher) or s.index is None:  # a distributed engine measures nothing here
            return None
        return measured_nprobe(s.index, s.record_ids, s.names[s.codes], s.vectors, threshold=threshold)

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
        self._refresh()
        xq = as_embeddings(queries, dim=self.dim, what="queries")
        t, source = self.threshold(threshold)
        provenance = self.threshold_provenance(source)
        if source == "fallback" and not self._warned_fallback:
            LOG.warning("%s: %s", self.root, provenance["warning"])
            self._warned_fallback = True
        ranked = self._searcher.rank_open_set(xq, k, t, nprobe=nprobe, recheck_nprobe=recheck_nprobe, rerank=rerank,
                                              aggregate=aggregate, top_n=top_n)
        if self.manifest.model_spec is not None:  # a photo gallery: name the enrolled photo of every match
            sources = self._record_sources()
            ranked = [[m.with_sources([sources.get(i, ("", 0))[0] for i in m.records]) for m in row] for row in ranked]
        return decide(ranked, t, source, provenance)

    def threshold_provenance(self, source: Optional[str] = None) -> dict:
        """Where the threshold in use comes from (``source`` as :meth:`threshold` returns it): a calibrated
        one's target FPIR, gallery sizes and evidence, a model default's evidence, or the fallback's warning."""
        source = source or self.threshold()[1]
        cal = self.calibration if source == "calibrated" else None
        return threshold_provenance(source, self.model, cal.provenance(len(self._names)) if cal is not None else None)

    def _record_sources(self) -> dict[int, tuple[str, int]]:
        """Each record's source photo and face index (read once per generation)."""
        if self._source_of is None:
            self._source_of = {}
            for r in self._store.iter_records(self.manifest.shards, columns=["id", "source", "face_index"]):
                for i, s, f in zip(r.ids.tolist(), r.sources, r.face_index.tolist()):
                    self._source_of[i] = (str(s), f)
        return self._source_of

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
        """Enrol more vectors (new or existing identities) without retraining the index; returns their record ids.

        The change works on the gallery as it is when it takes the writer lock, whatever other
        processes committed since this object opened it.
        """
        self._refresh()
        x = as_embeddings(vectors, dim=self.dim)
        batch = records_batch(x, identities, sources, face_index)
        m = enrol_batch(self.root, batch, wait=self.wait, model=model, gpu=self._gpu, progress=progress)
        self._reload()
        return np.arange(m.next_id - len(x), m.next_id, dtype=np.int64)

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
        detector: str = "auto",
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
        _, report = enrol_photos(self.root, found, encoder, wait=self.wait, faces=faces,
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
        detector: str = "auto",
        upsample: Optional[int] = None,
        max_side: Optional[int] = None,
        workers: Optional[int] = None,
        device: Optional[str] = None,
        progress: Optional[bool] = None,
        **search_options,
    ) -> list[PhotoResult]:
        """Search every face of every probe photo: one :class:`PhotoResult` per photo, its faces largest first.

        ``paths`` is an image, a folder, a text file listing images, or a list of those; options as
        for :meth:`search`. The answers of :meth:`iter_search_images`, collected.
        """
        return list(self.iter_search_images(paths, k, threshold=threshold, detector=detector, upsample=upsample,
                                            max_side=max_side, workers=workers, device=device, progress=progress,
                                            **search_options))

    def iter_search_images(
        self,
        paths,
        k: int = 5,
        *,
        threshold: Optional[float] = None,
        detector: str = "auto",
        upsample: Optional[int] = None,
        max_side: Optional[int] = None,
        workers: Optional[int] = None,
        device: Optional[str] = None,
        progress: Optional[bool] = None,
        **search_options,
    ) -> Iterator[PhotoResult]:
        """:meth:`search_images` as a stream: each photo's :class:`PhotoResult`, in input order, as soon as it is ready.

        Reading a photo (decoding, finding and aligning its faces) costs far more than encoding and
        searching them, so each photo is encoded and searched as it arrives from the workers that read
        the next ones: the first answers come at once rather than after the whole batch (what
        ``gallery query`` prints). ``progress`` shows a bar only for more than one photo.
        """
        from .embed import align_photos, gather_photos
        from .embed.pipeline import encode_chips, resolve_detector

        items = [paths] if isinstance(paths, (str, Path)) else list(paths)
        found = gather_photos(items, labelled=False)
        encoder = self.encoder(device=device)
        options = resolve_detector(_detector_options(detector, None, upsample, max_side), getattr(encoder, "device", None))
        shown = progress if len(found.photos) > 1 else False
        for item in align_photos(found.photos, encoder.chip, detector=options, workers=workers, progress=shown,
                                 total=len(found.photos), desc="reading probes"):
            results = (self.search(encode_chips(item.chips, encoder), k=k, threshold=threshold, **search_options)
                       if len(item.chips) else [])
            faces = tuple(FaceResult(f.box, r) for f, r in zip(item.faces, results))
            yield PhotoResult(item.photo.source, faces, item.error)

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
        from .store.reports import photo_faces

        if self._faces_of is None:
            self._faces_of = photo_faces(self.root)
        source, face = self._record_sources().get(int(record_id), (None, 0))
        path, boxes = self._faces_of.get(source, (None, []))
        if path is None or face >= len(boxes):
            return None
        try:
            return face_thumbnail(path, boxes[face], size)
        except InvalidInputError:
            return None

    def remove(self, identities: Sequence[str], *, progress: Optional[bool] = None) -> int:
        """Remove identities from the index and erase them from every file of the gallery; returns records removed.

        Shards holding their rows are rewritten without them, their photos' entries leave every report,
        the logs and shards of interrupted runs are erased, and every superseded file is overwritten
        with zeros before deletion: nothing of them is left in the gallery folder. Which records go is
        decided under the writer lock, on the gallery as it is then.
        """
        if isinstance(identities, str):
            identities = [identities]
        wanted = list(dict.fromkeys(str(s) for s in identities))
        with GalleryChange(self.root, operation="remove", wait=self.wait) as change:
            m = change.manifest
            _, ids, labels = change.store.all_labels(m.shards)
            labels = labels.astype(str)
            unknown = sorted(set(wanted) - set(labels.tolist()))
            if unknown:
                raise InvalidInputError(f"{self.root}: no such identities: {', '.join(unknown[:10])}; nothing was removed")
            remove_ids = ids[np.isin(labels, wanted)]
            change.drop(remove_ids, progress=progress)
            if m.index is not None:
                index = load_index(self.root, m.index, m.dim, gpu=self._gpu)
                index.remove(remove_ids)
                m.index = save_index(self.root, index, change.next_seq(), m.index.trained_on)
            change.forget(wanted)
            change.commit()
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
        """Retrain and rebuild the index from the stored vectors (after large growth, or to change kind).

        It indexes the records the gallery holds when the writer lock is taken, including those other
        processes added since this object was opened.
        """
        with GalleryChange(self.root, operation="rebuild-index", wait=self.wait) as change:
            m = change.manifest
            id_lists, ids, labels = change.store.all_labels(m.shards)
            vectors = change.store.vectors(m.shards, m.dim, ids=id_lists)
            spec = choose_index_spec(len(ids), m.dim, index, nlist=nlist, pq_m=pq_m, nprobe=nprobe, rerank=rerank)
            sample = None
            if spec.kind != "flat":
                sample = vectors.gather(ids[training_sample(len(ids), spec)])
            built = build_index(spec, sample, (), gpu=self._gpu)
            add_vectors(built, ids, vectors, progress=progress)
            if not nprobe:
                cal = _stored_calibration(self.root, m)  # if calibrated: the cells its threshold needs
                threshold = cal.threshold_for(len(np.unique(labels.astype(str)))) if cal is not None else None
                with_measured_nprobe(built, ids, labels, vectors, threshold=threshold)
            built = with_measured_codes(built, ids, labels, vectors, recode=not pq_m, progress=progress)
            spec = built.spec
            m.index = save_index(self.root, built, change.next_seq(), len(sample) if sample is not None else 0)
            change.commit()
        self._reload()
        return spec

    def verify(self) -> None:
        """Check everything that can disagree; raise CorruptGalleryError naming the first thing that does.

        Every checksum; every file in shards/ and index/ named by the manifest (or by the journal of a
        change still under way) and every named file there; each shard's row count and id range; ids
        unique and below ``next_id``; the index's vector count equal to the live records.
        """
        self._refresh()
        m, store = self.manifest, self._store
        store.verify(m.shards)
        info = m.index
        if info is not None and sha256_file(index_path(self.root, info)) != info.sha256:
            raise CorruptGalleryError(f"{self.root / info.file}: checksum mismatch; run `gallery rebuild-index`")
        journal = read_journal(self.root)
        named = store.files_of(m.shards) | store.files_of(journal.shards if journal else [])
        if info is not None:
            named.add(info.file)
        if journal is not None and journal.trained_index:
            named.add(journal.trained_index)
        for folder in NAMED_DIRS:
            path = self.root / folder
            for p in sorted(path.iterdir()) if path.is_dir() else []:
                unfinished = journal is not None or p.name.endswith(TMP_SUFFIX)  # an interrupted change's
                if f"{folder}/{p.name}" not in named and not unfinished:
                    raise CorruptGalleryError(f"{p}: on disk but not named in the manifest; it was copied in or "
                                              "a shard entry was removed from manifest.json")
        store.check_ids(m.shards, m.next_id)
        held = self._searcher.index.ntotal if self._searcher.index is not None else 0
        if held != len(self) or (info is not None and info.ntotal != held):
            raise CorruptGalleryError(f"{self.root}: the index holds {held} vectors, the shards {len(self)} records "
                                      f"(the manifest says {info.ntotal if info else 0}); run `gallery rebuild-index`")

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
            "threshold": {"value": t, "source": source, "provenance": self.threshold_provenance(source)},
            "calibration": m.thresholds.get("open_set"),
            "disk_bytes": disk,
            "ram_bytes": {"index": index_ram, "labels": int(labels_ram), "per_vector": (index_ram + labels_ram) / max(len(self), 1)},
        }
        if m.index is not None:
            out["index"] = {"kind": m.index.kind, "factory": m.index.factory, "ntotal": m.index.ntotal, "trained_on": m.index.trained_on, **m.index.params}
            suggested = choose_index_spec(len(self), m.dim, "auto") if len(self) else None
            if suggested is not None and suggested.kind != m.index.kind:
                out["index"]["advice"] = f"at {len(self)} vectors the auto rule picks {suggested.kind}; run `gallery rebuild-index`"
        engine = self._searcher.engine_info()
        if engine is not None:
            out["engine"] = engine
        return out


def _detector_options(method: str, landmarks: Optional[int], upsample: Optional[int], max_side: Optional[int]) -> dict:
    options = {"method": method, "landmarks": landmarks, "upsample": upsample, "max_side": max_side}
    return {k: v for k, v in options.items() if v is not None}
