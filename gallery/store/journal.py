"""The journal of an unfinished write: what a crashed or interrupted build had already written.

A build records each finished shard here before starting the next. If the same build (same input
fingerprint on top of the same manifest generation) runs again, it resumes after the last intact shard
instead of starting over. The manifest is untouched until the build commits, so readers never see it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from .files import write_bytes_atomic
from .manifest import INDEX_DIR, FieldReader, ShardInfo, read_shard_entry

LOG = logging.getLogger(__name__)

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
    """The journal in ``root``, None if there is none or it is not JSON (then the run starts over).

    Its file names decide which files a resumed run keeps and which it erases, so a journal that parses
    but holds a bad field (a name outside the gallery, a wrong type) raises :class:`CorruptGalleryError`
    naming it, rather than being trusted or silently dropped.
    """
    path = Path(root) / JOURNAL_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        LOG.warning("%s: not valid JSON (%s); ignoring it, the interrupted run starts over", path, e)
        return None
    r = FieldReader(data, "", path, Path(root))
    return Journal(
        operation=r.text("operation"),
        fingerprint=r.text("fingerprint"),
        base_generation=r.integer("base_generation", minimum=0),
        next_file=r.integer("next_file", minimum=0),
        shards=[read_shard_entry(s, f"shards[{i}]", path, Path(root)) for i, s in enumerate(r.array("shards"))],
        trained_index=r.file("trained_index", under=INDEX_DIR, optional=True),
    )


def write_journal(root: Path, journal: Journal, *, mode: Optional[int] = None) -> None:
    data = asdict(journal)
    write_bytes_atomic(Path(root) / JOURNAL_NAME, (json.dumps(data, indent=1) + "\n").encode("utf-8"), mode=mode)


def clear_journal(root: Path) -> None:
    (Path(root) / JOURNAL_NAME).unlink(missing_ok=True)
