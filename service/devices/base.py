"""The device seam: every way of running a kernel implements `Device`.

The server never asks which implementation it holds. A device loads an artifact once
(overlay, buffers) and returns a `LoadedKernel` that stays resident until closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fpgaas.kernels.artifact import Artifact


@dataclass(frozen=True)
class StageTimes:
    """Wall time of the three stages the source paper measured, in seconds."""

    to_device_s: float
    kernel_s: float
    from_device_s: float


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # unique in the server, e.g. "emulated-0", "pynq-0"
    kind: str  # "emulated", "pynq", ...
    healthy: bool
    detail: str = ""  # card name, last error, ...


class LoadedKernel(Protocol):
    """A kernel resident on a device, its buffers allocated for `max_batch` rows.

    `run` blocks and is called from one worker thread at a time.
    """

    @property
    def max_batch(self) -> int: ...

    def run(self, x: np.ndarray) -> tuple[np.ndarray, StageTimes]:
        """x: float32 (n, n_inputs) with n <= max_batch -> float32 (n, n_outputs)."""
        ...

    def close(self) -> None: ...


class Device(Protocol):
    @property
    def info(self) -> DeviceInfo: ...

    def load(self, artifact: Artifact, max_batch: int) -> LoadedKernel: ...

    def close(self) -> None: ...
