"""`GET /models` and `GET /models/{name}`: what is served, on which device, with which types."""

from __future__ import annotations

from fastapi import APIRouter, Query

from fpgaas.service.api.deps import DataPlaneDep
from fpgaas.service.api.schemas import ErrorResponse, ModelList, ModelOut, RefusedOut

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelList, summary="Every served model and every refused artifact")
async def list_models(dataplane: DataPlaneDep) -> ModelList:
    newest = {m.name: m for m in dataplane.models()}  # versions ascend, so the last one wins
    return ModelList(
        models=[ModelOut.of(m) for m in newest.values()],
        refused=[RefusedOut.of(r) for r in dataplane.refused()],
    )


@router.get(
    "/models/{name}",
    response_model=ModelOut,
    responses={404: {"model": ErrorResponse, "description": "unknown model or version"}},
    summary="One model, at its highest version unless asked",
)
async def get_model(
    name: str, dataplane: DataPlaneDep, version: str | None = Query(None, description="a loaded version")
) -> ModelOut:
    return ModelOut.of(dataplane.model(name, version))
