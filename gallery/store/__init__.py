"""Everything on disk: the manifest, shards in Parquet or HDF5, and imports of user embedding files."""

from .imports import LabelledVectors, read_labelled_vectors, write_labelled_vectors
from .manifest import FORMAT_VERSION, IndexInfo, Manifest, ShardInfo, read_manifest, write_manifest
from .shards import FORMATS, ShardStore, VectorTable

__all__ = [
    "FORMAT_VERSION",
    "FORMATS",
    "IndexInfo",
    "LabelledVectors",
    "Manifest",
    "ShardInfo",
    "ShardStore",
    "VectorTable",
    "read_labelled_vectors",
    "read_manifest",
    "write_labelled_vectors",
    "write_manifest",
]
