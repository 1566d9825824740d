"""FAISS in a server: one OpenMP thread per request, so that concurrent requests, not one request's
threads, share the cores.

Measured with ``benchmarks/serve_load.py`` on 2 cores: with FAISS's default of one OpenMP thread per
core in every worker thread, a one-vector search cost 30 ms of CPU per request (the idle team members
spinning against the event loop and each other) and took 32 ms; with one thread, 4 ms of CPU and 5 ms.
``omp_set_num_threads`` holds for the calling thread only, so each worker thread sets it once.
"""

from __future__ import annotations

import threading

from ..index import set_threads

_LOCAL = threading.local()


def one_kernel_thread() -> None:
    """Make FAISS searches from this thread single-threaded (once per thread; cheap after that)."""
    if getattr(_LOCAL, "set", False):
        return
    set_threads(1)
    _LOCAL.set = True
