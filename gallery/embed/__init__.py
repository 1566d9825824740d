"""The image side: photos in, aligned faces, embeddings out (detect ► align ► encode ► L2-normalise).

Each name is imported from its module on first use, so a process that only reads photos (a detection
worker) loads neither torch nor the gallery's storage, and one that only lists photos loads no dlib.
"""

from importlib import import_module

#: Where each public name lives.
_MODULES = {
    ".align": ("ARCFACE_CHIP", "DLIB_CHIP", "DLIB_SAMPLED_CHIP", "ChipSpec", "align_face", "align_faces", "extract_chips",
               "similarity_transform"),
    ".detect": ("DETECTORS", "Face", "FaceDetector"),
    ".encoders": ("DEFAULT_MODEL", "ENCODERS", "Encoder", "get_encoder"),
    ".images": ("IMAGE_SUFFIXES", "DecodedPhoto", "ImageError", "Photo", "PhotoList", "decode_photo", "face_thumbnail",
                "gather_photos", "list_photos", "load_image"),
    ".pipeline": ("AlignedPhoto", "EmbeddedPhoto", "align_photos", "embed_photos"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(import_module(_HOME[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
