"""Shared fixtures: small synthetic identity sets and galleries built from them in tmp_path.

Tests marked ``gpu`` skip themselves when faiss sees no GPU; ``slow`` marks tests that spawn processes.
"""

import os
import signal

import numpy as np
import pytest

from gallery import Gallery
from gallery.index.gpu import gpu_count
from gallery.synthetic import synthetic_gallery, synthetic_probes


@pytest.fixture(scope="session", autouse=True)
def private_model_cache(tmp_path_factory):
    """Converted model weights go to a folder of this test run, not the user's cache."""
    os.environ["GALLERY_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))


@pytest.fixture(scope="session", autouse=True)
def interruptible_children():
    """Child processes can be stopped with Ctrl-C (SIGINT) even when pytest itself was started in the
    background of a shell, which starts it with SIGINT ignored and so would pass that on to every child."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    if gpu_count() > 0:
        return
    skip = pytest.mark.skip(reason="no GPU visible to faiss")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_set():
    """600 identities x 3 images at d = 64: quick, separable, with a realistic spectrum."""
    return synthetic_gallery(600, 3, 64, genuine=0.7, seed=42)


@pytest.fixture(scope="session")
def small_probes(small_set):
    """40 new images of enrolled identities, then 40 of strangers (label None)."""
    return synthetic_probes(small_set, 40, 40, seed=11)


@pytest.fixture
def built(small_set, tmp_path):
    """A flat Parquet gallery of ``small_set`` in four shards (500 + 500 + 500 + 300 rows); tests may change it."""
    return Gallery.from_vectors(small_set.vectors, small_set.identities, tmp_path / "g", rows_per_shard=500, progress=False)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def folder_bytes():
    """``folder_bytes(root)``: every file under ``root`` as {relative path: bytes}, to show nothing changed."""

    def read(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    return read
