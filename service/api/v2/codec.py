"""The binary tensor data extension: a JSON header followed by raw tensor bytes in one body.

Request: `Inference-Header-Content-Length` gives the JSON header's length in bytes; each input
whose parameters carry `binary_data_size` takes that many bytes, in input order, from what
follows. Response: outputs asked for as binary (`binary_data` on the output, else
`binary_data_output` on the request) carry `binary_data_size` and their little-endian bytes
follow the JSON, in output order. Pure functions; thread-safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from fpgaas.kernels.errors import BadInput
from fpgaas.service.api.payload import refuse_booleans
from fpgaas.service.api.v2 import datatypes
from fpgaas.service.api.v2.schemas import InferenceRequest, Parameters, RequestInput

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

# Parameters naming features fpgaas does not have; accepting them silently would lose data.
_UNSUPPORTED = {
    "shared_memory_region": "the shared memory extensions are not supported",
    "classification": "the classification extension is not supported",
}


@dataclass(frozen=True)
class DecodedRequest:
    """A parsed request: its JSON header and each input's tensor as float32, by input name."""

    request: InferenceRequest
    tensors: dict[str, np.ndarray]


# What a model takes: each input's name -> its per-sample shape (the batch axis comes first).
InputShapes = dict[str, tuple[int, ...]]
MAX_DIMS = 32  # numpy's (and Triton's) limit on dimensions


def decode(body: bytes, header_length: str | None, model: str, shapes: InputShapes) -> DecodedRequest:
    """Split and parse an inference request body for `model`, whose inputs have `shapes`;
    BadInput names the field and the problem. Names and shapes are checked against the model
    before any tensor is decoded, so no request can make the server allocate what it declares."""
    json_end = _json_length(body, header_length)
    header = body[:json_end]
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        # The message names every location itself, so no separate field leads it.
        raise BadInput(f"malformed inference request: {_describe(exc)}") from exc
    booleans = b"true" in header or b"false" in header  # only then can data hide a JSON boolean
    refuse_unsupported(request.parameters, "parameters")
    binary = memoryview(body)[json_end:]
    offset = 0
    tensors: dict[str, np.ndarray] = {}
    for i, item in enumerate(request.inputs):
        field = f"inputs[{i}]"
        if item.name in tensors:
            raise BadInput(f"input {item.name!r} is given twice", field=f"{field}.name")
        refuse_unsupported(item.parameters, f"{field}.parameters")
        size = _binary_size(item, field)
        datatype = datatypes.lookup(item.datatype, f"{field}.datatype")
        datatypes.convertible(datatype, f"{field}.datatype")
        _check_shape(item, model, shapes, field)
        if size is None:
            if item.data is None:
                raise BadInput(f"input {item.name!r} has neither 'data' nor binary_data_size", field=field)
            if booleans:
                refuse_booleans(item.data, f"{field}.data")
            tensors[item.name] = datatypes.from_json(item.data, datatype, item.shape, f"{field}.data")
            continue
        if item.data is not None:
            raise BadInput(f"input {item.name!r} has both 'data' and binary_data_size", field=field)
        if offset + size > len(binary):
            raise BadInput(
                f"binary_data_size {size} of input {item.name!r} runs past the end of the body "
                f"({len(binary) - offset} bytes left)",
                field=f"{field}.parameters.binary_data_size",
            )
        raw = binary[offset : offset + size]
        offset += size
        tensors[item.name] = datatypes.from_binary(
            raw, datatype, item.shape, f"{field}.parameters.binary_data_size"
        )
    if offset != len(binary):
        raise BadInput(
            f"the body has {len(binary) - offset} bytes after the binary tensors that no input claims",
            field=HEADER_LENGTH,
        )
    return DecodedRequest(request, tensors)


def decode_detached(
    body: bytes, header_length: str | None, model: str, shapes: InputShapes
) -> DecodedRequest:
    """`decode`, with each input's JSON `data` dropped from the header once it is a tensor: what
    a parser process sends back (a list of Python floats costs more to unpickle than to parse)."""
    decoded = decode(body, header_length, model, shapes)
    inputs = [item.model_copy(update={"data": None}) for item in decoded.request.inputs]
    return DecodedRequest(decoded.request.model_copy(update={"inputs": inputs}), decoded.tensors)


def wants_binary(request: InferenceRequest, output_parameters: Parameters) -> bool:
    """Whether one output goes back as binary: its own `binary_data` wins over the request's."""
    choice = output_parameters.get("binary_data", request.parameters.get("binary_data_output", False))
    if not isinstance(choice, bool):
        raise BadInput("binary_data and binary_data_output must be true or false", field="binary_data")
    return choice


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    headers: dict[str, str]
    media_type: str


def encode(header: dict[str, Any], blobs: list[bytes]) -> EncodedResponse:
    """The response body: compact JSON (numpy arrays in it as lists), then the binary outputs'
    bytes in output order."""
    text = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return EncodedResponse(text, {}, JSON_CONTENT_TYPE)
    return EncodedResponse(b"".join([text, *blobs]), {HEADER_LENGTH: str(len(text))}, BINARY_CONTENT_TYPE)


def _check_shape(item: RequestInput, model: str, shapes: InputShapes, field: str) -> None:
    if item.name not in shapes:
        raise BadInput(
            f"unexpected input {item.name!r} for model {model!r}; it takes {', '.join(map(repr, shapes))}",
            field=f"{field}.name",
        )
    shape = item.shape
    if len(shape) > MAX_DIMS:
        raise BadInput(f"shape has {len(shape)} dimensions, at most {MAX_DIMS}", field=f"{field}.shape")
    if any(d < 0 for d in shape):
        raise BadInput(f"shape {shape} has a negative dimension", field=f"{field}.shape")
    want = [-1, *shapes[item.name]]
    if len(shape) != len(want) or tuple(shape[1:]) != shapes[item.name]:
        raise BadInput(
            f"input {item.name!r} has shape {shape}, model {model!r} expects {want}", field=f"{field}.shape"
        )
    if math.prod(shape) > 1 << 40:  # beyond any body: refused before numpy sees it
        raise BadInput(f"shape {shape} holds more values than any request can", field=f"{field}.shape")


def _json_length(body: bytes, header_length: str | None) -> int:
    if header_length is None:
        return len(body)
    try:
        length = int(header_length)
    except ValueError:
        raise BadInput(
            f"{HEADER_LENGTH} must be an integer, got {header_length!r}", field=HEADER_LENGTH
        ) from None
    if not 0 < length <= len(body):
        raise BadInput(f"{HEADER_LENGTH} is {length}, the body has {len(body)} bytes", field=HEADER_LENGTH)
    return length


def _binary_size(item: RequestInput, field: str) -> int | None:
    size = item.parameters.get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadInput(
            f"binary_data_size must be a byte count >= 0, got {size!r}",
            field=f"{field}.parameters.binary_data_size",
        )
    return size


def refuse_unsupported(parameters: Parameters, field: str) -> None:
    for name, why in _UNSUPPORTED.items():
        if name in parameters:
            raise BadInput(f"parameter {name!r}: {why}", field=f"{field}.{name}")


def _location(loc: tuple[int | str, ...]) -> str:
    """("inputs", 0, "shape") -> "inputs[0].shape", the form every fpgaas error uses."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{_location(e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:3])
