"""`InferenceServicer`: Triton's `inference.GRPCInferenceService`, thin over the same `DataPlane`
as `/predict` and v2 REST.

Every RPC resolves the model once, calls the dataplane, and encodes; every error goes through
`fpgaas.service.api.errors.classify` and is rendered by `grpc_status` (NOT_FOUND,
INVALID_ARGUMENT, UNAVAILABLE with retry-after on overload, DEADLINE_EXCEEDED for a device
past its deadline), counted in `fpgaas_errors_total` as HTTP errors are. A client whose own
deadline passes is cancelled by grpc; its rows not yet sent to the card are dropped.

    ServerLive / ServerReady                  the dataplane's live / ready
    ServerMetadata / ModelMetadata            as GET /v2 and GET /v2/models/{m}
    ModelConfig                               `config.model_config` (as GET .../config)
    ModelInfer                                `codec.decode` -> DataPlane.infer -> `codec.encode`
    ModelStreamInfer                          each request answered as it completes, by id
    ModelStatistics                           `fpgaas.service.statistics` (as GET .../stats)
    ModelReady / RepositoryIndex              `fpgaas.service.api.repository`, as HTTP answers them
    RepositoryModelLoad / Unload              admin token (`authorization: Bearer`: none is
                                              UNAUTHENTICATED, a wrong one PERMISSION_DENIED) first, then
                                              the management API's load / unload (as POST
                                              /v2/repository/models/{m}/load|unload; optional
                                              string parameter `version`); without the
                                              management API, load of a served model is a no-op
                                              and unload is UNIMPLEMENTED

Shared memory, tracing and log settings answer UNIMPLEMENTED (the generated base class).
Inference RPCs need the inference token when one is set. Use from the event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from fpgaas.kernels.builds.errors import Unauthorized
from fpgaas.kernels.errors import BadInput, FpgaasError, ModelNotFound, NotReady
from fpgaas.service import auth
from fpgaas.service.api import repository
from fpgaas.service.api.errors import classify, count, grpc_status, v2_message
from fpgaas.service.api.grpc import codec, config
from fpgaas.service.api.grpc.protos import SERVICE_NAME, service_pb2, service_pb2_grpc
from fpgaas.service.api.v2 import metadata
from fpgaas.service.dataplane import DataPlane, ModelHandle
from fpgaas.service.metrics import ServiceMetrics
from fpgaas.service.settings import Settings

if TYPE_CHECKING:
    from fpgaas.service.buildservice import BuildService

log = logging.getLogger(__name__)

INFER_ROUTE = f"/{SERVICE_NAME}/ModelInfer"
STREAM_ROUTE = f"/{SERVICE_NAME}/ModelStreamInfer"


class NotImplementedHere(FpgaasError):
    status_code = 501
    code = "not_implemented"


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """One per server; `state.dataplane` is set by the app's lifespan (None until loaded)."""

    def __init__(self, state: object, settings: Settings, metrics: ServiceMetrics) -> None:
        self._state = state
        self._settings = settings
        self._metrics = metrics

    # -- health and metadata ---------------------------------------------------------------

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        dataplane: DataPlane | None = getattr(self._state, "dataplane", None)
        return service_pb2.ServerReadyResponse(ready=dataplane is not None and dataplane.ready().ready)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            ready = await repository.model_ready(
                self._dataplane(), self._builds(), request.name, request.version or None
            )
        except Exception as exc:
            await self._abort(context, exc)
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        body = metadata.server_metadata()
        return service_pb2.ServerMetadataResponse(
            name=body["name"], version=body["version"], extensions=body["extensions"]
        )

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            body = metadata.model_metadata(self._dataplane().model(request.name, request.version or None))
        except Exception as exc:
            await self._abort(context, exc)
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=body["name"],
            versions=body["versions"],
            platform=body["platform"],
            inputs=[tensor(**t) for t in body["inputs"]],
            outputs=[tensor(**t) for t in body["outputs"]],
        )

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            model = self._dataplane().model(request.name, request.version or None)
        except Exception as exc:
            await self._abort(context, exc)
        return service_pb2.ModelConfigResponse(config=config.model_config(model, self._settings.max_delay_us))

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            stats = statistics_of(self._dataplane(), request.name or None, request.version or None)
        except Exception as exc:
            await self._abort(context, exc)
        return service_pb2.ModelStatisticsResponse(model_stats=[config.model_statistics(s) for s in stats])

    # -- repository ------------------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            states = await repository.index(self._dataplane(), self._builds(), request.ready)
        except Exception as exc:
            await self._abort(context, exc)
        entry = service_pb2.RepositoryIndexResponse.ModelIndex
        models = [entry(name=s.name, version=s.version, state=s.state, reason=s.reason) for s in states]
        return service_pb2.RepositoryIndexResponse(models=models)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._admin(context)
            builds = self._builds()
            if builds is not None:
                await _management().load(request.model_name, builds, _version_parameter(request))
            else:
                # Without the management API a version is loaded at start or not at all:
                # loading a served model is a no-op, anything else cannot happen here.
                self._dataplane().resolve(request.model_name, _version_parameter(request))
        except Exception as exc:
            await self._abort(context, exc)
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._admin(context)
            builds = self._builds()
            if builds is None:
                self._dataplane().resolve(request.model_name, _version_parameter(request))
                raise NotImplementedHere(
                    "unloading needs the management API (FPGAAS_MANAGEMENT=1); this server serves "
                    "the models it loaded at start until it stops"
                )
            await _management().unload(request.model_name, builds, _version_parameter(request))
        except Exception as exc:
            await self._abort(context, exc)
        return service_pb2.RepositoryModelUnloadResponse()

    # -- inference -------------------------------------------------------------------------

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        label = ""
        try:
            self._inference_token(context)
            dataplane = self._dataplane()
            handle = dataplane.resolve(request.model_name or None, request.model_version or None)
            label = handle.name
            response = await _infer(dataplane, handle, request)
        except Exception as exc:
            await self._abort(context, exc, label, INFER_ROUTE, start)
        self._metrics.request_done(INFER_ROUTE, label, 200, time.perf_counter() - start)
        return response

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Requests are read as they come and run concurrently; each answer (or error, with the
        request's id) is written when it is ready, so answers may come out of order."""
        try:
            self._inference_token(context)
        except Exception as exc:
            await self._abort(context, exc)
        answers: asyncio.Queue[Any] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()

        async def one(request: Any) -> None:
            answers.put_nowait(await self._stream_answer(request))

        async def read() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.get_running_loop().create_task(one(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if running:
                    await asyncio.gather(*running)
            finally:
                answers.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            for task in (reader, *running):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _stream_answer(self, request: Any) -> Any:
        start = time.perf_counter()
        label = ""
        try:
            dataplane = self._dataplane()
            handle = dataplane.resolve(request.model_name or None, request.model_version or None)
            label = handle.name
            response = await _infer(dataplane, handle, request)
        except Exception as exc:
            answer = classify(exc)
            count(self._metrics, label, answer)
            self._metrics.request_done(STREAM_ROUTE, label, answer.status, time.perf_counter() - start)
            failed = service_pb2.ModelInferResponse(
                model_name=request.model_name, model_version=request.model_version, id=request.id
            )
            return service_pb2.ModelStreamInferResponse(
                error_message=v2_message(answer), infer_response=failed
            )
        self._metrics.request_done(STREAM_ROUTE, label, 200, time.perf_counter() - start)
        return service_pb2.ModelStreamInferResponse(infer_response=response)

    # -- helpers ---------------------------------------------------------------------------

    def _dataplane(self) -> DataPlane:
        dataplane: DataPlane | None = getattr(self._state, "dataplane", None)
        if dataplane is None:
            raise NotReady("the server is still loading its models")
        return dataplane

    def _inference_token(self, context: grpc.aio.ServicerContext) -> None:
        if self._settings.inference_token is not None and not auth.inference_token_ok(
            self._settings, _bearer(context)
        ):
            raise Unauthorized("this server needs its inference token: send authorization: Bearer <token>")

    def _admin(self, context: grpc.aio.ServicerContext) -> None:
        auth.check_admin(self._settings, _bearer(context))  # UNAUTHENTICATED / PERMISSION_DENIED

    def _builds(self) -> BuildService | None:
        """The management API's build service, None on a server without it."""
        builds: BuildService | None = getattr(self._state, "builds", None)
        return builds

    async def _abort(
        self,
        context: grpc.aio.ServicerContext,
        exc: Exception,
        label: str = "",
        route: str | None = None,
        start: float = 0.0,
    ) -> Any:
        """Answer `exc` as its gRPC status; raises (grpc's abort) and never returns."""
        answer = classify(exc)
        count(self._metrics, label, answer)
        if route is not None:
            self._metrics.request_done(route, label, answer.status, time.perf_counter() - start)
        status = grpc_status(answer)
        await context.abort(grpc.StatusCode[status.code], status.details, status.trailing_metadata)


async def _infer(dataplane: DataPlane, handle: ModelHandle, request: Any) -> Any:
    if codec.typed_values(request) > codec.OFF_LOOP_VALUES:
        decoded = await asyncio.to_thread(codec.decode, request, handle)
    else:
        decoded = codec.decode(request, handle)
    result = await dataplane.infer(handle, decoded.rows)
    return codec.encode(handle, decoded.outputs, result, request.id)


def statistics_of(dataplane: DataPlane, name: str | None, version: str | None) -> list[Any]:
    """The statistics a request names: every version of every model (no name), every loaded
    version of one model (no version), or one version. ModelNotFound for anything not loaded."""
    everything = dataplane.statistics.all()
    if name is None:
        if version is not None:
            raise BadInput("a version needs a model name", field="version")
        return everything
    if version is not None:
        dataplane.resolve(name, version)  # raises ModelNotFound naming what is loaded
        return [s for s in everything if s.name == name and s.version == version]
    found = [s for s in everything if s.name == name]
    if not found:
        dataplane.resolve(name)
        raise ModelNotFound(f"model {name!r} has no statistics")
    return found


def _management() -> Any:
    """The management routes' module (the same load/unload as HTTP), imported only when the
    management API runs: it needs the build queue's dependencies."""
    from fpgaas.service.api import management

    return management


def _version_parameter(request: Any) -> str | None:
    """The optional `version` string parameter of a load or unload (all versions when absent)."""
    if "version" not in request.parameters:
        return None
    value = request.parameters["version"]
    if value.WhichOneof("parameter_choice") != "string_param":
        raise BadInput("parameter 'version' must be a string", field="parameters.version")
    return str(value.string_param)


def _bearer(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return auth.bearer(value if isinstance(value, str) else value.decode())
    return None
