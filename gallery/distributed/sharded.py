"""Sharded 1:N search: identities split over S Ray actors, each holding its shard's index.

All images of an identity live in one shard (chosen by a stable hash of its label), so each shard
ranks whole identities with the local engine's code and the driver only merges S sorted lists. The
actors build their shard from the gallery's own files: the stored vectors and, for ivfpq, the
gallery's trained quantizers, to which each shard adds its own slice (train once, add per slice).
Ray restarts an actor that dies, from the same files; a shard that cannot come back is an error that
names it, never a partial answer. :class:`ShardedSearchers` plugs it into a gallery as its searcher
factory (``Gallery.open(root, engine="ray", shards=S)``).
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import GalleryError, InvalidInputError
from ..index import IndexSpec, VectorIndex, set_threads
from ..index.files import add_vectors, load_index, spec_of
from ..search import IdentitySearcher
from ..store import Manifest, ShardStore, read_manifest
from ..store.locks import reading
from ..types import Match
from . import require_ray
from .cluster import cluster_cpus, connect

LOG = logging.getLogger(__name__)

#: How often Ray restarts a dead shard actor (and retries the calls it was answering) before giving up.
MAX_RESTARTS = 3


class ShardUnavailableError(GalleryError):
    """A shard actor died and could not be restarted; no answer is given rather than a partial one."""


class StaleShardError(GalleryError):
    """A shard actor found a newer gallery on disk than the one the driver opened."""


def shard_of(labels: Sequence, shards: int) -> np.ndarray:
    """The shard of each identity label: CRC-32 of its UTF-8 bytes modulo ``shards`` (the same in every process)."""
    return np.asarray([zlib.crc32(str(s).encode("utf-8")) % shards for s in labels], dtype=np.int64)


def load_shard(root: Path, shard: int, shards: int, trained: Optional[np.ndarray], *, generation: int,
               gpu: Optional[bool] = None) -> IdentitySearcher:
    """The searcher of one shard, built from the gallery's files: its identities' records and vectors.

    ``trained`` is the gallery's index with its quantizers trained and no vectors (None for flat).
    """
    with reading(Path(root)):
        manifest = read_manifest(Path(root))
        if manifest.generation != generation:
            raise StaleShardError(f"{root}: the gallery changed (generation {manifest.generation}, expected {generation})")
        store = ShardStore(Path(root), manifest.shard_format)
        id_lists, ids, labels = store.all_labels(manifest.shards)
        mine = shard_of(labels, shards) == shard
        my_ids = ids[mine]
        vectors = store.vectors(manifest.shards, manifest.dim, ids=id_lists, only=my_ids)
    spec = spec_of(manifest.index, manifest.dim) if manifest.index else IndexSpec("flat", manifest.dim)
    if trained is not None:
        index = VectorIndex.from_bytes(trained, spec, gpu=gpu)
    else:
        index = VectorIndex.create(IndexSpec("flat", manifest.dim), gpu=gpu)
    add_vectors(index, my_ids, vectors, progress=False)
    return IdentitySearcher(index, vectors, my_ids, labels[mine], manifest.next_id)


class ShardServer:
    """The Ray actor of one shard: loads it in its constructor, so a restart reloads it from disk."""

    def __init__(self, root: str, shard: int, shards: int, trained, generation: int, threads: int):
        set_threads(threads)
        t = time.perf_counter()
        self.searcher = load_shard(Path(root), shard, shards, trained, generation=generation)
        self.load_seconds = time.perf_counter() - t

    def rank(self, xq: np.ndarray, k: int, options: dict) -> dict:
        """This shard's top-``k`` identities per query, packed (:func:`pack_ranked`)."""
        return pack_ranked(self.searcher.rank(xq, k, **options))

    def stats(self) -> dict:
        s = self.searcher
        return {"records": len(s), "identities": len(s.names), "ram_bytes": s.memory_bytes(),
                "load_seconds": self.load_seconds, "pid": os.getpid()}


def pack_ranked(ranked: list[list[Match]]) -> dict:
    """A shard's answer as a few flat arrays: they cross process boundaries far faster than Match objects."""
    matches = [m for row in ranked for m in row]
    return {
        "per_query": np.asarray([len(row) for row in ranked], dtype=np.int64),
        "identity": np.asarray([m.identity for m in matches], dtype=object),
        "score": np.asarray([m.score for m in matches], dtype=np.float64),
        "per_match": np.asarray([len(m.records) for m in matches], dtype=np.int64),
        "records": np.asarray([r for m in matches for r in m.records], dtype=np.int64),
        "record_scores": np.asarray([r for m in matches for r in m.record_scores], dtype=np.float64),
    }


def merge_ranked(packs: list[dict], k: int) -> list[list[Match]]:
    """Per query, the ``k`` best identities over all shards' packed answers, best first (ties: earlier shard first)."""
    nq = len(packs[0]["per_query"]) if packs else 0
    query = np.concatenate([np.repeat(np.arange(nq), p["per_query"]) for p in packs])
    score = np.concatenate([p["score"] for p in packs])
    shard = np.concatenate([np.full(len(p["score"]), i) for i, p in enumerate(packs)])
    at = np.concatenate([np.arange(len(p["score"])) for p in packs])
    order = np.lexsort((at, shard, -score, query))
    query = query[order]
    rank = np.arange(len(order)) - np.searchsorted(query, query)
    won = order[rank < k]
    starts = [np.r_[0, np.cumsum(p["per_match"])] for p in packs]
    records = [p["records"].tolist() for p in packs]
    record_scores = [p["record_scores"].tolist() for p in packs]
    out: list[list[Match]] = [[] for _ in range(nq)]
    for q, s, i in zip(query[rank < k].tolist(), shard[won].tolist(), at[won].tolist()):
        lo, hi = int(starts[s][i]), int(starts[s][i + 1])
        out[q].append(Match(str(packs[s]["identity"][i]), float(packs[s]["score"][i]), tuple(records[s][lo:hi]),
                            tuple(record_scores[s][lo:hi])))
    return out


class ShardedSearcher(IdentitySearcher):
    """Ranks identities by asking every shard actor and merging their answers.

    It holds the gallery's labels (for its identity list and counts) and no index of its own.
    """

    def __init__(self, root: Path, actors: list, vectors, record_ids: np.ndarray, labels: np.ndarray, next_id: int,
                 spec: Optional[IndexSpec]):
        super().__init__(None, vectors, record_ids, labels, next_id, spec=spec)
        self.root = root
        self.actors = actors

    def rank(self, xq: np.ndarray, k: int, *, nprobe: Optional[int] = None, rerank: Optional[int] = None,
             aggregate: str = "max", top_n: int = 3) -> list[list[Match]]:
        if len(self) == 0:
            return [[] for _ in range(len(xq))]
        ray = require_ray()
        options = dict(nprobe=nprobe, rerank=rerank, aggregate=aggregate, top_n=top_n)
        queries = ray.put(np.ascontiguousarray(xq))
        calls = [actor.rank.remote(queries, int(k), options) for actor in self.actors]
        return merge_ranked([self._answer(i, call) for i, call in enumerate(calls)], min(int(k), len(self.names)))

    def _answer(self, shard: int, call):
        ray = require_ray()
        try:
            return ray.get(call)
        except ray.exceptions.RayActorError as e:
            raise ShardUnavailableError(
                f"{self.root}: shard {shard} of {len(self.actors)} is unavailable and could not be restarted "
                f"({_first_line(e)}); no partial answer is given"
            ) from None
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None

    def shard_stats(self) -> list[dict]:
        """Per shard: records, identities, RAM of its index and labels, load time, process id."""
        return [self._answer(i, a.stats.remote()) for i, a in enumerate(self.actors)]

    def engine_info(self) -> Optional[dict]:
        return {"name": "ray", "shards": self.shard_stats()}


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    cause = [ln for ln in lines if "Error" in ln and not ln.startswith("Traceback")]
    return (cause[-1] if cause else lines[0] if lines else type(e).__name__)[:300]


class ShardedSearchers:
    """The Ray engine, as the searcher factory of a :class:`gallery.Gallery`: each generation the gallery
    opens is served by ``shards`` Ray actors, started from its files (those of the previous one are
    stopped first). Changes are written by the gallery's own process as usual.
    """

    def __init__(self, shards: int, *, address: Optional[str] = None, threads: Optional[int] = None):
        if int(shards) < 1:
            raise InvalidInputError(f"shards must be >= 1, got {shards}")
        self.shards = int(shards)
        self._address = address
        self._threads = threads
        self._actors: list = []
        self._trained = None

    def __call__(self, root: Path, manifest: Manifest, store: ShardStore, gpu: Optional[bool]) -> ShardedSearcher:
        ray = connect(self._address)
        self.close()
        m = manifest
        id_lists, ids, labels = store.all_labels(m.shards)
        vectors = store.vectors(m.shards, m.dim, ids=id_lists)
        trained = None
        if m.index is not None and m.index.kind != "flat":
            full = load_index(root, m.index, m.dim, gpu=False)
            trained = ray.put(full.trained_copy().to_bytes())
            del full
        cpus = cluster_cpus()
        threads = self._threads or max(1, int(cpus // self.shards))
        server = ray.remote(ShardServer).options(num_cpus=min(1.0, cpus / self.shards / 2),
                                                 max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
        t = time.perf_counter()
        self._actors = [server.remote(str(root), s, self.shards, trained, m.generation, threads)
                        for s in range(self.shards)]
        self._trained = trained  # Ray restarts an actor with its constructor's arguments: keep them alive
        spec = spec_of(m.index, m.dim) if m.index is not None else None
        searcher = ShardedSearcher(root, self._actors, vectors, ids, labels, m.next_id, spec)
        searcher.shard_stats()  # waits for every shard, so a broken one fails here, not in a search
        searcher.load_seconds = time.perf_counter() - t
        return searcher

    def close(self) -> None:
        """Stop the shard actors (they also stop when the gallery is garbage-collected)."""
        if self._actors:
            ray = require_ray()
            for actor in self._actors:
                ray.kill(actor, no_restart=True)
            self._actors = []
