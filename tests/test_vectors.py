"""Vectors are checked and L2-normalised once, at the boundary; bad rows are named."""

import numpy as np
import pytest

from gallery import InvalidInputError
from gallery.vectors import BLOCK, as_embeddings, as_labels


def test_rows_become_unit_float32():
    x = as_embeddings(np.array([[3.0, 4.0], [0.0, -2.0]], dtype=np.float64))
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert np.allclose(x, [[0.6, 0.8], [0.0, -1.0]])


def test_output_is_unit_norm_and_keeps_each_direction(rng):
    raw = rng.standard_normal((300, 17)) * rng.uniform(0.01, 100.0, size=(300, 1))
    x = as_embeddings(raw)
    assert x.shape == (300, 17) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x.astype(np.float64), axis=1), 1.0, atol=1e-6)
    assert np.allclose(x * np.linalg.norm(raw, axis=1, keepdims=True), raw, rtol=1e-5, atol=1e-5)


def test_unit_rows_are_kept_bit_for_bit_so_normalising_twice_changes_nothing(rng):
    raw = rng.standard_normal((2000, 512)).astype(np.float32)
    once = raw / np.linalg.norm(raw, axis=1, keepdims=True)  # unit to float32's rounding, ~1e-7 off
    assert np.array_equal(as_embeddings(once), once)
    normalised = as_embeddings(raw * 3)
    assert np.array_equal(as_embeddings(normalised), normalised)
    nearly = once * np.float32(1 + 1e-5)  # off by more than rounding: normalised again
    assert not np.array_equal(as_embeddings(nearly), nearly)
    assert np.allclose(np.linalg.norm(as_embeddings(nearly).astype(np.float64), axis=1), 1.0, atol=1e-6)


def test_input_is_not_modified_in_place(rng):
    raw = rng.standard_normal((5, 4)).astype(np.float32) * 3
    copy = raw.copy()
    out = as_embeddings(raw)
    assert np.array_equal(raw, copy) and not np.shares_memory(raw, out)


def test_single_vector_is_accepted_as_one_row_when_the_dimension_is_known():
    assert as_embeddings(np.ones(4), dim=4).shape == (1, 4)


@pytest.mark.parametrize(
    "x, dim, message",
    [
        (np.ones((2, 3)), 4, "vectors: dimension 3 does not match the gallery's dimension 4"),
        (np.array([[1.0, 0.0], [np.nan, 1.0]]), None, "vectors: row 1 contains NaN or inf (1 such rows); remove or fix them"),
        (np.array([[1.0, 0.0], [1.0, np.inf]]), None, "vectors: row 1 contains NaN or inf (1 such rows)"),
        (np.array([[1.0, 0.0], [1.0, -np.inf]]), None, "vectors: row 1 contains NaN or inf (1 such rows)"),
        (np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), None, "vectors: row 1 is a zero vector (2 such rows); it has no direction to compare"),
        (np.array([[1.0, 0.0], [1e-9, 0.0]]), None, "vectors: row 1 is a zero vector (1 such rows)"),
        (np.ones((2, 2, 2)), None, "vectors: expected a 2-D (n, d) matrix, got shape (2, 2, 2)"),
        (np.ones(4), None, "vectors: expected a 2-D (n, d) matrix, got shape (4,)"),
        (np.ones(4), 5, "vectors: expected a 2-D (n, d) matrix, got shape (4,)"),
        (np.ones((0, 4)), None, "vectors: no rows given"),
        ([["a", "b"]], None, "vectors: cannot be read as a float32 matrix"),
        ([[1.0, 2.0], [3.0]], None, "vectors: cannot be read as a float32 matrix"),
    ],
)
def test_bad_vectors_are_refused_with_a_message_naming_the_fault(x, dim, message):
    with pytest.raises(InvalidInputError) as e:
        as_embeddings(x, dim=dim)
    assert message in str(e.value)


def test_the_first_bad_row_is_named_and_the_others_counted():
    x = np.ones((10, 3))
    x[7, 1] = np.nan
    x[4, 2] = np.inf
    x[9] = np.nan
    with pytest.raises(InvalidInputError, match=r"row 4 contains NaN or inf \(3 such rows\)"):
        as_embeddings(x)
    z = np.ones((10, 3))
    z[[6, 8]] = 0
    with pytest.raises(InvalidInputError, match=r"row 6 is a zero vector \(2 such rows\)"):
        as_embeddings(z)


def test_a_bad_row_past_the_first_block_is_named_by_its_global_row_number():
    x = np.ones((BLOCK + 10, 2), dtype=np.float32)
    x[BLOCK + 3] = 0
    with pytest.raises(InvalidInputError, match=f"row {BLOCK + 3} is a zero vector"):
        as_embeddings(x)
    x[BLOCK + 3] = 1
    x[BLOCK + 7, 0] = np.nan
    with pytest.raises(InvalidInputError, match=f"row {BLOCK + 7} contains NaN or inf"):
        as_embeddings(x)


def test_the_message_names_what_was_checked():
    with pytest.raises(InvalidInputError, match="^queries: row 0 is a zero vector"):
        as_embeddings(np.zeros((1, 3)), what="queries")


def test_invalid_input_is_a_value_error_for_callers_that_catch_those():
    with pytest.raises(ValueError):
        as_embeddings(np.zeros((1, 3)))


def test_labels_are_stripped_strings_one_per_row():
    out = as_labels([b"ann", " bob ", 7, "\u00e9lodie"], 4)
    assert out.dtype == object and list(out) == ["ann", "bob", "7", "\u00e9lodie"]
    assert all(type(s) is str for s in out)


@pytest.mark.parametrize(
    "labels, n, message",
    [
        (["a", "b"], 3, "identities: got 2 labels for 3 vectors; give exactly one per row"),
        (["a", "b", "c"], 2, "identities: got 3 labels for 2 vectors"),
        (["a", "  "], 2, "identities: row 1 has an empty label"),
        (["a", "b", None], 3, "identities: row 2 has an empty label"),
        (["", "b"], 2, "identities: row 0 has an empty label"),
        ([["a", "b"], ["c", "d"]], 2, "identities: expected one label per row, got shape (2, 2)"),
    ],
)
def test_bad_labels_are_refused(labels, n, message):
    with pytest.raises(InvalidInputError) as e:
        as_labels(labels, n)
    assert message in str(e.value)
