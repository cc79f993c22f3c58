"""The CPU twin of the kernel: what computes the FPGA's bits when no card does.

Two implementations of one `CpuKernel` shape, chosen by the artifact's manifest (`engine`):

- `KernelLibrary`: `emulation/libkernel.so` (the kernel's own C++, g++-built) through ctypes. It
  exports the kernel ABI `void fpgaas_kernel(const float* x, float* y, unsigned int n)` (x: n rows of
  n_inputs float32, y: n rows of n_outputs float32) and, for emulation only, the multi-threaded
  `fpgaas_kernel_batch(x, y, n, threads)`. Calls release the GIL (ctypes does for CDLL functions) and
  the kernel is stateless, so one `KernelLibrary` may be used from many threads at once. The shared
  library stays mapped for the life of the process (ctypes never unloads it).
- `EngineKernel`: `fpgaas.kernels.engine.FixedPointEngine`, the same bits computed with vectorized integer
  arithmetic from the types hls4ml generated; the builder selects it only after checking it equals
  the library bit for bit.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
from numpy.typing import NDArray

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import ArtifactError, BadInput

KERNEL_SYMBOL: Final = "fpgaas_kernel"
BATCH_SYMBOL: Final = "fpgaas_kernel_batch"
ENGINE_LIBRARY: Final = "kernel-library"  # manifest `engine` values
ENGINE_FIXED_POINT: Final = "fixed-point-engine"
_MAX_ROWS: Final = 2**32 - 1  # n is an unsigned int in the ABI
_FLOAT_P = ctypes.POINTER(ctypes.c_float)


class KernelLibrary:
    """One loaded emulation library with fixed per-sample widths."""

    def __init__(self, path: Path | str, n_inputs: int, n_outputs: int) -> None:
        if n_inputs < 1 or n_outputs < 1:
            raise ValueError(f"widths must be positive, got n_inputs={n_inputs}, n_outputs={n_outputs}")
        self.path = Path(path)
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        try:
            library = ctypes.CDLL(str(self.path))
            self._kernel = getattr(library, KERNEL_SYMBOL)
        except (OSError, AttributeError) as exc:
            raise ArtifactError(f"cannot load {KERNEL_SYMBOL} from {self.path}: {exc}") from exc
        self._kernel.argtypes = (_FLOAT_P, _FLOAT_P, ctypes.c_uint)
        self._kernel.restype = None
        self._batch = getattr(library, BATCH_SYMBOL, None)
        if self._batch is not None:
            self._batch.argtypes = (_FLOAT_P, _FLOAT_P, ctypes.c_uint, ctypes.c_uint)
            self._batch.restype = None

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> KernelLibrary:
        """The emulation library of a verified artifact, with its widths from the manifest."""
        library = artifact.emulation_library
        if library is None:
            raise ArtifactError(f"artifact {artifact.manifest.name} has no emulation library")
        manifest = artifact.manifest
        if len(manifest.inputs) != 1 or len(manifest.outputs) != 1:
            raise ArtifactError("the kernel ABI has exactly one input and one output tensor")
        return cls(library, manifest.inputs[0].width, manifest.outputs[0].width)

    def run(self, x: NDArray[np.float32], *, threads: int = 1) -> NDArray[np.float32]:
        """Outputs for a float32 (n, n_inputs) batch, as a new float32 (n, n_outputs) array.

        `threads` > 1 splits the rows over that many C++ threads (libraries built before the
        batch entry point existed run single-threaded).
        """
        self._check(x, "x", self.n_inputs)
        out = np.empty((x.shape[0], self.n_outputs), dtype=np.float32)
        self._call(x, out, threads)
        return out

    def run_into(self, x: NDArray[np.float32], out: NDArray[np.float32], *, threads: int = 1) -> None:
        """Write outputs for `x` into the caller's float32 (n, n_outputs) array (no allocation)."""
        self._check(x, "x", self.n_inputs)
        self._check(out, "out", self.n_outputs)
        if out.shape[0] != x.shape[0]:
            raise BadInput(f"out has {out.shape[0]} rows but x has {x.shape[0]}", field="out")
        if not out.flags.writeable:
            raise BadInput("out is read-only", field="out")
        self._call(x, out, threads)

    @property
    def has_batch_entry(self) -> bool:
        """Whether the library exports the multi-threaded `fpgaas_kernel_batch`."""
        return self._batch is not None

    def _call(self, x: NDArray[np.float32], out: NDArray[np.float32], threads: int) -> None:
        if threads < 1:
            raise BadInput(f"threads must be >= 1, got {threads}", field="threads")
        if not x.shape[0]:
            return
        xp, yp = x.ctypes.data_as(_FLOAT_P), out.ctypes.data_as(_FLOAT_P)
        if threads > 1 and self._batch is not None:
            self._batch(xp, yp, x.shape[0], threads)
        else:
            self._kernel(xp, yp, x.shape[0])

    @staticmethod
    def _check(array: object, field: str, width: int) -> None:
        if not isinstance(array, np.ndarray):
            raise BadInput(f"{field} must be a numpy array, got {type(array).__name__}", field=field)
        if array.dtype != np.float32:
            raise BadInput(f"{field} must be float32, got {array.dtype}", field=field)
        if array.ndim != 2 or array.shape[1] != width:
            raise BadInput(f"{field} must have shape (n, {width}), got {array.shape}", field=field)
        if not array.flags.c_contiguous:
            raise BadInput(f"{field} must be C-contiguous (use np.ascontiguousarray)", field=field)
        if array.shape[0] > _MAX_ROWS:
            raise BadInput(
                f"{field} has {array.shape[0]} rows, more than the kernel's {_MAX_ROWS}", field=field
            )


class CpuKernel(Protocol):
    """What runs an artifact's kernel on the CPU, bit-exactly. Thread-safe."""

    @property
    def n_inputs(self) -> int: ...

    @property
    def n_outputs(self) -> int: ...

    def run_into(self, x: NDArray[np.float32], out: NDArray[np.float32]) -> None: ...


class EngineKernel:
    """`fpgaas.kernels.engine.FixedPointEngine` in the `CpuKernel` shape."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    @property
    def n_inputs(self) -> int:
        return int(self._engine.n_inputs)

    @property
    def n_outputs(self) -> int:
        return int(self._engine.n_outputs)

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(self._engine.predict(x), dtype=np.float32)

    def run_into(self, x: NDArray[np.float32], out: NDArray[np.float32]) -> None:
        KernelLibrary._check(x, "x", self.n_inputs)
        out[...] = self._engine.predict(x)


def open_cpu_kernel(artifact: Artifact) -> KernelLibrary | EngineKernel:
    """The CPU implementation the artifact's manifest names (`engine`)."""
    engine = artifact.manifest.engine
    if engine == ENGINE_FIXED_POINT:
        from fpgaas.kernels.engine import FixedPointEngine

        project = artifact.manifest.project_name
        return EngineKernel(FixedPointEngine.from_hls_project(artifact.path / "hls", project))
    if engine == ENGINE_LIBRARY:
        return KernelLibrary.from_artifact(artifact)
    raise ArtifactError(f"artifact {artifact.manifest.name} names an unknown engine {engine!r}")
