"""Feedback on long work: progress bars, and the one-line notes a person at a terminal should see.

The only module that imports tqdm. On a terminal a bar redraws itself in place; anywhere else (a log
file, a CI job, a pipe) the same bar prints a plain line at most every :data:`LOG_INTERVAL` seconds,
and its last line when it ends, with no carriage returns and no cursor codes, so a log of a long
build stays a few lines long and readable.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Optional, TextIO

from tqdm.auto import tqdm
from tqdm.std import tqdm as plain_tqdm

#: Seconds between two progress lines written to something that is not a terminal.
LOG_INTERVAL = 10.0
#: What a progress line in a log says (tqdm's fields), with and without a known total.
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
LOG_FORMAT_OPEN = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\r\n\t ]")


class _Lines:
    """A file that lets only text through: tqdm's carriage returns, blank writes and cursor moves are dropped."""

    def __init__(self, file: TextIO):
        self.file = file

    def write(self, s: str) -> None:
        if _CONTROL.sub("", s):
            self.file.write(s)
            self.file.flush()

    def flush(self) -> None:
        self.file.flush()


class LogProgress(plain_tqdm):
    """A tqdm bar for a log: a whole line every ``interval`` seconds and when it ends, never redrawn in place.

    A bar that leaves nothing behind when done (``leave=False``, e.g. one epoch's batches) prints only
    when it lasts longer than ``interval``.
    """

    def __init__(self, *args, interval: float = LOG_INTERVAL, file: Optional[TextIO] = None, **kw):
        self._interval = interval
        self._printed_at: Optional[float] = None
        self._printed_n: Optional[int] = None
        self._closing = False
        self._born = time.monotonic()
        kw.pop("dynamic_ncols", None)
        super().__init__(*args, file=_Lines(file if file is not None else sys.stderr), **kw)

    def display(self, msg=None, pos=None) -> bool:
        if msg == "":  # a request to erase the bar: there is nothing to erase in a log
            return False
        now = time.monotonic()
        if self._closing:
            due = self._printed_n != self.n
        elif self._printed_at is None:
            due = self.leave is not False or now - self._born >= self._interval
        else:
            due = now - self._printed_at >= self._interval
        if due:
            fields = {**self.format_dict, "bar_format": LOG_FORMAT if self.total else LOG_FORMAT_OPEN}
            self.fp.write(self.format_meter(**fields).strip() + "\n")
            self._printed_at, self._printed_n = now, self.n
        return due

    def close(self) -> None:
        self._closing = self._printed_at is not None or self.leave is not False
        super().close()


def _is_terminal(file: TextIO) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed file
        return False


def _in_notebook() -> bool:
    """tqdm.auto picked its notebook widget, which draws in the page rather than on stderr."""
    return any("notebook" in cls.__module__ for cls in tqdm.__mro__)


def progress_bar(progress: Optional[bool], **kw) -> tqdm:
    """A tqdm bar: ``progress`` True shows it, False hides it, None shows it only on a terminal.

    Shown on something that is not a terminal, it is a :class:`LogProgress`: plain periodic lines.
    """
    file = kw.get("file") or sys.stderr
    if progress and not _is_terminal(file) and not _in_notebook():
        return LogProgress(**kw)
    return tqdm(disable=None if progress is None else not progress, dynamic_ncols=True, **kw)


def notify(progress: Optional[bool], message: str) -> None:
    """Print ``message`` on stderr when the caller asked for feedback (``progress=True``, as the CLI does)."""
    if progress:
        tqdm.write(message, file=sys.stderr)


def echo(message: str, *, err: bool = False) -> None:
    """Print a line of output on stdout (stderr with ``err``) without breaking a progress bar drawn on the terminal."""
    tqdm.write(message, file=sys.stderr if err else sys.stdout)
