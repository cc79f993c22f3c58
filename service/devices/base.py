"""The device seam: every way of running a kernel implements `Device`.

The server never asks which implementation it holds. A device loads an artifact once
(overlay, buffers) and returns a `LoadedKernel` that stays resident until closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import DeviceError
from fpgaas.kernels.sealed import SealedFile, seal_artifact_file
from fpgaas.kernels.xclbin import EMULATION_XCLBIN


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
    suspect: str | None = None  # why its answers are in doubt (a shadow check failed), if they are


# The rest of a call begun on the event loop (`LoadedKernel.run_inline`), for the worker thread.
Resume = Callable[[], "StageTimes"]


class LoadedKernel(Protocol):
    """A kernel resident on a device, its buffers allocated for `max_batch` rows.

    `run_into` blocks and is called from one worker thread at a time. Its caller (the batcher)
    has checked the rows already: a shape the device cannot take is a device fault
    (`DeviceError`, 503), never the client's.
    """

    @property
    def max_batch(self) -> int: ...

    # Calls of at most this many rows may be begun on the caller's (event loop) thread with
    # `run_inline`: only a kernel that never blocks there says > 0. Read with
    # getattr(kernel, "inline_rows", 0).
    inline_rows: int

    def run_into(self, x: np.ndarray, out: np.ndarray) -> StageTimes:
        """x: float32 (n, n_inputs), 1 <= n <= max_batch; writes float32 (n, n_outputs) into `out`
        (C-contiguous, the caller's): the output transfer is the only copy of the answer."""
        ...

    def run_inline(self, x: np.ndarray, out: np.ndarray) -> StageTimes | Resume:
        """`run_into` of at most `inline_rows` rows on the event loop, which it must not block:
        the stage times when the call is done, else the rest of the call (waiting for the device,
        the output transfer, any fault handling), which the caller runs on its worker thread
        (and must run: the device stays held until it has). A CPU kernel is always done."""
        ...

    def close(self) -> None: ...


class KernelRunMixin:
    """`run(x)`: `run_into` with a new output array, for callers that hold no buffer."""

    n_outputs: int
    inline_rows: int = 0

    def run_into(self, x: np.ndarray, out: np.ndarray) -> StageTimes:
        raise NotImplementedError

    def run_inline(self, x: np.ndarray, out: np.ndarray) -> StageTimes | Resume:
        return self.run_into(x, out)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, StageTimes]:
        out = np.empty((x.shape[0] if x.ndim else 0, self.n_outputs), dtype=np.float32)
        return out, self.run_into(x, out)


class Device(Protocol):
    @property
    def info(self) -> DeviceInfo: ...

    def load(self, artifact: Artifact, max_batch: int) -> LoadedKernel: ...

    def close(self) -> None: ...


def seal_xclbin(artifact: Artifact, *, emulated: bool, card: str) -> SealedFile:
    """The verified bytes of the xclbin a card runs, sealed: the emulation xclbin on an emulated
    card, the v++ output on a real one. The card is programmed from its `path`, at the first
    load and at every reload, so what it runs is what was verified, whatever is on disk by then.

    The caller owns the file and closes it with the kernel. Raises DeviceError when the artifact
    has no such xclbin, ArtifactIntegrityError when the file changed since verification.
    """
    relative = EMULATION_XCLBIN if emulated else artifact.manifest.binaries.xclbin
    if relative is None or relative not in artifact.manifest.files:
        raise DeviceError(
            f"{artifact.manifest.name} has no xclbin for {card}: {artifact.manifest.binaries.xclbin_status}"
        )
    return seal_artifact_file(artifact, relative)
