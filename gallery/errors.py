"""The exceptions gallery raises. Every message names the file or argument at fault and the fix."""


class GalleryError(Exception):
    """Base class: catch this to handle any gallery failure."""


class InvalidInputError(GalleryError, ValueError):
    """Vectors, labels or options that cannot be enrolled or searched as given."""


class GalleryNotFoundError(GalleryError, FileNotFoundError):
    """The folder holds no gallery manifest."""


class FormatVersionError(GalleryError):
    """The manifest was written by a newer gallery release than this one."""


class ModelMismatchError(GalleryError):
    """Vectors from one model were offered to a gallery built with another."""


class CorruptGalleryError(GalleryError):
    """A file the manifest names is missing, truncated or fails its checksum."""


class GalleryLockedError(GalleryError):
    """Another process is changing the gallery and did not finish within the wait allowed."""
