"""Stage 5b: choose the CPU implementation that serves the artifact without a card.

The fixed-point engine (`fpgaas.kernels.engine`) computes the kernel's bits with vectorized integer
arithmetic, far faster than the g++-built C simulation. It is chosen only when it supports every
layer and, on a self-check batch that exercises rounding, wrap and saturation, equals the kernel
library bit for bit; otherwise the kernel library serves, and the manifest says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from fpgaas.kernels.errors import ArtifactError
from fpgaas.kernels.twin import ENGINE_FIXED_POINT, ENGINE_LIBRARY, KernelLibrary

SELF_CHECK_ROWS: Final = 4096


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # ENGINE_FIXED_POINT or ENGINE_LIBRARY
    note: str  # why, for the manifest and GET /models


def self_check_inputs(n_inputs: int, rows: int = SELF_CHECK_ROWS, seed: int = 0) -> np.ndarray:
    """Rows in range, far out of range (wrap/saturate) and on fine grids (rounding ties)."""
    rng = np.random.default_rng(seed)
    quarter = rows // 4
    parts = [
        rng.normal(0.0, 2.0, size=(quarter, n_inputs)),
        rng.normal(0.0, 1e3, size=(quarter, n_inputs)),
        np.round(rng.normal(0.0, 8.0, size=(quarter, n_inputs)) * 2**12) / 2**12,
        rng.uniform(-64.0, 64.0, size=(rows - 3 * quarter, n_inputs)),
    ]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def choose_engine(hls_dir: Path, project: str, library: KernelLibrary) -> EngineChoice:
    from fpgaas.kernels.engine import FixedPointEngine

    try:
        engine = FixedPointEngine.from_hls_project(hls_dir, project)
    except ArtifactError as exc:  # UnsupportedLayer and unparsable projects alike
        return EngineChoice(ENGINE_LIBRARY, f"fixed-point engine not applicable: {exc}")
    x = self_check_inputs(library.n_inputs)
    expected = library.run(x)
    got = np.asarray(engine.predict(x), dtype=np.float32)
    mismatches = int(np.count_nonzero(got.view(np.uint32) != expected.view(np.uint32)))
    if mismatches:
        return EngineChoice(
            ENGINE_LIBRARY,
            f"fixed-point engine disagreed with the kernel library on {mismatches} of {expected.size} "
            "self-check outputs; the library serves",
        )
    return EngineChoice(
        ENGINE_FIXED_POINT, f"bit-identical to the kernel library on {len(x)} self-check rows"
    )
