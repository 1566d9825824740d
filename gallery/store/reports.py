"""Enrolment reports: what happened to every source photo of a build, as JSON beside the manifest.

While a build runs, each photo's outcome is appended to a hidden JSON-lines log named after the run,
so a resumed build still reports the photos its interrupted predecessor had already handled. The
commit writes ``report-<generation>.json`` and removes the log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional

from .files import TMP_SUFFIX, erase_file, write_bytes_atomic

REPORT_GLOB = "report-*.json"


def report_path(root: Path, generation: int) -> Path:
    return Path(root) / f"report-{generation:06d}.json"


def source_log_path(root: Path, key: str) -> Path:
    return Path(root) / f".sources-{key[:16]}.jsonl"


def read_source_log(path: Path) -> dict[str, dict]:
    """Outcomes logged so far, by source (a later line for the same source wins; a torn last line is dropped)."""
    out: dict[str, dict] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "source" in entry:
            out[entry["source"]] = entry
    return out


def append_source_log(path: Path, entries: Iterable[dict], *, mode: int = 0o600) -> None:
    lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    if lines:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()


def write_report(path: Path, report: dict, *, mode: Optional[int] = None) -> None:
    write_bytes_atomic(path, (json.dumps(report, indent=1) + "\n").encode("utf-8"), mode=mode)


def read_report(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def photo_faces(root: Path) -> dict[str, tuple[Path, list]]:
    """Per enrolled source photo, its path and face boxes, from the gallery's build reports.

    A report's ``photos_root`` is where its build read the photos; a source that is absolute or climbs
    out of it with ``..`` is ignored, as is a report that cannot be read.
    """
    out: dict[str, tuple[Path, list]] = {}
    for path in sorted(Path(root).glob(REPORT_GLOB)):
        try:
            report = read_report(path)
        except (OSError, ValueError):
            continue
        photos_root = report.get("photos_root") if isinstance(report, dict) else None
        if not isinstance(photos_root, str):
            continue
        for entry in report.get("sources") or []:
            source = entry.get("source") if isinstance(entry, dict) else None
            if not isinstance(source, str) or PurePosixPath(source).is_absolute() or ".." in PurePosixPath(source).parts:
                continue
            boxes = entry.get("boxes")
            out[source] = (Path(photos_root) / source, boxes if isinstance(boxes, list) else [])
    return out


def erase_source_logs(root: Path, keep: Optional[Path] = None) -> None:
    for p in Path(root).glob(".sources-*.jsonl"):
        if keep is None or p != keep:
            erase_file(p)


def erase_reports(root: Path, keep: Optional[Path] = None) -> None:
    for p in Path(root).glob(REPORT_GLOB):
        if keep is None or p != keep:
            erase_file(p)


def _names_identity(entry: dict, key: str, identities: set[str]) -> bool:
    """Whether a report entry belongs to one of ``identities``: its label, or a path in its folder."""
    if entry.get("identity") in identities:
        return True
    path = str(entry.get(key) or "").replace("\\", "/")
    return path.split("/", 1)[0] in identities


def scrub_reports(root: Path, identities: set[str], *, mode: Optional[int] = None) -> None:
    """Rewrite every report without the entries of removed identities: their photo outcomes and the
    ignored files in their folders (labels and file names are personal data). The old file is erased."""
    for path in sorted(Path(root).glob(REPORT_GLOB)):
        try:
            report = read_report(path)
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict):
            continue
        sources = [e for e in report.get("sources") or [] if isinstance(e, dict)]
        ignored = [e for e in report.get("ignored") or [] if isinstance(e, dict)]
        kept = [e for e in sources if not _names_identity(e, "source", identities)]
        kept_ignored = [e for e in ignored if not _names_identity(e, "file", identities)]
        if len(kept) == len(sources) and len(kept_ignored) == len(ignored):
            continue
        report["sources_removed"] = int(report.get("sources_removed") or 0) + len(sources) - len(kept)
        report["sources"], report["ignored"] = kept, kept_ignored
        old = path.with_name(path.name + ".old" + TMP_SUFFIX)  # a crash leaves a stray the next change erases
        path.rename(old)
        write_report(path, report, mode=mode)
        erase_file(old)
