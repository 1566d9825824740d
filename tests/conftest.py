"""Shared fixtures; tests marked `gpu` skip themselves when faiss sees no GPU."""

import numpy as np
import pytest

from gallery.index.gpu import gpu_count
from gallery.synthetic import synthetic_gallery


def pytest_collection_modifyitems(config, items):
    if gpu_count() > 0:
        return
    skip = pytest.mark.skip(reason="no GPU visible to faiss")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_set():
    """600 identities x 3 images at d = 64: quick, separable, with a realistic spectrum."""
    return synthetic_gallery(600, 3, 64, genuine=0.7, seed=42)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
