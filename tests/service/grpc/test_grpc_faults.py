"""gRPC answers to what goes wrong on the server's side, with the real app in this process on an
emulated PYNQ card (so faults can be injected): a card past its deadline is DEADLINE_EXCEEDED, as
is a client's own deadline passing (the server drops that request and keeps serving), a
failed DMA is UNAVAILABLE, an overloaded batcher is UNAVAILABLE with `retry-after` and a
google.rpc RetryInfo, a message over FPGAAS_MAX_BODY_BYTES is RESOURCE_EXHAUSTED; the server keeps
serving after each. Also the pure status mapping of every error class.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pynq
import pytest
import tritonclient.grpc.aio as triton_aio
from google.rpc import error_details_pb2, status_pb2
from grpc_live import MODEL, N_INPUTS, N_OUTPUTS, samples
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import BadInput, DeviceError, DeviceTimeout, ModelNotFound, NotReady, Overloaded
from fpgaas.service.api.errors import classify, grpc_status
from fpgaas.service.api.grpc import GrpcFront
from fpgaas.service.app import create_app
from fpgaas.service.devices.pynq_emulation import EmulatedCard, install_emulated_cards
from fpgaas.service.settings import Settings
from tests.fixtures.signing import reseal

TIMEOUT_S = 0.3


@pytest.fixture(scope="module")
def card() -> EmulatedCard:
    return install_emulated_cards(1)[0]


@pytest.fixture(autouse=True)
def _healthy(card: EmulatedCard) -> Iterator[None]:
    card.clear_faults()
    yield
    card.clear_faults()
    card.kernel_latency_s = 0.0


@pytest.fixture(scope="module")
def repo(tiny_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("repo-grpc-faults")
    reseal(tiny_artifact, path / MODEL / "1", name=MODEL, version="1")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serving(repo: Path, card: EmulatedCard, **overrides: Any) -> AsyncIterator[Any]:
    """The app (lifespan run) and its gRPC front in this event loop; yields a raw stub and the
    gRPC target ("127.0.0.1:port")."""
    settings = Settings(
        model_repository=repo,
        device="pynq",
        pynq_emulated_cards=1,
        pynq_cards=[pynq.Device.devices.index(card)],
        device_timeout_s=TIMEOUT_S,
        device_probe_s=0.05,
        grpc_port=_free_port(),
        **overrides,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        front = GrpcFront(settings, app.state, app.state.metrics, grace_s=2.0)
        await front.start()
        try:
            target = f"127.0.0.1:{settings.grpc_port}"
            async with grpc.aio.insecure_channel(target) as channel:
                yield service_pb2_grpc.GRPCInferenceServiceStub(channel), target
        finally:
            await front.stop()


def request(x: np.ndarray) -> Any:
    message = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[x.astype("<f4").tobytes()])
    message.inputs.add(name="input_1", datatype="FP32", shape=list(x.shape))
    return message


async def answered(stub: Any, x: np.ndarray) -> np.ndarray:
    response = await stub.ModelInfer(request(x))
    return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(x.shape[0], N_OUTPUTS)


async def refused(stub: Any, x: np.ndarray) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(request(x))
    return caught.value


@pytest.mark.asyncio
async def test_a_card_past_its_deadline_is_deadline_exceeded(repo: Path, card: EmulatedCard) -> None:
    async with serving(repo, card) as (stub, _target):
        card.inject("hang")
        error = await refused(stub, samples(2))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "did not finish" in (error.details() or "")
        assert dict(error.trailing_metadata() or ())["fpgaas-code"] == "device_timeout"
        await asyncio.sleep(0.3)  # the card reloads its overlay by itself
        assert (await answered(stub, samples(2))).shape == (2, N_OUTPUTS)


@pytest.mark.asyncio
async def test_a_client_deadline_shorter_than_the_card_is_deadline_exceeded(
    repo: Path, card: EmulatedCard
) -> None:
    async with serving(repo, card) as (_stub, target):
        card.kernel_latency_s = 0.2  # slower than the client waits, within the device deadline
        async with triton_aio.InferenceServerClient(target) as client:
            tensor = triton_aio.InferInput("input_1", [1, N_INPUTS], "FP32")
            tensor.set_data_from_numpy(samples(1))
            with pytest.raises(InferenceServerException) as caught:
                await client.infer(MODEL, [tensor], client_timeout=0.05)
            assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
            card.kernel_latency_s = 0.0
            await asyncio.sleep(0.3)  # the abandoned call returns; its answer is dropped
            result = await client.infer(MODEL, [tensor])
            assert result.as_numpy("layer5_out").shape == (1, N_OUTPUTS)


@pytest.mark.asyncio
async def test_a_failed_dma_is_unavailable(repo: Path, card: EmulatedCard) -> None:
    async with serving(repo, card) as (stub, _target):
        card.inject("sync_error")
        error = await refused(stub, samples(1))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert dict(error.trailing_metadata() or ())["fpgaas-code"] == "device_error"
        assert (await answered(stub, samples(1))).shape == (1, N_OUTPUTS)


@pytest.mark.asyncio
async def test_overload_is_unavailable_with_retry_information(repo: Path, card: EmulatedCard) -> None:
    async with serving(repo, card, max_queue_rows=16, retry_after_s=2.0) as (stub, _target):
        card.kernel_latency_s = 0.05  # each call takes 50 ms: requests pile up behind it
        results = await asyncio.gather(
            *(stub.ModelInfer(request(samples(8, seed=i))) for i in range(8)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert errors and len(errors) < len(results)  # 16 rows fit in the queue, the rest are shed
        for error in errors:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            trailing = dict(error.trailing_metadata() or ())
            assert trailing["fpgaas-code"] == "overloaded"
            assert int(trailing["retry-after"]) >= 2
            status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
            retry = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(retry)
            assert retry.retry_delay.seconds == int(trailing["retry-after"])
        card.kernel_latency_s = 0.0


@pytest.mark.asyncio
async def test_messages_over_the_body_limit_are_resource_exhausted(repo: Path, card: EmulatedCard) -> None:
    async with serving(repo, card, max_body_bytes=64 * 1024) as (stub, _target):
        too_big = samples(64 * 1024 // (4 * N_INPUTS) + 10)
        error = await refused(stub, too_big)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await answered(stub, samples(1000))).shape == (1000, N_OUTPUTS)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadInput("bad", field="inputs[0].shape"), "INVALID_ARGUMENT"),
        (ModelNotFound("no such model"), "NOT_FOUND"),
        (Overloaded("busy", retry_after_s=1.2), "UNAVAILABLE"),
        (NotReady("loading"), "UNAVAILABLE"),
        (DeviceError("dma failed"), "UNAVAILABLE"),
        (DeviceTimeout("too slow"), "DEADLINE_EXCEEDED"),
        (RuntimeError("bug"), "INTERNAL"),
    ],
)
def test_every_error_class_has_its_grpc_status(error: Exception, code: str) -> None:
    status = grpc_status(classify(error))
    assert status.code == code
    assert grpc.StatusCode[status.code]  # a real grpc status code
    metadata = dict(status.trailing_metadata)
    assert ("retry-after" in metadata) == isinstance(error, Overloaded)
    if isinstance(error, BadInput):
        assert status.details.startswith("inputs[0].shape: ")
        assert metadata["fpgaas-field"] == "inputs[0].shape"
    if isinstance(error, Overloaded):
        assert metadata["retry-after"] == "2"  # whole seconds, rounded up, as HTTP's Retry-After


@pytest.mark.asyncio
async def test_inference_needs_the_inference_token_when_one_is_set(repo: Path, card: EmulatedCard) -> None:
    async with serving(repo, card, inference_token="infer-secret") as (stub, _target):
        error = await refused(stub, samples(1))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ModelInfer(request(samples(1)), metadata=(("authorization", "Bearer wrong"),))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        response = await stub.ModelInfer(
            request(samples(1)), metadata=(("authorization", "Bearer infer-secret"),)
        )
        assert len(response.raw_output_contents[0]) == 4 * N_OUTPUTS
