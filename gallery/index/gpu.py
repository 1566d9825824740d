"""The only code that picks GPUs for search: FAISS GPU resources and torch's device, "GPU if present, else CPU"."""

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


def torch_device(gpu: Optional[bool]) -> str:
    """The torch device of exact search and k-means: "cuda" when torch sees a GPU (None) or when asked
    (True, an error without one), else "cpu"."""
    import torch

    present = torch.cuda.is_available()
    if gpu and not present:
        raise RuntimeError("gpu=True but torch sees no CUDA GPU; install a CUDA build of torch on a GPU machine")
    return "cuda" if present and gpu is not False else "cpu"
