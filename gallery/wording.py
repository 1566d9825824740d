"""Counts and lists in the messages a person reads: ``1 face``, ``2 faces``, ``a.jpg, b.jpg and 3 more``."""

from __future__ import annotations

from typing import Optional, Sequence

#: How many names a one-line summary shows before it says how many more there are.
FIRST_NAMES = 3


def counted(n: int, noun: str, plural: Optional[str] = None) -> str:
    """``counted(1, "face")`` is ``1 face``; ``counted(2, "face")`` is ``2 faces``; irregular plurals are given."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def first_names(names: Sequence[str], first: int = FIRST_NAMES) -> str:
    """The first few of ``names`` and how many more: ``a.jpg, b.jpg, c.jpg and 4 more``."""
    shown = ", ".join(names[:first])
    return shown if len(names) <= first else f"{shown} and {len(names) - first} more"
