"""GalleryChange: the one way a gallery folder changes, safe with other writers and with readers.

A change takes the writer lock and reads the manifest *under* it, so it never works on a stale copy.
It resumes the journal of an interrupted change of the same kind and input, or discards it, and erases
every file that neither the manifest nor a resumed journal names (an aborted change's leftovers may
hold biometric data). The caller then appends shards, drops records, swaps the index or sets
thresholds; :meth:`GalleryChange.commit` writes files first and the manifest last, atomically, then
erases whatever the new generation no longer names once readers still opening the old one are done.
It is the only code that writes a manifest.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..errors import CorruptGalleryError, GalleryError, InvalidInputError
from ..progress import progress_bar
from ..types import Records
from .files import GROUP_DIR_MODE, PRIVATE_DIR_MODE, TMP_SUFFIX, erase_file, file_mode
from .journal import Journal, clear_journal, read_journal, write_journal
from .locks import no_readers, writer_lock
from .manifest import INDEX_DIR, MANIFEST_NAME, Manifest, ShardInfo, manifest_path, read_manifest, write_manifest
from .reports import REPORT_GLOB, erase_reports, erase_source_logs, report_path, scrub_reports, write_report
from .shards import SHARD_DIR, ShardStore

LOG = logging.getLogger(__name__)

#: Folders whose every file a manifest or journal must name.
NAMED_DIRS = (SHARD_DIR, INDEX_DIR)
#: How long a commit waits for readers still opening the previous generation before erasing its files.
READER_GRACE_SECONDS = 30.0
_REPORT_NUMBER = re.compile(r"report-(\d+)\.json$")


class GalleryChange:
    """One change to the gallery in ``root``, as a context manager that holds its writer lock.

    ``operation`` and ``key`` (a fingerprint of the input) let a rerun resume an interrupted change:
    only a journal of the same operation and key on top of the same generation is resumed. ``create``
    is the manifest of a new gallery (ids and file numbers continue the old one's when ``replace``
    lets it replace one); without it the folder must already hold a gallery. ``wait`` is how long to
    wait for another writer; ``group_access`` makes a new gallery readable by the owner's group.
    ``add_hint`` and ``replace_hint`` tell whoever meets a gallery already there how to add to it or
    replace it, in the words of their caller (a command and its flag, and the Python call).
    """

    def __init__(self, root: Path | str, *, operation: str, key: Optional[str] = None,
                 create: Optional[Manifest] = None, replace: bool = False, wait: float = 0.0,
                 group_access: bool = False, add_hint: str = "an add", replace_hint: str = "overwrite=True"):
        self.root = Path(root)
        self.operation, self.key = operation, key
        self.create, self.replace, self.wait = create, replace, wait
        self.group_access, self.add_hint, self.replace_hint = group_access, add_hint, replace_hint
        self.base: Optional[Manifest] = None
        self.manifest: Optional[Manifest] = None
        self._journal: Optional[Journal] = None
        self._resumed = False
        #: A photo build's report, written as ``report-<generation>.json`` by the commit.
        self.report: Optional[dict] = None
        self._forget: set[str] = set()
        self._lock = None

    # ------------------------------------------------------------------ opening

    def __enter__(self) -> "GalleryChange":
        if self.create is not None:
            self._prepare_folder()
        elif not manifest_path(self.root).is_file():
            read_manifest(self.root)  # raises the not-found error that says what to do
        self.mode = file_mode(self.root)
        self._lock = writer_lock(self.root, wait=self.wait, mode=self.mode)
        self._lock.__enter__()
        try:
            self._begin()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._lock.__exit__(*exc)

    def _prepare_folder(self) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise InvalidInputError(f"{root}: exists and is not a folder")
        fresh = not manifest_path(root).is_file()
        if fresh or self.replace:
            root.mkdir(parents=True, exist_ok=True)
            os.chmod(root, GROUP_DIR_MODE if self.group_access else PRIVATE_DIR_MODE)

    def _begin(self) -> None:
        root = self.root
        base = read_manifest(root) if manifest_path(root).is_file() else None
        if self.create is not None and base is not None and not self.replace:
            raise GalleryError(f"{root}: already holds a gallery; add to it with {self.add_hint}, "
                               f"or replace it with {self.replace_hint}")
        if self.create is None and base is None:
            read_manifest(root)
        if base is not None:
            check_consistent(root, base)
        self.base = base
        if self.create is not None:
            new = copy.deepcopy(self.create)
            if base is not None:
                new.generation, new.next_id, new.next_file = base.generation, base.next_id, base.next_file
        else:
            new = copy.deepcopy(base)
        self.manifest = new
        self.store = ShardStore(root, new.shard_format)

    @property
    def journal(self) -> Journal:
        """The journal of this change, resumed or new; opening it erases the files nothing names.

        Opened (and written) when the change first writes, so a change refused before that leaves every
        file as it was, and every file a change writes is named by a manifest or a journal.
        """
        if self._journal is None:
            self._open_journal()
        return self._journal

    @property
    def resumed(self) -> bool:
        """Whether this change resumes an interrupted run of the same operation and input."""
        return self.journal is not None and self._resumed

    def _open_journal(self) -> None:
        generation = self.base.generation if self.base is not None else 0
        journal = read_journal(self.root)
        if (journal is not None and self.key is not None and journal.operation == self.operation
                and journal.fingerprint == self.key and journal.base_generation == generation):
            intact = []
            for info in journal.shards:
                if not self.store.is_intact(info):
                    break
                intact.append(info)
            journal.shards = intact
            journal.next_file = max(journal.next_file, self.manifest.next_file)
            self._resumed = True
            LOG.info("resuming an interrupted %s: %d rows already written", self.operation, journal.rows)
        else:
            if journal is not None:
                LOG.info("discarding the journal of an interrupted %s", journal.operation)
            erase_source_logs(self.root)
            clear_journal(self.root)
            journal = Journal(self.operation, self.key or "", generation, next_file=self.manifest.next_file)
        self._journal = journal
        self._erase_unnamed(self.base, journal)
        write_journal(self.root, journal, mode=self.mode)

    # ------------------------------------------------------------------ what a change does

    @property
    def rows_written(self) -> int:
        """Rows already in this change's new shards, including those an interrupted run had written."""
        return self.journal.rows

    @property
    def new_shards(self) -> list[ShardInfo]:
        return list(self.journal.shards)

    def next_seq(self) -> int:
        """A file sequence number no other file of this gallery has used."""
        seq = self.journal.next_file
        self.journal.next_file += 1
        return seq

    def write_shard(self, records: Records) -> ShardInfo:
        """Write ``records`` (ids assigned) as a new shard and journal it, so a rerun resumes after it."""
        info = self.store.write_shard(records, self.next_seq(), mode=self.mode)
        self.journal.shards.append(info)
        write_journal(self.root, self.journal, mode=self.mode)
        return info

    def keep(self, name: str) -> None:
        """Journal a file the next run of this change may reuse (a trained index), so it is not erased."""
        self.journal.trained_index = name
        write_journal(self.root, self.journal, mode=self.mode)

    def drop(self, ids: np.ndarray, *, progress: Optional[bool] = None) -> None:
        """Rewrite every shard holding one of ``ids`` without it; the old files are erased at commit."""
        ids = np.asarray(ids, dtype=np.int64)
        shards = []
        for info in progress_bar(progress, iterable=self.manifest.shards, desc="compacting shards", unit="shard"):
            if np.any((ids >= info.first_id) & (ids <= info.last_id)):
                kept = self.store.rewrite_without(info, ids, self.journal.next_file, mode=self.mode)
                if kept is not info:
                    self.journal.next_file += 1
                info = kept
            if info is not None:
                shards.append(info)
        self.manifest.shards = shards

    def forget(self, identities: Iterable[str]) -> None:
        """Scrub these identities from every report at commit (their photo names are personal data)."""
        self._forget |= {str(s) for s in identities}

    # ------------------------------------------------------------------ committing

    def commit(self) -> Manifest:
        """Write the manifest naming this change's files, then erase what it no longer names."""
        m, journal = self.manifest, self.journal
        self._compact_new_shards()
        m.shards = m.shards + journal.shards
        if journal.shards:
            m.next_id = max(m.next_id, max(s.last_id for s in journal.shards) + 1)
        m.next_file = max(m.next_file, journal.next_file)
        held = m.index.ntotal if m.index is not None else 0
        if held != m.count:
            raise GalleryError(f"{self.root}: this {self.operation} would commit {m.count} records with an index of "
                               f"{held}; nothing was committed")
        if self._forget:
            scrub_reports(self.root, self._forget, mode=self.mode)
        if self.report is not None:
            write_report(report_path(self.root, m.generation + 1), self.report, mode=self.mode)
        write_manifest(self.root, m, mode=self.mode)
        clear_journal(self.root)
        erase_source_logs(self.root)
        if self.create is not None and self.base is not None:  # the replaced gallery's reports name its people
            erase_reports(self.root, keep=report_path(self.root, m.generation))
        self._erase_unnamed(m, None)
        self.committed = m
        return m

    def _compact_new_shards(self) -> None:
        """Merge the short shards a photo build checkpoints often into shards of ``rows_per_shard``."""
        shards, limit = self.journal.shards, self.manifest.rows_per_shard
        if sum(1 for s in shards if s.rows < limit) < 2:
            return
        merged: list[ShardInfo] = []
        group: list[ShardInfo] = []

        def flush() -> None:
            if len(group) == 1:
                merged.append(group[0])
            elif group:
                parts = [self.store.read(s) for s in group]
                merged.append(self.store.write_shard(Records.concat(parts), self.next_seq(), mode=self.mode))
            group.clear()

        for info in shards:
            if group and sum(s.rows for s in group) + info.rows > limit:
                flush()
            group.append(info)
        flush()
        self.journal.shards = merged

    def _erase_unnamed(self, manifest: Optional[Manifest], journal: Optional[Journal]) -> None:
        """Erase the files in the gallery's folders that neither ``manifest`` nor ``journal`` names."""
        keep: set[str] = set()
        if manifest is not None:
            keep |= self.store.files_of(manifest.shards)
            if manifest.index is not None:
                keep.add(manifest.index.file)
        if journal is not None:
            keep |= journal.files()
        generation = manifest.generation if manifest is not None else 0
        doomed: list[Path] = []
        for folder in NAMED_DIRS:
            path = self.root / folder
            if path.is_dir() and not path.is_symlink():
                doomed += [p for p in sorted(path.iterdir()) if f"{folder}/{p.name}" not in keep]
        doomed += sorted(self.root.glob("*" + TMP_SUFFIX))
        for p in self.root.glob(REPORT_GLOB):
            number = _REPORT_NUMBER.search(p.name)
            if number and int(number.group(1)) > generation:  # written by a change that never committed
                doomed.append(p)
        if not doomed:
            return
        with no_readers(self.root, wait=READER_GRACE_SECONDS, mode=self.mode) as alone:
            if not alone:
                LOG.warning("%s: readers are still opening the previous generation after %.0f s; erasing its "
                            "files anyway", self.root, READER_GRACE_SECONDS)
            LOG.info("erasing %d files no manifest names", len(doomed))
            for p in doomed:
                if p.is_dir() and not p.is_symlink():
                    LOG.warning("%s: a folder where only files belong; left alone", p)
                    continue
                erase_file(p)


def check_consistent(root: Path, manifest: Manifest) -> None:
    """Refuse a manifest whose index and shards disagree (an edited manifest), before anything is touched."""
    held = manifest.index.ntotal if manifest.index is not None else 0
    if held != manifest.count:
        raise CorruptGalleryError(
            f"{Path(root) / MANIFEST_NAME}: index.ntotal is {held} but the shards hold {manifest.count} records; "
            "a shard entry was removed or the index replaced. Restore manifest.json from a backup; nothing was changed"
        )
