"""The gallery manifest: the one JSON file that says which shards and index files form the gallery.

It is written last and atomically, so whatever it names is complete; files it does not name are
leftovers of an unfinished operation. ``MANIFEST_SCHEMA`` documents every field.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Sequence

from ..errors import CorruptGalleryError, FormatVersionError, GalleryNotFoundError
from .files import gallery_file, write_bytes_atomic

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: The folder of the index files a manifest names (shards live in ``shards/``).
INDEX_DIR = "index"

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


SHARD_FORMATS = ("parquet", "hdf5")
#: The kinds of a built index (IndexSpec's kinds but "auto", which is resolved before building).
INDEX_KINDS = ("flat", "ivfpq")
#: The keys of ``index.params``: what ``IndexSpec.params()`` writes (a test pins the two equal; importing
#: gallery.index here would be circular, since gallery.index.build imports gallery.store).
INDEX_PARAMS = ("nlist", "pq_m", "nprobe", "rerank", "recheck_nprobe", "shortlist")
#: The params an ivfpq entry must hold as positive integers (IndexSpec.params() has always written them).
IVF_PARAMS_REQUIRED = ("nlist", "pq_m", "nprobe", "rerank")
#: The folder of the shard files a manifest names (``ShardStore`` writes there).
SHARD_DIR = "shards"
_REQUIRED = object()


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class FieldReader:
    """One JSON object of a gallery file, read field by field with its type checked.

    A gallery's files are untrusted (edited or damaged), so each failure is a one-line
    :class:`CorruptGalleryError` naming the file and the field, e.g.
    ``g/manifest.json: shards[2].rows is 0, expected an integer >= 1; the file was edited or damaged``.
    ``root`` (the gallery folder) lets file names be checked against the disk too.
    """

    def __init__(self, data: object, field: str, source: Path | str, root: Optional[Path] = None):
        self.field, self.source, self.root = field, source, root
        if not isinstance(data, dict):
            raise self._damaged(field or "the top level", f"is {_short(data)}, expected a JSON object")
        self.data = data

    def _damaged(self, field: str, what: str) -> CorruptGalleryError:
        return CorruptGalleryError(f"{self.source}: {field} {what}; the file was edited or damaged")

    def name(self, key: str) -> str:
        return f"{self.field}.{key}" if self.field else key

    def bad(self, key: str, value: object, expected: str) -> CorruptGalleryError:
        return self._damaged(self.name(key), f"is {_short(value)}, expected {expected}")

    def _value(self, key: str, default: object) -> object:
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise self._damaged(self.name(key), "is missing")
        return default

    def only(self, keys: Sequence[str]) -> None:
        """Refuse fields this release does not know (an entry's dataclass would not take them)."""
        unknown = sorted(set(self.data) - set(keys), key=str)
        if unknown:
            raise self._damaged(self.name(str(unknown[0])), f"is not a field of {self.field or 'this file'} "
                                f"(fields: {', '.join(keys)})")

    def integer(self, key: str, *, minimum: Optional[int] = None, default: object = _REQUIRED) -> int:
        value = self._value(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self.bad(key, value, "an integer" if minimum is None else f"an integer >= {minimum}")
        return value

    def number(self, key: str, *, default: object = _REQUIRED) -> float:
        value = self._value(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.bad(key, value, "a finite number")
        return float(value)

    def text(self, key: str, *, optional: bool = False, choices: Optional[Sequence[str]] = None,
             default: object = _REQUIRED) -> Optional[str]:
        value = self._value(key, default)
        if value is None and optional:
            return None
        if choices is not None and value not in choices:
            raise self.bad(key, value, f"one of {', '.join(choices)}")
        if not isinstance(value, str):
            raise self.bad(key, value, "a string" + (" or null" if optional else ""))
        return value

    def digest(self, key: str) -> str:
        value = self._value(key, _REQUIRED)
        if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
            raise self.bad(key, value, "a sha256 digest (64 lowercase hex digits)")
        return value

    def file(self, key: str, *, under: str, optional: bool = False) -> Optional[str]:
        """A file name, checked to lie in the gallery's ``under`` folder (and, given a root, on disk)."""
        name = self._value(key, None if optional else _REQUIRED)
        if name is None and optional:
            return None
        if self.root is not None:
            gallery_file(self.root, name, self.name(key), self.source, under=under)
            return name
        if isinstance(name, str):  # no folder to check against: its shape, with gallery_file's rules
            pure = PurePosixPath(name)
            if pure.is_absolute() or name[1:2] == ":":
                raise self._damaged(self.name(key), f"{name!r} is an absolute path")
            if any(p in ("..", ".") for p in pure.parts) or "\0" in name or "\\" in name:
                raise self._damaged(self.name(key), f"{name!r} leaves the gallery folder")
            if len(pure.parts) == 2 and pure.parts[0] == under:
                return name
        raise self._damaged(self.name(key), f"{name!r} is not a file of the gallery's {under}/ folder")

    def entry(self, key: str, *, optional: bool = False) -> Optional["FieldReader"]:
        value = self._value(key, None if optional else _REQUIRED)
        if value is None and optional:
            return None
        return FieldReader(value, self.name(key), self.source, self.root)

    def array(self, key: str) -> list:
        value = self._value(key, _REQUIRED)
        if not isinstance(value, list):
            raise self.bad(key, value, "a list")
        return value


def read_shard_entry(data: object, field: str, source: Path | str, root: Optional[Path] = None) -> ShardInfo:
    """A :class:`ShardInfo` from one entry of a manifest's (or journal's) ``shards``, every field checked."""
    r = FieldReader(data, field, source, root)
    r.only([f.name for f in fields(ShardInfo)])
    info = ShardInfo(
        file=r.file("file", under=SHARD_DIR),
        rows=r.integer("rows", minimum=1),
        sha256=r.digest("sha256"),
        vectors_file=r.file("vectors_file", under=SHARD_DIR),
        vectors_sha256=r.digest("vectors_sha256"),
        first_id=r.integer("first_id", minimum=0),
        last_id=r.integer("last_id", minimum=0),
    )
    if info.last_id < info.first_id:
        raise r.bad("last_id", info.last_id, f"an integer >= first_id ({info.first_id})")
    if info.rows > info.last_id - info.first_id + 1:  # ids are unique, so n rows span at least n ids
        raise r.bad("rows", info.rows, f"at most {info.last_id - info.first_id + 1} (ids {info.first_id}..{info.last_id})")
    return info


def _read_index_entry(r: FieldReader) -> IndexInfo:
    r.only([f.name for f in fields(IndexInfo)])
    params = r.entry("params")
    params.only(INDEX_PARAMS)
    for key, value in params.data.items():
        if value is not None:
            params.integer(key, minimum=0)
    kind = r.text("kind", choices=INDEX_KINDS)
    if kind == "ivfpq":  # what its file was built with, and what every search reads: no default stands in
        for key in IVF_PARAMS_REQUIRED:
            params.integer(key, minimum=1)
    return IndexInfo(
        file=r.file("file", under=INDEX_DIR),
        sha256=r.digest("sha256"),
        kind=kind,
        factory=r.text("factory"),
        ntotal=r.integer("ntotal", minimum=0),
        trained_on=r.integer("trained_on", minimum=0),
        params=dict(params.data),
    )


def _check_shards(shards: Sequence[ShardInfo], next_id: int, source: Path | str) -> None:
    """Shards hold disjoint id ranges below ``next_id`` and name distinct files (else ids would repeat)."""
    damaged = lambda what: CorruptGalleryError(f"{source}: {what}; the file was edited or damaged")  # noqa: E731
    order = sorted(range(len(shards)), key=lambda i: shards[i].first_id)
    for a, b in zip(order, order[1:]):
        if shards[b].first_id <= shards[a].last_id:
            raise damaged(f"shards[{b}] ids {shards[b].first_id}..{shards[b].last_id} overlap "
                          f"shards[{a}] ids {shards[a].first_id}..{shards[a].last_id}")
    if order and next_id <= shards[order[-1]].last_id:
        raise damaged(f"next_id is {next_id}, but shards[{order[-1]}] holds ids up to {shards[order[-1]].last_id}; "
                      "next_id must exceed every shard's last_id")
    seen: dict[str, str] = {}
    for i, s in enumerate(shards):
        for key in ("file", "vectors_file"):
            name = getattr(s, key)
            if name in seen:
                raise damaged(f"shards[{i}].{key} {name!r} is also {seen[name]}")
            seen[name] = f"shards[{i}].{key}"


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
    def from_json(cls, data: dict, *, path: Path | str = MANIFEST_NAME, root: Optional[Path] = None) -> "Manifest":
        """Read a manifest, checking every field: it is untrusted, and what it names is read, kept and erased.

        ``root`` (the gallery folder) checks the file names it holds against the disk as well (no symlinks).
        """
        version = data.get("format_version") if isinstance(data, dict) else None
        if isinstance(version, bool) or not isinstance(version, int):
            raise CorruptGalleryError(f"{path}: no integer format_version; this is not a gallery manifest")
        if version > FORMAT_VERSION:
            raise FormatVersionError(
                f"{path}: manifest format {version} is newer than this gallery release supports "
                f"({FORMAT_VERSION}); upgrade gallery to read it"
            )
        r = FieldReader(data, "", path, root)
        model = r.entry("model")
        if data.get("metric", "cosine") != "cosine":
            raise r.bad("metric", data["metric"], "'cosine'")
        shards = [read_shard_entry(s, f"shards[{i}]", path, root) for i, s in enumerate(r.array("shards"))]
        next_id = r.integer("next_id", minimum=0)
        _check_shards(shards, next_id, path)
        index = r.entry("index", optional=True)
        thresholds = r.entry("thresholds", optional=True)
        if thresholds is not None and thresholds.data.get("open_set") is not None:
            from ..calibration import Calibration  # not at the top: gallery.calibration imports gallery.index

            Calibration.from_json(thresholds.data["open_set"], source=path)
        return cls(
            model=model.text("name"),
            dim=model.integer("dim", minimum=1),
            model_fingerprint=model.text("fingerprint", optional=True, default=None),
            model_spec=model.text("spec", optional=True, default=None),
            format_version=version,
            generation=r.integer("generation", minimum=0, default=0),
            shard_format=r.text("shard_format", choices=SHARD_FORMATS),
            rows_per_shard=r.integer("rows_per_shard", minimum=1),
            next_id=next_id,
            next_file=r.integer("next_file", minimum=0, default=0),
            shards=shards,
            index=_read_index_entry(index) if index is not None else None,
            thresholds=dict(thresholds.data) if thresholds is not None else {},
            created=r.number("created", default=0.0),
            updated=r.number("updated", default=0.0),
        )


def manifest_path(root: Path) -> Path:
    return Path(root) / MANIFEST_NAME


def read_manifest(root: Path) -> Manifest:
    path = manifest_path(root)
    if not Path(root).is_dir():
        raise GalleryNotFoundError(f"{root}: no such gallery folder")
    if not path.is_file():
        raise GalleryNotFoundError(f"{root}: not a gallery (no {MANIFEST_NAME}); build one from photos with "
                                   "`gallery build PHOTOS` (Gallery.from_photos) or from vectors with "
                                   "`gallery import-vectors FILE` (Gallery.from_vectors)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptGalleryError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CorruptGalleryError(f"{path}: expected a JSON object")
    return Manifest.from_json(data, path=path, root=Path(root))


def write_manifest(root: Path, manifest: Manifest, *, mode: Optional[int] = None) -> None:
    """Commit ``manifest``: bump its generation and atomically replace the previous one.

    Only :class:`gallery.store.change.GalleryChange` calls this: every change goes through it.
    """
    manifest.generation += 1
    manifest.updated = time.time()
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n"
    write_bytes_atomic(manifest_path(root), text.encode("utf-8"), mode=mode)
