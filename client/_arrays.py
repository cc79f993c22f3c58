"""Input validation and the float32 wire formats (JSON rows, raw little-endian bytes).

Pure functions on numpy arrays, shared by every protocol and by the sync and async clients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fpgaas.client._errors import InvalidResponse

# Little-endian float32 whatever the host's byte order: the wire format of binary bodies.
WIRE_DTYPE = np.dtype("<f4")


def as_batch(data: Any) -> np.ndarray:
    """Return `data` as a C-contiguous little-endian float32 array of shape (n_samples, n_features).

    Accepts a 2-D array or nested list (one row per sample) or a 1-D one (a single sample).
    Raises ValueError, saying what is wrong, for ragged rows, non-numeric values, other ranks,
    empty batches or rows, and NaN/inf (also values too large for float32).
    """
    try:
        arr = np.asarray(data)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"inputs must be a rectangular array of numbers: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"inputs must be numbers, got dtype {arr.dtype} (ragged rows or non-numeric values?)"
        )
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(
            f"inputs must be 1-D (one sample) or 2-D (samples x features), got shape {arr.shape}"
        )
    n_samples, n_features = arr.shape
    if n_samples == 0 or n_features == 0:
        raise ValueError(f"inputs must hold at least one sample of at least one value, got shape {arr.shape}")
    with np.errstate(over="ignore"):  # overflow becomes inf, reported just below
        batch = np.ascontiguousarray(arr, dtype=WIRE_DTYPE)
    finite = np.isfinite(batch)
    if not finite.all():
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"inputs[{row}][{col}] is {arr[row, col]!r}: values must be finite and fit in float32"
        )
    return batch


def check_width(batch: np.ndarray, n_inputs: int, model: str) -> None:
    """Raise ValueError unless every row of `batch` has `n_inputs` values."""
    if batch.shape[1] != n_inputs:
        raise ValueError(f"model {model!r} takes {n_inputs} values per sample, got {batch.shape[1]}")


def to_json_rows(batch: np.ndarray) -> list[list[float]]:
    """float32 rows as Python floats; each converts back to the identical float32."""
    rows: list[list[float]] = batch.tolist()
    return rows


def from_json_rows(rows: Any, n_samples: int) -> np.ndarray:
    """Parse the `outputs` of a JSON answer into float32 (n_samples, n_outputs)."""
    try:
        out = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidResponse(f"'outputs' is not a rectangular array of numbers: {exc}") from exc
    return _checked(out, n_samples)


def parse_shape(header: str | None) -> tuple[int, ...]:
    """Parse an `X-Output-Shape` header such as "1024,1"."""
    if not header:
        raise InvalidResponse("binary answer without an X-Output-Shape header")
    try:
        shape = tuple(int(part) for part in header.split(","))
    except ValueError as exc:
        raise InvalidResponse(f"malformed X-Output-Shape {header!r}") from exc
    if any(d < 0 for d in shape):
        raise InvalidResponse(f"malformed X-Output-Shape {header!r}")
    return shape


def from_bytes(content: bytes, shape: Sequence[int], n_samples: int) -> np.ndarray:
    """Decode raw little-endian float32 rows into a writable native float32 array."""
    expected = math.prod(shape) * WIRE_DTYPE.itemsize
    if len(content) != expected:
        raise InvalidResponse(
            f"binary answer has {len(content)} bytes, X-Output-Shape {tuple(shape)} needs {expected}"
        )
    out = np.frombuffer(content, dtype=WIRE_DTYPE).reshape(tuple(shape)).astype(np.float32)
    return _checked(out, n_samples)


def _checked(out: np.ndarray, n_samples: int) -> np.ndarray:
    # A row-count mismatch would silently pair outputs with the wrong inputs: refuse it.
    if out.ndim != 2 or out.shape[0] != n_samples:
        raise InvalidResponse(f"expected outputs for {n_samples} samples, got shape {out.shape}")
    return out
