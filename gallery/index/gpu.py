"""The only code that creates FAISS GPU resources: "GPU if faiss sees one, else CPU", as one parameter."""

from __future__ import annotations

import logging
from typing import Optional

import faiss

LOG = logging.getLogger(__name__)


def gpu_count() -> int:
    """GPUs visible to this faiss build (0 for faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get else 0
    except RuntimeError:
        return 0


def use_gpu(gpu: Optional[bool]) -> bool:
    """Resolve ``gpu``: None means "when present"; True without a GPU is an error the caller sees."""
    if gpu is None:
        return gpu_count() > 0
    if gpu and gpu_count() == 0:
        raise RuntimeError(
            "gpu=True but faiss sees no GPU; install the gpu extra (pip install 'gallery[gpu]') on a CUDA machine"
        )
    return bool(gpu)


def to_gpu(index: faiss.Index) -> faiss.Index:
    """A GPU copy of ``index`` for searching, or ``index`` itself when its type has no GPU version."""
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError) as e:
        LOG.warning("searching on CPU: this index type cannot move to the GPU (%s)", e)
        return index


def clustering_index(d: int, gpu: bool) -> Optional[faiss.Index]:
    """An inner-product flat index on the GPUs for k-means training, or None to let FAISS use the CPU."""
    if not gpu:
        return None
    return faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(d))
