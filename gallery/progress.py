"""Feedback on long work: progress bars, and the one-line notes a person at a terminal should see."""

from __future__ import annotations

import sys
from typing import Optional

from tqdm.auto import tqdm


def progress_bar(progress: Optional[bool], **kw) -> tqdm:
    """A tqdm bar: ``progress`` True shows it, False hides it, None shows it only on a terminal."""
    return tqdm(disable=None if progress is None else not progress, dynamic_ncols=True, **kw)


def notify(progress: Optional[bool], message: str) -> None:
    """Print ``message`` on stderr when the caller asked for feedback (``progress=True``, as the CLI does)."""
    if progress:
        tqdm.write(message, file=sys.stderr)
