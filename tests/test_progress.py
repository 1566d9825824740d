"""Progress on a terminal redraws in place; anywhere else it is a few plain lines, with no carriage returns
or cursor codes, and it is one module's business."""

import io
import re
import time

from tqdm.auto import tqdm

from gallery.progress import LogProgress, progress_bar
from test_layout import imported, modules

CONTROL = re.compile(r"\r|\x1b\[")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_written_to_a_log_is_its_first_and_last_line_when_quick():
    log = io.StringIO()
    bar = progress_bar(True, total=500, desc="embedding photos", unit="img", file=log)
    assert isinstance(bar, LogProgress)
    for _ in range(500):
        bar.update(1)
        bar.set_postfix(faces=3, refresh=False)
    bar.close()
    assert not CONTROL.search(log.getvalue())
    first, last = log.getvalue().splitlines()
    assert first.startswith("embedding photos: 0/500 (0%)")
    assert last.startswith("embedding photos: 500/500 (100%)") and "faces=3" in last


def test_a_long_bar_in_a_log_prints_a_line_every_interval():
    log = io.StringIO()
    bar = LogProgress(total=4, desc="indexing", unit="vec", file=log, interval=0.05, mininterval=0)
    for _ in range(4):
        time.sleep(0.06)
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["indexing: 0/4", "indexing: 1/4", "indexing: 2/4", "indexing: 3/4",
                                                       "indexing: 4/4"]


def test_nested_bars_in_a_log_leave_no_cursor_codes_and_a_quick_inner_bar_prints_nothing():
    log = io.StringIO()
    for epoch in progress_bar(True, iterable=range(3), desc="epochs", unit="epoch", file=log):
        for _ in progress_bar(True, iterable=range(50), desc=f"epoch {epoch}", leave=False, file=log):
            pass
    text = log.getvalue()
    assert not CONTROL.search(text)
    assert [line.split(" (")[0] for line in text.splitlines()] == ["epochs: 0/3", "epochs: 3/3"]


def test_a_bar_without_a_total_counts():
    log = io.StringIO()
    bar = progress_bar(True, desc="writing shards", unit="vec", file=log)
    bar.update(10)
    bar.close()
    assert log.getvalue().splitlines()[-1].startswith("writing shards: 10 [")


def test_progress_false_or_unasked_off_a_terminal_prints_nothing():
    for progress in (False, None):
        log = io.StringIO()
        bar = progress_bar(progress, total=3, desc="x", file=log)
        bar.update(3)
        bar.close()
        assert log.getvalue() == ""


def test_on_a_terminal_the_bar_is_tqdms_own():
    bar = progress_bar(True, total=3, desc="x", file=Terminal())
    assert isinstance(bar, tqdm) and not isinstance(bar, LogProgress)
    bar.close()


def test_only_the_progress_module_imports_tqdm():
    importers = {name for name, tree in modules() if any(m == "tqdm" or m.startswith("tqdm.") for m in imported(name, tree))}
    assert importers == {"gallery/progress.py"}
