"""`create_app(settings)`: the FastAPI app of one server, with its own metrics registry.

The lifespan opens the devices, verifies and loads the model repository (refused artifacts
are logged and listed by `GET /models`; the others are served), starts one batcher per replica
of each model version, and at shutdown drains accepted requests before closing kernels and devices.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from fpgaas.kernels.signing import TrustedKeys
from fpgaas.service import card_metrics
from fpgaas.service.api import management, predict, routers
from fpgaas.service.api.asgi import Receive, Scope, Send
from fpgaas.service.api.body_parsers import BodyParsers
from fpgaas.service.api.errors import install_error_handlers
from fpgaas.service.api.front import FrontDoor
from fpgaas.service.api.v2 import infer as v2_infer
from fpgaas.service.batching import BatchPolicy
from fpgaas.service.buildservice import BuildService
from fpgaas.service.dataplane import DataPlane
from fpgaas.service.devices import create_devices
from fpgaas.service.metrics import ServiceMetrics
from fpgaas.service.registry import ModelRegistry
from fpgaas.service.settings import Settings
from fpgaas.service.shadow import ShadowPolicy, with_shadow

log = logging.getLogger(__name__)

# The batcher's own deadline trails the device's, so a device that times out itself (and
# recovers its card) reports first; the batcher's is the backstop for one that hangs.
_BACKSTOP_MARGIN_S = 1.0
_SWITCH_INTERVAL_S = 0.0002


def batch_policy(settings: Settings) -> BatchPolicy:
    return BatchPolicy(
        max_delay_s=settings.max_delay_us / 1e6,
        max_queue_rows=settings.max_queue_rows,
        device_timeout_s=settings.device_timeout_s + _BACKSTOP_MARGIN_S,
        retry_after_s=settings.retry_after_s,
        max_queue_delay_s=settings.max_queue_delay_ms / 1e3,
    )


class FpgaasApp(FastAPI):
    """FastAPI with the front door before its middleware stack: the hot routes skip the
    framework's layers (error, telemetry and body-limit middleware, routing) entirely."""

    front: FrontDoor | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)


def create_app(settings: Settings) -> FpgaasApp:
    """A new app serving `settings.model_repository`; nothing is loaded until its lifespan starts."""
    metrics = ServiceMetrics(CollectorRegistry())
    parsers = BodyParsers(settings.json_parse_processes, settings.json_process_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The device workers need the GIL back within a fraction of a device call, not after
        # CPython's default 5 ms, while the event loop thread is busy parsing requests.
        sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL_S))
        trusted = TrustedKeys.load(settings.trusted_key_paths())
        if not trusted.keys:
            log.warning("no trusted signing keys (FPGAAS_TRUSTED_KEYS): every artifact will be refused")
        else:
            log.info("trusting artifact signatures by key(s) %s", ", ".join(trusted.ids))
        parsers.start()
        devices = with_shadow(create_devices(settings), ShadowPolicy.of(settings), metrics)
        registry = await asyncio.to_thread(
            functools.partial(ModelRegistry.open, trusted=trusted),
            settings.model_repository,
            devices,
            settings.max_batch,
            settings.placement,
        )
        dataplane = DataPlane.start(registry, batch_policy(settings), metrics, settings.device_probe_s)
        app.state.dataplane = dataplane
        cards = card_metrics.register(metrics.registry, dataplane)
        builds = None
        try:
            if settings.management:
                builds = await BuildService.open(settings, dataplane, registry, batch_policy(settings))
                app.state.builds = builds
            await parsers.ready()  # their imports began before the models loaded
            # Everything loaded so far lives until shutdown: out of the collector's sight, a full
            # collection no longer walks it (~100 ms pauses under load, the p99 of c=64).
            gc.collect()
            gc.freeze()
            yield
        finally:
            if builds is not None:
                await builds.close()  # no more hot loads; the dataplane then drains what it holds
            metrics.registry.unregister(cards)
            app.state.dataplane = None
            await dataplane.close()
            parsers.close()
            log.info("all accepted requests answered; kernels and devices closed")

    app = FpgaasApp(
        title="fpgaas",
        summary="hls4ml kernels kept resident on FPGA cards (or their emulation), batched over HTTP",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.dataplane = None
    app.state.builds = None
    install_error_handlers(app, metrics)
    if settings.management:
        app.include_router(management.router)
    for router in routers:
        app.include_router(router)
    app.front = FrontDoor(
        functools.partial(FastAPI.__call__, app),
        state=app.state,
        metrics=metrics,
        parsers=parsers,
        max_body_bytes=settings.max_body_bytes,
    )
    _document_hot_routes(app)
    return app


def _document_hot_routes(app: FastAPI) -> None:
    """Add the hot routes, which FastAPI does not serve, to its OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema["paths"] = {predict.PATH: predict.openapi(), **schema["paths"]}
            for path in v2_infer.PATHS:
                schema["paths"][path] = v2_infer.openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in predict.OPENAPI_MODELS:
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(found.pop("$defs", {}))
                components[model.__name__] = found
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
