"""The one place where exceptions become answers: classified once, rendered per protocol.

`classify(exc)` maps anything a request can raise to an `ErrorAnswer` (status, code, message,
field, headers):

    FpgaasError                  its own status_code and code (Retry-After for Overloaded)
    RequestValidationError       400 bad_input naming the field (FastAPI's parameter checks)
    starlette HTTPException      its status (404 not_found, 405 method_not_allowed + Allow)
    anything else                500 internal, with a generic message (the traceback is logged)

Two renderers: `fpgaas_body` for the fpgaas routes, `{"error": {"code", "message", "field"}}`,
and `v2_body` for the Open Inference Protocol, `{"error": "<field>: <message>"}`. The path
decides which (`renderer_for`). gRPC (`fpgaas.service.api.grpc`) renders the same answer with
`grpc_status`: a status code, the v2 message, and trailing metadata (`retry-after` and a
google.rpc RetryInfo for overload). `count` records the answer in the metrics: every error by code,
and refusals that protect the server (413, 503 overloaded / not ready) apart. The same
functions serve the hot routes (`fpgaas.service.api.front`) and FastAPI's exception handlers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from starlette.exceptions import HTTPException as StarletteHTTPException

from fpgaas.kernels.errors import FpgaasError, NotReady, Overloaded, PayloadTooLarge
from fpgaas.service.log_limit import LimitedLog
from fpgaas.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)
# Server-side refusals and faults (503 overloaded, not ready, device errors): one line per kind
# per 10 s, since a shedding server refuses thousands a second (each is counted in the metrics).
_refusals = LimitedLog(log)

# Refusals that protect the server, counted apart from other errors.
_REJECTIONS = (Overloaded, PayloadTooLarge, NotReady)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
V2_PREFIX = "/v2"


@dataclass(frozen=True)
class ErrorAnswer:
    """What a failed request is answered with, whatever the protocol."""

    status: int
    code: str
    message: str
    field: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    rejection: bool = False  # refused to protect the server (counted apart)


def classify(exc: BaseException) -> ErrorAnswer:
    """The answer to `exc`; unexpected exceptions are logged here with their traceback."""
    if isinstance(exc, FpgaasError):
        headers = {}
        if isinstance(exc, Overloaded):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return ErrorAnswer(
            exc.status_code, exc.code, exc.message, exc.field, headers, isinstance(exc, _REJECTIONS)
        )
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ())) or None
        return ErrorAnswer(400, "bad_input", str(first.get("msg", "invalid request")), where)
    if isinstance(exc, StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return ErrorAnswer(exc.status_code, code, str(exc.detail), None, dict(exc.headers or {}))
    log.error("unexpected error", exc_info=exc)
    return ErrorAnswer(500, "internal", "internal server error; the server log has the details")


def fpgaas_body(answer: ErrorAnswer) -> bytes:
    return orjson.dumps({"error": {"code": answer.code, "message": answer.message, "field": answer.field}})


def v2_body(answer: ErrorAnswer) -> bytes:
    return orjson.dumps({"error": v2_message(answer)})


def v2_message(answer: ErrorAnswer) -> str:
    """The protocol's one-string error: the offending field, when known, leads it."""
    return answer.message if answer.field is None else f"{answer.field}: {answer.message}"


# HTTP status -> gRPC status code name (grpc.StatusCode member); codes first, then statuses.
_GRPC_BY_CODE = {"device_timeout": "DEADLINE_EXCEEDED", "not_implemented": "UNIMPLEMENTED"}
_GRPC_BY_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ALREADY_EXISTS",
    413: "RESOURCE_EXHAUSTED",  # what grpc itself answers to a message over the size limit
    415: "INVALID_ARGUMENT",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True)
class GrpcStatus:
    """An error answer as gRPC sends it: `code` names a `grpc.StatusCode` member."""

    code: str
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def grpc_status(answer: ErrorAnswer) -> GrpcStatus:
    """The gRPC rendering of `answer`. Overload carries `retry-after` (seconds) and, in
    `grpc-status-details-bin`, a google.rpc.Status with a RetryInfo, which gRPC retry policies
    and google-style clients read; every error carries `fpgaas-code` (and `fpgaas-field`)."""
    code = _GRPC_BY_CODE.get(answer.code) or _GRPC_BY_STATUS.get(answer.status, "INTERNAL")
    metadata: list[tuple[str, str | bytes]] = [("fpgaas-code", answer.code)]
    if answer.field is not None:
        metadata.append(("fpgaas-field", answer.field))
    retry_after = answer.headers.get("Retry-After")
    if retry_after is not None:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(retry_after))))
        status = status_pb2.Status(
            code=grpc.StatusCode[code].value[0], message=v2_message(answer), details=[detail]
        )
        metadata.append(("retry-after", retry_after))
        metadata.append(("grpc-status-details-bin", status.SerializeToString()))
    return GrpcStatus(code, v2_message(answer), tuple(metadata))


Renderer = Callable[[ErrorAnswer], bytes]


def renderer_for(path: str) -> Renderer:
    return v2_body if path == V2_PREFIX or path.startswith(V2_PREFIX + "/") else fpgaas_body


def count(metrics: ServiceMetrics, model: str, answer: ErrorAnswer) -> None:
    """Record an error answer; `model` is a loaded model's name or "" (never a raw client string)."""
    metrics.errors.labels(model, answer.code).inc()
    if answer.rejection:
        metrics.rejected.labels(model, answer.code).inc()
    if answer.status >= 500 and answer.code != "internal":
        _refusals.warning(
            (answer.status, answer.code, model), "-> %d %s: %s", answer.status, answer.code, answer.message
        )


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    """FastAPI's handlers for the routes it serves (everything but the hot routes)."""

    async def handle(request: Request, exc: Exception) -> Response:
        answer = classify(exc)
        count(metrics, str(getattr(request.state, "model", "")), answer)
        body = renderer_for(request.url.path)(answer)
        return Response(body, answer.status, dict(answer.headers), media_type="application/json")

    for kind in (FpgaasError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)
