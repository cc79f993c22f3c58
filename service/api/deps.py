"""Dependencies the routes declare: the app's `DataPlane`, `Settings` and `ServiceMetrics`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fpgaas.kernels.errors import NotReady
from fpgaas.service.dataplane import DataPlane
from fpgaas.service.metrics import ServiceMetrics
from fpgaas.service.settings import Settings


def get_dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane | None = getattr(request.app.state, "dataplane", None)
    if dataplane is None:
        raise NotReady("the server is still loading its models")
    return dataplane


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
