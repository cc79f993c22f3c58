"""The Open Inference Protocol on the wire: every response body fpgaas sends under `/v2` has the
spec's JSON shape (checked with JSON Schemas written from the spec), datatypes convert as
documented, the binary tensor data extension splits and joins bodies exactly, and errors are
`{"error": "..."}` with Triton's status codes.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import v2_schemas as schemas
from v2_live import LiveServer

from fpgaas.service.settings import Settings

MODEL = "tiny"
HEADER_LENGTH = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def tensors(http: httpx.Client) -> tuple[str, list[int], str]:
    """(input name, per-sample input shape, output name)."""
    meta = http.get(f"/v2/models/{MODEL}").json()
    return meta["inputs"][0]["name"], meta["inputs"][0]["shape"][1:], meta["outputs"][0]["name"]


def valid(body: Any, schema: dict[str, Any]) -> Any:
    jsonschema.validate(body, schema)
    return body


def error_of(response: httpx.Response, status: int) -> str:
    """The message of a protocol error answer, after checking its status and shape."""
    assert response.status_code == status, response.text
    return str(valid(response.json(), schemas.ERROR)["error"])


def split(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    """(JSON header, binary tail) of an inference answer, the header checked against the spec."""
    assert response.status_code == 200, response.text
    length = int(response.headers.get(HEADER_LENGTH, len(response.content)))
    return valid(json.loads(response.content[:length]), schemas.INFERENCE_RESPONSE), response.content[length:]


def rows(n: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 4.0, size=(n, width)).astype(np.float32)


def binary_request(inputs: list[tuple[dict[str, Any], bytes]], **extra: Any) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [spec for spec, _ in inputs], **extra}).encode()
    headers = {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
    return header + b"".join(blob for _, blob in inputs), headers


def test_metadata_bodies_follow_the_spec(http: httpx.Client) -> None:
    valid(http.get("/v2").json(), schemas.SERVER_METADATA)
    for path in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"):
        valid(http.get(path).json(), schemas.MODEL_METADATA)
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
        answer = http.get(path)
        assert answer.status_code == 200 and answer.content == b""
    index = http.post("/v2/repository/index").json()
    assert {(m["name"], m["version"], m["state"]) for m in index} == {
        (MODEL, "1", "READY"),
        (MODEL, "2", "READY"),
    }


def test_json_inference_nested_or_flat_with_id_and_parameters(
    http: httpx.Client, tensors: tuple[str, list[int], str], reference: Callable[[np.ndarray], np.ndarray]
) -> None:
    name, shape, out = tensors
    x = rows(4, shape[0], seed=5)
    for data in (x.tolist(), x.ravel().tolist()):
        body = {
            "id": "req-1",
            "parameters": {"priority": 1, "note": "any scalar parameter is accepted"},
            "inputs": [{"name": name, "shape": [4, *shape], "datatype": "FP32", "data": data}],
            "outputs": [{"name": out}],
        }
        header, tail = split(http.post(f"/v2/models/{MODEL}/infer", json=body))
        assert tail == b""
        assert header["id"] == "req-1" and header["model_name"] == MODEL
        (output,) = header["outputs"]
        assert output["name"] == out and output["datatype"] == "FP32" and output["shape"][0] == 4
        y = np.asarray(output["data"], dtype=np.float32).reshape(4, -1)
        np.testing.assert_array_equal(y, reference(x))


def test_without_an_id_the_answer_has_none(http: httpx.Client, tensors: tuple[str, list[int], str]) -> None:
    name, shape, _ = tensors
    body = {"inputs": [{"name": name, "shape": [1, *shape], "datatype": "FP32", "data": [0.5] * shape[0]}]}
    header, _ = split(http.post(f"/v2/models/{MODEL}/infer", json=body))
    assert "id" not in header


@pytest.mark.parametrize(
    "datatype, values",
    [
        ("INT32", [[-3, 0, 7, 100, -100, 2**20][i % 6] for i in range(12)]),
        ("INT8", [(-128, 127, 0, 5)[i % 4] for i in range(12)]),
        ("UINT16", [(0, 65535, 9)[i % 3] for i in range(12)]),
        ("INT64", [(2**40, -(2**33), 1)[i % 3] for i in range(12)]),
        ("FP64", [(0.1, -2.5, 1e-3, 123.456)[i % 4] for i in range(12)]),
        ("FP16", [(0.1, -2.5, 1e-3, 123.456)[i % 4] for i in range(12)]),
    ],
)
def test_numeric_datatypes_convert_to_fp32_in_json_and_binary(
    http: httpx.Client,
    tensors: tuple[str, list[int], str],
    reference: Callable[[np.ndarray], np.ndarray],
    datatype: str,
    values: list[float],
) -> None:
    name, shape, _ = tensors
    width = shape[0]
    flat = (values * width)[: 2 * width]
    wire = {"INT32": "<i4", "INT8": "i1", "UINT16": "<u2", "INT64": "<i8", "FP64": "<f8", "FP16": "<f2"}[
        datatype
    ]
    typed = np.asarray(flat, dtype=wire).reshape(2, width)
    # What the kernel must see: the value in its own datatype, rounded to the nearest float32.
    expected = reference(typed.astype(np.float32))
    spec = {"name": name, "shape": [2, width], "datatype": datatype}
    header, _ = split(
        http.post(f"/v2/models/{MODEL}/infer", json={"inputs": [{**spec, "data": typed.tolist()}]})
    )
    np.testing.assert_array_equal(
        np.asarray(header["outputs"][0]["data"], np.float32).reshape(2, -1), expected
    )
    blob = typed.tobytes()
    body, headers = binary_request([({**spec, "parameters": {"binary_data_size": len(blob)}}, blob)])
    header, _ = split(http.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers))
    np.testing.assert_array_equal(
        np.asarray(header["outputs"][0]["data"], np.float32).reshape(2, -1), expected
    )


def test_bf16_travels_as_binary(
    http: httpx.Client, tensors: tuple[str, list[int], str], reference: Callable[[np.ndarray], np.ndarray]
) -> None:
    name, shape, _ = tensors
    x = rows(3, shape[0], seed=8)
    top_halves = x.view("<u4") >> 16  # truncation to bfloat16, exactly representable
    exact = (top_halves << 16).view(np.float32)
    blob = top_halves.astype("<u2").tobytes()
    spec = {
        "name": name,
        "shape": [3, *shape],
        "datatype": "BF16",
        "parameters": {"binary_data_size": len(blob)},
    }
    body, headers = binary_request([(spec, blob)], parameters={"binary_data_output": True})
    header, tail = split(http.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers))
    size = header["outputs"][0]["parameters"]["binary_data_size"]
    assert size == len(tail)
    np.testing.assert_array_equal(np.frombuffer(tail, "<f4").reshape(3, -1), reference(exact))


def test_binary_output_per_output_overrides_the_request_default(
    http: httpx.Client, tensors: tuple[str, list[int], str], reference: Callable[[np.ndarray], np.ndarray]
) -> None:
    name, shape, out = tensors
    x = rows(2, shape[0], seed=3)
    spec = {"name": name, "shape": [2, *shape], "datatype": "FP32", "data": x.ravel().tolist()}
    body = {"inputs": [spec], "parameters": {"binary_data_output": True}}
    answer = http.post(f"/v2/models/{MODEL}/infer", json=body)
    assert answer.headers["content-type"] == "application/octet-stream"
    header, tail = split(answer)
    np.testing.assert_array_equal(np.frombuffer(tail, "<f4").reshape(2, -1), reference(x))
    body["outputs"] = [{"name": out, "parameters": {"binary_data": False}}]
    answer = http.post(f"/v2/models/{MODEL}/infer", json=body)
    assert (
        answer.headers["content-type"].startswith("application/json") and HEADER_LENGTH not in answer.headers
    )
    header, tail = split(answer)
    assert tail == b"" and "parameters" not in header["outputs"][0]


BAD_BODIES = {
    "malformed JSON": (b"{not json", {}),
    "no inputs": (b'{"inputs": []}', {}),
    "shape not integers": (
        b'{"inputs": [{"name": "x", "shape": [1.5], "datatype": "FP32", "data": [1]}]}',
        {},
    ),
    "parameter not a scalar": (
        b'{"parameters": {"a": [1]}, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
        {},
    ),
    "header length past the body": (b'{"inputs": []}', {HEADER_LENGTH: "999"}),
    "header length not a number": (b'{"inputs": []}', {HEADER_LENGTH: "ten"}),
    "not gzip data": (b'{"inputs": []}', {"Content-Encoding": "gzip"}),
    "truncated gzip data": (gzip.compress(b'{"inputs": []}')[:-12], {"Content-Encoding": "gzip"}),
}


def test_an_unknown_content_encoding_is_415(http: httpx.Client) -> None:
    response = http.post(
        f"/v2/models/{MODEL}/infer", content=b'{"inputs": []}', headers={"Content-Encoding": "br"}
    )
    assert "Content-Encoding" in error_of(response, 415)


@pytest.mark.parametrize("body, headers", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_malformed_requests_are_400(http: httpx.Client, body: bytes, headers: dict[str, str]) -> None:
    error_of(http.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers), 400)


def test_a_body_inflating_past_the_limit_is_413(http: httpx.Client) -> None:
    bomb = gzip.compress(b" " * (17 * 1024 * 1024))  # 17 MiB of spaces in ~17 KiB; the limit is 16 MiB
    error_of(http.post(f"/v2/models/{MODEL}/infer", content=bomb, headers={"Content-Encoding": "gzip"}), 413)


def test_bad_tensors_are_400_naming_the_problem(
    http: httpx.Client, tensors: tuple[str, list[int], str]
) -> None:
    name, shape, _ = tensors
    width = shape[0]

    def post_json(spec: dict[str, Any], **extra: Any) -> str:
        body = {"inputs": [{"name": name, "shape": [1, width], "datatype": "FP32", **spec}], **extra}
        return error_of(http.post(f"/v2/models/{MODEL}/infer", json=body), 400)

    assert "shape" in post_json({"shape": [1, width + 1], "data": [1.0] * (width + 1)})
    assert "needs" in post_json({"shape": [2, width], "data": [1.0] * width})
    assert "BOOL" in post_json({"datatype": "BOOL", "data": [True] * width})
    assert "FP8" in post_json({"datatype": "FP8", "data": [1] * width})
    assert "[-128, 127]" in post_json({"datatype": "INT8", "data": [300] * width})
    assert "integers" in post_json({"datatype": "INT32", "data": [1.5] * width})
    assert "numbers" in post_json({"data": ["a"] * width})
    assert "finite" in post_json({"datatype": "FP64", "data": [1e300] * width})
    assert "neither" in post_json({})
    assert "shared memory" in post_json(
        {"data": [1.0] * width}, outputs=[{"name": "x", "parameters": {"shared_memory_region": "r"}}]
    )
    assert "classification" in post_json(
        {"data": [1.0] * width}, outputs=[{"name": "x", "parameters": {"classification": 2}}]
    )


def test_bad_binary_sizes_are_400(http: httpx.Client, tensors: tuple[str, list[int], str]) -> None:
    name, shape, _ = tensors
    blob = rows(2, shape[0]).tobytes()

    def post(size: int, tail: bytes) -> str:
        spec = {
            "name": name,
            "shape": [2, *shape],
            "datatype": "FP32",
            "parameters": {"binary_data_size": size},
        }
        body, headers = binary_request([(spec, tail)])
        return error_of(http.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers), 400)

    assert "needs" in post(len(blob) - 4, blob[:-4])  # consistent with the body, not with the shape
    assert "past the end" in post(len(blob) + 4, blob)  # claims more than the body holds
    assert "no input claims" in post(len(blob), blob + b"\0\0\0\0")  # stray bytes after the tensors
    nan = np.full((2, shape[0]), np.nan, dtype="<f4").tobytes()
    assert "finite" in post(len(nan), nan)


def test_unknown_models_versions_and_routes_are_404_and_wrong_methods_405(http: httpx.Client) -> None:
    assert "nope" in error_of(http.get("/v2/models/nope"), 404)
    assert "'7'" in error_of(http.get(f"/v2/models/{MODEL}/versions/7"), 404)
    error_of(http.get("/v2/models/nope/ready"), 404)
    error_of(http.post("/v2/models/nope/infer", json={"inputs": []}), 404)
    error_of(http.get("/v2/no/such/route"), 404)
    wrong_method = http.get(f"/v2/models/{MODEL}/infer")
    assert "POST" in error_of(wrong_method, 405) and wrong_method.headers["allow"] == "POST"
    # /predict keeps its own error shape: the v2 handling is scoped to /v2.
    assert isinstance(http.post("/predict", json={"model": "nope", "inputs": [[1.0]]}).json()["error"], dict)


@pytest.mark.asyncio
async def test_overload_is_503_with_retry_after_and_big_bodies_413(
    v2_repo: Path,
    v2_app: Callable[[Settings], Awaitable[httpx.AsyncClient]],
    tensors: tuple[str, list[int], str],
) -> None:
    name, shape, _ = tensors
    # A 64-row queue and a 0.3 s batching window: the second 64-row request cannot fit.
    settings = Settings(
        model_repository=v2_repo, max_queue_rows=64, max_delay_us=300_000, max_body_bytes=64 * 1024
    )
    client = await v2_app(settings)
    x = rows(64, shape[0])
    spec = {
        "name": name,
        "shape": [64, *shape],
        "datatype": "FP32",
        "parameters": {"binary_data_size": x.nbytes},
    }
    body, headers = binary_request([(spec, x.tobytes())])
    answers = await asyncio.gather(
        *(client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers) for _ in range(2))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 503]
    overloaded = next(a for a in answers if a.status_code == 503)
    assert int(overloaded.headers["retry-after"]) >= 1
    error_of(overloaded, 503)
    error_of(await client.post(f"/v2/models/{MODEL}/infer", content=b" " * (65 * 1024)), 413)
    # Refusals count in the same metrics as /predict's.
    metrics = (await client.get("/metrics")).text
    assert 'fpgaas_rejected_requests_total{model="tiny",reason="overloaded"} 1.0' in metrics
    assert 'fpgaas_rejected_requests_total{model="tiny",reason="payload_too_large"} 1.0' in metrics
