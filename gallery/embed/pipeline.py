"""The batch embedder: photos decoded, searched for faces and aligned in worker processes, encoded in batches.

Workers return aligned chips (not whole images), so the main process only encodes: batched on the
chosen device while the workers go on with the next photos. Results come back in input order.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

import numpy as np

from ..errors import InvalidInputError
from ..vectors import as_embeddings
from .align import ChipSpec, align_faces
from .detect import Face, FaceDetector
from .images import Photo, decode_photo

if TYPE_CHECKING:  # the encoders need torch, which detection workers never import
    from .encoders import Encoder


@dataclass
class EmbeddedPhoto:
    """One photo's faces (largest first) and their unit-norm embeddings, or why it has none."""

    photo: Photo
    faces: list[Face] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    error: Optional[str] = None

    @property
    def n_faces(self) -> int:
        return len(self.faces)


@dataclass
class AlignedPhoto:
    """One photo's faces (largest first) and their aligned chips ``(F, size, size, 3) uint8``, or why it has none."""

    photo: Photo
    faces: list[Face]
    chips: np.ndarray
    error: Optional[str] = None


_WORKER: dict = {}
#: fork: workers start at once and scripts need no ``__main__`` guard; they run only dlib and Pillow,
#: which start no threads that a fork could break.
_START_METHOD = "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the build process dies, even by SIGKILL, instead of lingering."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when their task pipe closes
        return
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before prctl took effect
        os._exit(0)


def _start_worker(detector_options: dict, chip: ChipSpec, in_pool: bool = False) -> None:
    if in_pool:
        _die_with_parent()
    _WORKER["detector"] = FaceDetector(**detector_options)
    _WORKER["chip"] = chip
    _WORKER["key"] = (sorted(detector_options.items()), chip)


def align_batch(photos: list[Photo], chip: ChipSpec, detector_options: dict) -> list[AlignedPhoto]:
    """Decode, detect and align ``photos`` in this process, reusing its detector from the previous call
    when the options are the same (a Ray worker runs many such tasks)."""
    if _WORKER.get("key") != (sorted(detector_options.items()), chip):
        _start_worker(detector_options, chip)
    return [_detect(p) for p in photos]


def _detect(photo: Photo) -> AlignedPhoto:
    """Decode, detect and align one photo; any failure becomes the photo's error, never the build's."""
    chip: ChipSpec = _WORKER["chip"]
    try:
        image = decode_photo(photo.path)
        faces = _WORKER["detector"].detect(image)
        chips = align_faces(image.pixels, faces, chip)
        return AlignedPhoto(photo, faces, chips)
    except InvalidInputError as e:
        return AlignedPhoto(photo, [], np.empty((0, chip.size, chip.size, 3), np.uint8), str(e))
    except Exception as e:  # a decoder or detector crash on one file must not stop a million-photo build
        return AlignedPhoto(photo, [], np.empty((0, chip.size, chip.size, 3), np.uint8), f"{photo.path}: {type(e).__name__}: {e}")


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


def detector_options(chip: ChipSpec, detector: Optional[dict]) -> dict:
    """``detector`` completed with the landmark model ``chip`` needs, and checked once, here, rather than in
    every worker."""
    options = {"landmarks": chip.landmarks, **(detector or {})}
    if chip.template == "arcface" and options["landmarks"] != 68:
        raise InvalidInputError("ArcFace's chip template needs 68-point landmarks")
    FaceDetector(**options)
    return options


#: The detector that :func:`resolve_detector` picks from the encoder's device; what the CLI and API default to.
AUTO_DETECTOR = "auto"


def resolve_detector(options: Optional[dict], encoder_device: Optional[object]) -> dict:
    """``options`` with an ``auto`` (or absent) ``method`` made a real one: the torch CNN on the encoder's GPU
    when the encoder runs on CUDA, else HOG; a CNN without a ``device`` is put on a CUDA encoder's device.

    The rule lives here alone because only a caller holding the encoder knows its device: the local
    pipeline, the query path and the Ray driver (for its encoder actors) all call it. On a GPU the CNN
    finds faces HOG misses and frees the CPUs from detection; on a CPU its detection takes about 15 times
    as long as HOG's (0.43 s a shared photo on 2 threads against 29 ms on one core, ``benchmarks/README.md``).
    ``encoder_device`` is a ``torch.device``, a string, or None (an encoder without one: the CPU).

    >>> resolve_detector({}, "cpu")["method"]
    'hog'
    >>> resolve_detector({"method": "auto", "landmarks": 68}, "cuda:1")
    {'method': 'cnn', 'landmarks': 68, 'device': 'cuda:1'}
    >>> resolve_detector({"method": "hog"}, "cuda")
    {'method': 'hog'}
    """
    options = dict(options or {})
    on_gpu = str(encoder_device or "cpu").startswith("cuda")
    if options.get("method", AUTO_DETECTOR) == AUTO_DETECTOR:
        options["method"] = "cnn" if on_gpu else "hog"
    if options["method"] == "cnn" and on_gpu and options.get("device") is None:
        options["device"] = str(encoder_device)
    return options


def align_photos(
    photos: Iterable[Photo],
    chip: ChipSpec,
    *,
    detector: Optional[dict] = None,
    workers: Optional[int] = None,
    progress: Optional[bool] = None,
    total: Optional[int] = None,
    desc: str = "aligning faces",
) -> Iterator[AlignedPhoto]:
    """Decode, detect and align every photo (in worker processes), yielding one :class:`AlignedPhoto` each, in order.

    ``detector`` holds :class:`FaceDetector` options (``method``, ``landmarks``, ``max_side``,
    ``upsample``, ``device``); the landmark model defaults to the one ``chip`` needs. ``workers=0`` works in
    this process. A ``method`` of ``auto`` needs the encoder's device: pass ``resolve_detector(options, device)``.
    """
    from ..progress import progress_bar

    options = detector_options(chip, detector)
    workers = default_workers() if workers is None else int(workers)
    if str(options.get("device") or "cpu").startswith("cuda"):
        workers = 0  # CUDA does not survive a fork: a GPU detector works in this process
    bar = progress_bar(progress, total=total, desc=desc, unit="img")
    faces_found = 0
    pool = None
    try:
        if workers > 0:
            ctx = mp.get_context(_START_METHOD)
            pool = ctx.Pool(workers, initializer=_start_worker, initargs=(options, chip, True))
            aligned = pool.imap(_detect, photos, chunksize=1)
        else:
            _start_worker(options, chip)
            aligned = map(_detect, photos)
        for item in aligned:
            faces_found += len(item.faces)
            bar.update(1)
            bar.set_postfix(faces=faces_found, refresh=False)
            yield item
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()


def embed_photos(
    photos: Iterable[Photo],
    encoder: Encoder,
    *,
    detector: Optional[dict] = None,
    workers: Optional[int] = None,
    progress: Optional[bool] = None,
    total: Optional[int] = None,
    desc: str = "embedding photos",
) -> Iterator[EmbeddedPhoto]:
    """Embed every face of every photo, yielding one :class:`EmbeddedPhoto` per input photo, in order.

    Alignment as in :func:`align_photos`, with the detector of :func:`resolve_detector` (``auto`` by
    default: the CNN on a CUDA encoder's GPU, in this process); chips are encoded in batches of
    ``encoder.batch_size``.
    """
    workers = default_workers() if workers is None else int(workers)
    detector = resolve_detector(detector, getattr(encoder, "device", None))
    pending: list[AlignedPhoto] = []
    for item in align_photos(photos, encoder.chip, detector=detector, workers=workers, progress=progress,
                             total=total, desc=desc):
        pending.append(item)
        if sum(len(p.chips) for p in pending) >= encoder.batch_size:
            with _cores_left_by(workers, encoder):
                encoded = list(encode_aligned(pending, encoder))
            yield from encoded
            pending = []
    yield from encode_aligned(pending, encoder)  # the workers have finished: the last batch has every core


@contextmanager
def _cores_left_by(workers: int, encoder: Encoder):
    """A CPU encoder in torch runs on the cores the detection workers leave (at least one) while it encodes.

    With more threads than cores, torch's threads wait on each other at every layer: on 2 busy cores
    its 2 threads encoded 4x slower than 1 (``benchmarks/README.md``, "Photo embedding throughput").
    """
    torch = sys.modules.get("torch")
    device = getattr(encoder, "device", None)
    if torch is None or workers == 0 or getattr(device, "type", None) != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def encode_aligned(pending: list[AlignedPhoto], encoder: Encoder) -> Iterator[EmbeddedPhoto]:
    """The aligned photos with their vectors: all their chips encoded in one call of ``encoder``."""
    chips = [p.chips for p in pending if len(p.chips)]
    return with_vectors(pending, encode_chips(np.concatenate(chips), encoder) if chips else None, encoder.dim)


def encode_chips(chips: np.ndarray, encoder: Encoder) -> np.ndarray:
    """Unit-norm embeddings of aligned ``chips``, checked (finite, right dimension) before anyone stores them."""
    return as_embeddings(encoder.encode(chips), dim=encoder.dim, what=f"{encoder.name} embeddings")


def with_vectors(pending: list[AlignedPhoto], vectors: Optional[np.ndarray], dim: int) -> Iterator[EmbeddedPhoto]:
    """Hand each aligned photo its rows of ``vectors`` (the encoding of all their chips, in order)."""
    vectors = np.empty((0, dim), np.float32) if vectors is None else vectors
    at = 0
    for p in pending:
        n = len(p.chips)
        yield EmbeddedPhoto(p.photo, p.faces, vectors[at : at + n], p.error)
        at += n
