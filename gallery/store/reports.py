"""Enrolment reports: what happened to every source photo of a build, as JSON beside the manifest.

While a build runs, each photo's outcome is appended to a hidden JSON-lines log named after the run,
so a resumed build still reports the photos its interrupted predecessor had already handled. The
commit writes ``report-<generation>.json`` and removes the log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

from .files import erase_file, write_bytes_atomic

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


def append_source_log(path: Path, entries: Iterable[dict]) -> None:
    lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    if lines:
        with open(path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()


def write_report(path: Path, report: dict) -> None:
    write_bytes_atomic(path, (json.dumps(report, indent=1) + "\n").encode("utf-8"))


def read_report(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def erase_source_logs(root: Path, keep: Optional[Path] = None) -> None:
    for p in Path(root).glob(".sources-*.jsonl"):
        if keep is None or p != keep:
            erase_file(p)


def erase_reports(root: Path, keep: Optional[Path] = None) -> None:
    for p in Path(root).glob(REPORT_GLOB):
        if keep is None or p != keep:
            erase_file(p)


def scrub_reports(root: Path, identities: set[str]) -> None:
    """Rewrite every report without the entries of removed identities (their file names are personal data)."""
    for path in sorted(Path(root).glob(REPORT_GLOB)):
        report = read_report(path)
        kept = [e for e in report.get("sources", []) if e.get("identity") not in identities]
        if len(kept) != len(report.get("sources", [])):
            report["sources_removed"] = report.get("sources_removed", 0) + len(report["sources"]) - len(kept)
            report["sources"] = kept
            old = path.with_name(path.name + ".old")
            path.rename(old)
            write_report(path, report)
            erase_file(old)
