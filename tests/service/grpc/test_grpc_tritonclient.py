"""Triton's own client, `tritonclient.grpc` (unmodified), against a live fpgaas server's gRPC port.

Every call a SONIC or Triton user makes works over gRPC: probes, metadata, configuration, sync,
asyncio and streaming inference (200 requests in flight at once), requested outputs, request ids
and parameters; inputs in `raw_input_contents` or in the typed contents of every numeric datatype;
answers bit-identical to `/predict`; errors with the status codes Triton uses.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from grpc_live import MODEL, N_INPUTS, N_OUTPUTS, GrpcServer, infer_input, names, predict_route, samples
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def client(grpc_server: GrpcServer) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(grpc_server.target) as c:
        yield c


@pytest.fixture(scope="module")
def stub(grpc_server: GrpcServer) -> Iterator[Any]:
    """The raw generated stub tritonclient ships, for requests its helpers do not build."""
    with grpc.insecure_channel(grpc_server.target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_probes_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "fpgaas"
    assert "model_configuration" in meta["extensions"]


def test_model_metadata_names_tensors_with_a_batch_axis(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata(MODEL, as_json=True)
    assert meta["name"] == MODEL
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"].startswith("hls4ml_")
    (inp,), (out,) = meta["inputs"], meta["outputs"]
    assert inp["datatype"] == out["datatype"] == "FP32"
    assert [int(d) for d in inp["shape"]] == [-1, N_INPUTS]
    assert [int(d) for d in out["shape"]] == [-1, N_OUTPUTS]


def test_model_config_is_what_sonic_and_perf_analyzer_read(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config(MODEL).config
    assert config.name == MODEL
    assert config.backend == "fpgaas"
    assert config.max_batch_size == 1024  # rows per device call: TritonClient's batch limit
    assert [t.name for t in config.input] == [names(client)[0]]
    assert list(config.input[0].dims) == [N_INPUTS]
    assert list(config.output[0].dims) == [N_OUTPUTS]
    assert config.input[0].data_type == triton.model_config_pb2.TYPE_FP32
    assert config.dynamic_batching.max_queue_delay_microseconds == 200  # the server's max_delay_us
    (group,) = config.instance_group  # one card serves it
    assert group.name == "emulated-0"
    assert group.kind == triton.model_config_pb2.ModelInstanceGroup.KIND_MODEL
    assert group.count == 1
    assert list(config.version_policy.specific.versions) == [1, 2]


@pytest.mark.parametrize("n", [1, 3, 1024, 1500])
def test_infer_is_bit_identical_to_predict(
    client: triton.InferenceServerClient, grpc_server: GrpcServer, n: int
) -> None:
    x = samples(n, seed=n)
    inp, out = names(client)
    result = client.infer(MODEL, [infer_input(inp, x)])
    got = result.as_numpy(out)
    assert got.dtype == np.float32 and got.shape == (n, N_OUTPUTS)
    np.testing.assert_array_equal(got, predict_route(grpc_server, x))
    assert result.get_response().model_version == "2"  # the default: the highest version


def test_requested_output_request_id_version_and_parameters(client: triton.InferenceServerClient) -> None:
    inp, out = names(client)
    result = client.infer(
        MODEL,
        [infer_input(inp, samples(2))],
        model_version="1",
        outputs=[triton.InferRequestedOutput(out)],
        request_id="sonic-42",
        parameters={"note": "ignored by the kernel"},
    )
    response = result.get_response()
    assert response.id == "sonic-42"
    assert response.model_name == MODEL and response.model_version == "1"
    assert [o.name for o in response.outputs] == [out]
    assert response.parameters["device"].string_param == "emulated-0"


# Each numeric datatype in its typed contents field, as Triton's proto assigns them.
TYPED = [
    ("INT8", "int_contents", np.int8),
    ("INT16", "int_contents", np.int16),
    ("INT32", "int_contents", np.int32),
    ("INT64", "int64_contents", np.int64),
    ("UINT8", "uint_contents", np.uint8),
    ("UINT16", "uint_contents", np.uint16),
    ("UINT32", "uint_contents", np.uint32),
    ("UINT64", "uint64_contents", np.uint64),
    ("FP32", "fp32_contents", np.float32),
    ("FP64", "fp64_contents", np.float64),
]


def _typed_request(input_name: str, datatype: str, field: str, values: np.ndarray) -> Any:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name=input_name, datatype=datatype, shape=list(values.shape))
    getattr(tensor.contents, field).extend(values.ravel().tolist())
    return request


@pytest.mark.parametrize(("datatype", "field", "dtype"), TYPED)
def test_typed_contents_convert_as_v2_rest_does(
    client: triton.InferenceServerClient,
    stub: Any,
    grpc_server: GrpcServer,
    datatype: str,
    field: str,
    dtype: Any,
) -> None:
    values = (np.arange(4 * N_INPUTS).reshape(4, N_INPUTS) % 100).astype(dtype)
    if dtype in (np.float32, np.float64):
        values = (values / 7 - 3).astype(dtype)
    inp, _ = names(client)
    response = stub.ModelInfer(_typed_request(inp, datatype, field, values))
    got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(4, N_OUTPUTS)
    np.testing.assert_array_equal(got, predict_route(grpc_server, values.astype(np.float32)))


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT16", "UINT8"])
def test_raw_contents_in_other_datatypes(
    client: triton.InferenceServerClient, grpc_server: GrpcServer, datatype: str
) -> None:
    x = np.round(samples(5, seed=3)).astype(
        triton.triton_to_np_dtype(datatype) if datatype != "UINT8" else np.uint8
    )
    if datatype == "UINT8":
        x = np.abs(x)
    inp, out = names(client)
    got = client.infer(MODEL, [infer_input(inp, x, datatype)]).as_numpy(out)
    np.testing.assert_array_equal(got, predict_route(grpc_server, x.astype(np.float32)))


def test_bf16_arrives_exactly(
    client: triton.InferenceServerClient, stub: Any, grpc_server: GrpcServer
) -> None:
    x = samples(2, seed=9)
    bf16 = (x.view(np.uint32) >> 16).astype("<u2")  # the top halves: exactly representable values
    exact = (bf16.astype(np.uint32) << 16).view(np.float32)
    inp, _ = names(client)
    request = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[bf16.tobytes()])
    request.inputs.add(name=inp, datatype="BF16", shape=[2, N_INPUTS])
    got = np.frombuffer(stub.ModelInfer(request).raw_output_contents[0], dtype="<f4").reshape(2, N_OUTPUTS)
    np.testing.assert_array_equal(got, predict_route(grpc_server, exact))


def test_aio_client_200_concurrent_requests(
    client: triton.InferenceServerClient, grpc_server: GrpcServer
) -> None:
    inp, out = names(client)
    xs = [samples(1 + i % 7, seed=i) for i in range(200)]

    async def run() -> list[np.ndarray]:
        async with triton_aio.InferenceServerClient(grpc_server.target) as aio:
            assert await aio.is_server_ready()
            results = await asyncio.gather(
                *(aio.infer(MODEL, [infer_input(inp, x)], request_id=str(i)) for i, x in enumerate(xs))
            )
        for i, r in enumerate(results):
            assert r.get_response().id == str(i)
        return [r.as_numpy(out) for r in results]

    got = asyncio.run(run())
    expected = predict_route(grpc_server, np.concatenate(xs))
    np.testing.assert_array_equal(np.concatenate(got), expected)


def test_async_infer_callbacks(client: triton.InferenceServerClient, grpc_server: GrpcServer) -> None:
    inp, out = names(client)
    done: queue.Queue[tuple[Any, Any]] = queue.Queue()
    xs = {str(i): samples(2, seed=100 + i) for i in range(20)}
    for rid, x in xs.items():
        client.async_infer(
            MODEL, [infer_input(inp, x)], lambda result, error: done.put((result, error)), request_id=rid
        )
    for _ in xs:
        result, error = done.get(timeout=30)
        assert error is None
        rid = result.get_response().id
        np.testing.assert_array_equal(result.as_numpy(out), predict_route(grpc_server, xs[rid]))


def test_stream_answers_are_matched_by_id(grpc_server: GrpcServer) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    with triton.InferenceServerClient(grpc_server.target) as c:
        inp, out = names(c)
        xs = {f"s{i}": samples(1 + i, seed=200 + i) for i in range(12)}
        c.start_stream(callback=lambda result, error: answers.put((result, error)))
        for rid, x in xs.items():
            c.async_stream_infer(MODEL, [infer_input(inp, x)], request_id=rid)
        c.async_stream_infer("no-such-model", [infer_input(inp, samples(1))], request_id="bad")
        got: dict[str, np.ndarray] = {}
        errors = []
        for _ in range(len(xs) + 1):
            result, error = answers.get(timeout=30)
            if error is not None:
                errors.append(error)
            else:
                got[result.get_response().id] = result.as_numpy(out)
        c.stop_stream()
    assert sorted(got) == sorted(xs)
    for rid, x in xs.items():
        np.testing.assert_array_equal(got[rid], predict_route(grpc_server, x))
    (error,) = errors
    assert "no-such-model" in error.message()


def _status(call: Any) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status())


def test_errors_carry_triton_status_codes(client: triton.InferenceServerClient) -> None:
    inp, out = names(client)
    x = samples(1)
    assert _status(lambda: client.infer("no-such-model", [infer_input(inp, x)])) == "StatusCode.NOT_FOUND"
    assert (
        _status(lambda: client.infer(MODEL, [infer_input(inp, x)], model_version="9"))
        == "StatusCode.NOT_FOUND"
    )
    assert _status(lambda: client.get_model_metadata("no-such-model")) == "StatusCode.NOT_FOUND"
    assert _status(lambda: client.get_model_config("no-such-model")) == "StatusCode.NOT_FOUND"
    wrong_width = samples(1)[:, :4]
    assert (
        _status(lambda: client.infer(MODEL, [infer_input(inp, wrong_width)])) == "StatusCode.INVALID_ARGUMENT"
    )
    assert _status(lambda: client.infer(MODEL, [infer_input("nope", x)])) == "StatusCode.INVALID_ARGUMENT"
    strings = triton.InferInput(inp, [1, N_INPUTS], "BYTES")
    strings.set_data_from_numpy(np.array([[b"a"] * N_INPUTS], dtype=np.object_))
    assert _status(lambda: client.infer(MODEL, [strings])) == "StatusCode.INVALID_ARGUMENT"
    nan = x.copy()
    nan[0, 2] = np.nan
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [infer_input(inp, nan)])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "finite" in caught.value.message()
    unknown_output = [triton.InferRequestedOutput("nope")]
    assert _status(lambda: client.infer(MODEL, [infer_input(inp, x)], outputs=unknown_output)) == (
        "StatusCode.INVALID_ARGUMENT"
    )
    shared = infer_input(inp, x)
    shared.set_shared_memory("region", x.nbytes)  # the shared-memory extension is not served
    assert _status(lambda: client.infer(MODEL, [shared])) == "StatusCode.INVALID_ARGUMENT"
    # The server keeps serving after every refusal.
    np.testing.assert_array_equal(
        client.infer(MODEL, [infer_input(inp, x)]).as_numpy(out).shape, (1, N_OUTPUTS)
    )
