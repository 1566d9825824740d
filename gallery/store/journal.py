"""The journal of an unfinished write: what a crashed or interrupted build had already written.

A build records each finished shard here before starting the next. If the same build (same input
fingerprint on top of the same manifest generation) runs again, it resumes after the last intact shard
instead of starting over. The manifest is untouched until the build commits, so readers never see it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from .files import write_bytes_atomic
from .manifest import ShardInfo

JOURNAL_NAME = "journal.json"


@dataclass
class Journal:
    operation: str
    fingerprint: str
    base_generation: int
    next_file: int
    shards: list[ShardInfo] = field(default_factory=list)
    trained_index: Optional[str] = None

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def files(self) -> set[str]:
        names = {n for s in self.shards for n in (s.file, s.vectors_file)}
        if self.trained_index:
            names.add(self.trained_index)
        return names


def read_journal(root: Path) -> Optional[Journal]:
    path = Path(root) / JOURNAL_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["shards"] = [ShardInfo(**s) for s in data.get("shards", [])]
        return Journal(**data)
    except (ValueError, TypeError, KeyError):
        return None


def write_journal(root: Path, journal: Journal) -> None:
    data = asdict(journal)
    write_bytes_atomic(Path(root) / JOURNAL_NAME, (json.dumps(data, indent=1) + "\n").encode("utf-8"))


def clear_journal(root: Path) -> None:
    (Path(root) / JOURNAL_NAME).unlink(missing_ok=True)
