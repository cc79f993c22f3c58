"""`POST /v2/models/{name}[/versions/{v}]/infer`: the protocol's inference, as a hot route.

Served by `fpgaas.service.api.front` without FastAPI: decode (JSON, or a JSON header plus the
binary tensor data extension) -> the same `DataPlane` as `/predict` -> encode. A small JSON
request in the protocol's common form takes `simple`'s one-pass decode and encode, with the same
rows and answer. The infer path is documented in OpenAPI by `openapi()`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fpgaas.service.api.asgi import Answer, HttpCall
from fpgaas.service.api.body_parsers import THREAD_BYTES, BodyParsers
from fpgaas.service.api.payload import JSON, OCTET_STREAM, media_type, require_media_type
from fpgaas.service.api.v2 import codec, datatypes, tensors
from fpgaas.service.api.v2.schemas import inference_request_schema
from fpgaas.service.api.v2.simple import simple_answer, simple_rows
from fpgaas.service.dataplane import DataPlane


def match(path: str) -> tuple[str, str | None] | None:
    """(model, version) of an infer path, or None for any other path."""
    if not path.startswith("/v2/models/") or not path.endswith("/infer"):
        return None
    parts = path[len("/v2/models/") : -len("/infer")].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


async def infer(
    call: HttpCall,
    dataplane: DataPlane,
    parsers: BodyParsers,
    max_body_bytes: int,
    model: str,
    version: str | None,
) -> Answer:
    require_media_type(media_type(call.header(b"content-type")), (JSON, OCTET_STREAM))
    handle = dataplane.resolve(model, version)
    call.model_label = handle.name
    body = await call.body(max_body_bytes)
    header_length = call.header(b"inference-header-content-length")
    if header_length is None and len(body) < THREAD_BYTES:
        simple = simple_rows(body, handle)  # the common form, or None: then the general path
        if simple is not None:
            result = await dataplane.infer(handle, simple.rows, alone=call.alone())
            return Answer(200, simple_answer(handle, result, simple.id))
    shapes = {t.name: t.shape for t in handle.inputs}
    decoded = await parsers.run(
        codec.decode, body, header_length, handle.name, shapes, in_process=codec.decode_detached
    )
    rows = tensors.rows_from_inputs(handle, decoded)
    plan = tensors.plan_outputs(handle, decoded.request)
    result = await dataplane.infer(handle, rows, alone=call.alone())
    header_outputs = []
    blobs = []
    for out in tensors.cut_outputs(handle, plan, result.outputs):
        entry: dict[str, object] = {"name": out.name, "datatype": "FP32", "shape": list(out.values.shape)}
        if out.binary:
            blob = datatypes.to_wire_fp32(out.values)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = np.ascontiguousarray(out.values, dtype=np.float32).ravel()
        header_outputs.append(entry)
    header: dict[str, object] = {"model_name": result.model, "model_version": result.version}
    if decoded.request.id is not None:
        header["id"] = decoded.request.id
    header["parameters"] = {"device": result.device}
    header["outputs"] = header_outputs
    encoded = codec.encode(header, blobs)
    extra = tuple((k.lower().encode(), v.encode()) for k, v in encoded.headers.items())
    return Answer(200, encoded.body, encoded.media_type, extra)


def openapi() -> dict[str, Any]:
    """The OpenAPI path item of the infer routes (they are not FastAPI routes)."""
    return {
        "post": {
            "tags": ["open inference protocol (v2)"],
            "summary": "Inference (JSON or binary tensor data)",
            "requestBody": {
                "required": True,
                "content": {
                    codec.JSON_CONTENT_TYPE: {"schema": inference_request_schema()},
                    codec.BINARY_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {
                "200": {"description": "the outputs, JSON or JSON header + binary tensor data"},
                "400": {"description": 'bad request: {"error": "<field>: <message>"}'},
                "404": {"description": "unknown model or version"},
                "413": {"description": "body too large"},
                "415": {"description": "unsupported Content-Type or Content-Encoding"},
                "503": {"description": "overloaded (Retry-After), device failure or not ready"},
            },
        }
    }


PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
