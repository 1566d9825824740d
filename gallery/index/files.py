"""The index's files in a gallery folder: their names, checksums, loading and saving, and filling an index.

A change writes a new index file under a new sequence number and names it in the manifest; the
trained-but-empty checkpoint of an interrupted build lets a rerun skip the training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..progress import progress_bar
from ..store.files import file_mode, gallery_file, make_dir, sha256_file
from ..store.manifest import INDEX_DIR, MANIFEST_NAME, IndexInfo
from .build import VectorIndex, VectorSource, training_sample
from .spec import IndexSpec

LOG = logging.getLogger(__name__)

#: Vectors added to the index per step (bounds memory and drives the progress bar).
ADD_BATCH = 65_536


def spec_of(info: IndexInfo, dim: int) -> IndexSpec:
    """The spec an index was built with, from its manifest entry (a knob stored as null takes its default)."""
    return IndexSpec(kind=info.kind, dim=dim, **{k: v for k, v in info.params.items() if v is not None})


def index_name(seq: int, *, trained: bool = False) -> str:
    return f"{INDEX_DIR}/{'trained' if trained else 'index'}-{seq:06d}.faiss"


def index_path(root: Path, info: IndexInfo) -> Path:
    """The index file the manifest names, checked to stay inside the gallery's index/ folder."""
    return gallery_file(root, info.file, "index.file", Path(root) / MANIFEST_NAME, under=INDEX_DIR)


def load_index(root: Path, info: IndexInfo, dim: int, *, gpu: Optional[bool] = None) -> VectorIndex:
    return VectorIndex.load(index_path(root, info), spec_of(info, dim), gpu=gpu)


def save_index(root: Path, index: VectorIndex, seq: int, trained_on: int) -> IndexInfo:
    """Write ``index`` as file number ``seq`` of gallery ``root``; its manifest entry."""
    root = Path(root)
    make_dir(root / INDEX_DIR, root)
    name = index_name(seq)
    index.save(root / name, mode=file_mode(root))
    return IndexInfo(file=name, sha256=sha256_file(root / name), kind=index.spec.kind, factory=index.factory,
                     ntotal=index.ntotal, trained_on=trained_on, params=index.spec.params())


def add_vectors(index: VectorIndex, ids: np.ndarray, vectors: VectorSource, *, progress: Optional[bool] = None) -> None:
    """Add the stored vectors of ``ids`` in steps of :data:`ADD_BATCH` (bounded memory, a progress bar)."""
    bar = progress_bar(progress, total=len(ids), desc="indexing", unit="vec")
    for s in range(0, len(ids), ADD_BATCH):
        batch = ids[s : s + ADD_BATCH]
        index.add(batch, vectors.gather(batch))
        bar.update(len(batch))
    bar.close()


def add_batches(index: VectorIndex, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
    for ids, x in batches:
        index.add(ids, x)


def trained_index(root: Path, spec: IndexSpec, ids: np.ndarray, vectors: VectorSource, *, gpu: Optional[bool],
                  checkpoint: Optional[str], seq: int) -> tuple[VectorIndex, int, Optional[str]]:
    """A trained, empty index for ``spec`` over a sample of ``ids``; reuses ``checkpoint`` (a file name
    from an interrupted run) when it is there, else trains and saves one as number ``seq``.

    Returns the index, the training sample size, and the checkpoint's name (None for flat).
    """
    root = Path(root)
    if spec.kind == "flat":
        return VectorIndex.create(spec, gpu=gpu), 0, None
    rows = training_sample(len(ids), spec)
    if checkpoint:
        path = gallery_file(root, checkpoint, "trained_index", root / "journal.json", under=INDEX_DIR)
        if path.is_file():
            LOG.info("resuming with the trained index from the interrupted run")
            return VectorIndex.load(path, spec, gpu=gpu), len(rows), checkpoint
    index = VectorIndex.create(spec, gpu=gpu)
    index.train(vectors.gather(ids[rows]))
    make_dir(root / INDEX_DIR, root)
    name = index_name(seq, trained=True)
    index.save(root / name, mode=file_mode(root))
    return index, len(rows), name
