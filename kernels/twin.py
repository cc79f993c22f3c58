"""The CPU twin of the kernel: `emulation/libkernel.so` called through ctypes.

The library exports the kernel ABI `void fpgaas_kernel(const float* x, float* y, unsigned int n)`
(x: n rows of n_inputs float32, y: n rows of n_outputs float32). Calls release the GIL (ctypes does
for CDLL functions) and the kernel is stateless, so one `KernelLibrary` may be used from many threads
at once. The shared library stays mapped for the life of the process (ctypes never unloads it).
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from kernels.artifact import Artifact
from kernels.errors import ArtifactError, BadInput

KERNEL_SYMBOL: Final = "fpgaas_kernel"
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

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Outputs for a float32 (n, n_inputs) batch, as a new float32 (n, n_outputs) array."""
        self._check(x, "x", self.n_inputs)
        out = np.empty((x.shape[0], self.n_outputs), dtype=np.float32)
        self._call(x, out)
        return out

    def run_into(self, x: NDArray[np.float32], out: NDArray[np.float32]) -> None:
        """Write outputs for `x` into the caller's float32 (n, n_outputs) array (no allocation)."""
        self._check(x, "x", self.n_inputs)
        self._check(out, "out", self.n_outputs)
        if out.shape[0] != x.shape[0]:
            raise BadInput(f"out has {out.shape[0]} rows but x has {x.shape[0]}", field="out")
        if not out.flags.writeable:
            raise BadInput("out is read-only", field="out")
        self._call(x, out)

    def _call(self, x: NDArray[np.float32], out: NDArray[np.float32]) -> None:
        if x.shape[0]:
            self._kernel(x.ctypes.data_as(_FLOAT_P), out.ctypes.data_as(_FLOAT_P), x.shape[0])

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
