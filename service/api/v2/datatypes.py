"""Open Inference Protocol tensor datatypes and their conversion to the kernel's float32.

Every kernel takes and returns float32. An input may arrive in any numeric datatype of the
protocol, as JSON numbers or as little-endian binary; it is decoded as that datatype first (so
an INT8 value of 300 or an INT32 value of 1.5 is refused) and then rounded to the nearest
float32, as numpy's `astype` does and as `/predict` does with JSON numbers. BOOL and BYTES are
not numbers and are refused; BF16 and FP16 arrive exactly. Non-finite values are refused.

Pure functions on numpy arrays; thread-safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fpgaas.kernels.errors import BadInput


@dataclass(frozen=True)
class Datatype:
    name: str  # the protocol's spelling, e.g. "FP32"
    dtype: np.dtype | None  # little-endian wire dtype; None for BYTES (variable size)
    json_allowed: bool = True  # BF16 has no JSON form (as in Triton)

    @property
    def itemsize(self) -> int | None:
        return None if self.dtype is None else self.dtype.itemsize


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        Datatype("BOOL", np.dtype("?")),
        Datatype("UINT8", np.dtype("u1")),
        Datatype("UINT16", np.dtype("<u2")),
        Datatype("UINT32", np.dtype("<u4")),
        Datatype("UINT64", np.dtype("<u8")),
        Datatype("INT8", np.dtype("i1")),
        Datatype("INT16", np.dtype("<i2")),
        Datatype("INT32", np.dtype("<i4")),
        Datatype("INT64", np.dtype("<i8")),
        Datatype("FP16", np.dtype("<f2")),
        Datatype("FP32", np.dtype("<f4")),
        Datatype("FP64", np.dtype("<f8")),
        # bfloat16 is the top half of a float32; numpy has no dtype for it.
        Datatype("BF16", np.dtype("<u2"), json_allowed=False),
        Datatype("BYTES", None),
    )
}

# What every fpgaas kernel consumes and produces.
KERNEL_DATATYPE = "FP32"
WIRE_FP32 = np.dtype("<f4")


def lookup(name: str, field: str) -> Datatype:
    """The datatype spelled `name` (case-sensitive, as the protocol says); BadInput otherwise."""
    try:
        return DATATYPES[name]
    except KeyError:
        raise BadInput(
            f"unknown datatype {name!r}; the protocol's datatypes are {', '.join(DATATYPES)}", field=field
        ) from None


def convertible(datatype: Datatype, field: str) -> None:
    """Refuse datatypes that are not numbers: a float32 kernel cannot take them."""
    if datatype.name in ("BOOL", "BYTES"):
        raise BadInput(
            f"datatype {datatype.name} cannot feed a {KERNEL_DATATYPE} input; "
            "send FP32 (or another numeric datatype, converted to FP32)",
            field=field,
        )


_FLOAT32_MAX_SQUARED = float(np.finfo(np.float32).max) ** 2


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


def from_json(data: Any, datatype: Datatype, shape: list[int], field: str) -> np.ndarray:
    """Decode the `data` of a request input (nested or flat, row-major) into float32 of `shape`."""
    if not datatype.json_allowed:
        raise BadInput(f"{datatype.name} data must be sent as binary (binary_data_size)", field=field)
    if not isinstance(data, list):
        raise BadInput("'data' must be a JSON array of numbers", field=field)
    try:
        values = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise BadInput(f"'data' is not a rectangular array: {exc}", field=field) from exc
    expected = element_count(shape)
    if values.size != expected:
        raise BadInput(f"'data' holds {values.size} values, shape {shape} needs {expected}", field=field)
    if expected == 0:
        return np.zeros(shape, dtype=np.float32)
    assert datatype.dtype is not None
    kind = datatype.dtype.kind
    if values.dtype.kind not in "iuf" or (kind in "iu" and values.dtype.kind == "f"):
        wanted = "integers" if kind in "iu" else "numbers"
        raise BadInput(f"{datatype.name} 'data' must hold only {wanted}", field=field)
    if kind in "iu":
        info = np.iinfo(datatype.dtype)
        # Compare as Python ints: uint64 and int64 extremes do not mix in numpy.
        low, high = int(values.min()), int(values.max())
        if low < info.min or high > info.max:
            raise BadInput(
                f"{datatype.name} 'data' must lie in [{info.min}, {info.max}], got values in [{low}, {high}]",
                field=field,
            )
        typed = values.astype(datatype.dtype)
    else:
        if datatype.dtype == np.float32:
            # The common case, FP32: a sum of squares below float32's largest value squared
            # proves every value finite and in range (NaN and inf fail it), so one cast is all.
            flat = values.reshape(-1).astype(np.float64, copy=False)
            if np.dot(flat, flat) < _FLOAT32_MAX_SQUARED:
                return values.astype(np.float32).reshape(shape)
        with np.errstate(over="ignore"):  # overflow becomes inf, refused by _to_float32
            typed = values.astype(datatype.dtype)
    return _to_float32(typed.reshape(shape), datatype, field)


def from_binary(raw: bytes | memoryview, datatype: Datatype, shape: list[int], field: str) -> np.ndarray:
    """Decode little-endian row-major binary tensor data into float32 of `shape`."""
    assert datatype.dtype is not None
    expected = element_count(shape) * datatype.dtype.itemsize
    if len(raw) != expected:
        raise BadInput(
            f"binary_data_size is {len(raw)} bytes, shape {shape} of {datatype.name} needs {expected}",
            field=field,
        )
    typed = np.frombuffer(raw, dtype=datatype.dtype).reshape(shape)
    if datatype.name == "BF16":
        typed = (typed.astype(np.uint32) << 16).view(np.float32)
    return _to_float32(typed, datatype, field)


def _to_float32(typed: np.ndarray, datatype: Datatype, field: str) -> np.ndarray:
    if typed.dtype == np.float32:
        # FP32 as sent (the common case, SONIC's raw FP32): no cast and no np.errstate (~3 µs
        # of a single-row request). One float64 sum proves every value finite (float32 values
        # cannot overflow it); the array may be a read-only view of the request's bytes.
        if math.isfinite(np.add.reduce(typed, axis=None, dtype=np.float64)):
            return typed
        out = typed
    else:
        with np.errstate(over="ignore"):
            out = typed.astype(np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        index = [int(i) for i in np.argwhere(~finite)[0]]
        raise BadInput(
            f"value at index {index} is {typed[tuple(index)].item()!r}: values must be finite and fit in FP32",
            field=field,
        )
    return out


def to_wire_fp32(values: np.ndarray) -> bytes:
    """float32 values as little-endian bytes, row-major: the binary form of an FP32 output."""
    return np.ascontiguousarray(values, dtype=WIRE_FP32).tobytes()


def to_json_fp32(values: np.ndarray) -> list[float]:
    """float32 values flattened row-major as Python floats; each parses back to the same float32."""
    flat: list[float] = np.asarray(values, dtype=np.float32).ravel().tolist()
    return flat
