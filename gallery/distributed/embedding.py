"""Distributed photo embedding: decode + detect + align in Ray tasks, encode in a pool of encoder actors.

The driver keeps the photos' order and yields the same :class:`~gallery.embed.pipeline.EmbeddedPhoto`
stream as the local pipeline, so enrolment (shards, manifest, resume) is the same code for both
engines. Each stage runs the local pipeline's functions, so the vectors are the local build's.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Iterable, Iterator, Optional

import numpy as np

from ..embed.pipeline import AlignedPhoto, EmbeddedPhoto, align_batch, detector_options, encode_chips, with_vectors
from ..errors import ModelMismatchError
from ..progress import progress_bar
from .cluster import cluster_cpus, cluster_gpus, connect

#: Photos per alignment task: enough to amortise a task's overhead, few enough to keep every worker busy.
PHOTOS_PER_TASK = 4
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

    ``encoders`` is the size of the encoder pool: by default one per GPU, else one per two CPUs. Each
    alignment task and CPU encoder asks for half a CPU, so neither stage can starve the other.
    """
    ray = connect(address)
    options = detector_options(encoder.chip, detector)
    gpus = cluster_gpus()
    cpus = cluster_cpus()
    n_encoders = int(encoders or (gpus if gpus else max(1, int(cpus // 2))))
    server = ray.remote(EncoderServer).options(num_cpus=0.5, num_gpus=1 if gpus else 0,
                                               max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
    device = "cuda" if gpus else "cpu"
    pool = [server.remote(encoder.spec, encoder.fingerprint, device) for _ in range(n_encoders)]
    align = ray.remote(align_batch).options(num_cpus=0.5, max_retries=MAX_RESTARTS)
    window = max(2, int(cpus * 2))
    chunks = _chunks(photos, PHOTOS_PER_TASK)
    aligning: deque = deque()
    encoding: deque = deque()
    turn = itertools.cycle(pool)
    bar = progress_bar(progress, total=total, desc=desc, unit="img")

    def encode(pending: list[AlignedPhoto]) -> None:
        chips = [p.chips for p in pending if len(p.chips)]
        call = next(turn).encode.remote(np.concatenate(chips)) if chips else None
        encoding.append((call, pending))

    def finish() -> Iterator[EmbeddedPhoto]:
        call, pending = encoding.popleft()
        yield from with_vectors(pending, ray.get(call) if call is not None else None, encoder.dim)

    try:
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
            while len(encoding) > n_encoders:
                yield from finish()
        encode(pending)
        while encoding:
            yield from finish()
    finally:
        bar.close()
        for actor in pool:
            ray.kill(actor, no_restart=True)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
