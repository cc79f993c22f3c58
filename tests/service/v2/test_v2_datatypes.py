"""Binary tensor data decodes to the float32 rows it holds, bit for bit, and a value that is not
a finite FP32 is refused naming its index and the field, whatever the datatype."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaas.kernels.errors import BadInput
from fpgaas.service.api.v2 import datatypes

FP32, FP64 = datatypes.lookup("FP32", "datatype"), datatypes.lookup("FP64", "datatype")


def test_fp32_binary_data_keeps_every_bit_including_signed_zero_and_subnormals() -> None:
    values = np.array([[0.0, -0.0, 1.5, -3.25], [1e-45, -1e-44, 3.4e38, 7.0]], dtype="<f4")
    decoded = datatypes.from_binary(values.tobytes(), FP32, [2, 4], "raw_input_contents[0]")
    assert decoded.dtype == np.float32 and decoded.shape == (2, 4)
    np.testing.assert_array_equal(decoded.view(np.uint32), values.view(np.uint32))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_fp32_value_is_refused_naming_its_index_and_field(bad: float) -> None:
    values = np.ones((2, 4), dtype="<f4")
    values[1, 3] = bad
    with pytest.raises(BadInput, match=r"value at index \[1, 3\] is .*finite and fit in FP32") as caught:
        datatypes.from_binary(values.tobytes(), FP32, [2, 4], "raw_input_contents[0]")
    assert caught.value.field == "raw_input_contents[0]"


def test_an_fp64_value_beyond_fp32_is_refused_as_not_fitting() -> None:
    values = np.ones((1, 3), dtype="<f8")
    values[0, 2] = 1e300
    with pytest.raises(BadInput, match=r"value at index \[0, 2\] is 1e\+300"):
        datatypes.from_binary(values.tobytes(), FP64, [1, 3], "inputs[0]")
