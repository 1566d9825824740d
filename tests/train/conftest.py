"""Fixtures for gallery.train: skipped without torch; one torch thread (these models are tiny)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits as (N, 1, 8, 8) float32 in [0, 1] and integer labels."""
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)
