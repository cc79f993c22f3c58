"""The protocol seam: what to send and how to read the answer, with no I/O.

A `WireProtocol` turns each client operation into a `Call`: an abstract `Request` plus the
function that reads a 2xx answer and the function that turns any other answer into a
`ServerError`. `Client` and `AsyncClient` only send `Call.request` (with retries) and hand
the answer to `Call.settle`, so both share every line of building and parsing.

Implementations: `FpgaasProtocol` ("fpgaas", the server's own routes). Another wire protocol
(e.g. the Open Inference Protocol) is one more class with the same methods.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import httpx
import numpy as np

from fpgaas.client._errors import (
    BadRequest,
    InvalidResponse,
    ModelNotFoundError,
    ServerError,
    ServerOverloaded,
    ServerUnavailable,
)
from fpgaas.client._types import ModelInfo, Prediction

T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """One HTTP request, relative to the client's base URL."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None


@dataclass(frozen=True)
class Call(Generic[T]):
    """A request and how to read its answer: `parse` for 2xx, `error` for anything else."""

    request: Request
    parse: Callable[[httpx.Response], T]
    error: Callable[[httpx.Response], ServerError]

    def settle(self, response: httpx.Response) -> T:
        """Return the parsed answer, or raise the `ServerError` a non-2xx answer means."""
        if response.is_success:
            return self.parse(response)
        raise self.error(response)


class WireProtocol(Protocol):
    """Builds the calls of one wire protocol. Implementations are stateless and thread-safe."""

    name: str
    default_binary_threshold: int  # bytes of float32 input above which `predict` goes binary

    def predict(
        self, batch: np.ndarray, model: str | None, version: str | None, *, binary: bool
    ) -> Call[Prediction]:
        """batch: float32 (n_samples, n_features), already validated by `as_batch`."""
        ...

    def prepare(self, model: str | None, version: str | None) -> Call[None] | None:
        """A call the client runs before `predict` (e.g. fetching metadata it needs), or None."""
        ...

    def models(self) -> Call[list[ModelInfo]]: ...

    def model(self, name: str, version: str | None) -> Call[ModelInfo]: ...

    def health(self) -> Request:
        """The liveness probe: any 2xx answer means alive."""
        ...

    def ready(self) -> Request:
        """The readiness probe: any 2xx answer means ready."""
        ...


def json_request(method: str, path: str, body: Any, params: Mapping[str, str] | None = None) -> Request:
    """A request carrying `body` as compact JSON."""
    content = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    return Request(method, path, params=dict(params or {}), headers=headers, content=content)


def json_body(response: httpx.Response) -> Any:
    """The decoded JSON body, or an `InvalidResponse` naming the route."""
    try:
        return response.json()
    except ValueError as exc:
        raise InvalidResponse(
            f"{response.request.method} {response.request.url.path}: answer is not JSON "
            f"(Content-Type {response.headers.get('content-type')!r})"
        ) from exc


def error_from_response(response: httpx.Response) -> ServerError:
    """Map a non-2xx answer onto the client tree.

    Reads fpgaas's `{"error": {"code", "message", "field"}}`, and also the shapes other
    servers and frameworks use (`{"error": "text"}`, FastAPI's `{"detail": ...}`, plain text).
    """
    status = response.status_code
    code, message, field_name = _error_fields(response)
    # A 404 without a code of its own is a route that does not exist (a wrong base URL?).
    if status == 404 and code != "not_found":
        return ModelNotFoundError(status, code, message, field_name)
    if 400 <= status < 500:
        return BadRequest(status, code, message, field_name)
    if status == 503:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if code == "overloaded" or retry_after is not None:
            return ServerOverloaded(status, code, message, field_name, retry_after=retry_after)
        return ServerUnavailable(status, code, message, field_name)
    return ServerError(status, code, message, field_name)


def _error_fields(response: httpx.Response) -> tuple[str, str, str | None]:
    fallback = response.reason_phrase.lower().replace(" ", "_") or f"http_{response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return fallback, response.text.strip() or response.reason_phrase, None
    if isinstance(body, dict):
        error = body.get("error", body.get("detail"))
        if isinstance(error, dict):
            field_name = error.get("field")
            return (
                str(error.get("code") or fallback),
                str(error.get("message") or response.reason_phrase),
                None if field_name is None else str(field_name),
            )
        if error is not None:
            return fallback, error if isinstance(error, str) else json.dumps(error), None
    return fallback, json.dumps(body), None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)
