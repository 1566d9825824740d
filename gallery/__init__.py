"""gallery: large-scale 1:N identification with open-set decisions.

>>> from gallery import Gallery
>>> g = Gallery.from_vectors(vectors, identities, "out_dir")     # doctest: +SKIP
>>> g.search(query_vectors, k=5)[0].identity                      # doctest: +SKIP

``Gallery`` is imported on first use: ``import gallery`` alone (the command
line's ``--help``, a worker that only reads photos) loads neither FAISS nor pyarrow.
"""

from importlib import import_module

from .errors import (
    CorruptGalleryError,
    FormatVersionError,
    GalleryError,
    GalleryNotFoundError,
    InvalidInputError,
    ModelMismatchError,
)
from .types import Match, SearchResult

__version__ = "0.1.0"

#: Public names defined in a submodule that is imported when the name is first used.
_LAZY = {"Gallery": ".gallery"}

__all__ = [
    "CorruptGalleryError",
    "FormatVersionError",
    "Gallery",
    "GalleryError",
    "GalleryNotFoundError",
    "InvalidInputError",
    "Match",
    "ModelMismatchError",
    "SearchResult",
    "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
