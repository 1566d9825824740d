"""A readers-writer lock: many searches at once, or one change alone, neither side starved."""

from __future__ import annotations

import collections
import contextlib
import threading
from typing import Iterator


class ReadWriteLock:
    """Shared for readers, exclusive for a writer, in phases: a waiting writer goes before readers who
    arrive after it, and the readers who waited through a write go before the next writer.

    So a stream of searches cannot postpone an erasure, and a stream of enrolments (two clients, each
    with its next change always queued) cannot hold searches off for longer than one change.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._writes_done = 0
        #: Waiting readers by the number of writes done when they arrived: those from before the last
        #: write are "admitted" and go before the next writer.
        self._waiting = collections.Counter()
        #: How deep each thread is inside reading(): a thread that already reads reads again at once,
        #: else a writer waiting on its outer read and its inner read waiting on the writer deadlock.
        self._depth = threading.local()

    def _admitted(self) -> int:
        return sum(n for ticket, n in self._waiting.items() if ticket < self._writes_done)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        depth = getattr(self._depth, "n", 0)
        if depth:
            self._depth.n = depth + 1
            try:
                yield
            finally:
                self._depth.n = depth
            return
        with self._cond:
            ticket = self._writes_done
            self._waiting[ticket] += 1
            try:
                while self._writing or (self._writers_waiting and ticket == self._writes_done):
                    self._cond.wait()
            finally:
                self._waiting[ticket] -= 1
                if not self._waiting[ticket]:
                    del self._waiting[ticket]
            self._readers += 1
        self._depth.n = 1
        try:
            yield
        finally:
            self._depth.n = 0
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers or self._admitted():
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._writes_done += 1
                self._cond.notify_all()

    @property
    def readers(self) -> int:
        """Readers inside now (for tests and health reporting)."""
        with self._cond:
            return self._readers
