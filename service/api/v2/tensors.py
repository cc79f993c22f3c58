"""Named protocol tensors <-> the kernel's float32 rows, for one model.

A model's inputs (in manifest order) are laid side by side into rows of `n_inputs` values, as
the kernel ABI takes them; its output rows are cut back into the named outputs. Every tensor
carries the batch axis first: metadata shape `[-1, *per_sample]`, request shape
`[n, *per_sample]`. Pure functions; thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpgaas.kernels.errors import BadInput
from fpgaas.service.api.v2 import codec, datatypes
from fpgaas.service.api.v2.schemas import InferenceRequest
from fpgaas.service.dataplane import ModelHandle, TensorMetadata

# numpy dtype names in manifests -> the protocol's datatype names.
_PROTOCOL_NAMES = {d.dtype.name: name for name, d in datatypes.DATATYPES.items() if d.dtype is not None}
_PROTOCOL_NAMES["float32"] = "FP32"  # FP32, not BF16's uint16 stand-in, is what float32 means


def protocol_datatype(tensor: TensorMetadata) -> str:
    """The protocol's name for a manifest dtype such as "float32"."""
    return _PROTOCOL_NAMES.get(np.dtype(tensor.datatype).name, datatypes.KERNEL_DATATYPE)


def rows_from_inputs(model: ModelHandle, decoded: codec.DecodedRequest) -> np.ndarray:
    """float32 (n, n_inputs): every model input, checked against its metadata, side by side."""
    inputs = decoded.request.inputs
    expected = {t.name for t in model.inputs}
    for i, item in enumerate(inputs):
        if item.name not in expected:
            raise BadInput(
                f"unexpected input {item.name!r} for model {model.name!r}; it takes "
                f"{', '.join(repr(t.name) for t in model.inputs)}",
                field=f"inputs[{i}].name",
            )
    missing = [t.name for t in model.inputs if t.name not in decoded.tensors]
    if missing:
        raise BadInput(f"model {model.name!r} needs input(s) {', '.join(map(repr, missing))}", field="inputs")
    position = {item.name: i for i, item in enumerate(inputs)}
    n_samples: int | None = None
    columns = []
    for tensor in model.inputs:
        i = position[tensor.name]
        values = decoded.tensors[tensor.name]
        want = [-1, *tensor.shape]
        if values.ndim != len(want) or tuple(values.shape[1:]) != tensor.shape:
            raise BadInput(
                f"input {tensor.name!r} has shape {list(values.shape)}, model {model.name!r} expects {want}",
                field=f"inputs[{i}].shape",
            )
        if n_samples is None:
            n_samples = values.shape[0]
        elif values.shape[0] != n_samples:
            raise BadInput(
                f"input {tensor.name!r} has {values.shape[0]} samples, the first input has {n_samples}",
                field=f"inputs[{i}].shape",
            )
        columns.append(values.reshape(values.shape[0], tensor.width))
    return columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)


@dataclass(frozen=True)
class OutputTensor:
    name: str
    values: np.ndarray  # float32 (n, *per_sample)
    binary: bool


def plan_outputs(model: ModelHandle, request: InferenceRequest) -> list[tuple[str, bool]]:
    """(name, as binary) of each output to answer: those asked for, or all in model order.

    Checked before inference so a bad request costs no device time.
    """
    names = [t.name for t in model.outputs]
    if request.outputs is None:
        binary = codec.wants_binary(request, {})
        return [(name, binary) for name in names]
    plan: list[tuple[str, bool]] = []
    for i, wanted in enumerate(request.outputs):
        field = f"outputs[{i}]"
        codec.refuse_unsupported(wanted.parameters, f"{field}.parameters")
        if wanted.name not in names:
            raise BadInput(
                f"unexpected output {wanted.name!r} for model {model.name!r}; it gives "
                f"{', '.join(map(repr, names))}",
                field=f"{field}.name",
            )
        if any(name == wanted.name for name, _ in plan):
            raise BadInput(f"output {wanted.name!r} is requested twice", field=f"{field}.name")
        plan.append((wanted.name, codec.wants_binary(request, wanted.parameters)))
    return plan


def cut_outputs(model: ModelHandle, plan: list[tuple[str, bool]], rows: np.ndarray) -> list[OutputTensor]:
    """Cut float32 (n, n_outputs) rows into the planned outputs, each (n, *per_sample)."""
    by_name: dict[str, np.ndarray] = {}
    start = 0
    for tensor in model.outputs:
        by_name[tensor.name] = rows[:, start : start + tensor.width].reshape(rows.shape[0], *tensor.shape)
        start += tensor.width
    return [OutputTensor(name, by_name[name], binary) for name, binary in plan]
