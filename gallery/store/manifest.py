"""The gallery manifest: the one JSON file that says which shards and index files form the gallery.

It is written last and atomically, so whatever it names is complete; files it does not name are
leftovers of an unfinished operation. ``MANIFEST_SCHEMA`` documents every field.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import CorruptGalleryError, FormatVersionError, GalleryNotFoundError
from .files import write_bytes_atomic

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "gallery manifest",
    "type": "object",
    "required": ["format_version", "model", "shard_format", "rows_per_shard", "shards", "next_id"],
    "properties": {
        "format_version": {"type": "integer", "description": "layout version; readers refuse newer ones"},
        "generation": {"type": "integer", "description": "incremented by every committed change"},
        "model": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "dim": {"type": "integer"},
                "fingerprint": {"type": ["string", "null"], "description": "fingerprint of weights and preprocessing"},
                "spec": {"type": ["string", "null"], "description": "how to load the encoder again (NAME or NAME:PATH)"},
            },
        },
        "metric": {"const": "cosine", "description": "vectors are L2-normalised, inner product = cosine"},
        "shard_format": {"enum": ["parquet", "hdf5"]},
        "rows_per_shard": {"type": "integer"},
        "next_id": {"type": "integer", "description": "the next stable record id to assign"},
        "next_file": {"type": "integer", "description": "sequence number for the next file name"},
        "shards": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "file": {"type": "string"},
                    "rows": {"type": "integer"},
                    "sha256": {"type": "string"},
                    "vectors_file": {"type": "string", "description": "float32 .npy memory-mapped for re-rank"},
                    "vectors_sha256": {"type": "string"},
                    "first_id": {"type": "integer"},
                    "last_id": {"type": "integer"},
                },
            },
        },
        "index": {"type": ["object", "null"], "description": "index file, spec and its parameters"},
        "thresholds": {"type": "object", "description": "calibrated open-set thresholds"},
        "created": {"type": "number"},
        "updated": {"type": "number"},
    },
}


@dataclass
class ShardInfo:
    """One shard: a records file in the gallery's format and the same rows' vectors as a raw .npy."""

    file: str
    rows: int
    sha256: str
    vectors_file: str
    vectors_sha256: str
    first_id: int
    last_id: int


@dataclass
class IndexInfo:
    """The saved FAISS index and the parameters it was built with."""

    file: str
    sha256: str
    kind: str
    factory: str
    ntotal: int
    trained_on: int
    params: dict = field(default_factory=dict)


@dataclass
class Manifest:
    model: str
    dim: int
    shard_format: str = "parquet"
    rows_per_shard: int = 100_000
    model_fingerprint: Optional[str] = None
    model_spec: Optional[str] = None
    format_version: int = FORMAT_VERSION
    generation: int = 0
    next_id: int = 0
    next_file: int = 0
    shards: list[ShardInfo] = field(default_factory=list)
    index: Optional[IndexInfo] = None
    thresholds: dict = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def count(self) -> int:
        return sum(s.rows for s in self.shards)

    def to_json(self) -> dict:
        return {
            "format_version": self.format_version,
            "generation": self.generation,
            "model": {"name": self.model, "dim": self.dim, "fingerprint": self.model_fingerprint, "spec": self.model_spec},
            "metric": "cosine",
            "shard_format": self.shard_format,
            "rows_per_shard": self.rows_per_shard,
            "next_id": self.next_id,
            "next_file": self.next_file,
            "shards": [asdict(s) for s in self.shards],
            "index": asdict(self.index) if self.index else None,
            "thresholds": self.thresholds,
            "created": self.created,
            "updated": self.updated,
        }

    @classmethod
    def from_json(cls, data: dict, *, path: Path | str = MANIFEST_NAME) -> "Manifest":
        version = data.get("format_version")
        if not isinstance(version, int):
            raise CorruptGalleryError(f"{path}: no integer format_version; this is not a gallery manifest")
        if version > FORMAT_VERSION:
            raise FormatVersionError(
                f"{path}: manifest format {version} is newer than this gallery release supports "
                f"({FORMAT_VERSION}); upgrade gallery to read it"
            )
        try:
            model = data["model"]
            index = data.get("index")
            return cls(
                model=model["name"],
                dim=int(model["dim"]),
                model_fingerprint=model.get("fingerprint"),
                model_spec=model.get("spec"),
                format_version=version,
                generation=int(data.get("generation", 0)),
                shard_format=data["shard_format"],
                rows_per_shard=int(data["rows_per_shard"]),
                next_id=int(data["next_id"]),
                next_file=int(data.get("next_file", 0)),
                shards=[ShardInfo(**s) for s in data["shards"]],
                index=IndexInfo(**index) if index else None,
                thresholds=dict(data.get("thresholds") or {}),
                created=float(data.get("created", 0.0)),
                updated=float(data.get("updated", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptGalleryError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from None


def manifest_path(root: Path) -> Path:
    return Path(root) / MANIFEST_NAME


def read_manifest(root: Path) -> Manifest:
    path = manifest_path(root)
    if not Path(root).is_dir():
        raise GalleryNotFoundError(f"{root}: no such gallery folder")
    if not path.is_file():
        raise GalleryNotFoundError(f"{root}: not a gallery (no {MANIFEST_NAME}); build one with `gallery import-vectors`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptGalleryError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CorruptGalleryError(f"{path}: expected a JSON object")
    return Manifest.from_json(data, path=path)


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Commit ``manifest``: bump its generation and atomically replace the previous one."""
    manifest.generation += 1
    manifest.updated = time.time()
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n"
    write_bytes_atomic(manifest_path(root), text.encode("utf-8"))
