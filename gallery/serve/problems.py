"""What the service answers when a request cannot be served: a status code and one line of JSON.

Every refusal is ``{"error": "<one line>"}`` with a 4xx status that says whose fault it is; the
message names the field, file part or identity at fault, as the library's errors do. Unexpected
failures are logged with their traceback on the server and answered with a 500 that shows none.
"""

from __future__ import annotations

from .. import errors
from ..embed.images import ImageError


class ApiError(Exception):
    """A request the service refuses, with the HTTP status to answer it with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = one_line(message)


def one_line(message: str, limit: int = 500) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_of(error: errors.GalleryError) -> int:
    """The HTTP status for a library error: bad input is the client's (4xx), a damaged gallery the server's."""
    locked = getattr(errors, "GalleryLockedError", None)
    if locked is not None and isinstance(error, locked):
        return 409
    if isinstance(error, ImageError):
        return 400
    if isinstance(error, (errors.InvalidInputError, errors.ModelMismatchError)):
        return 422
    if isinstance(error, errors.GalleryNotFoundError):
        return 503
    if "another process is writing" in str(error):  # the writer lock of releases without GalleryLockedError
        return 409
    return 500
