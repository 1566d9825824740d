"""Distributed photo embedding: the CPU stages in Ray tasks, the torch stages in a pool of encoder actors.

With HOG, photos are decoded, searched and aligned in Ray tasks and their chips encoded in the
actors. With the CNN detector (what ``auto`` picks on a GPU cluster), detection is a torch stage too:
each actor decodes, detects on its encoder's device, aligns and encodes whole chunks of photos, so a
GPU build is not bound by CPU detection. The driver keeps the photos' order and yields the same
:class:`~gallery.embed.pipeline.EmbeddedPhoto` stream as the local pipeline, so enrolment (shards,
manifest, resume) is the same code for both engines. Each stage runs the local pipeline's functions,
so the vectors are the local build's.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Iterable, Iterator, Optional

import numpy as np

from ..embed.pipeline import (AlignedPhoto, EmbeddedPhoto, align_batch, detector_options, encode_aligned,
                              encode_chips, resolve_detector, with_vectors)
from ..errors import ModelMismatchError
from ..progress import progress_bar
from .cluster import cluster_cpus, cluster_gpus, connect

#: Photos per alignment task: enough to amortise a task's overhead, few enough to keep every worker busy.
PHOTOS_PER_TASK = 4
#: Photos per call of an actor that detects and encodes: enough faces for a GPU batch from one call.
PHOTOS_PER_ENCODER_CALL = 16
#: Actors per GPU when they detect too: decoding, landmarks and alignment are CPU work inside each
#: actor, so a second actor keeps the GPU busy while the first one does them (not yet measured on a GPU).
DETECTING_ENCODERS_PER_GPU = 2
#: Restarts of a dead encoder actor (Ray retries the batch it was encoding).
MAX_RESTARTS = 3


class EncoderServer:
    """A Ray actor holding one encoder (one per GPU, or a fraction of the CPUs)."""

    def __init__(self, spec: str, fingerprint: str, device: Optional[str]):
        from ..embed import get_encoder

        self.encoder = get_encoder(spec, device=device)
        if self.encoder.fingerprint != fingerprint:
            raise ModelMismatchError(f"{spec!r} loads with fingerprint {self.encoder.fingerprint} on this node, "
                                     f"not the driver's {fingerprint}: its weights file differs")

    def encode(self, chips: np.ndarray) -> np.ndarray:
        return encode_chips(chips, self.encoder)

    def embed(self, photos: list, chip, options: dict) -> list[EmbeddedPhoto]:
        """Decode, detect (on this actor's encoder device), align and encode ``photos``, as the local pipeline does."""
        device = str(getattr(self.encoder, "device", None) or "cpu")
        return list(encode_aligned(align_batch(photos, chip, {**options, "device": device}), self.encoder))


def cluster_detector(detector: Optional[dict] = None, address: Optional[str] = None) -> dict:
    """The detector options a Ray build uses: :func:`~gallery.embed.pipeline.resolve_detector` for the
    encoder actors' device (a GPU when the cluster has one), without a device: each actor detects on its own."""
    connect(address)
    options = resolve_detector(detector, "cuda" if cluster_gpus() else "cpu")
    options.pop("device", None)
    return options


def embed_photos(
    photos: Iterable,
    encoder,
    *,
    detector: Optional[dict] = None,
    address: Optional[str] = None,
    encoders: Optional[int] = None,
    progress: Optional[bool] = None,
    total: Optional[int] = None,
    desc: str = "embedding photos (ray)",
) -> Iterator[EmbeddedPhoto]:
    """Embed every face of every photo on a Ray cluster; one :class:`EmbeddedPhoto` per photo, in input order.

    The detector is :func:`cluster_detector`'s. ``encoders`` is the size of the encoder pool: by default
    one per GPU (:data:`DETECTING_ENCODERS_PER_GPU` when they detect), else one per two CPUs (one per
    CPU when they detect, since they then do all the work). Each alignment task and CPU encoder asks
    for half a CPU, so neither stage can starve the other.
    """
    ray = connect(address)
    options = detector_options(encoder.chip, cluster_detector(detector, address))
    detecting = options["method"] == "cnn"
    gpus = cluster_gpus()
    cpus = cluster_cpus()
    per_gpu = DETECTING_ENCODERS_PER_GPU if detecting else 1
    n_encoders = int(encoders or (gpus * per_gpu if gpus else max(1, int(cpus if detecting else cpus // 2))))
    server = ray.remote(EncoderServer).options(num_cpus=0.5, num_gpus=1 / per_gpu if gpus else 0,
                                               max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
    device = "cuda" if gpus else "cpu"
    pool = [server.remote(encoder.spec, encoder.fingerprint, device) for _ in range(n_encoders)]
    bar = progress_bar(progress, total=total, desc=desc, unit="img")
    try:
        if detecting:
            yield from _detect_in_encoders(ray, pool, photos, encoder.chip, options, bar)
        else:
            yield from _align_in_tasks(ray, pool, photos, encoder, options, bar, window=max(2, int(cpus * 2)))
    finally:
        bar.close()
        for actor in pool:
            ray.kill(actor, no_restart=True)


def _detect_in_encoders(ray, pool: list, photos: Iterable, chip, options: dict, bar) -> Iterator[EmbeddedPhoto]:
    """Chunks of photos sent round-robin to the actors, two calls in flight per actor, results in order."""
    chunks = _chunks(photos, PHOTOS_PER_ENCODER_CALL)
    turn = itertools.cycle(pool)
    calls = deque(next(turn).embed.remote(chunk, chip, options) for chunk in itertools.islice(chunks, 2 * len(pool)))
    while calls:
        done = ray.get(calls.popleft())
        chunk = next(chunks, None)
        if chunk is not None:
            calls.append(next(turn).embed.remote(chunk, chip, options))
        bar.update(len(done))
        yield from done


def _align_in_tasks(ray, pool: list, photos: Iterable, encoder, options: dict, bar, *,
                    window: int) -> Iterator[EmbeddedPhoto]:
    """Photos aligned in Ray tasks (``window`` in flight), their chips encoded by the actors in turn, results in order."""
    align = ray.remote(align_batch).options(num_cpus=0.5, max_retries=MAX_RESTARTS)
    chunks = _chunks(photos, PHOTOS_PER_TASK)
    aligning: deque = deque()
    encoding: deque = deque()
    turn = itertools.cycle(pool)

    def encode(pending: list[AlignedPhoto]) -> None:
        chips = [p.chips for p in pending if len(p.chips)]
        call = next(turn).encode.remote(np.concatenate(chips)) if chips else None
        encoding.append((call, pending))

    def finish() -> Iterator[EmbeddedPhoto]:
        call, pending = encoding.popleft()
        yield from with_vectors(pending, ray.get(call) if call is not None else None, encoder.dim)

    for chunk in itertools.islice(chunks, window):
        aligning.append(align.remote(chunk, encoder.chip, options))
    pending: list[AlignedPhoto] = []
    while aligning:
        done = ray.get(aligning.popleft())
        chunk = next(chunks, None)
        if chunk is not None:
            aligning.append(align.remote(chunk, encoder.chip, options))
        for item in done:
            pending.append(item)
            bar.update(1)
            if sum(len(p.chips) for p in pending) >= encoder.batch_size:
                encode(pending)
                pending = []
        while len(encoding) > len(pool):
            yield from finish()
    encode(pending)
    while encoding:
        yield from finish()


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
