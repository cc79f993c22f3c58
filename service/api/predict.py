"""`POST /predict`: JSON rows or raw little-endian float32 rows, chosen by Content-Type.

A hot route (served by `fpgaas.service.api.front` without FastAPI): decode -> dataplane ->
encode. JSON `{"model"?, "version"?, "inputs": [[...], ...]}` -> `{"model", "version",
"device", "outputs"}`; `application/octet-stream` float32 rows (model in the query string) ->
float32 rows with headers X-Model, X-Model-Version, X-Device, X-Output-Shape. Large JSON bodies
are parsed off the event loop (`BodyParsers`) so that one large body never stalls the others.
"""

from __future__ import annotations

from typing import Any

from fpgaas.kernels.errors import BadInput
from fpgaas.service.api.asgi import Answer, HttpCall
from fpgaas.service.api.body_parsers import BodyParsers
from fpgaas.service.api.payload import (
    JSON,
    OCTET_STREAM,
    WIRE_DTYPE,
    encode_json_answer,
    media_type,
    parse_binary_rows,
    parse_json_predict,
    require_media_type,
)
from fpgaas.service.api.schemas import ErrorResponse, PredictRequest, PredictResponse
from fpgaas.service.dataplane import DataPlane

PATH = "/predict"


async def predict(call: HttpCall, dataplane: DataPlane, parsers: BodyParsers, max_body_bytes: int) -> Answer:
    content_type = media_type(call.header(b"content-type"))
    require_media_type(content_type, (JSON, OCTET_STREAM))
    query = call.query()
    model, version = query.get("model"), query.get("version")
    if content_type == OCTET_STREAM:
        handle = dataplane.resolve(model, version)
        call.model_label = handle.name
        rows = _declared_rows(call, WIRE_DTYPE.itemsize * handle.n_inputs)
        if rows:
            dataplane.admit(handle, rows)
        body = await call.body(max_body_bytes)
        result = await dataplane.infer(handle, parse_binary_rows(body, handle.n_inputs), alone=call.alone())
        outputs = result.outputs
        headers = (
            (b"x-model", result.model.encode()),
            (b"x-model-version", result.version.encode()),
            (b"x-device", result.device.encode()),
            (b"x-output-shape", ",".join(str(d) for d in outputs.shape).encode()),
        )
        return Answer(200, outputs.astype(WIRE_DTYPE, copy=False).tobytes(), OCTET_STREAM, headers)

    body = await call.body(max_body_bytes)
    parsed = await parsers.run(parse_json_predict, body)
    for name, in_body, in_query in (("model", parsed.model, model), ("version", parsed.version, version)):
        if in_body is not None and in_query is not None and in_body != in_query:
            raise BadInput(f"{name} is {in_body!r} in the body but {in_query!r} in the query", field=name)
    handle = dataplane.resolve(parsed.model or model, parsed.version or version)
    call.model_label = handle.name
    result = await dataplane.infer(handle, parsed.inputs, alone=call.alone())
    return Answer(200, encode_json_answer(result.model, result.version, result.device, result.outputs))


def _declared_rows(call: HttpCall, row_bytes: int) -> int:
    """Rows a raw body will hold by its Content-Length; 0 when that does not tell (absent,
    compressed, not whole rows): the body's own checks then answer."""
    declared = call.header(b"content-length")
    encoding = call.header(b"content-encoding")
    if declared is None or not declared.isdigit() or (encoding and encoding.strip().lower() != "identity"):
        return 0
    rows, rest = divmod(int(declared), row_bytes)
    return 0 if rest else rows


def openapi() -> dict[str, Any]:
    """The OpenAPI path item of `/predict` (the route is not a FastAPI route)."""
    errors = {
        str(status): {
            "description": description,
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
        }
        for status, description in (
            (400, "bad input (the error names the field)"),
            (404, "unknown model or version"),
            (413, "body too large"),
            (415, "unsupported Content-Type or Content-Encoding"),
            (503, "overloaded (Retry-After), device failure or not ready"),
        )
    }
    query = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": description,
        }
        for name, description in (
            ("model", "model name (binary bodies; JSON may say it in the body)"),
            ("version", "model version; default: the highest loaded"),
        )
    ]
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "post": {
            "tags": ["predict"],
            "summary": "Run samples through a model",
            "operationId": "predict",
            "parameters": query,
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                    OCTET_STREAM: binary,
                },
            },
            "responses": {
                "200": {
                    "description": "one output row per input row",
                    "content": {
                        JSON: {"schema": {"$ref": "#/components/schemas/PredictResponse"}},
                        OCTET_STREAM: binary,
                    },
                },
                **errors,
            },
        }
    }


OPENAPI_MODELS = (PredictRequest, PredictResponse, ErrorResponse)
