"""`GrpcFront`: the gRPC server of one fpgaas process, on `FPGAAS_GRPC_PORT`, beside uvicorn in
the same event loop and on the same dataplane.

It serves Triton's `inference.GRPCInferenceService` (`servicer`), the standard health-checking
service (`grpc.health.v1.Health`: "" and the inference service are SERVING while the dataplane
is ready, re-read every `HEALTH_POLL_S`), and server reflection (grpcurl, grpc_cli).
Messages up to `FPGAAS_MAX_BODY_BYTES` are received, as HTTP bodies are (larger ones get
RESOURCE_EXHAUSTED from grpc itself). SO_REUSEPORT is off, so a second server on the same port
fails to start instead of silently sharing its connections.

Lifetime: `start()` once the app's lifespan has loaded the models (`fpgaas.service.server`
does it); `stop()` at SIGTERM: health turns NOT_SERVING at once, RPCs are still taken for
`drain_s` (a call whose bytes were on the wire at the signal would otherwise be cancelled
before it is read: grpc cancels a call that has not reached its handler when the server stops,
and a client does not retry CANCELLED), then new RPCs are refused and those in progress get
`grace_s` to finish, before the dataplane drains and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fpgaas.service.api.grpc.protos import SERVICE_NAME, service_pb2_grpc
from fpgaas.service.api.grpc.servicer import InferenceServicer
from fpgaas.service.dataplane import DataPlane
from fpgaas.service.metrics import ServiceMetrics
from fpgaas.service.settings import Settings

log = logging.getLogger(__name__)

HEALTH_POLL_S = 0.5
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcFront:
    """The gRPC server; see the module docstring. Use from the event loop."""

    def __init__(
        self, settings: Settings, state: object, metrics: ServiceMetrics, grace_s: float, drain_s: float = 0.0
    ) -> None:
        self._settings = settings
        self._state = state  # the app's state: `dataplane` is set by the lifespan
        self._grace_s = grace_s  # seconds RPCs in progress get once new ones are refused
        self._drain_s = drain_s  # seconds RPCs are still taken after `stop` begins
        self._servicer = InferenceServicer(state, settings, metrics)
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self.port = 0
        self._watcher: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen on settings.host:grpc_port and serve; raises RuntimeError if the port is taken.
        Call inside the running event loop: a grpc.aio server belongs to the loop it is made in."""
        self._server = server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._settings.max_body_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self._servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{self._settings.host}:{self._settings.grpc_port}"
        if ":" in self._settings.host:  # an IPv6 literal
            address = f"[{self._settings.host}]:{self._settings.grpc_port}"
        self.port = server.add_insecure_port(address)
        await server.start()
        await self._follow_readiness()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="grpc-health")
        log.info("gRPC (KServe v2 / Triton) on %s", address)

    async def stop(self) -> None:
        """Report NOT_SERVING, take RPCs for `drain_s` more, then refuse new ones, give those in
        progress `grace_s`, and close; idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await asyncio.sleep(self._drain_s)
            await self._server.stop(self._grace_s)
        log.info("gRPC server stopped")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_POLL_S)
            await self._follow_readiness()

    async def _follow_readiness(self) -> None:
        dataplane: DataPlane | None = getattr(self._state, "dataplane", None)
        status = _SERVING if dataplane is not None and dataplane.ready().ready else _NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)
