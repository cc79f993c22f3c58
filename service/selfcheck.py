"""The bit-exact self-check a hot-loaded version passes on its device before it serves.

Rows in range, far out of range (wrap and saturation) and on fine grids (rounding ties) go
through the kernel resident on the device, and every output must equal, bit for bit, what the
artifact's own g++-built hls4ml library (its C simulation) answers. On a card this checks the
overlay against the build; on the emulated device it checks the engine the manifest chose
against the library.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import ArtifactError
from fpgaas.kernels.twin import KernelLibrary
from fpgaas.service.devices.base import LoadedKernel

SELF_CHECK_ROWS: Final = 512


def self_check_rows(n_inputs: int, rows: int = SELF_CHECK_ROWS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    quarter = rows // 4
    parts = [
        rng.normal(0.0, 2.0, size=(quarter, n_inputs)),
        rng.normal(0.0, 1e3, size=(quarter, n_inputs)),
        np.round(rng.normal(0.0, 8.0, size=(quarter, n_inputs)) * 2**12) / 2**12,
        rng.uniform(-64.0, 64.0, size=(rows - 3 * quarter, n_inputs)),
    ]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def self_check(artifact: Artifact, kernel: LoadedKernel, device: str) -> None:
    """Raise ArtifactError unless `kernel` (resident on `device`) equals the artifact's library."""
    reference = KernelLibrary.from_artifact(artifact)
    x = self_check_rows(reference.n_inputs)
    expected = reference.run(x)
    got = np.empty_like(expected)
    step = kernel.max_batch
    for start in range(0, len(x), step):
        kernel.run_into(x[start : start + step], got[start : start + step])
    bad = int(np.count_nonzero(got.view(np.uint32) != expected.view(np.uint32)))
    if bad:
        raise ArtifactError(
            f"self-check on {device}: {bad} of {expected.size} outputs differ from the artifact's "
            "hls4ml library; the version is not served"
        )
