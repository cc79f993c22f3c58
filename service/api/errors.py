"""The one place where exceptions become HTTP answers, all shaped
`{"error": {"code", "message", "field"}}`.

`FpgaasError` -> its `status_code` (plus `Retry-After` for `Overloaded`); FastAPI's request
validation -> 400 naming the field; routing errors (404/405) keep their status; anything else
-> 500 with a generic message and the traceback in the log.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fpgaas.kernels.errors import FpgaasError, NotReady, Overloaded, PayloadTooLarge
from fpgaas.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

# Refusals that protect the server, counted apart from other errors.
_REJECTIONS = (Overloaded, PayloadTooLarge, NotReady)


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register every exception handler of the app; errors are counted in `app.state.metrics`."""

    def model_of(request: Request) -> str:
        return str(getattr(request.state, "model", ""))

    def metrics_of(request: Request) -> ServiceMetrics:
        metrics: ServiceMetrics = request.app.state.metrics
        return metrics

    async def on_fpgaas_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FpgaasError)
        model = model_of(request)
        metrics = metrics_of(request)
        metrics.errors.labels(model, exc.code).inc()
        if isinstance(exc, _REJECTIONS):
            metrics.rejected.labels(model, exc.code).inc()
        headers = None
        if isinstance(exc, Overloaded):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
        if exc.status_code >= 500:
            log.warning(
                "%s %s -> %d %s: %s", request.method, request.url.path, exc.status_code, exc.code, exc
            )
        return error_response(exc.status_code, exc.code, exc.message, exc.field, headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(part) for part in first.get("loc", ())) or None
        metrics_of(request).errors.labels(model_of(request), "bad_input").inc()
        return error_response(400, "bad_input", str(first.get("msg", "invalid request")), field)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), None, dict(exc.headers or {}))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        metrics_of(request).errors.labels(model_of(request), "internal").inc()
        return error_response(500, "internal", "internal server error; the server log has the details")

    app.add_exception_handler(FpgaasError, on_fpgaas_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
