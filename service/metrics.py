"""Prometheus metrics of one server, registered on that app's own `CollectorRegistry`.

All durations are in seconds; the buckets span 10 µs .. 10 s log-spaced because a kernel call
takes microseconds while a queued request under load waits milliseconds to seconds.
Thread-safe (prometheus_client metrics are).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fpgaas.service.devices.base import StageTimes

# 10 µs .. 10 s, three buckets per decade.
SECONDS_BUCKETS: tuple[float, ...] = (
    *(round(m * 10.0**e, 9) for e in range(-5, 1) for m in (1.0, 2.0, 5.0)),
    10.0,
)
# Rows per device call: powers of two up to 64 Ki rows.
ROWS_BUCKETS: tuple[float, ...] = tuple(float(1 << k) for k in range(17))


class ServiceMetrics:
    """Every metric family the server exports, bound to one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.request_duration = Histogram(
            "fpgaas_request_duration_seconds",
            "HTTP request wall time, from the first byte received to the answer sent",
            ["route", "model", "status"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "fpgaas_queue_wait_seconds",
            "time a request waited in the batcher before its first rows went to the device",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "fpgaas_batch_size", "rows per device call", ["model"], buckets=ROWS_BUCKETS, registry=registry
        )
        self.device_stage = Histogram(
            "fpgaas_device_stage_seconds",
            "wall time of one stage of a device call",
            ["model", "device", "stage"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.inflight = Gauge("fpgaas_inflight_requests", "HTTP requests being served", registry=registry)
        self.queue_rows = Gauge(
            "fpgaas_queue_rows",
            "rows accepted by the batcher and not yet answered",
            ["model", "device"],
            registry=registry,
        )
        self.rejected = Counter(
            "fpgaas_rejected_requests",
            "requests refused to protect the server",
            ["model", "reason"],
            registry=registry,
        )
        self.errors = Counter("fpgaas_errors", "error answers by code", ["model", "code"], registry=registry)
        self.rows = Counter("fpgaas_rows", "rows answered", ["model"], registry=registry)

    def observe_stages(self, model: str, device: str, stages: StageTimes) -> None:
        """Record the three stages of one device call (seconds)."""
        self.device_stage.labels(model, device, "input_transfer").observe(stages.to_device_s)
        self.device_stage.labels(model, device, "kernel").observe(stages.kernel_s)
        self.device_stage.labels(model, device, "output_transfer").observe(stages.from_device_s)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestMetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request and counting those in flight.

    The route label is the path template (bounded cardinality); the model label is what the
    handler stored in `request.state.model` (empty when none).
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_remember(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_and_remember)
        finally:
            self.metrics.inflight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            model = str(scope.get("state", {}).get("model", ""))
            self.metrics.request_duration.labels(template, model, str(status)).observe(
                time.perf_counter() - start
            )
