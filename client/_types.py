"""Small immutable value objects the client returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """One answered predict call.

    `outputs` is float32 with shape (n_samples, n_outputs), one row per input row, in order.
    """

    model: str
    version: str
    device: str
    outputs: np.ndarray


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output, per sample (the batch axis is implicit)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # the wire dtype, e.g. "float32"
    fixed_point: str = ""  # the HLS type inside the kernel, e.g. "ap_fixed<16,6>", when told

    @property
    def width(self) -> int:
        """Number of scalars per sample."""
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class ModelInfo:
    """A model the server holds, as `GET /models` describes it.

    `extra` keeps every field of the server's description that has no attribute here, so
    a newer server's additions (device, fixed-point types, ...) stay readable.
    """

    name: str
    version: str  # the version described (the server's highest unless one was asked for)
    versions: tuple[str, ...] = ()  # every version the server holds, when told
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_inputs(self) -> int:
        """Scalars per input sample (0 when the server did not say)."""
        return sum(t.width for t in self.inputs)

    @property
    def n_outputs(self) -> int:
        """Scalars per output sample (0 when the server did not say)."""
        return sum(t.width for t in self.outputs)
