"""Training data: labelled vectors, class-disjoint train/validation splits, and batch orders.

Validation classes are never seen in training (the gallery meets new identities), and which classes
go to validation is drawn at random from a seed: Oi, Kawakami and Naemura show that an ordered split
(the first classes for training, the last for validation, as in the usual CUB/Cars protocols) biases
the comparison. :func:`class_split` with ``ordered=True`` exists to reproduce that effect.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..store import read_labelled_vectors
from ..vectors import as_embeddings, as_labels

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledData:
    """Unit-norm float32 inputs ``x`` (n, d), integer class codes ``y`` (n,), and each code's label."""

    x: np.ndarray
    y: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def subset(self, rows: np.ndarray) -> "LabelledData":
        return LabelledData(self.x[rows], self.y[rows], self.classes)


@dataclass(frozen=True)
class Split:
    """Row indices of a class-disjoint split and the class codes on each side."""

    train: np.ndarray
    val: np.ndarray
    train_classes: np.ndarray
    val_classes: np.ndarray
    ordered: bool
    seed: Optional[int]


def encode_labels(labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes 0..C-1 (int64) and the sorted distinct labels they stand for."""
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    return codes.astype(np.int64).reshape(-1), classes


def load_labelled_vectors(path: Path, *, labels: Optional[Path] = None, vector_column: str = "vector",
                          label_column: str = "identity") -> LabelledData:
    """Read training vectors and identity labels (.parquet, .h5/.hdf5, or .npy with a labels file).

    Rows are checked (finite, non-zero, one non-empty label each) and L2-normalised, as the gallery
    stores them, so a head trained here sees at training time what it will see in use.
    """
    data = read_labelled_vectors(Path(path), labels=labels, vector_column=vector_column, label_column=label_column,
                                 source_column=None)
    x = as_embeddings(data.vectors, what=f"{path}: vectors")
    if data.identities is None:
        raise InvalidInputError(f"{path}: has no labels; training needs an identity per vector")
    names = as_labels(data.identities, len(x), what=f"{path}: labels")
    y, classes = encode_labels(names.astype(str))
    return LabelledData(x, y, classes)


def load_labelled_photos(path: Path, *, encoder=None, chip=None, workers: Optional[int] = None,
                         progress: Optional[bool] = None) -> LabelledData:
    """Training data from a photo folder (``<identity>/<photos>``) or CSV, through the face pipeline.

    With ``encoder``: the unit-norm embedding of each photo's largest face (to train a head on it).
    With ``chip`` (a :class:`~gallery.embed.ChipSpec`): the aligned face itself as a float32 ``(3, H, W)``
    array scaled as the torch encoders scale it, ``(x - 127.5) / 127.5`` (to fine-tune an image encoder).
    Photos without a face are left out.
    """
    from ..embed import align_photos, embed_photos, list_photos

    found = list_photos(path)
    xs, names = [], []
    if encoder is not None:
        for e in embed_photos(found.photos, encoder, workers=workers, progress=progress, total=len(found.photos)):
            if e.n_faces:
                xs.append(e.vectors[0])
                names.append(e.photo.identity)
    else:
        for a in align_photos(found.photos, chip, workers=workers, progress=progress, total=len(found.photos)):
            if len(a.chips):
                xs.append((a.chips[0].astype(np.float32).transpose(2, 0, 1) - 127.5) / 127.5)
                names.append(a.photo.identity)
    if not xs:
        raise InvalidInputError(f"{path}: no face found in any of {len(found.photos)} photos")
    LOG.info("%s: %d of %d photos have a face", path, len(xs), len(found.photos))
    y, classes = encode_labels(names)
    return LabelledData(np.stack(xs).astype(np.float32), y, classes)


def class_split(labels: Sequence, *, val_fraction: float = 0.2, seed: Optional[int] = 0,
                ordered: bool = False) -> Split:
    """Split rows so that no class is on both sides; ``round(val_fraction * classes)`` classes validate.

    Random (the default): the validation classes are drawn with ``seed``. ``ordered=True``: the classes
    are taken in sorted order and the last ones validate (the protocol Oi et al. warn against).
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise InvalidInputError(f"val_fraction: expected a fraction in (0, 1), got {val_fraction}")
    codes, classes = encode_labels(labels)
    C = len(classes)
    if C < 2:
        raise InvalidInputError(f"labels: a class-disjoint split needs at least 2 classes, got {C}")
    n_val = min(max(int(round(val_fraction * C)), 1), C - 1)
    order = np.arange(C) if ordered else np.random.default_rng(seed).permutation(C)
    val_classes = np.sort(order[C - n_val:])
    train_classes = np.sort(order[: C - n_val])
    is_val = np.isin(codes, val_classes)
    LOG.info("class split (%s): %d train classes (%d rows), %d validation classes (%d rows)",
             "ordered" if ordered else f"random, seed {seed}", len(train_classes), int((~is_val).sum()),
             len(val_classes), int(is_val.sum()))
    return Split(np.flatnonzero(~is_val), np.flatnonzero(is_val), train_classes, val_classes, ordered,
                 None if ordered else seed)


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Row indices of one epoch in random order, ``batch_size`` at a time (the last batch may be smaller)."""
    perm = rng.permutation(n)
    for s in range(0, n, batch_size):
        yield perm[s : s + batch_size]


def pk_batches(codes: np.ndarray, batch_size: int, rng: np.random.Generator, *, k: int = 4) -> Iterator[np.ndarray]:
    """One epoch of P x K batches: P = batch_size // k classes with (up to) k rows each.

    Pair and triplet losses need positives inside each batch (Hermans et al.'s PK sampling). Each class
    is cut into chunks of k of its shuffled rows; the chunks are shuffled and packed P per batch, so
    every row is seen once per epoch and classes with one row still serve as negatives.
    """
    codes = np.asarray(codes)
    k = max(1, min(k, batch_size))
    per_batch = max(1, batch_size // k)
    by_class = np.argsort(codes, kind="stable")
    _, counts = np.unique(codes[by_class], return_counts=True)
    chunks = []
    for rows in np.split(by_class, np.cumsum(counts)[:-1]):
        rows = rng.permutation(rows)
        chunks.extend(rows[s : s + k] for s in range(0, len(rows), k))
    order = rng.permutation(len(chunks))
    for s in range(0, len(order), per_batch):
        yield np.concatenate([chunks[i] for i in order[s : s + per_batch]])


def batches_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


__all__ = [
    "LabelledData",
    "Split",
    "batches_per_epoch",
    "class_split",
    "encode_labels",
    "load_labelled_vectors",
    "pk_batches",
    "shuffled_batches",
]
