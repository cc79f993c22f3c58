"""What CMSSW's SONIC (`TritonService` + `TritonClient`) and other gRPC tooling do, end to end.

`TritonService` probes each server with RepositoryIndex at startup (a server where it fails is
skipped); `TritonClient` then reads ModelConfig (max_batch_size) and ModelMetadata (names,
types, shapes) and sends asynchronous requests of varying batch sizes. Also: the standard gRPC
health service follows readiness, server reflection lists the services, and repository control
needs the admin token (`authorization: Bearer`) while inference does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_live import MODEL, N_INPUTS, GrpcServer, infer_input, predict_route, samples
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.utils import InferenceServerException

from tests.fixtures.servers import serving_process

TOKEN = "sonic-admin-token"


@pytest.fixture(scope="module")
def sonic_server(grpc_repo: Path) -> Iterator[GrpcServer]:
    with serving_process(grpc=True, model_repository=grpc_repo, admin_token=TOKEN) as server:
        assert server.grpc_target is not None
        yield GrpcServer(server.url, server.grpc_target)


def test_sonic_client_sequence(sonic_server: GrpcServer) -> None:
    ragged = [1, 7, 3, 64, 2, 300]  # SONIC batches as many objects as an event has

    async def sonic() -> list[np.ndarray]:
        async with triton_aio.InferenceServerClient(sonic_server.target) as client:
            index = await client.get_model_repository_index()  # TritonService's probe
            assert [(m.name, m.version, m.state) for m in index.models] == [
                (MODEL, "1", "READY"),
                (MODEL, "2", "READY"),
            ]
            config = (await client.get_model_config(MODEL)).config
            assert config.max_batch_size >= max(ragged)
            meta = await client.get_model_metadata(MODEL)
            (inp,), (out,) = meta.inputs, meta.outputs
            assert inp.datatype == "FP32" and list(inp.shape) == [-1, N_INPUTS]
            assert [d.name for d in config.input] == [inp.name]
            results = await asyncio.gather(
                *(
                    client.infer(MODEL, [infer_input(inp.name, samples(n, seed=n))], request_id=f"event-{n}")
                    for n in ragged
                )
            )
            stats = (await client.get_inference_statistics(MODEL, "", as_json=False)).model_stats
            assert sum(s.inference_count for s in stats) == sum(ragged)
            return [r.as_numpy(out.name) for r in results]

    got = asyncio.run(sonic())
    for n, answer in zip(ragged, got, strict=True):
        np.testing.assert_array_equal(answer, predict_route(sonic_server, samples(n, seed=n)))


def test_health_service_follows_readiness(sonic_server: GrpcServer) -> None:
    with grpc.insecure_channel(sonic_server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_services(sonic_server: GrpcServer) -> None:
    with grpc.insecure_channel(sonic_server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
        described = database.FindFileContainingSymbol("inference.GRPCInferenceService")
        assert "ModelInfer" in [m.name for s in described.service for m in s.method]


def test_repository_control_needs_the_admin_token(sonic_server: GrpcServer) -> None:
    with triton.InferenceServerClient(sonic_server.target) as client:
        for call in (client.load_model, client.unload_model):
            with pytest.raises(InferenceServerException) as caught:
                call(MODEL)
            assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(InferenceServerException) as caught:
                call(MODEL, headers={"authorization": "Bearer wrong"})
            assert caught.value.status() == "StatusCode.PERMISSION_DENIED"
        admin = {"authorization": f"Bearer {TOKEN}"}
        client.load_model(MODEL, headers=admin)  # served already: loading it again is a no-op
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("no-such-model", headers=admin)
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        # Without the management API nothing can be unloaded; the server says so, and serves on.
        with pytest.raises(InferenceServerException) as caught:
            client.unload_model(MODEL, headers=admin)
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
        assert "management" in caught.value.message()
        assert client.is_model_ready(MODEL)
        # Inference needs no token (none is set for it on this server).
        result = client.infer(MODEL, [infer_input("input_1", samples(1))])
        assert result.as_numpy("layer5_out") is not None
