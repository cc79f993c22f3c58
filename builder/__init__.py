"""The fpgaas builder: a Keras 2 / QKeras `.h5` model -> an immutable artifact directory.

Stages, one module each (mirroring hls4ml's pipeline): `load` (safe architecture scan), `convert`
(hls4ml, Vitis backend, io_parallel), `kernel` (the `fpgaas_kernel` top from its template),
`compile` (g++ emulation library), `synthesize` (v++ xclbin when available), `package` (manifest).
`build` in `fpgaas.builder.pipeline` runs them all.
"""

from fpgaas.builder.convert import DEFAULT_PART
from fpgaas.builder.pipeline import build
from fpgaas.builder.synthesize import AWS_F1_PLATFORM, DEFAULT_PLATFORM

__all__ = ["AWS_F1_PLATFORM", "DEFAULT_PART", "DEFAULT_PLATFORM", "build"]
