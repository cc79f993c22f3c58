"""The one exception tree of the fpgaas client.

    FpgaasClientError               base of everything the client raises on purpose
    ├── ServerError                 the server answered with a non-2xx status
    │   ├── BadRequest              4xx: the request was wrong; never retried
    │   │   └── ModelNotFoundError  404: no model (or version) of that name
    │   └── ServerUnavailable       503: not ready, or a device failed; retried
    │       └── ServerOverloaded    503 with code "overloaded": carries retry_after (s)
    ├── TransportError              no answer: connection refused or reset, timeout
    │   └── RequestTimeout          the connect, write or read timeout expired
    └── InvalidResponse             the server answered 2xx with a body we cannot read

`ServerError` carries the server's `{"error": {"code", "message", "field"}}` body as
attributes. httpx exceptions are translated in one place (`translate_transport_error`),
always with `raise ... from exc`, so the original stays in `__cause__`.
"""

from __future__ import annotations

import httpx


class FpgaasClientError(Exception):
    """Base of all deliberate client errors."""


class ServerError(FpgaasClientError):
    """The server answered with a non-2xx status.

    `code` is the server's machine-readable error code (e.g. "bad_input"), `field` names the
    offending request field when the server said which one.
    """

    def __init__(self, status_code: int, code: str, message: str, field: str | None = None) -> None:
        where = f" (field {field!r})" if field else ""
        super().__init__(f"HTTP {status_code} {code}: {message}{where}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field


class BadRequest(ServerError):
    """A 4xx answer: retrying the same request cannot succeed."""


class ModelNotFoundError(BadRequest):
    """A 404 answer: no model or version of that name is loaded."""


class ServerUnavailable(ServerError):
    """A 503 answer: the server or model is not ready, or a device failed."""


class ServerOverloaded(ServerUnavailable):
    """A 503 answer because the queue is full; `retry_after` is the server's hint in seconds."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status_code, code, message, field)
        self.retry_after = retry_after


class TransportError(FpgaasClientError):
    """No HTTP answer arrived: the connection failed or was cut.

    `retryable` is True when resending cannot cost the caller another full timeout: the
    connection was refused, could not be opened in time, or was dropped.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class RequestTimeout(TransportError):
    """The connect, write or read timeout (the client's `timeout`, seconds) expired."""


class InvalidResponse(FpgaasClientError):
    """A 2xx answer whose body or headers do not follow the protocol."""


# Connection refused, reset or closed before an answer (a server restarting, a stale keep-alive).
_DROPPED = (httpx.NetworkError, httpx.RemoteProtocolError)


def translate_transport_error(exc: httpx.TransportError, method: str, url: str) -> TransportError:
    """Map an httpx transport failure onto the client tree (the caller raises it `from exc`)."""
    kind = type(exc).__name__
    detail = str(exc) or kind
    # Predictions are stateless, so a resend is safe; but a read/write/pool timeout means the
    # server (or our pool) is slow, and waiting a whole timeout again would multiply latency.
    if isinstance(exc, httpx.ConnectTimeout):
        return RequestTimeout(f"{method} {url}: could not connect in time: {detail}", retryable=True)
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(f"{method} {url}: timed out ({kind}): {detail}")
    return TransportError(f"{method} {url}: {kind}: {detail}", retryable=isinstance(exc, _DROPPED))
