"""The CPU twin of the kernel: what computes the FPGA's bits when no card does.

Two implementations of one `CpuKernel` shape, chosen by the artifact's manifest (`engine`):

- `KernelLibrary`: `emulation/libkernel.so` (the kernel's own C++, g++-built) through ctypes. It
  exports the kernel ABI `void fpgaas_kernel(const float* x, float* y, unsigned int n)` (x: n rows of
  n_inputs float32, y: n rows of n_outputs float32) and, for emulation only, the multi-threaded
  `fpgaas_kernel_batch(x, y, n, threads)`. Calls release the GIL (ctypes does for CDLL functions) and
  the kernel is stateless, so one `KernelLibrary` may be used from many threads at once. The shared
  library stays mapped for the life of the process (ctypes never unloads it). `from_artifact`
  never dlopen()s the artifact's path: it loads the bytes it read and checked against the
  verified manifest, from a sealed copy (`fpgaas.kernels.sealed`), so a library swapped in after
  verification never runs.
- `EngineKernel`: `fpgaas.kernels.engine.FixedPointEngine`, the same bits computed with vectorized integer
  arithmetic from the types hls4ml generated; the builder selects it only after checking it equals
  the library bit for bit.
"""

from __future__ import annotations

import ctypes
import posixpath
import threading
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
from numpy.typing import NDArray

from fpgaas.kernels.artifact import MANIFEST_NAME, Artifact, load_artifact
from fpgaas.kernels.errors import ArtifactError, BadInput
from fpgaas.kernels.sealed import SealedFile, seal, sealed_file

KERNEL_SYMBOL: Final = "fpgaas_kernel"
BATCH_SYMBOL: Final = "fpgaas_kernel_batch"
ENGINE_LIBRARY: Final = "kernel-library"  # manifest `engine` values
ENGINE_FIXED_POINT: Final = "fixed-point-engine"
_MAX_ROWS: Final = 2**32 - 1  # n is an unsigned int in the ABI
_FLOAT_P = ctypes.POINTER(ctypes.c_float)

# Verified libraries loaded in this process, by sha256, with the sealed file each was loaded
# from. Process-wide because dlopen is: the same bytes are mapped once however often an artifact
# is opened (hot loads, self-checks, card reloads), and the sealed files stay open for good,
# since dlopen knows libraries by path and a reused /proc/self/fd/N would return the old one.
_verified_lock = threading.Lock()
_verified: dict[str, tuple[ctypes.CDLL, SealedFile]] = {}


def _dlopen_verified(artifact: Artifact, relative: str) -> ctypes.CDLL:
    """dlopen the verified bytes of `relative` (read and checked now, every time) from a sealed copy."""
    data = artifact.read_verified(relative)
    digest = artifact.manifest.files[relative]
    with _verified_lock:
        loaded = _verified.get(digest)
        if loaded is None:
            sealed = seal(data, f"fpgaas:{artifact.manifest.name}:{posixpath.basename(relative)}")
            try:
                library = ctypes.CDLL(sealed.path)
            except OSError as exc:
                sealed.close()
                raise ArtifactError(f"cannot load {artifact.path / relative}: {exc}") from exc
            loaded = _verified[digest] = (library, sealed)
    return loaded[0]


class KernelLibrary:
    """One loaded emulation library with fixed per-sample widths.

    Construct with `from_artifact` to run an artifact's library. The constructor dlopen()s
    `path` as it is, for a library this process has just built itself (the builder), or, with
    `library`, binds one already loaded from `path`'s verified bytes.
    """

    def __init__(
        self, path: Path | str, n_inputs: int, n_outputs: int, *, library: ctypes.CDLL | None = None
    ) -> None:
        if n_inputs < 1 or n_outputs < 1:
            raise ValueError(f"widths must be positive, got n_inputs={n_inputs}, n_outputs={n_outputs}")
        self.path = Path(path)  # where the library's bytes came from
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        try:
            library = library if library is not None else ctypes.CDLL(str(self.path))
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
        """The emulation library of a verified artifact, with its widths from the manifest.

        Loads the bytes whose sha256 the manifest lists, read once now; raises
        ArtifactIntegrityError when the file no longer has them.
        """
        manifest = artifact.manifest
        relative = manifest.binaries.emulation_library
        if relative is None:
            raise ArtifactError(f"artifact {manifest.name} has no emulation library")
        if len(manifest.inputs) != 1 or len(manifest.outputs) != 1:
            raise ArtifactError("the kernel ABI has exactly one input and one output tensor")
        library = _dlopen_verified(artifact, relative)
        return cls(
            artifact.path / relative, manifest.inputs[0].width, manifest.outputs[0].width, library=library
        )

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
        self.check_into(x, out, self.n_inputs, self.n_outputs)
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

    def compute_into(self, x: NDArray[np.float32], out: NDArray[np.float32]) -> None:
        """`run_into` without its checks, for a caller that owns both buffers and has checked
        them once (a device's preallocated buffers): C-contiguous float32 (n, n_inputs) rows,
        a writable C-contiguous float32 (n, n_outputs) answer; anything else is undefined."""
        self._call(x, out, 1)

    @classmethod
    def check_into(cls, x: object, out: object, n_inputs: int, n_outputs: int) -> None:
        """Raise BadInput unless x and out are the float32 (n, n_inputs) rows and the writable
        float32 (n, n_outputs) answer array of one `run_into` call."""
        cls._check(x, "x", n_inputs)
        cls._check(out, "out", n_outputs)
        assert isinstance(x, np.ndarray) and isinstance(out, np.ndarray)
        if out.shape[0] != x.shape[0]:
            raise BadInput(f"out has {out.shape[0]} rows but x has {x.shape[0]}", field="out")
        if not out.flags.writeable:
            raise BadInput("out is read-only", field="out")

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

    def compute_into(self, x: NDArray[np.float32], out: NDArray[np.float32]) -> None:
        """`run_into` for buffers the caller owns and has checked (see `KernelLibrary`)."""


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
        KernelLibrary.check_into(x, out, self.n_inputs, self.n_outputs)
        self._engine.predict_into(x, out)

    def compute_into(self, x: NDArray[np.float32], out: NDArray[np.float32]) -> None:
        self._engine.predict_into(x, out)


def open_cpu_kernel(artifact: Artifact) -> KernelLibrary | EngineKernel:
    """The CPU implementation the artifact's manifest names (`engine`), built from the verified
    bytes of its files (read now; ArtifactIntegrityError when one changed since verification)."""
    engine = artifact.manifest.engine
    if engine == ENGINE_FIXED_POINT:
        from fpgaas.kernels.engine import FixedPointEngine

        def read_verified(path: Path) -> str | None:
            relative = path.relative_to(artifact.path).as_posix()
            return artifact.read_verified(relative).decode() if relative in artifact.manifest.files else None

        project = artifact.manifest.project_name
        return EngineKernel(FixedPointEngine.from_hls_project(artifact.path / "hls", project, read_verified))
    if engine == ENGINE_LIBRARY:
        return KernelLibrary.from_artifact(artifact)
    raise ArtifactError(f"artifact {artifact.manifest.name} names an unknown engine {engine!r}")


def open_emulation_twin(xclbin: str | Path, library: str) -> tuple[Artifact, KernelLibrary | EngineKernel]:
    """The artifact an emulation xclbin belongs to and the CPU twin it selects (emulated cards).

    `library` is the xclbin's `emulation_library`, relative to the xclbin's directory. A sealed
    copy (`fpgaas.kernels.sealed`, what `PynqDevice` and `PyxrtDevice` hand their cards) runs the
    verified artifact it was sealed from; a plain path (a card used on its own) runs the artifact
    around it, integrity-checked by `load_artifact`. Raises ArtifactError.
    """
    sealed = sealed_file(xclbin)
    if sealed is not None and sealed.artifact is not None and sealed.relative is not None:
        artifact, relative = sealed.artifact, sealed.relative
    else:
        path = Path(xclbin).resolve()
        root = path.parent.parent
        if not (root / MANIFEST_NAME).is_file():
            raise ArtifactError(f"{xclbin} is not inside an artifact (no {root / MANIFEST_NAME})")
        artifact, relative = load_artifact(root), path.relative_to(root).as_posix()
    named = posixpath.normpath(posixpath.join(posixpath.dirname(relative), library))
    if named != artifact.manifest.binaries.emulation_library:
        raise ArtifactError(
            f"{xclbin} names {library}, the artifact holds {artifact.manifest.binaries.emulation_library}"
        )
    return artifact, open_cpu_kernel(artifact)
