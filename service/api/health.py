"""Probes and metrics: `GET /healthz`, `GET /readyz`, `GET /metrics`.

`/metrics` is the app's registry (fpgaas_* and the card gauges) followed by Triton's
`nv_inference_*` counters (`fpgaas.service.statistics`), which prometheus_client cannot name,
and, with the management API on, the build-queue families (`fpgaas.service.build_metrics`),
read from the builds table at each scrape.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fpgaas.service.api.deps import MetricsDep
from fpgaas.service.api.schemas import Health, ReadyOut
from fpgaas.service.buildservice import BuildService
from fpgaas.service.dataplane import DataPlane, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="alive")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "not ready, with the reason"}},
    summary="Readiness: models loaded and devices healthy",
)
async def readyz(request: Request) -> JSONResponse:
    dataplane: DataPlane | None = getattr(request.app.state, "dataplane", None)
    state = Readiness(False, "loading models") if dataplane is None else dataplane.ready()
    return JSONResponse(ReadyOut.of(state).model_dump(), status_code=200 if state.ready else 503)


@router.get("/metrics", summary="Prometheus metrics of this server", response_class=Response)
async def metrics(request: Request, m: MetricsDep) -> Response:
    dataplane: DataPlane | None = getattr(request.app.state, "dataplane", None)
    builds: BuildService | None = getattr(request.app.state, "builds", None)
    triton = b"" if dataplane is None else dataplane.statistics.exposition()
    queue = b"" if builds is None else await builds.metrics.exposition()
    return Response(generate_latest(m.registry) + triton + queue, media_type=CONTENT_TYPE_LATEST)
