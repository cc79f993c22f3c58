"""`create_app(settings)`: the FastAPI app of one server, with its own metrics registry.

The lifespan opens the devices, verifies and loads the model repository (refused artifacts
are logged and listed by `GET /models`; the others are served), starts one batcher per replica
of each model version, and at shutdown drains accepted requests before closing kernels and devices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from fpgaas.service.api import routers
from fpgaas.service.api.errors import install_error_handlers
from fpgaas.service.batching import BatchPolicy
from fpgaas.service.dataplane import DataPlane
from fpgaas.service.devices import create_devices
from fpgaas.service.metrics import RequestMetricsMiddleware, ServiceMetrics
from fpgaas.service.registry import ModelRegistry
from fpgaas.service.settings import Settings

log = logging.getLogger(__name__)

# The batcher's own deadline trails the device's, so a device that times out itself (and
# recovers its card) reports first; the batcher's is the backstop for one that hangs.
_BACKSTOP_MARGIN_S = 1.0


def batch_policy(settings: Settings) -> BatchPolicy:
    return BatchPolicy(
        max_delay_s=settings.max_delay_us / 1e6,
        max_queue_rows=settings.max_queue_rows,
        device_timeout_s=settings.device_timeout_s + _BACKSTOP_MARGIN_S,
        retry_after_s=settings.retry_after_s,
    )


def create_app(settings: Settings) -> FastAPI:
    """A new app serving `settings.model_repository`; nothing is loaded until its lifespan starts."""
    metrics = ServiceMetrics(CollectorRegistry())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        devices = create_devices(settings)
        registry = await asyncio.to_thread(
            ModelRegistry.open, settings.model_repository, devices, settings.max_batch, settings.placement
        )
        dataplane = DataPlane.start(registry, batch_policy(settings), metrics, settings.device_probe_s)
        app.state.dataplane = dataplane
        try:
            yield
        finally:
            app.state.dataplane = None
            await dataplane.close()
            log.info("all accepted requests answered; kernels and devices closed")

    app = FastAPI(
        title="fpgaas",
        summary="hls4ml kernels kept resident on FPGA cards (or their emulation), batched over HTTP",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.dataplane = None
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app
