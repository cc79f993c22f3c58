"""The Open Inference Protocol (KServe v2) REST routes, thin over the same `DataPlane` as `/predict`.

    GET  /v2                                              server metadata
    GET  /v2/health/live | /v2/health/ready               200, or 400 when not ready (empty body)
    GET  /v2/models/{name}[/versions/{v}]                 model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready           200, or 400 when not ready
    GET  /v2/models/{name}[/versions/{v}]/config          Triton's model configuration (minimal)
    POST /v2/models/{name}[/versions/{v}]/infer           JSON or binary tensor data
    POST /v2/repository/index                             Triton's list of models

Errors are `{"error": "..."}` (see `fpgaas.service.api.v2.errors`); any other `/v2` path is a 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import Match

from fpgaas.service.api.deps import DataPlaneDep, SettingsDep
from fpgaas.service.api.payload import read_body
from fpgaas.service.api.v2 import codec, datatypes, metadata, tensors
from fpgaas.service.api.v2.errors import V2Route, error_response
from fpgaas.service.api.v2.schemas import inference_request_schema
from fpgaas.service.dataplane import DataPlane, ModelMetadata

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=V2Route)


def _paths(suffix: str) -> list[str]:
    """Each model route with and without an explicit version."""
    return [f"/models/{{name}}{suffix}", f"/models/{{name}}/versions/{{version}}{suffix}"]


def _model(request: Request, dataplane: DataPlane, name: str, version: str | None) -> ModelMetadata:
    request.state.model = name
    return dataplane.model(name, version)


@router.get("", summary="Server metadata")
async def server_metadata() -> JSONResponse:
    return JSONResponse(metadata.server_metadata())


@router.get("/health/live", summary="200 while the server answers")
async def live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready", summary="200 when every model is ready, else 400")
async def ready(request: Request) -> Response:
    dataplane: DataPlane | None = getattr(request.app.state, "dataplane", None)
    # The protocol answers health as a boolean in the status code: 200 true, 4xx false.
    is_ready = dataplane is not None and dataplane.ready().ready
    return Response(status_code=200 if is_ready else 400)


async def _model_metadata(
    request: Request, dataplane: DataPlaneDep, name: str, version: str | None = None
) -> JSONResponse:
    return JSONResponse(metadata.model_metadata(_model(request, dataplane, name, version)))


async def _model_ready(
    request: Request, dataplane: DataPlaneDep, name: str, version: str | None = None
) -> Response:
    model = _model(request, dataplane, name, version)  # an unknown model or version is a 404 error
    return Response(status_code=200 if model.device.healthy else 400)


async def _model_config(
    request: Request, dataplane: DataPlaneDep, name: str, version: str | None = None
) -> JSONResponse:
    return JSONResponse(metadata.model_config(_model(request, dataplane, name, version)))


async def _infer(
    request: Request, dataplane: DataPlaneDep, settings: SettingsDep, name: str, version: str | None = None
) -> Response:
    model = _model(request, dataplane, name, version)
    body = await read_body(request, settings.max_body_bytes)
    body = codec.inflate(body, request.headers.get("content-encoding"), settings.max_body_bytes)
    decoded = codec.decode(body, request.headers.get(codec.HEADER_LENGTH))
    rows = tensors.rows_from_inputs(model, decoded)
    plan = tensors.plan_outputs(model, decoded.request)
    result = await dataplane.infer(model.name, model.version, rows)
    header_outputs = []
    blobs = []
    for out in tensors.cut_outputs(model, plan, result.outputs):
        entry: dict[str, object] = {"name": out.name, "datatype": "FP32", "shape": list(out.values.shape)}
        if out.binary:
            blob = datatypes.to_wire_fp32(out.values)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = datatypes.to_json_fp32(out.values)
        header_outputs.append(entry)
    header: dict[str, object] = {"model_name": result.model, "model_version": result.version}
    if decoded.request.id is not None:
        header["id"] = decoded.request.id
    header["parameters"] = {"device": result.device}
    header["outputs"] = header_outputs
    encoded = codec.encode(header, blobs)
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)


# The handler reads the body itself (JSON header + binary tensors); this documents it.
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            codec.JSON_CONTENT_TYPE: {"schema": inference_request_schema()},
            codec.BINARY_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

for _path in _paths(""):
    router.add_api_route(_path, _model_metadata, methods=["GET"], summary="Model metadata")
for _path in _paths("/ready"):
    router.add_api_route(
        _path, _model_ready, methods=["GET"], summary="200 when the model is ready, else 400"
    )
for _path in _paths("/config"):
    router.add_api_route(_path, _model_config, methods=["GET"], summary="Triton model configuration")
for _path in _paths("/infer"):
    router.add_api_route(
        _path,
        _infer,
        methods=["POST"],
        summary="Inference (JSON or binary tensor data)",
        openapi_extra=_INFER_BODY,
    )


@router.post("/repository/index", summary="Every loaded model version (Triton's repository index)")
async def repository_index(dataplane: DataPlaneDep) -> JSONResponse:
    return JSONResponse(metadata.repository_index(dataplane.models()))


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
    include_in_schema=False,
)
async def unknown(request: Request, path: str) -> Response:
    # Keeps unknown /v2 paths in the protocol's error form instead of the app-wide one.
    allowed = sorted(
        method
        for route in router.routes
        if isinstance(route, APIRoute)
        and route.endpoint is not unknown
        and route.matches({**request.scope, "method": ""})[0] == Match.PARTIAL
        for method in route.methods or ()
    )
    if allowed:
        return error_response(
            405,
            f"{request.method} is not allowed on /v2/{path}; use {', '.join(allowed)}",
            {"Allow": ", ".join(allowed)},
        )
    return error_response(404, f"no route {request.method} /v2/{path} in the Open Inference Protocol")
