"""Triton's own client, `tritonclient.http` (unmodified), against a live fpgaas server.

fpgaas is a drop-in Open Inference Protocol server: every call a Triton user makes (probes,
metadata, config, JSON and binary inference, `async_infer`) works, answers are bit-identical
to `/predict` and to the kernel's CPU twin, and errors carry the statuses Triton uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException
from v2_live import LiveServer

MODEL = "tiny"


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(live_server.hostport, concurrency=8) as c:
        yield c


@pytest.fixture(scope="module")
def shapes(client: triton.InferenceServerClient) -> tuple[str, int, str, int]:
    """(input name, values per sample, output name, values per sample) from the model metadata."""
    meta = client.get_model_metadata(MODEL)
    (inp,), (out,) = meta["inputs"], meta["outputs"]
    return inp["name"], int(np.prod(inp["shape"][1:])), out["name"], int(np.prod(out["shape"][1:]))


def samples(n: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 4.0, size=(n, width)).astype(np.float32)


def infer_input(name: str, x: np.ndarray, *, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def predict_route(live_server: LiveServer, x: np.ndarray) -> np.ndarray:
    """The same rows through fpgaas's own `/predict` (binary), for comparison."""
    answer = httpx.post(
        f"{live_server.url}/predict",
        params={"model": MODEL},
        content=x.astype("<f4").tobytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert answer.status_code == 200, answer.text
    return np.frombuffer(answer.content, dtype="<f4").reshape(x.shape[0], -1)


def test_probes_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "fpgaas"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_describes_tensors_with_a_batch_axis(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"].startswith("hls4ml_")
    for tensor in (*meta["inputs"], *meta["outputs"]):
        assert tensor["datatype"] == "FP32"
        assert tensor["shape"][0] == -1 and all(d > 0 for d in tensor["shape"][1:])
    assert client.get_model_metadata(MODEL, "1")["name"] == MODEL


def test_model_config_is_what_perf_analyzer_reads(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert config["name"] == MODEL
    assert config["max_batch_size"] >= 1
    assert [t["name"] for t in config["input"]] == [t["name"] for t in meta["inputs"]]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == meta["inputs"][0]["shape"][1:]


def test_model_readiness_per_version(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "2")
    assert not client.is_model_ready(MODEL, "9")
    assert not client.is_model_ready("no-such-model")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_is_bit_identical_to_predict_and_the_twin(
    client: triton.InferenceServerClient,
    live_server: LiveServer,
    shapes: tuple[str, int, str, int],
    reference: Callable[[np.ndarray], np.ndarray],
    binary: bool,
) -> None:
    in_name, width, out_name, _ = shapes
    x = samples(37, width, seed=1)
    outputs = [triton.InferRequestedOutput(out_name, binary_data=binary)]
    result = client.infer(
        MODEL, [infer_input(in_name, x, binary=binary)], outputs=outputs, request_id="run-42"
    )
    y = result.as_numpy(out_name)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.reshape(37, -1), predict_route(live_server, x))
    np.testing.assert_array_equal(y.reshape(37, -1), reference(x))
    response = result.get_response()
    assert response["id"] == "run-42"
    assert response["model_name"] == MODEL and response["model_version"] == "2"
    assert ("parameters" in response["outputs"][0]) is binary


def test_infer_a_named_version_and_default_outputs(
    client: triton.InferenceServerClient,
    shapes: tuple[str, int, str, int],
    reference: Callable[[np.ndarray], np.ndarray],
) -> None:
    in_name, width, out_name, _ = shapes
    x = samples(5, width, seed=2)
    # No requested outputs: tritonclient asks for every output as binary (binary_data_output).
    result = client.infer(MODEL, [infer_input(in_name, x)], model_version="1")
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_array_equal(result.as_numpy(out_name).reshape(5, -1), reference(x))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(
    client: triton.InferenceServerClient,
    shapes: tuple[str, int, str, int],
    reference: Callable[[np.ndarray], np.ndarray],
    algorithm: str,
) -> None:
    in_name, width, out_name, _ = shapes
    x = samples(64, width, seed=4)
    result = client.infer(
        MODEL,
        [infer_input(in_name, x)],
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,  # a server may answer uncompressed
    )
    np.testing.assert_array_equal(result.as_numpy(out_name).reshape(64, -1), reference(x))


def test_async_infer_200_concurrent_requests(
    client: triton.InferenceServerClient,
    shapes: tuple[str, int, str, int],
    reference: Callable[[np.ndarray], np.ndarray],
) -> None:
    in_name, width, out_name, _ = shapes
    batches = [samples(1 + i % 7, width, seed=100 + i) for i in range(200)]
    pending = [
        client.async_infer(MODEL, [infer_input(in_name, x)], request_id=str(i)) for i, x in enumerate(batches)
    ]
    for i, (x, handle) in enumerate(zip(batches, pending, strict=True)):
        result = handle.get_result(timeout=60)
        assert result.get_response()["id"] == str(i)
        np.testing.assert_array_equal(result.as_numpy(out_name).reshape(x.shape[0], -1), reference(x))


def test_asyncio_client_infers_too(
    live_server: LiveServer, shapes: tuple[str, int, str, int], reference: Callable[[np.ndarray], np.ndarray]
) -> None:
    import asyncio

    import tritonclient.http.aio as triton_aio

    in_name, width, out_name, _ = shapes
    batches = [samples(3, width, seed=300 + i) for i in range(20)]

    async def run() -> list[np.ndarray]:
        async with triton_aio.InferenceServerClient(live_server.hostport) as aio:
            assert await aio.is_server_ready()
            results = await asyncio.gather(*(aio.infer(MODEL, [infer_input(in_name, x)]) for x in batches))
        return [r.as_numpy(out_name) for r in results]

    for x, y in zip(batches, asyncio.run(run()), strict=True):
        np.testing.assert_array_equal(y.reshape(3, -1), reference(x))


def _error(call: Callable[[], object]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_unknown_model_and_version_are_404(
    client: triton.InferenceServerClient, shapes: tuple[str, int, str, int]
) -> None:
    in_name, width, _, _ = shapes
    x = samples(2, width)
    error = _error(lambda: client.infer("no-such-model", [infer_input(in_name, x)]))
    assert error.status() == "404" and "no-such-model" in error.message()
    error = _error(lambda: client.infer(MODEL, [infer_input(in_name, x)], model_version="9"))
    assert error.status() == "404" and "'9'" in error.message()
    assert _error(lambda: client.get_model_metadata("no-such-model")).status() == "404"


def test_wrong_shape_and_datatype_are_400_and_the_server_keeps_serving(
    client: triton.InferenceServerClient,
    shapes: tuple[str, int, str, int],
    reference: Callable[[np.ndarray], np.ndarray],
) -> None:
    in_name, width, out_name, _ = shapes
    wide = samples(2, width + 1)
    error = _error(lambda: client.infer(MODEL, [infer_input(in_name, wide)]))
    assert error.status() == "400" and "shape" in error.message()

    text = triton.InferInput(in_name, [1, width], "BYTES")
    text.set_data_from_numpy(np.array([[b"a"] * width], dtype=np.object_))
    error = _error(lambda: client.infer(MODEL, [text]))
    assert error.status() == "400" and "BYTES" in error.message()

    error = _error(lambda: client.infer(MODEL, [infer_input("not-an-input", samples(1, width))]))
    assert error.status() == "400" and "not-an-input" in error.message()

    unknown_output = [triton.InferRequestedOutput("not-an-output")]
    error = _error(
        lambda: client.infer(MODEL, [infer_input(in_name, samples(1, width))], outputs=unknown_output)
    )
    assert error.status() == "400" and "not-an-output" in error.message()

    x = samples(3, width, seed=9)
    np.testing.assert_array_equal(
        client.infer(MODEL, [infer_input(in_name, x)]).as_numpy(out_name).reshape(3, -1), reference(x)
    )
