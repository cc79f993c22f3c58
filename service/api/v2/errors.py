"""Errors in the Open Inference Protocol's form, `{"error": "<message>"}`, for `/v2` routes only.

`V2Route` is the route class of the v2 router: it answers the `FpgaasError`s a v2 handler
raises with the error object and the error's own status (404 unknown model or version, 400
bad shape/datatype/size, 413 body too large, 503 overloaded with `Retry-After`), leaving the
app-wide handlers of `/predict` untouched. Anything unexpected is logged and answered 500.
Errors are counted in the app's `ServiceMetrics` (`app.state.metrics`) as `/predict`'s are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from fpgaas.kernels.errors import FpgaasError, NotReady, Overloaded, PayloadTooLarge
from fpgaas.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

# Refusals that protect the server, counted apart from other errors (as service.api.errors does).
_REJECTIONS = (Overloaded, PayloadTooLarge, NotReady)


def error_response(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The protocol's error object with `status_code`."""
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def from_fpgaas_error(exc: FpgaasError) -> JSONResponse:
    """Translate a domain error; the offending field, when known, leads the message."""
    message = exc.message if exc.field is None else f"{exc.field}: {exc.message}"
    headers = None
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return error_response(exc.status_code, message, headers)


class V2Route(APIRoute):
    """An APIRoute whose handler errors come back as the protocol's error object."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except FpgaasError as exc:
                _count(request, exc.code, isinstance(exc, _REJECTIONS))
                if exc.status_code >= 500:
                    log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc)
                return from_fpgaas_error(exc)
            except HTTPException as exc:
                return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                _count(request, "internal", False)
                return error_response(500, "internal server error; the server log has the details")

        return handle


def _count(request: Request, code: str, rejected: bool) -> None:
    metrics: ServiceMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is None:
        return
    model = str(getattr(request.state, "model", ""))
    metrics.errors.labels(model, code).inc()
    if rejected:
        metrics.rejected.labels(model, code).inc()
