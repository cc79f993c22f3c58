"""The SDK's v2 mode on the wire: what `Client(url, protocol="v2")` sends and how it reads any
Open Inference Protocol server's answers (Triton's included: other datatypes, JSON outputs,
no fpgaas parameters). The transport seam stands in for the network; the live fpgaas server
is exercised in tests/service/v2/test_v2_sdk.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from fpgaas.client import BadRequest, ModelNotFoundError, ServerOverloaded

HEADER_LENGTH = "Inference-Header-Content-Length"

# A model with two inputs (3 and 2x2 values per sample) and two outputs, as a server describes it.
METADATA = {
    "name": "two",
    "versions": ["1", "3"],
    "platform": "onnx_onnxv1",
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 2, 2]},
    ],
    "outputs": [
        {"name": "p", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "q", "datatype": "FP64", "shape": [-1, 2]},
    ],
}


class FakeV2Server:
    """Answers like a v2 server: metadata, and an infer whose outputs are computed from the
    inputs it decoded (p = sum of a, q = first two values of b), so a test sees round trips."""

    def __init__(self, *, binary_answer: bool = True) -> None:
        self.binary_answer = binary_answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path in ("/v2/models/two", "/v2/models/two/versions/3"):
            return httpx.Response(200, json=METADATA)
        if path == "/v2/models/two/infer":
            return self.infer(request)
        if path == "/v2/repository/index":
            return httpx.Response(200, json=[{"name": "two", "version": "3", "state": "READY"}])
        if path == "/v2/health/ready":
            return httpx.Response(400)
        return httpx.Response(404, json={"error": f"no model at {path}"})

    def infer(self, request: httpx.Request) -> httpx.Response:
        length = int(request.headers.get(HEADER_LENGTH, len(request.content)))
        header = json.loads(request.content[:length])
        tail, tensors = request.content[length:], {}
        for item in header["inputs"]:
            size = item.get("parameters", {}).get("binary_data_size")
            if size is None:
                values = np.asarray(item["data"], dtype=np.float32)
            else:
                values, tail = np.frombuffer(tail[:size], "<f4"), tail[size:]
            tensors[item["name"]] = values.reshape(item["shape"])
        n = tensors["a"].shape[0]
        p = tensors["a"].sum(axis=1, keepdims=True)
        q = tensors["b"].reshape(n, 4)[:, :2].astype(np.float64)
        if not self.binary_answer:
            outputs = [
                {"name": "q", "datatype": "FP64", "shape": [n, 2], "data": q.ravel().tolist()},
                {"name": "p", "datatype": "FP32", "shape": [n, 1], "data": p.ravel().tolist()},
            ]
            return httpx.Response(200, json={"model_name": "two", "model_version": "3", "outputs": outputs})
        blobs = [q.astype("<f8").tobytes(), p.astype("<f4").tobytes()]
        outputs = [
            {
                "name": "q",
                "datatype": "FP64",
                "shape": [n, 2],
                "parameters": {"binary_data_size": len(blobs[0])},
            },
            {
                "name": "p",
                "datatype": "FP32",
                "shape": [n, 1],
                "parameters": {"binary_data_size": len(blobs[1])},
            },
        ]
        text = json.dumps({"model_name": "two", "model_version": "3", "outputs": outputs}).encode()
        return httpx.Response(200, content=text + b"".join(blobs), headers={HEADER_LENGTH: str(len(text))})


def expected(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x[:, :3].sum(axis=1, keepdims=True), x[:, 3:5]], axis=1)


@pytest.mark.parametrize("binary", [True, False])
def test_predict_fetches_metadata_once_and_round_trips(make_client: Any, binary: bool) -> None:
    server = FakeV2Server(binary_answer=binary)
    client = make_client(server, protocol="v2")
    x = np.arange(14, dtype=np.float32).reshape(2, 7)
    for _ in range(2):
        prediction = client.predict_result(x, model="two", binary=binary)
        np.testing.assert_array_equal(prediction.outputs, expected(x))
        assert prediction.outputs.dtype == np.float32
        assert (prediction.model, prediction.version) == ("two", "3")
    assert [r.url.path for r in server.requests] == [
        "/v2/models/two",
        "/v2/models/two/infer",
        "/v2/models/two/infer",
    ]
    sent = server.requests[1]
    length = int(sent.headers.get(HEADER_LENGTH, len(sent.content)))
    header = json.loads(sent.content[:length])
    assert [(i["name"], i["shape"], i["datatype"]) for i in header["inputs"]] == [
        ("a", [2, 3], "FP32"),
        ("b", [2, 2, 2], "FP32"),
    ]
    assert header["parameters"]["binary_data_output"] is binary
    assert (HEADER_LENGTH in sent.headers) is binary


def test_arrays_go_binary_by_default(make_client: Any) -> None:
    server = FakeV2Server()
    client = make_client(server, protocol="v2")
    client.predict(np.ones((1, 7), dtype=np.float32), model="two")
    assert HEADER_LENGTH in server.requests[-1].headers


def test_a_named_version_uses_the_versioned_routes(make_client: Any) -> None:
    server = FakeV2Server()
    client = make_client(server, protocol="v2")
    with pytest.raises(ModelNotFoundError):  # the fake has no versioned infer route
        client.predict(np.ones((1, 7)), model="two", version="3")
    assert [r.url.path for r in server.requests][:2] == [
        "/v2/models/two/versions/3",
        "/v2/models/two/versions/3/infer",
    ]


def test_model_metadata_models_and_probes(make_client: Any) -> None:
    client = make_client(FakeV2Server(), protocol="v2")
    info = client.model("two")
    assert (info.name, info.version, info.versions) == ("two", "3", ("1", "3"))
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [
        ("a", (3,), "float32"),
        ("b", (2, 2), "float32"),
    ]
    assert info.n_inputs == 7 and info.n_outputs == 3 and info.extra["platform"] == "onnx_onnxv1"
    assert [(m.name, m.version) for m in client.models()] == [("two", "3")]
    assert client.ready() is False  # a v2 server says "not ready" with a 4xx


def test_errors_and_width_mismatches(make_client: Any) -> None:
    client = make_client(FakeV2Server(), protocol="v2")
    with pytest.raises(ModelNotFoundError, match="no model"):
        client.predict(np.ones((1, 7)), model="nope")
    with pytest.raises(ValueError, match="7 values per sample"):
        client.predict(np.ones((1, 6)), model="two")
    with pytest.raises(ValueError, match="model="):
        client.predict(np.ones((1, 7)))


def test_v2_error_bodies_map_onto_the_client_tree(make_client: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=METADATA)
        if request.headers.get("x-case") == "busy":
            return httpx.Response(503, json={"error": "queue full"}, headers={"Retry-After": "0"})
        return httpx.Response(400, json={"error": "inputs[0].shape: bad"})

    client = make_client(handler, protocol="v2", retries=0)
    with pytest.raises(BadRequest, match=r"inputs\[0\].shape: bad"):
        client.predict(np.ones((1, 7)), model="two")
    busy = make_client(handler, protocol="v2", retries=0, headers={"x-case": "busy"})
    with pytest.raises(ServerOverloaded):
        busy.predict(np.ones((1, 7)), model="two")
