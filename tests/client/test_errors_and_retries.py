"""How server errors and transport failures reach the caller, and which ones are retried.

Through httpx's MockTransport, with `Client` and `AsyncClient` alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from fpgaas.client import (
    BadRequest,
    FpgaasClientError,
    ModelNotFoundError,
    RequestTimeout,
    RetryPolicy,
    ServerError,
    ServerOverloaded,
    ServerUnavailable,
    TransportError,
)

MakeClient = Callable[..., Any]  # the `make_client` fixture of conftest.py
X = np.ones((2, 27), dtype=np.float32)


def error(status: int, code: str, message: str, field: str | None = None, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": message, "field": field}}, headers=headers
    )


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"model": "m", "version": "1", "device": "d", "outputs": [[0.5], [0.5]]})


class Script:
    """A fake server answering from a script of responses (or exceptions), counting calls."""

    def __init__(self, *steps: Callable[[httpx.Request], httpx.Response]) -> None:
        self.steps = list(steps)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        return step(request)


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def overloaded(request: httpx.Request) -> httpx.Response:
    return error(503, "overloaded", "queue full", **{"Retry-After": "0"})


def test_a_400_becomes_bad_request_naming_the_field_and_is_not_retried(make_client: MakeClient) -> None:
    server = Script(lambda r: error(400, "bad_input", "expected 27 values per sample, got 5", "inputs"))
    with pytest.raises(BadRequest) as caught:
        make_client(server, retries=3).predict(np.ones((2, 5)))
    err = caught.value
    assert (err.status_code, err.code, err.field) == (400, "bad_input", "inputs")
    assert "expected 27 values" in err.message and "'inputs'" in str(err)
    assert server.calls == 1


def test_a_404_becomes_model_not_found(make_client: MakeClient) -> None:
    server = Script(lambda r: error(404, "model_not_found", "no model 'nope'", "model"))
    with pytest.raises(ModelNotFoundError) as caught:
        make_client(server).predict(X, model="nope")
    assert isinstance(caught.value, BadRequest) and caught.value.field == "model"
    assert server.calls == 1


@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        (
            lambda r: httpx.Response(422, json={"detail": [{"loc": ["body"], "msg": "bad"}]}),
            BadRequest,
            "unprocessable_entity",
        ),
        (lambda r: httpx.Response(400, json={"error": "plain text error"}), BadRequest, "bad_request"),
        (lambda r: httpx.Response(502, text="Bad Gateway"), ServerError, "bad_gateway"),
        (lambda r: error(500, "internal", "boom"), ServerError, "internal"),
    ],
)
def test_other_error_bodies_are_still_read(
    make_client: MakeClient,
    answer: Callable[[httpx.Request], httpx.Response],
    kind: type[ServerError],
    code: str,
) -> None:
    server = Script(answer)
    with pytest.raises(kind) as caught:
        make_client(server, retries=2).predict(X)
    assert caught.value.code == code
    assert server.calls == 1  # neither 4xx nor a 500/502 is resent


def test_503_overloaded_is_retried_until_it_clears(make_client: MakeClient) -> None:
    server = Script(overloaded, overloaded, ok)
    out = make_client(server, retries=3).predict(X)
    assert server.calls == 3
    assert out.shape == (2, 1)


def test_503_not_ready_is_retried_too(make_client: MakeClient) -> None:
    server = Script(lambda r: error(503, "not_ready", "loading"), ok)
    make_client(server, retries=1).predict(X)
    assert server.calls == 2


def test_when_retries_run_out_the_last_503_is_raised_with_its_retry_after(make_client: MakeClient) -> None:
    server = Script(overloaded)
    with pytest.raises(ServerOverloaded) as caught:
        make_client(server, retries=2).predict(X)
    assert server.calls == 3  # the first attempt and two resends
    assert caught.value.retry_after == 0.0
    assert isinstance(caught.value, ServerUnavailable)


def test_retry_after_is_honoured(make_client: MakeClient) -> None:
    server = Script(lambda r: error(503, "overloaded", "queue full", **{"Retry-After": "0.3"}), ok)
    start = time.perf_counter()
    make_client(server, retries=1).predict(X)
    assert time.perf_counter() - start >= 0.3


def test_retry_after_is_capped_by_max_backoff(make_client: MakeClient) -> None:
    server = Script(lambda r: error(503, "overloaded", "queue full", **{"Retry-After": "3600"}), ok)
    start = time.perf_counter()
    make_client(server, retries=1, max_backoff_s=0.05).predict(X)
    assert time.perf_counter() - start < 1.0
    assert server.calls == 2


def test_refused_connections_are_retried_then_raised_as_transport_error(make_client: MakeClient) -> None:
    server = Script(refuse)
    with pytest.raises(TransportError) as caught:
        make_client(server, retries=2).predict(X)
    assert server.calls == 3
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert "Connection refused" in str(caught.value)


def test_a_refused_connection_then_an_answer_succeeds(make_client: MakeClient) -> None:
    server = Script(refuse, ok)
    assert make_client(server, retries=1).predict(X).shape == (2, 1)


def test_read_timeouts_raise_request_timeout_without_resending(make_client: MakeClient) -> None:
    server = Script(read_timeout)
    with pytest.raises(RequestTimeout) as caught:
        make_client(server, retries=3).predict(X)
    assert server.calls == 1  # a resend would cost the caller another whole timeout
    assert isinstance(caught.value, TransportError)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


def test_retries_zero_sends_once(make_client: MakeClient) -> None:
    server = Script(overloaded)
    with pytest.raises(ServerOverloaded):
        make_client(server, retries=0).predict(X)
    assert server.calls == 1


def test_models_and_model_share_the_retry_loop(make_client: MakeClient) -> None:
    server = Script(overloaded, lambda r: httpx.Response(200, json=[{"name": "m", "version": "1"}]))
    assert [m.name for m in make_client(server, retries=1).models()] == ["m"]
    assert server.calls == 2


def test_every_error_derives_from_one_base() -> None:
    for kind in (BadRequest, ModelNotFoundError, ServerOverloaded, ServerUnavailable, RequestTimeout):
        assert issubclass(kind, FpgaasClientError)


@pytest.mark.parametrize("attempt", [0, 1, 2, 5])
def test_backoff_doubles_per_attempt_with_jitter_within_the_cap(attempt: int) -> None:
    policy = RetryPolicy(retries=10, backoff_s=0.1, max_backoff_s=1.0)
    refused = TransportError("refused", retryable=True)
    ceiling = min(1.0, 0.1 * 2**attempt)
    delays = [policy.delay(attempt, refused) for _ in range(200)]
    assert all(d is not None and ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1  # jittered


def test_policy_gives_up_after_its_retries_and_on_errors_that_would_repeat() -> None:
    policy = RetryPolicy(retries=2, backoff_s=0.1)
    busy = ServerOverloaded(503, "overloaded", "full", retry_after=0.5)
    assert policy.delay(2, busy) is None
    assert policy.delay(0, BadRequest(400, "bad_input", "x")) is None
    assert policy.delay(0, ServerError(500, "internal", "x")) is None
    assert policy.delay(0, RequestTimeout("slow")) is None
    delay = policy.delay(0, busy)
    assert delay is not None and 0.5 <= delay <= 0.6


@pytest.mark.parametrize(
    "settings",
    [{"retries": -1}, {"backoff_s": -0.1}, {"timeout": 0}, {"binary_threshold": -1}, {"protocol": "grpc"}],
)
def test_nonsense_settings_are_refused(make_client: MakeClient, settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_client(ok, **settings)
