"""ModelInferRequest -> the kernel's float32 rows, and the dataplane's answer -> ModelInferResponse.

The conversions are the v2 REST ones (`fpgaas.service.api.v2.datatypes`): an input arrives
either in `raw_input_contents` (little-endian, row-major, one blob per input, as tritonclient and
SONIC send it) or in the typed `contents` field of its datatype; it is decoded as that datatype
(so an INT8 of 300 is refused) and rounded to float32 as REST does. FP16 and BF16 have no typed
field and come raw only; BOOL and BYTES are not numbers and are refused. Outputs always go back in
`raw_output_contents` as FP32 (what `InferResult.as_numpy` reads), in the order asked for, or in
model order. Names and per-sample shapes are checked against the model before any tensor is
decoded. Pure functions; thread-safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fpgaas.kernels.errors import BadInput
from fpgaas.service.api.grpc.protos import service_pb2
from fpgaas.service.api.v2 import codec as v2_codec
from fpgaas.service.api.v2 import datatypes, tensors
from fpgaas.service.dataplane import InferResult, ModelHandle

# The typed field of InferTensorContents each numeric datatype travels in (Triton's mapping).
_CONTENTS_FIELD = {
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
OFF_LOOP_VALUES = 16384  # typed contents with more values are decoded on a worker thread


@dataclass(frozen=True)
class DecodedInfer:
    """A checked request: rows for the dataplane and the outputs to answer, by name."""

    rows: np.ndarray  # float32 (n, n_inputs)
    outputs: list[str]


def parameter_value(p: service_pb2.InferParameter) -> object:
    """The Python value of an InferParameter (None when unset)."""
    choice = p.WhichOneof("parameter_choice")
    return None if choice is None else getattr(p, choice)


def parameters(params: object) -> dict[str, object]:
    """A protobuf parameters map as a dict of Python values."""
    return {key: parameter_value(value) for key, value in params.items()}  # type: ignore[attr-defined]


def typed_values(request: service_pb2.ModelInferRequest) -> int:
    """How many values the request declares in typed contents (not raw): decides off-loop decoding."""
    if request.raw_input_contents:
        return 0
    return sum(math.prod(item.shape) for item in request.inputs)


def decode(request: service_pb2.ModelInferRequest, handle: ModelHandle) -> DecodedInfer:
    """Check and decode `request` for `handle`; BadInput names the field and the problem."""
    v2_codec.refuse_unsupported(parameters(request.parameters), "parameters")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadInput(
            f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs: "
            "send every input raw, or none",
            field="raw_input_contents",
        )
    by_name = {t.name: t for t in handle.inputs}
    decoded: dict[str, np.ndarray] = {}
    for i, item in enumerate(request.inputs):
        field = f"inputs[{i}]"
        tensor = by_name.get(item.name)
        if tensor is None:
            raise BadInput(
                f"unexpected input {item.name!r} for model {handle.name!r}; it takes "
                f"{', '.join(repr(t.name) for t in handle.inputs)}",
                field=f"{field}.name",
            )
        if item.name in decoded:
            raise BadInput(f"input {item.name!r} is given twice", field=f"{field}.name")
        v2_codec.refuse_unsupported(parameters(item.parameters), f"{field}.parameters")
        datatype = datatypes.lookup(item.datatype, f"{field}.datatype")
        datatypes.convertible(datatype, f"{field}.datatype")
        shape = list(item.shape)
        want = [-1, *tensor.shape]
        if len(shape) != len(want) or tuple(shape[1:]) != tensor.shape or shape[0] < 0:
            raise BadInput(
                f"input {item.name!r} has shape {shape}, model {handle.name!r} expects {want}",
                field=f"{field}.shape",
            )
        if raw:
            if item.HasField("contents"):
                raise BadInput(
                    f"input {item.name!r} has both contents and raw_input_contents", field=f"{field}.contents"
                )
            decoded[item.name] = datatypes.from_binary(raw[i], datatype, shape, f"raw_input_contents[{i}]")
            continue
        contents_field = _CONTENTS_FIELD.get(datatype.name)
        if contents_field is None:
            raise BadInput(
                f"{datatype.name} has no typed contents field: send it in raw_input_contents",
                field=f"{field}.contents",
            )
        values = list(getattr(item.contents, contents_field))
        decoded[item.name] = datatypes.from_json(
            values, datatype, shape, f"{field}.contents.{contents_field}"
        )
    missing = [t.name for t in handle.inputs if t.name not in decoded]
    if missing:
        raise BadInput(
            f"model {handle.name!r} needs input(s) {', '.join(map(repr, missing))}", field="inputs"
        )
    # Side by side in model order, as the kernel ABI takes them (shapes were checked above).
    columns = [decoded[t.name].reshape(decoded[t.name].shape[0], t.width) for t in handle.inputs]
    if any(c.shape[0] != columns[0].shape[0] for c in columns):
        raise BadInput(
            f"the inputs of model {handle.name!r} hold different numbers of samples: "
            f"{[c.shape[0] for c in columns]}",
            field="inputs",
        )
    rows = columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)
    return DecodedInfer(rows, _outputs(request, handle))


def _outputs(request: service_pb2.ModelInferRequest, handle: ModelHandle) -> list[str]:
    names = [t.name for t in handle.outputs]
    if not request.outputs:
        return names
    wanted: list[str] = []
    for i, out in enumerate(request.outputs):
        field = f"outputs[{i}]"
        v2_codec.refuse_unsupported(parameters(out.parameters), f"{field}.parameters")
        if out.name not in names:
            raise BadInput(
                f"unexpected output {out.name!r} for model {handle.name!r}; it gives "
                f"{', '.join(map(repr, names))}",
                field=f"{field}.name",
            )
        if out.name in wanted:
            raise BadInput(f"output {out.name!r} is requested twice", field=f"{field}.name")
        wanted.append(out.name)
    return wanted


def encode(
    handle: ModelHandle, outputs: list[str], result: InferResult, request_id: str
) -> service_pb2.ModelInferResponse:
    """The answer: each output FP32 in raw_output_contents, the device in `parameters`."""
    response = service_pb2.ModelInferResponse(
        model_name=result.model, model_version=result.version, id=request_id
    )
    response.parameters["device"].string_param = result.device
    plan = [(name, True) for name in outputs]
    for out in tensors.cut_outputs(handle, plan, result.outputs):
        response.outputs.add(name=out.name, datatype=datatypes.KERNEL_DATATYPE, shape=out.values.shape)
        response.raw_output_contents.append(datatypes.to_wire_fp32(out.values))
    return response
