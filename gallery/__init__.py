"""gallery: large-scale 1:N identification with open-set decisions.

>>> from gallery import Gallery
>>> g = Gallery.from_vectors(vectors, identities, "out_dir")     # doctest: +SKIP
>>> g.search(query_vectors, k=5)[0].identity                      # doctest: +SKIP
"""

from .errors import (
    CorruptGalleryError,
    FormatVersionError,
    GalleryError,
    GalleryNotFoundError,
    InvalidInputError,
    ModelMismatchError,
)
from .gallery import Gallery
from .types import Match, SearchResult

__version__ = "0.1.0"

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
