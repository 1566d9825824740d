"""Photos sent to the service: checked before anything decodes them in full, embedded from a private folder.

``Gallery.search_images`` and ``Gallery.add_photos`` do the face work and the gallery work in one call,
and load a face detector each time. The service splits them, so that finding and encoding faces (the
slow part) happens before the gallery's lock is taken: :func:`embed_uploads` gives the faces and
vectors, through the pipeline's own steps (``align_batch``, ``encode_chips``) with one detector kept
for the life of the process, and the caller searches or enrols those vectors under the lock. Uploads
live in a folder only this process may read, for as long as the request does.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePath

from PIL import Image, UnidentifiedImageError

import numpy as np

from ..embed import ChipSpec, EmbeddedPhoto, Encoder, Photo
from ..embed.pipeline import align_batch, detector_options, encode_chips, with_vectors
from .problems import ApiError

#: In this process the face pipeline keeps one detector in module state (reused while its options
#: stay the same: loading it takes a second), so one request's photos go through detection at a time;
#: encoding has its own turn, so the next request's detection overlaps this one's encoding.
_DETECTING = threading.Lock()
_ENCODING = threading.Lock()
_OPTIONS: dict[ChipSpec, dict] = {}


@dataclass(frozen=True)
class Upload:
    """One file part of a request: the client's file name (for messages and sources) and its bytes."""

    name: str
    data: bytes


def upload_name(filename: str | None, position: int) -> str:
    """The client's file name without any folder part (``photo-3`` when it sent none)."""
    name = PurePath((filename or "").replace("\\", "/")).name.strip()
    return name or f"photo-{position}"


def check_image(upload: Upload, max_pixels: int) -> None:
    """Refuse what is not a whole image, or one over ``max_pixels`` (judged by its header, before decoding).

    Raises :class:`ApiError` 400 for empty, unreadable and truncated files, 413 for too many pixels.
    """
    name = upload.name
    if not upload.data:
        raise ApiError(400, f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload.data)) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ApiError(413, f"{name}: {width}x{height} pixels is over the limit of {max_pixels} pixels")
                im.load()
    except UnidentifiedImageError:
        raise ApiError(400, f"{name}: not an image (jpg, png, webp, bmp, tiff and other formats Pillow reads)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ApiError(413, f"{name}: too many pixels ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ApiError(400, f"{name}: corrupt or truncated image ({e})") from None


def embed_uploads(uploads: list[Upload], encoder: Encoder) -> list[EmbeddedPhoto]:
    """Every face of every upload (largest first) with its embedding, one entry per upload, in order."""
    with tempfile.TemporaryDirectory(prefix="gallery-serve-") as tmp:  # mode 0700
        photos = []
        for i, upload in enumerate(uploads):
            path = Path(tmp) / f"{i:04d}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(upload.data)
            photos.append(Photo(path, upload.name))
        with _DETECTING:
            aligned = align_batch(photos, encoder.chip, _detector_options(encoder.chip))
    chips = [a.chips for a in aligned if len(a.chips)]
    with _ENCODING:
        vectors = encode_chips(np.concatenate(chips), encoder) if chips else None
    embedded = list(with_vectors(aligned, vectors, encoder.dim))
    for e in embedded:
        if e.error is not None:
            raise ApiError(400, e.error.replace(str(e.photo.path), e.photo.source))
    return embedded


def _detector_options(chip: ChipSpec) -> dict:
    if chip not in _OPTIONS:
        _OPTIONS[chip] = detector_options(chip, None)
    return _OPTIONS[chip]


def warm_up(encoder: Encoder) -> None:
    """Load the face detector now, so that the first search does not wait for it."""
    with _DETECTING:
        align_batch([], encoder.chip, _detector_options(encoder.chip))
