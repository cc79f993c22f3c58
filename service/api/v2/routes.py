"""The Open Inference Protocol (KServe v2) REST routes, thin over the same `DataPlane` as `/predict`.

    GET  /v2                                              server metadata
    GET  /v2/health/live | /v2/health/ready               200, or 400 when not ready (empty body)
    GET  /v2/models/{name}[/versions/{v}]                 model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready           200, or 400 when not ready
    GET  /v2/models/{name}[/versions/{v}]/config          Triton's model configuration
    GET  /v2/models/{name}[/versions/{v}]/stats           Triton's statistics (every loaded version
                                                          of the model when no version is named)
    POST /v2/repository/index                             Triton's repository index (body {"ready": true}
                                                          for READY versions only), as gRPC answers it:
                                                          `fpgaas.service.api.repository`

Inference (`POST .../infer`) is a hot route served before FastAPI (`fpgaas.service.api.v2.infer`).
Configuration and statistics are the gRPC messages (`fpgaas.service.api.grpc.config`) written
as Triton's JSON, so both protocols answer the same. Errors are `{"error": "..."}`: `fpgaas.service.api.errors` renders every error under `/v2` in
the protocol's form, an unknown `/v2` path included (404).
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from fpgaas.kernels.errors import BadInput
from fpgaas.service.api import repository
from fpgaas.service.api.deps import DataPlaneDep, SettingsDep
from fpgaas.service.api.grpc import config
from fpgaas.service.api.grpc.servicer import statistics_of
from fpgaas.service.api.v2 import metadata
from fpgaas.service.dataplane import DataPlane, ModelMetadata

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])


def _paths(suffix: str) -> list[str]:
    """Each model route with and without an explicit version."""
    return [f"/models/{{name}}{suffix}", f"/models/{{name}}/versions/{{version}}{suffix}"]


def _model(request: Request, dataplane: DataPlane, name: str, version: str | None) -> ModelMetadata:
    model = dataplane.model(name, version)
    request.state.model = model.name  # a metrics label only once it names a loaded model
    return model


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
    # An unknown model or version is a 404 error; one the repository holds but does not serve, 400.
    is_ready = await repository.model_ready(
        dataplane, getattr(request.app.state, "builds", None), name, version
    )
    request.state.model = name
    return Response(status_code=200 if is_ready else 400)


async def _model_config(
    request: Request, dataplane: DataPlaneDep, settings: SettingsDep, name: str, version: str | None = None
) -> JSONResponse:
    model = _model(request, dataplane, name, version)
    return JSONResponse(config.as_json(config.model_config(model, settings.max_delay_us)))


async def _model_stats(
    request: Request, dataplane: DataPlaneDep, name: str, version: str | None = None
) -> JSONResponse:
    stats = statistics_of(dataplane, name, version)
    request.state.model = stats[0].name
    return JSONResponse({"model_stats": [config.as_json(config.model_statistics(s)) for s in stats]})


for _path in _paths(""):
    router.add_api_route(_path, _model_metadata, methods=["GET"], summary="Model metadata")
for _path in _paths("/ready"):
    router.add_api_route(
        _path, _model_ready, methods=["GET"], summary="200 when the model is ready, else 400"
    )
for _path in _paths("/config"):
    router.add_api_route(_path, _model_config, methods=["GET"], summary="Triton model configuration")
for _path in _paths("/stats"):
    router.add_api_route(_path, _model_stats, methods=["GET"], summary="Triton model statistics")


@router.post("/repository/index", summary="Every model version and its state (Triton's repository index)")
async def repository_index(request: Request, dataplane: DataPlaneDep) -> JSONResponse:
    ready_only = _ready_flag(await request.body())
    states = await repository.index(dataplane, getattr(request.app.state, "builds", None), ready_only)
    return JSONResponse(repository.as_json(states))


def _ready_flag(body: bytes) -> bool:
    """The optional `{"ready": bool}` of an index request (an empty body is `false`)."""
    if not body.strip():
        return False
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the index request is not JSON: {exc}", field="body") from exc
    if not isinstance(parsed, dict) or not isinstance(parsed.get("ready", False), bool):
        raise BadInput('the index request is {"ready": true|false}', field="ready")
    return bool(parsed.get("ready", False))
