"""Helpers for tests that interrupt a real build process: read its journal, signal it mid-build."""

import json
import shutil
import time
from pathlib import Path


def read_journal(root: Path) -> dict:
    try:
        return json.loads((root / "journal.json").read_text())
    except (FileNotFoundError, ValueError):
        return {"shards": []}


def interrupt_after_shards(child, root: Path, shards: int, sig, timeout: float = 60) -> tuple[dict, str]:
    """Wait until the build's journal lists ``shards`` shards, send ``sig``; return the journal left on disk and stderr."""
    deadline = time.time() + timeout
    while len(read_journal(root)["shards"]) < shards:
        assert child.poll() is None, f"the build ended before it was interrupted: {child.stderr.read()}"
        assert time.time() < deadline, "the build wrote no shards in time"
        time.sleep(0.005)
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0, "the build finished before the signal arrived"
    journal = read_journal(root)
    assert len(journal["shards"]) >= shards
    return journal, err


def copied_photos(source: Path, dest: Path, times: int) -> Path:
    """``times`` copies of every photo of an ``<identity>/<photos>`` folder, so a build lasts long enough to kill."""
    for i in range(times):
        for d in source.iterdir():
            (dest / d.name).mkdir(parents=True, exist_ok=True)
            for p in d.iterdir():
                shutil.copy(p, dest / d.name / f"{i}-{p.name}")
    return dest
