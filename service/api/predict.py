"""`POST /predict`: JSON rows or raw little-endian float32 rows, chosen by Content-Type."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from fpgaas.kernels.errors import BadInput
from fpgaas.service.api.deps import DataPlaneDep, SettingsDep
from fpgaas.service.api.payload import (
    WIRE_DTYPE,
    encode_json_answer,
    parse_binary_rows,
    parse_json_predict,
    read_body,
)
from fpgaas.service.api.schemas import ErrorResponse, PredictRequest, PredictResponse

router = APIRouter(tags=["predict"])

OCTET_STREAM = "application/octet-stream"
JSON = "application/json"

_ERRORS = {
    s: {"model": ErrorResponse, "description": d}
    for s, d in (
        (400, "bad input (the error names the field)"),
        (404, "unknown model or version"),
        (413, "body too large"),
        (503, "overloaded (Retry-After), device failure or not ready"),
    )
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={
        200: {"content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}}},
        **_ERRORS,  # type: ignore[dict-item]
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": PredictRequest.model_json_schema()},
                OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
    summary="Run samples through a model",
)
async def predict(
    request: Request,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    model: str | None = Query(None, description="model name (binary bodies; JSON may say it in the body)"),
    version: str | None = Query(None, description="model version; default: the highest loaded"),
) -> Response:
    """JSON `{"model"?, "version"?, "inputs": [[...], ...]}` -> `{"model", "version", "device",
    "outputs"}`; or `application/octet-stream` float32 rows (model in the query string) ->
    float32 rows with headers X-Model, X-Model-Version, X-Device, X-Output-Shape."""
    content_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    if content_type not in (JSON, OCTET_STREAM):
        raise BadInput(
            f"unsupported Content-Type {content_type!r}: send {JSON} or {OCTET_STREAM}", field="Content-Type"
        )
    if model is not None:
        request.state.model = model
    body = await read_body(request, settings.max_body_bytes)

    if content_type == OCTET_STREAM:
        loaded = dataplane.resolve(model, version)
        request.state.model = loaded.name
        result = await dataplane.infer(loaded.name, loaded.version, parse_binary_rows(body, loaded.n_inputs))
        outputs = result.outputs
        return Response(
            content=outputs.astype(WIRE_DTYPE, copy=False).tobytes(),
            media_type=OCTET_STREAM,
            headers={
                "X-Model": result.model,
                "X-Model-Version": result.version,
                "X-Device": result.device,
                "X-Output-Shape": ",".join(str(d) for d in outputs.shape),
            },
        )

    parsed = parse_json_predict(body)
    for name, in_body, in_query in (("model", parsed.model, model), ("version", parsed.version, version)):
        if in_body is not None and in_query is not None and in_body != in_query:
            raise BadInput(f"{name} is {in_body!r} in the body but {in_query!r} in the query", field=name)
    loaded = dataplane.resolve(parsed.model or model, parsed.version or version)
    request.state.model = loaded.name
    result = await dataplane.infer(loaded.name, loaded.version, parsed.inputs)
    return Response(
        content=encode_json_answer(result.model, result.version, result.device, result.outputs),
        media_type=JSON,
    )
