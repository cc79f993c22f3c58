"""Stage 3: write the Vitis kernel top and its v++ connectivity file next to the hls4ml project.

The C++ comes from the template `kernels/templates/kernel_top.cpp`; only names, sizes and the
input/result type names are filled in. The top is `extern "C" void fpgaas_kernel(const float* x,
float* y, unsigned int n)` (the ABI every part of fpgaas shares).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Final

from fpgaas.builder.connectivity import DDR_BANKS
from fpgaas.builder.connectivity import connectivity_config as _connectivity_config
from fpgaas.kernels.artifact import TensorSpec
from fpgaas.kernels.errors import BadInput

KERNEL_NAME: Final = "fpgaas_kernel"
KERNEL_SOURCE: Final = f"{KERNEL_NAME}.cpp"
CONNECTIVITY_FILE: Final = f"{KERNEL_NAME}.cfg"
WIRE_DTYPE: Final = "float32"


@dataclass(frozen=True)
class KernelSource:
    """The written kernel top: file paths and the per-sample tensors it moves."""

    source: Path
    connectivity: Path
    input: TensorSpec
    output: TensorSpec


def tensor_spec(variable: Any) -> TensorSpec:
    """A TensorSpec for an hls4ml model variable (its shape, and its C++ fixed-point type)."""
    return TensorSpec(
        name=str(variable.name),
        shape=tuple(int(d) for d in variable.shape),
        dtype=WIRE_DTYPE,
        fixed_point=str(variable.type.precision.definition_cpp()),
    )


def write_kernel(graph: Any, hls_dir: Path, compute_units: int = 1) -> KernelSource:
    """Fill the template from the converted `graph` into `hls_dir`/fpgaas_kernel.cpp (+ .cfg for
    `compute_units` instances, see `fpgaas.builder.connectivity`)."""
    inputs = graph.get_input_variables()
    outputs = graph.get_output_variables()
    if len(inputs) != 1 or len(outputs) != 1:
        raise BadInput(
            f"fpgaas kernels take one input and one output tensor; this model has {len(inputs)} "
            f"inputs and {len(outputs)} outputs",
            field="model",
        )
    project = str(graph.config.get_project_name())
    x, y = tensor_spec(inputs[0]), tensor_spec(outputs[0])
    template = Template(resources.files("fpgaas.kernels").joinpath("templates/kernel_top.cpp").read_text())
    source = hls_dir / KERNEL_SOURCE
    source.write_text(
        template.substitute(
            project=project,
            top=project,
            kernel=KERNEL_NAME,
            n_inputs=x.width,
            n_outputs=y.width,
            input_type=inputs[0].type.name,
            output_type=outputs[0].type.name,
        )
    )
    connectivity = hls_dir / CONNECTIVITY_FILE
    connectivity.write_text(connectivity_config(compute_units))
    return KernelSource(source=source, connectivity=connectivity, input=x, output=y)


def connectivity_config(compute_units: int = 1) -> str:
    """The v++ link config: `compute_units` kernel instances, x and y in separate DDR banks."""
    return _connectivity_config(KERNEL_NAME, compute_units, DDR_BANKS)
