"""The emulated device: runs an artifact's kernel on the CPU through its twin
(`fpgaas.kernels.twin.open_cpu_kernel`: the fixed-point engine when the manifest selected it, else the
g++-built kernel library), with the same three stages as a card.

Stages: to_device = copy the rows into the preallocated input buffer, kernel = the CPU kernel
call, from_device = copy the rows out of the preallocated output buffer.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import ArtifactError, DeviceError
from fpgaas.kernels.twin import CpuKernel, open_cpu_kernel
from fpgaas.service.devices.base import DeviceInfo, KernelRunMixin, StageTimes

# A CPU call of this many rows takes ~30-80 us: less than handing it to a worker thread and back.
INLINE_ROWS = 16


class EmulatedKernel(KernelRunMixin):
    """One artifact's CPU kernel with input/output buffers of `max_batch` rows.

    Lifetime: from `EmulatedDevice.load` to `close`. `run` is called from one thread at a time
    (the batcher's worker), since the buffers are reused for every call.
    """

    def __init__(self, library: CpuKernel, max_batch: int) -> None:
        self._library = library
        self._max_batch = max_batch
        self._input = np.zeros((max_batch, library.n_inputs), dtype=np.float32)
        self._output = np.zeros((max_batch, library.n_outputs), dtype=np.float32)
        self._closed = False
        self.n_outputs = library.n_outputs
        self.inline_rows = INLINE_ROWS

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def run_into(self, x: np.ndarray, out: np.ndarray) -> StageTimes:
        """x: float32 (n, n_inputs), 1 <= n <= max_batch -> float32 (n, n_outputs) written to `out`."""
        if self._closed:
            raise DeviceError("kernel is closed")
        n = x.shape[0] if x.ndim == 2 else -1
        if not (x.ndim == 2 and 1 <= n <= self._max_batch and x.shape[1] == self._input.shape[1]):
            raise DeviceError(
                f"kernel takes (1..{self._max_batch}, {self._input.shape[1]}) rows, got shape {x.shape}"
            )
        if out.shape != (n, self.n_outputs):
            raise DeviceError(f"output buffer of shape {out.shape} for {n} rows of {self.n_outputs}")
        t0 = time.perf_counter()
        self._input[:n] = x
        t1 = time.perf_counter()
        # Its own buffers, checked above: the kernel's checks again would cost ~4 µs a call.
        self._library.compute_into(self._input[:n], self._output[:n])
        t2 = time.perf_counter()
        out[...] = self._output[:n]
        t3 = time.perf_counter()
        return StageTimes(to_device_s=t1 - t0, kernel_s=t2 - t1, from_device_s=t3 - t2)

    def close(self) -> None:
        self._closed = True


class EmulatedDevice:
    """A CPU standing in for a card. Thread-safe; every kernel it loads is closed by `close`."""

    def __init__(self, name: str = "emulated-0") -> None:
        self._name = name
        self._open_info = DeviceInfo(
            name=name, kind="emulated", healthy=True, detail="the kernel's bit-exact CPU twin"
        )
        self._kernels: list[EmulatedKernel] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def info(self) -> DeviceInfo:
        if self._closed:
            return DeviceInfo(name=self._name, kind="emulated", healthy=False, detail="closed")
        return self._open_info  # read on every request: built once

    def load(self, artifact: Artifact, max_batch: int) -> EmulatedKernel:
        if artifact.emulation_library is None:
            raise ArtifactError(f"artifact {artifact.path} has no emulation library")
        try:
            library = open_cpu_kernel(artifact)
        except OSError as exc:  # dlopen failures
            raise ArtifactError(f"cannot load {artifact.emulation_library}: {exc}") from exc
        kernel = EmulatedKernel(library, max_batch)
        with self._lock:
            if self._closed:
                raise DeviceError(f"device {self._name} is closed")
            self._kernels.append(kernel)
        return kernel

    def close(self) -> None:
        with self._lock:
            self._closed = True
            kernels, self._kernels = self._kernels, []
        for kernel in kernels:
            kernel.close()
