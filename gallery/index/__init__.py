"""Everything FAISS: index specs, building, searching with exact re-rank, GPU placement."""

from .build import VectorIndex, build_index, set_threads, training_sample
from .gpu import gpu_count
from .spec import AUTO_FLAT_MAX_CELLS, KINDS, IndexSpec, choose_index_spec

__all__ = [
    "AUTO_FLAT_MAX_CELLS",
    "KINDS",
    "IndexSpec",
    "VectorIndex",
    "build_index",
    "choose_index_spec",
    "gpu_count",
    "set_threads",
    "training_sample",
]
