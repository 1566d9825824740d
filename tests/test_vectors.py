"""Vectors are checked and L2-normalised once, at the boundary; bad rows are named."""

import numpy as np
import pytest

from gallery import InvalidInputError
from gallery.vectors import as_embeddings, as_labels


def test_rows_become_unit_float32():
    x = as_embeddings(np.array([[3.0, 4.0], [0.0, -2.0]], dtype=np.float64))
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert np.allclose(x, [[0.6, 0.8], [0.0, -1.0]])


def test_single_vector_is_accepted_as_one_row_when_the_dimension_is_known():
    assert as_embeddings(np.ones(4), dim=4).shape == (1, 4)


@pytest.mark.parametrize(
    "x, dim, message",
    [
        (np.ones((2, 3)), 4, "vectors: dimension 3 does not match the gallery's dimension 4"),
        (np.array([[1.0, 0.0], [np.nan, 1.0]]), None, "vectors: row 1 contains NaN or inf (1 such rows); remove or fix them"),
        (np.array([[1.0, 0.0], [1.0, np.inf]]), None, "vectors: row 1 contains NaN or inf"),
        (np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), None, "vectors: row 1 is a zero vector (2 such rows)"),
        (np.ones((2, 2, 2)), None, "expected a 2-D (n, d) matrix, got shape (2, 2, 2)"),
        (np.ones((0, 4)), None, "vectors: no rows given"),
        ([["a", "b"]], None, "cannot be read as a float32 matrix"),
    ],
)
def test_bad_vectors_are_named(x, dim, message):
    with pytest.raises(InvalidInputError) as e:
        as_embeddings(x, dim=dim)
    assert message in str(e.value)


def test_labels_are_stripped_strings_one_per_row():
    assert list(as_labels([b"ann", " bob ", 7], 3)) == ["ann", "bob", "7"]
    with pytest.raises(InvalidInputError, match="got 2 labels for 3 vectors"):
        as_labels(["a", "b"], 3)
    with pytest.raises(InvalidInputError, match="row 1 has an empty label"):
        as_labels(["a", "  "], 2)
