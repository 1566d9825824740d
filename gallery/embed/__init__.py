"""The image side: photos in, aligned faces, embeddings out (detect ► align ► encode ► L2-normalise)."""

from .align import ARCFACE_CHIP, DLIB_CHIP, DLIB_NATIVE_CHIP, ChipSpec, align_face, align_faces, extract_chips, similarity_transform
from .detect import DETECTORS, Face, FaceDetector
from .encoders import DEFAULT_MODEL, ENCODERS, Encoder, get_encoder
from .images import IMAGE_SUFFIXES, ImageError, Photo, PhotoList, face_thumbnail, gather_photos, list_photos, load_image
from .pipeline import AlignedPhoto, EmbeddedPhoto, align_photos, embed_photos

__all__ = [
    "AlignedPhoto", "align_photos", "ARCFACE_CHIP", "DETECTORS", "DEFAULT_MODEL", "DLIB_CHIP", "DLIB_NATIVE_CHIP", "ENCODERS", "ChipSpec", "EmbeddedPhoto", "Encoder",
    "Face", "FaceDetector", "face_thumbnail", "IMAGE_SUFFIXES", "ImageError", "Photo", "PhotoList", "align_face", "align_faces", "extract_chips", "embed_photos",
    "gather_photos", "get_encoder", "list_photos", "load_image", "similarity_transform",
]
