"""What the client sends and how it reads answers, through httpx's MockTransport.

Every test runs twice, through `Client` and through `AsyncClient`: they share one protocol.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from fpgaas.client import BadRequest, InvalidResponse, ModelInfo, ModelNotFoundError, Prediction, TensorInfo

MakeClient = Callable[..., Any]  # the `make_client` fixture of conftest.py
RNG = np.random.default_rng(7)


def echo_json(request: httpx.Request) -> httpx.Response:
    """A server whose model doubles its inputs and sums each row (2 outputs), JSON only."""
    body = json.loads(request.content)
    x = np.asarray(body["inputs"], dtype=np.float32)
    y = np.stack([x[:, 0] * 2, x.sum(axis=1)], axis=1)
    return httpx.Response(
        200,
        json={
            "model": body.get("model", "muon-pt"),
            "version": "3",
            "device": "emulated-0",
            "outputs": y.tolist(),
        },
    )


def echo_binary(request: httpx.Request) -> httpx.Response:
    x = np.frombuffer(request.content, dtype="<f4").reshape(-1, 27)
    y = np.ascontiguousarray(x[:, :1] * 2, dtype="<f4")
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Model": request.url.params.get("model", "muon-pt"),
        "X-Model-Version": "3",
        "X-Device": "emulated-0",
        "X-Output-Shape": f"{y.shape[0]},{y.shape[1]}",
    }
    return httpx.Response(200, content=y.tobytes(), headers=headers)


def test_small_batches_go_as_json_rows_that_round_trip_float32_exactly(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    x = RNG.normal(size=(3, 27)).astype(np.float32)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return echo_json(request)

    client = make_client(handler)
    result = client.predict_result(x, model="muon-pt", version="3")

    (request,) = seen
    assert request.method == "POST" and request.url.path == "/predict"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert body["model"] == "muon-pt" and body["version"] == "3"
    np.testing.assert_array_equal(np.asarray(body["inputs"], dtype=np.float32), x)
    assert isinstance(result, Prediction)
    assert (result.model, result.version, result.device) == ("muon-pt", "3", "emulated-0")
    assert result.outputs.dtype == np.float32 and result.outputs.shape == (3, 2)
    np.testing.assert_array_equal(result.outputs[:, 0], x[:, 0] * 2)


def test_json_request_leaves_out_model_and_version_when_not_given(make_client: MakeClient) -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return echo_json(request)

    make_client(handler).predict([[1.0, 2.0]])
    assert set(bodies[0]) == {"inputs"}


def test_large_batches_go_as_raw_little_endian_float32(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    x = RNG.normal(size=(1024, 27))  # float64 in: the client converts

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return echo_binary(request)

    result = make_client(handler).predict_result(x, model="muon-pt", version="3")

    (request,) = seen
    assert request.headers["content-type"] == "application/octet-stream"
    assert dict(request.url.params) == {"model": "muon-pt", "version": "3"}
    assert request.content == x.astype("<f4").tobytes()
    assert result.outputs.shape == (1024, 1) and result.outputs.dtype == np.float32
    assert result.outputs.flags.writeable
    np.testing.assert_array_equal(result.outputs[:, 0], x.astype(np.float32)[:, 0] * 2)
    assert (result.model, result.version, result.device) == ("muon-pt", "3", "emulated-0")


@pytest.mark.parametrize(("threshold", "rows", "binary"), [(0, 1, True), (108, 1, False), (108, 2, True)])
def test_binary_threshold_counts_float32_input_bytes(
    make_client: MakeClient, threshold: int, rows: int, binary: bool
) -> None:
    types: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        types.append(request.headers["content-type"])
        return echo_binary(request) if binary else echo_json(request)

    make_client(handler, binary_threshold=threshold).predict(np.ones((rows, 27)))
    assert types == ["application/octet-stream" if binary else "application/json"]


def test_binary_can_be_forced_either_way_per_call(make_client: MakeClient) -> None:
    types: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        types.append(request.headers["content-type"])
        if request.headers["content-type"] == "application/json":
            return echo_json(request)
        return echo_binary(request)

    client = make_client(handler)
    client.predict(np.ones((1, 27)), binary=True)
    client.predict(np.ones((4096, 27)), binary=False)
    assert types == ["application/octet-stream", "application/json"]


def test_a_1d_array_is_one_sample(make_client: MakeClient) -> None:
    out = make_client(echo_json).predict(np.arange(27, dtype=np.float64))
    assert out.shape == (1, 2)
    assert out[0, 1] == sum(range(27))


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([[1.0, 2.0], [3.0]], "rectangular"),
        ([["a", "b"]], "numbers"),
        (np.zeros((2, 3, 4)), "1-D (one sample) or 2-D"),
        (np.zeros((0, 27)), "at least one sample"),
        ([], "at least one sample"),
        (3.0, "1-D (one sample) or 2-D"),
        ([[1.0, float("nan")]], "inputs[0][1]"),
        ([[1.0], [1e39]], "fit in float32"),
    ],
)
def test_malformed_inputs_raise_value_error_before_anything_is_sent(
    make_client: MakeClient, data: Any, says: str
) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return echo_json(request)

    with pytest.raises(ValueError, match=re.escape(says)):
        make_client(handler).predict(data)
    assert sent == []


def binary_answer(content: bytes, shape: str) -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream", "X-Output-Shape": shape}
    return httpx.Response(200, content=content, headers=headers)


@pytest.mark.parametrize(
    "answer",
    [
        lambda: binary_answer(b"\0" * 8, "2,1"),  # 2 rows for 3 samples
        lambda: binary_answer(b"\0" * 10, "3,1"),  # byte count does not match the shape
        lambda: binary_answer(b"\0" * 12, ""),  # no shape
        lambda: binary_answer(b"\0" * 12, "3;1"),
        lambda: httpx.Response(200, json={"outputs": [[1.0], [2.0]]}),  # 2 rows for 3 samples
        lambda: httpx.Response(200, json={"outputs": [[1.0], [2.0, 3.0], [4.0]]}),
        lambda: httpx.Response(200, json={"result": []}),
        lambda: httpx.Response(200, text="<html>proxy page</html>"),
    ],
)
def test_answers_that_do_not_pair_one_row_per_sample_are_refused(
    make_client: MakeClient, answer: Callable[[], httpx.Response]
) -> None:
    with pytest.raises(InvalidResponse):
        make_client(lambda request: answer()).predict(np.ones((3, 27)))


def test_models_are_listed_as_value_objects(make_client: MakeClient) -> None:
    listing = {
        "models": [
            {
                "name": "muon-pt",
                "version": "3",
                "versions": ["2", "3"],
                "inputs": [{"name": "x", "shape": [27], "dtype": "float32", "fixed_point": "ap_fixed<16,6>"}],
                "outputs": [{"name": "y", "shape": [1], "dtype": "float32"}],
                "device": "emulated-0",
            }
        ]
    }
    client = make_client(lambda request: httpx.Response(200, json=listing))
    (info,) = client.models()
    assert info == ModelInfo(
        name="muon-pt",
        version="3",
        versions=("2", "3"),
        inputs=(TensorInfo("x", (27,), "float32", "ap_fixed<16,6>"),),
        outputs=(TensorInfo("y", (1,), "float32"),),
        extra={"device": "emulated-0"},
    )
    assert (info.n_inputs, info.n_outputs) == (27, 1)


def test_one_model_is_fetched_by_its_quoted_name_and_optional_version(make_client: MakeClient) -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"name": "muon pt/2", "version": "1", "inputs": [27], "outputs": [1]})

    client = make_client(handler)
    info = client.model("muon pt/2")
    client.model("muon pt/2", version="1")
    assert paths == ["/models/muon%20pt%2F2", "/models/muon%20pt%2F2?version=1"]
    assert info.inputs == (TensorInfo("input", (27,), "float32"),)


def test_a_404_for_a_route_is_not_a_missing_model(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "not_found", "message": "Not Found", "field": None}}
        return httpx.Response(404, json=body)

    with pytest.raises(BadRequest) as caught:
        make_client(handler).models()
    assert not isinstance(caught.value, ModelNotFoundError)
    assert caught.value.status_code == 404


def test_every_request_carries_the_configured_headers(make_client: MakeClient) -> None:
    auth: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth.append(request.headers.get("authorization"))
        return echo_json(request) if request.method == "POST" else httpx.Response(200, json=[])

    client = make_client(handler, headers={"Authorization": "Bearer t0ken"})
    client.predict([1.0])
    client.models()
    client.health()
    assert auth == ["Bearer t0ken"] * 3


@pytest.mark.parametrize(("status", "alive"), [(200, True), (204, True), (503, False), (500, False)])
def test_probes_are_true_only_for_2xx(make_client: MakeClient, status: int, alive: bool) -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(status, headers={"Retry-After": "0"})

    client = make_client(handler, retries=3)
    assert client.health() is alive
    assert client.ready() is alive
    assert paths == ["/healthz", "/readyz"]  # probes report the state now: no retries


def test_probes_are_false_when_the_server_cannot_be_reached(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = make_client(handler)
    assert client.health() is False
    assert client.ready() is False
