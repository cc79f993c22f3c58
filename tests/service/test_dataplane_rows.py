"""`check_rows`, the one check of a request's rows: float32 C-contiguous out, or a BadInput
naming the first value that is not a finite float32, whatever the dtype the front decoded."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaas.kernels.errors import BadInput
from fpgaas.service.dataplane import check_rows

BIG = 3.5e38  # finite in float64, beyond float32's largest (3.4028235e38)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int8, np.int64, np.uint16])
def test_finite_rows_of_any_real_dtype_come_back_as_the_same_float32_values(dtype: type) -> None:
    x = np.arange(12).reshape(3, 4).astype(dtype)
    batch = check_rows(x, 4)
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch, x.astype(np.float32))


def test_contiguous_float32_rows_are_not_copied() -> None:
    x = np.ones((2, 3), dtype=np.float32)
    assert check_rows(x, 3) is x


def test_strided_float32_rows_are_made_contiguous() -> None:
    x = np.ones((4, 6), dtype=np.float32)[:, ::2]
    batch = check_rows(x, 3)
    assert batch.flags.c_contiguous
    np.testing.assert_array_equal(batch, x)


def test_the_largest_float32_values_pass() -> None:
    top = float(np.finfo(np.float32).max)
    batch = check_rows(np.array([[top, -top]]), 2)
    assert np.isfinite(batch).all()


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (np.nan, np.float32),
        (np.inf, np.float32),
        (-np.inf, np.float64),
        (np.nan, np.float64),
        (BIG, np.float64),
        (-BIG, np.float64),
        (np.inf, np.float16),
    ],
)
def test_the_first_value_that_is_not_a_finite_float32_is_named(value: float, dtype: type) -> None:
    x = np.zeros((3, 4), dtype=dtype)
    x[1, 2] = value
    x[2, 0] = value  # a later one is not the one reported
    with pytest.raises(BadInput) as caught:
        check_rows(x, 4)
    assert caught.value.field == "inputs[1][2]"
    assert "finite" in caught.value.message


def test_float32_values_whose_sum_would_overflow_float32_still_pass() -> None:
    top = float(np.finfo(np.float32).max)
    x = np.full((4, 3), top, dtype=np.float32)  # the float32 sum is inf; the float64 one is not
    assert check_rows(x, 3) is x


@pytest.mark.parametrize(
    ("shape", "field", "words"),
    [((4,), "inputs", "2-D"), ((0, 4), "inputs", "no samples"), ((2, 5), "inputs", "needs 4 values")],
)
def test_wrong_shapes_are_refused(shape: tuple[int, ...], field: str, words: str) -> None:
    with pytest.raises(BadInput) as caught:
        check_rows(np.zeros(shape, dtype=np.float32), 4)
    assert caught.value.field == field and words in caught.value.message
