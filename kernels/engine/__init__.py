"""Bit-exact, batch-vectorized evaluation of hls4ml networks from the generated project alone.

    engine = FixedPointEngine.from_hls_project(artifact_dir / "hls")   # may raise UnsupportedLayer
    y = engine.predict(x)   # float32 (n, n_inputs) -> float32 (n, n_outputs), same bits as the C sim

Modules: `fixedpoint` (ap_fixed conversions on int64 arrays), `hls_project` (reads the generated
C++), `layers` (Dense / activations / BatchNorm kernels on int64), `plan` (the whole chain as a few
float64 numpy calls per layer, used when exactness is proven), `engine` (picks and runs the chain;
`engine.path` says which).
"""

from __future__ import annotations

from fpgaas.kernels.engine.engine import FixedPointEngine
from fpgaas.kernels.engine.errors import UnsupportedLayer
from fpgaas.kernels.engine.fixedpoint import FixedType, parse_type

__all__ = ["FixedPointEngine", "FixedType", "UnsupportedLayer", "parse_type"]
