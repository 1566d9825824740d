"""The lock behind the service's concurrency, and the gallery it guards: searches share, a change waits for them."""

from __future__ import annotations

import threading
import time

import numpy as np

from gallery import Gallery
from gallery.serve.live import LiveGallery
from gallery.serve.rwlock import ReadWriteLock

WAIT = 5.0


def in_thread(fn) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def run():
        fn()
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done


def test_readers_share_the_lock():
    lock, inside, release = ReadWriteLock(), threading.Barrier(3, timeout=WAIT), threading.Event()

    def reader():
        with lock.reading():
            inside.wait()
            release.wait(WAIT)

    threads = [in_thread(reader)[0] for _ in range(2)]
    inside.wait()  # both readers are inside at once
    assert lock.readers == 2
    release.set()
    for t in threads:
        t.join(WAIT)


def test_a_writer_waits_for_readers_in_flight_and_new_readers_wait_for_it():
    lock, order = ReadWriteLock(), []

    def writer():
        with lock.writing():
            order.append("write")

    def reader():
        with lock.reading():
            order.append("read")

    with lock.reading():
        _, wrote = in_thread(writer)
        time.sleep(0.2)
        assert not wrote.is_set()  # the search in flight holds the change back
        _, read = in_thread(reader)
        time.sleep(0.2)
        assert not read.is_set()  # a search arriving now queues behind the waiting change
    assert wrote.wait(WAIT) and read.wait(WAIT)
    assert order == ["write", "read"]


def test_readers_who_waited_through_a_write_go_before_the_next_writer():
    lock, order, first_write = ReadWriteLock(), [], threading.Event()

    def writer(name, hold):
        with lock.writing():
            order.append(name)
            first_write.set()
            time.sleep(hold)

    t1, _ = in_thread(lambda: writer("write 1", 0.3))
    first_write.wait(WAIT)
    t2, _ = in_thread(lambda: (time.sleep(0.05), writer("write 2", 0)))  # queued while write 1 runs
    time.sleep(0.01)

    def reader():
        with lock.reading():
            order.append("read")

    t3, _ = in_thread(reader)  # arrives during write 1, before write 2 queues
    for t in (t1, t2, t3):
        t.join(WAIT)
    assert order == ["write 1", "read", "write 2"]


def test_a_removal_waits_for_the_searches_in_flight_before_it_erases(tmp_path, small_set):
    g = Gallery.from_vectors(small_set.vectors, small_set.identities, tmp_path / "g", rows_per_shard=500, progress=False)
    live = LiveGallery(g.root)
    victim = str(small_set.identities[0])
    shard_files = sorted((g.root / "shards").iterdir())
    before = {p: p.read_bytes() for p in shard_files}
    with live.reading() as searching:
        _, removed = in_thread(lambda: live.change(lambda h: h.remove([victim])))
        time.sleep(0.5)
        assert not removed.is_set()
        assert {p: p.read_bytes() for p in shard_files} == before  # nothing erased under the search
        (r,) = searching.search(small_set.vectors[:1], k=1)
        assert r.matches[0].identity == victim and searching.manifest.generation == g.manifest.generation
    assert removed.wait(WAIT)
    with live.reading() as after:
        assert after.manifest.generation > g.manifest.generation and victim not in after.identities
        assert after.search(small_set.vectors[:1], k=1)[0].matches[0].identity != victim
        assert np.all(np.asarray(after.identities) != victim)


def test_a_change_made_by_another_process_is_picked_up_before_the_next_search(tmp_path, small_set):
    root = tmp_path / "g"
    Gallery.from_vectors(small_set.vectors, small_set.identities, root, rows_per_shard=500, progress=False)
    live = LiveGallery(root)
    first = live.generation
    Gallery.open(root).add_vectors(small_set.vectors[:2], ["someone new"] * 2)  # as `gallery` in another shell would
    with live.reading() as g:
        assert g.manifest.generation > first and "someone new" in g.identities


def test_a_reader_that_reads_again_inside_its_read_does_not_deadlock_with_a_waiting_writer():
    """A search that asks for the encoder (a second read) while a removal waits must still finish."""
    lock = ReadWriteLock()
    inner_done, writer_done = threading.Event(), threading.Event()

    def writer():
        with lock.writing():
            writer_done.set()

    with lock.reading():
        w = threading.Thread(target=writer)
        w.start()
        time.sleep(0.1)  # the writer now waits for this read
        with lock.reading():
            inner_done.set()
        assert not writer_done.is_set()
    w.join(5)
    assert inner_done.is_set() and writer_done.is_set()
