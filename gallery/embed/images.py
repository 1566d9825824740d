"""Photos in: which files are photos, who they show, and their pixels as 8-bit RGB.

Every odd format users meet (EXIF rotation, RGBA, palette, grayscale, CMYK, 16-bit) becomes one
``(H, W, 3) uint8`` array here, so the detector and the encoders see a single kind of image.

Where a small copy is all that is needed (a thumbnail), ``load_image(path, max_side=N)`` decodes a
JPEG at reduced scale: Pillow's draft mode has libjpeg scale by 1/2, 1/4 or 1/8 while decoding, so
the full-size pixels are never made (a 12 MP photo decodes in a seventh of the time). The photo
pipeline does not use it: it needs the full-resolution pixels of every photo with a face for
landmarks and chips, and up to 4 MP a second, reduced decode for detection cost more than shrinking
the decoded photo (measured in ``benchmarks/README.md``, "Photo embedding throughput").
"""

from __future__ import annotations

import csv
import glob
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class ImageError(InvalidInputError):
    """A file that is not a readable image (corrupt, truncated, unsupported); names the file and the reason."""


@dataclass(frozen=True)
class Photo:
    """One photo to embed: its file, its key in the gallery (``source``) and who it shows (None for probes)."""

    path: Path
    source: str
    identity: Optional[str] = None


@dataclass
class PhotoList:
    """The photos found, and the files that were passed over with the reason."""

    photos: list[Photo]
    ignored: list[tuple[str, str]] = field(default_factory=list)
    #: The folder sources are relative to (the photo folder, or a CSV's folder).
    root: Optional[Path] = None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


class DecodedPhoto:
    """A decoded photo: its ``(H, W, 3) uint8`` RGB ``pixels``, and the Pillow ``image`` they were read from.

    Smaller copies (:func:`resize_image`) are made from the Pillow image: from the array, Pillow would
    first copy every pixel back in, which made the detector's small grayscale copy take 1.8x as long.
    """

    def __init__(self, image: Image.Image):
        self.image = image
        self.pixels = np.asarray(image)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape


def decode_photo(path: Path | str, *, draft_side: Optional[int] = None) -> DecodedPhoto:
    """Decode ``path`` as :func:`load_image` does, keeping the Pillow image for fast smaller copies.

    With ``draft_side``, a larger JPEG is decoded at reduced scale (libjpeg's 1/2, 1/4 or 1/8), to a long
    side still at least ``draft_side``.
    """
    path = Path(path)
    with _reading(path):
        with Image.open(path) as im:
            long_side = max(im.size)
            if draft_side is not None and long_side > draft_side:
                scale = draft_side / long_side  # the same for either orientation
                im.draft("RGB", (math.ceil(im.size[0] * scale), math.ceil(im.size[1] * scale)))
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # a copy only where the photo is turned
            return DecodedPhoto(_as_rgb8(im))


def load_image(path: Path | str, *, max_side: Optional[int] = None) -> np.ndarray:
    """Decode ``path`` to ``(H, W, 3) uint8`` RGB, upright as its EXIF orientation says.

    Transparent images are composited over white; 16-bit and float images are scaled to 8 bits.
    With ``max_side``, a larger photo comes back with that long side, a JPEG decoded at reduced scale.
    Raises :class:`ImageError` naming the file when it cannot be decoded.
    """
    photo = decode_photo(path, draft_side=max_side)
    long_side = max(photo.shape[:2])
    if max_side is not None and long_side > max_side:
        return resize_image(photo, max_side / long_side)
    return photo.pixels


def image_size(path: Path | str) -> tuple[int, int]:
    """``(width, height)`` of the image in ``path`` as stored, from its header alone."""
    path = Path(path)
    with _reading(path):
        with Image.open(path) as im:
            return im.size


@contextmanager
def _reading(path: Path):
    """Pillow's many failures while reading ``path`` as one :class:`ImageError` naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: too many pixels ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({e})") from None


def resize_image(image: np.ndarray | DecodedPhoto, scale: float, *, gray: bool = False) -> np.ndarray:
    """``image`` scaled by ``scale``: shrunk by whole factors first (a box filter, fast), then bilinear.

    ``gray`` gives an ``(h, w)`` copy of its luma (ITU-R 601), made first, so that one channel is resized,
    not three. A :class:`DecodedPhoto` is resized from its Pillow image, to the same pixels, faster.
    """
    if scale == 1.0 and not gray:
        return image.pixels if isinstance(image, DecodedPhoto) else image
    im = image.image if isinstance(image, DecodedPhoto) else Image.fromarray(image)
    im = im.convert("L") if gray else im
    if scale == 1.0:
        return np.asarray(im)
    w, h = im.size
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return np.asarray(im.resize(size, Image.BILINEAR, reducing_gap=1.0 if scale < 1 else None))


def _as_rgb8(im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit RGB Pillow image: transparency over white, 16-bit and float scaled to 8 bits."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = a.max(initial=0)
        a = a * 255.0 if mode == "F" and top <= 1.0 else a / 257.0 if top > 255 else a
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert("RGB")
    if mode in ("P", "PA"):
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA") and im.getchannel("A").getextrema()[0] == 255:
        return im.convert("RGB")  # opaque: compositing over white changes nothing, and costs 10x the conversion
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return im if im.mode == "RGB" else im.convert("RGB")


def list_photos(root: Path | str, *, labelled: bool = True) -> PhotoList:
    """The photos under ``root``: a folder laid out as ``<identity>/<files>``, or a CSV of ``path,identity``.

    With ``labelled=False`` (probes) every image file under ``root`` counts and identities are None;
    ``root`` may then also be a single image or a text file listing one image path per line.
    """
    root = Path(root)
    if not root.exists():
        raise InvalidInputError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() == ".csv" and labelled:
            return _read_photo_csv(root)
        if is_image_file(root) and not labelled:
            return PhotoList([Photo(root, str(root))])
        if root.suffix.lower() in (".txt", ".lst") and not labelled:
            return _read_photo_list(root)
        want = "a photo folder or a CSV of path,identity" if labelled else "an image, a folder or a list file"
        raise InvalidInputError(f"{root}: expected {want}")
    photos, ignored = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.name.startswith("."):
            continue
        if not is_image_file(path):
            ignored.append((rel, "not an image file"))
            continue
        if not labelled:
            photos.append(Photo(path, str(path)))
        elif len(path.relative_to(root).parts) < 2:
            ignored.append((rel, "not inside an identity folder"))
        else:
            photos.append(Photo(path, rel, path.relative_to(root).parts[0]))
    return PhotoList(photos, ignored, root.resolve())


def _read_photo_csv(path: Path) -> PhotoList:
    photos = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "path" not in fields or "identity" not in fields:
            raise InvalidInputError(f"{path}: expected a header with 'path' and 'identity' columns, got {reader.fieldnames}")
        reader.fieldnames = fields
        for line, row in enumerate(reader, start=2):
            p, who = (row.get("path") or "").strip(), (row.get("identity") or "").strip()
            if not p or not who:
                raise InvalidInputError(f"{path}:{line}: every row needs a path and an identity")
            photos.append(Photo(path.parent / p, p, who))
    return PhotoList(photos, root=path.parent.resolve())


def _read_photo_list(path: Path) -> PhotoList:
    lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines()]
    return PhotoList([Photo(path.parent / s, str(path.parent / s)) for s in lines if s and not s.startswith("#")])


def face_thumbnail(path: Path | str, box: Sequence[int], size: int = 64, margin: float = 0.2) -> np.ndarray:
    """A square ``(size, size, 3)`` crop of the face in ``box`` (widened by ``margin``), for reports.

    The photo is decoded only as large as the crop needs (``box`` is in its full-size pixels).
    """
    left, top, right, bottom = box
    side = max(right - left, bottom - top) * (1 + 2 * margin)
    long_side = max(image_size(path))
    image = load_image(path, max_side=max(size, math.ceil(long_side * size / max(side, 1))))
    scale = max(image.shape[:2]) / long_side
    left, top, right, bottom, side = left * scale, top * scale, right * scale, bottom * scale, side * scale
    cx, cy = (left + right) / 2, (top + bottom) / 2
    crop = Image.fromarray(image).crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def gather_photos(inputs: Sequence[Path | str], *, labelled: bool = True) -> PhotoList:
    """:func:`list_photos` over several inputs (glob patterns expanded), in order, without repeating a file."""
    photos, ignored, seen = [], [], set()
    expanded: list[Path | str] = []
    for item in inputs:
        if not Path(item).exists() and glob.has_magic(str(item)):
            matches = sorted(glob.glob(str(item), recursive=True))
            if not matches:
                raise InvalidInputError(f"{item}: no file matches this pattern")
            expanded += [m for m in matches if Path(m).is_dir() or is_image_file(Path(m))]
        else:
            expanded.append(item)
    for item in expanded:
        found = list_photos(item, labelled=labelled)
        for p in found.photos:
            key = str(Path(p.path).resolve())
            if key not in seen:
                seen.add(key)
                photos.append(p)
        ignored += found.ignored
    return PhotoList(photos, ignored)
