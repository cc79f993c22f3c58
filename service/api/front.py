"""The front door: every HTTP request passes here first.

The hot routes, `POST /predict` and `POST /v2/models/{m}[/versions/{v}]/infer`, are answered
here directly (decode -> dataplane -> encode, see `predict` and `v2.infer`), without FastAPI's
routing, dependency solving and response classes, which cost more than the whole device call
at batch 1. The connection itself may hand a complete small hot request to `serve_hot`
without the ASGI call (`fpgaas.service.http_direct`); the code that answers it is the same.
Every other request goes on to the FastAPI app. Either way the request is timed into
`fpgaas_request_duration_seconds` with bounded labels (a route template, a loaded model's
name or "", the status), and a client that goes away mid-request is counted in
`fpgaas_client_disconnects_total` and logged at debug level, never as a server error.

Lifetime: built by `create_app`, one per app; a pure ASGI middleware, used from the event loop.
"""

from __future__ import annotations

import logging
import time

from starlette.exceptions import HTTPException

from fpgaas.kernels.builds.errors import Forbidden, Unauthorized
from fpgaas.kernels.errors import NotReady
from fpgaas.service.api import predict
from fpgaas.service.api.asgi import (
    Answer,
    ASGIApp,
    ClientDisconnected,
    HttpCall,
    Message,
    Receive,
    Scope,
    Send,
)
from fpgaas.service.api.body_parsers import BodyParsers
from fpgaas.service.api.errors import classify, count, fpgaas_body, v2_body
from fpgaas.service.api.v2 import infer as v2_infer
from fpgaas.service.auth import bearer, inference_token_ok
from fpgaas.service.dataplane import DataPlane
from fpgaas.service.metrics import ServiceMetrics
from fpgaas.service.settings import Settings

log = logging.getLogger(__name__)

_V2_INFER_ROUTE = v2_infer.PATHS[0]
_V2_INFER_VERSION_ROUTE = v2_infer.PATHS[1]

HotRoute = tuple[str, tuple[str, str | None] | None]
"""A hot route: its template (the metrics label) and, for v2 infer, the (model, version) of the path."""
_PREDICT: HotRoute = (predict.PATH, None)


class FrontDoor:
    """ASGI middleware: the hot routes and the request metrics of every route."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: object,
        metrics: ServiceMetrics,
        parsers: BodyParsers,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self._parsers = parsers
        self._state = state  # the app's state: `dataplane` is set by the lifespan
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        # FPGAAS_INFERENCE_TOKEN: when set, the hot routes need it (checked before the body is read).
        settings: Settings | None = getattr(state, "settings", None)
        self._settings = settings if settings is not None and settings.inference_token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hot = self.hot_route(scope["path"])
        if hot is not None:
            await self.serve_hot(HttpCall(scope, receive, send), hot)
            return
        start = time.perf_counter()
        inflight = self._metrics.inflight
        inflight.inc()
        try:
            await self._framework(scope, receive, send, start)
        finally:
            inflight.dec()

    @staticmethod
    def hot_route(path: str) -> HotRoute | None:
        """The hot route a request path is for (its template, and for v2 the model and version
        named in it), or None for a path the FastAPI app serves."""
        if path == predict.PATH:
            return _PREDICT
        target = v2_infer.match(path)
        if target is None:
            return None
        return (_V2_INFER_ROUTE if target[1] is None else _V2_INFER_VERSION_ROUTE), target

    async def serve_hot(self, call: HttpCall, hot: HotRoute) -> None:
        """Answer one request on a hot route (from the ASGI app, or straight from the connection:
        `fpgaas.service.http_direct`), timed and counted."""
        start = time.perf_counter()
        inflight = self._metrics.inflight
        inflight.inc()
        try:
            await self._hot(call, hot[0], start, hot[1])
        finally:
            inflight.dec()

    async def _hot(
        self, call: HttpCall, route: str, start: float, v2_target: tuple[str, str | None] | None
    ) -> None:
        try:
            if call.scope["method"] != "POST":
                raise HTTPException(
                    405, f"{call.scope['method']} is not allowed on {route}: use POST", {"Allow": "POST"}
                )
            if self._settings is not None:
                self._authorize(call, self._settings)
            dataplane: DataPlane | None = getattr(self._state, "dataplane", None)
            if dataplane is None:
                raise NotReady("the server is still loading its models")
            if v2_target is None:
                answer = await predict.predict(call, dataplane, self._parsers, self._max_body_bytes)
            else:
                answer = await v2_infer.infer(
                    call, dataplane, self._parsers, self._max_body_bytes, *v2_target
                )
        except ClientDisconnected:
            self.client_went_away(route)
            return
        except Exception as exc:
            error = classify(exc)
            count(self._metrics, call.model_label, error)
            body = fpgaas_body(error) if v2_target is None else v2_body(error)
            headers = tuple((k.lower().encode(), v.encode()) for k, v in error.headers.items())
            answer = Answer(error.status, body, headers=headers)
        try:
            await call.answer(answer)
        except OSError:  # the connection broke while the answer was being written
            self.client_went_away(route)
            return
        self._metrics.request_done(route, call.model_label, answer.status, time.perf_counter() - start)

    @staticmethod
    def _authorize(call: HttpCall, settings: Settings) -> None:
        presented = bearer(call.header(b"authorization"))
        if not inference_token_ok(settings, presented):
            if presented is None:
                raise Unauthorized(
                    "inference needs Authorization: Bearer <FPGAAS_INFERENCE_TOKEN>", field="Authorization"
                )
            raise Forbidden("the bearer token is not the inference token", field="Authorization")

    async def _framework(self, scope: Scope, receive: Receive, send: Send, start: float) -> None:
        status = 500

        async def send_and_remember(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, send_and_remember)
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        model = str(scope.get("state", {}).get("model", ""))
        self._metrics.request_done(template, model, status, time.perf_counter() - start)

    def client_went_away(self, route: str) -> None:
        """Count a client that left a hot route's request before its answer (debug log only)."""
        self._metrics.client_disconnects.labels(route).inc()
        log.debug("%s: the client went away before its answer", route)
