"""gRPC repository control on a server with the management API (real PostgreSQL, the store as its
repository), through tritonclient[grpc], unmodified: RepositoryIndex answers what HTTP's
`POST /v2/repository/index` answers, state for state and reason for reason; load and unload
follow the management token rule (none: UNAUTHENTICATED, a wrong one: PERMISSION_DENIED) and
ModelReady, inference and the index follow them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc as triton
from grpc_live import MODEL, infer_input, samples
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from fpgaas.kernels.artifact import SIGNATURE_NAME, Artifact
from fpgaas.kernels.builds.postgres import EmbeddedPostgres
from tests.fixtures.management import ADMIN_TOKEN, Stack, upload
from tests.fixtures.postgres import fresh_database, postgres_cluster
from tests.fixtures.servers import ServerProcess
from tests.fixtures.signing import reseal

__all__ = ["postgres_cluster"]

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
Index = list[tuple[str, str, str, str]]


@pytest.fixture
def stack(postgres_cluster: EmbeddedPostgres, tmp_path: Path) -> Iterator[Stack]:
    for folder in ("repository", "logs"):
        (tmp_path / folder).mkdir()
    deployment = Stack(
        fresh_database(postgres_cluster), tmp_path / "repository", tmp_path / "state", tmp_path / "logs"
    )
    try:
        yield deployment
    finally:
        deployment.stop_workers()


def _http_index(server: ServerProcess, body: dict[str, Any] | None = None) -> Index:
    rows = httpx.post(f"{server.url}/v2/repository/index", json=body, timeout=10).json()
    return [(r["name"], r["version"], r["state"], r["reason"]) for r in rows]


def _grpc_index(client: triton.InferenceServerClient) -> Index:
    index = client.get_model_repository_index()
    return [(m.name, m.version, m.state, m.reason) for m in index.models]


def _wait(condition: Any, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_repository_index_is_the_same_over_grpc_and_http(stack: Stack, tiny_artifact: Artifact) -> None:
    store = stack.repository
    reseal(tiny_artifact, store / MODEL / "1", name=MODEL, version="1")
    # Forged beside the store, then moved in whole: refused for its signature, and listed so.
    forged = reseal(tiny_artifact, store / ".fpgaas" / "staging" / "forged", name=MODEL, version="2")
    (forged / SIGNATURE_NAME).unlink()
    forged.rename(store / MODEL / "2")
    with stack.server(grpc=True) as server, triton.InferenceServerClient(str(server.grpc_target)) as client:
        # Queued with no worker to take it: BUILDING until one does.
        queued = upload(server.url, tiny_artifact.path / "model" / "tiny.h5", "later", version="1")
        assert queued.status_code == 202, queued.text
        _wait(lambda: len(_http_index(server)) == 3, f"three versions listed: {_http_index(server)}")

        http = _http_index(server)
        assert [(name, version, state) for name, version, state, _ in http] == [
            ("later", "1", "BUILDING"),
            (MODEL, "1", "READY"),
            (MODEL, "2", "UNAVAILABLE"),
        ]
        assert "queued" in http[0][3] and "sign" in http[2][3]
        assert _grpc_index(client) == http
        # Triton's `ready` flag of the request: only READY versions, over both protocols.
        with grpc.insecure_channel(str(server.grpc_target)) as channel:
            only_ready = service_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(
                service_pb2.RepositoryIndexRequest(ready=True)
            )
        ready = [(m.name, m.version, m.state, m.reason) for m in only_ready.models]
        assert ready == _http_index(server, {"ready": True}) == [(MODEL, "1", "READY", "")]
        # A version the repository holds but does not serve is not ready; it is not unknown.
        assert client.is_model_ready(MODEL, "1") and not client.is_model_ready(MODEL, "2")
        assert httpx.get(f"{server.url}/v2/models/{MODEL}/versions/2/ready").status_code == 400
        with pytest.raises(InferenceServerException) as caught:
            client.is_model_ready("no-such-model")
        assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_load_and_unload_need_the_admin_token_and_ready_follows(
    stack: Stack, tiny_artifact: Artifact
) -> None:
    reseal(tiny_artifact, stack.repository / MODEL / "1", name=MODEL, version="1")
    x = samples(4)
    with stack.server(grpc=True) as server, triton.InferenceServerClient(str(server.grpc_target)) as client:
        inputs = [infer_input("input_1", x)]
        before = client.infer(MODEL, inputs).as_numpy("layer5_out")
        for call in (client.unload_model, client.load_model):
            with pytest.raises(InferenceServerException) as caught:
                call(MODEL)
            assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(InferenceServerException) as caught:
                call(MODEL, headers={"authorization": "Bearer wrong"})
            assert caught.value.status() == "StatusCode.PERMISSION_DENIED"
        assert client.is_model_ready(MODEL)  # refused calls changed nothing

        client.unload_model(MODEL, headers=ADMIN)  # answered once this server has converged
        assert not client.is_model_ready(MODEL)
        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, inputs)
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        unloaded = [(MODEL, "1", "UNAVAILABLE", "unloaded by an operator")]
        assert _grpc_index(client) == _http_index(server) == unloaded

        client.load_model(MODEL, headers=ADMIN)
        assert client.is_model_ready(MODEL)
        assert _grpc_index(client) == _http_index(server) == [(MODEL, "1", "READY", "")]
        assert (client.infer(MODEL, inputs).as_numpy("layer5_out") == before).all()

        with pytest.raises(InferenceServerException) as caught:
            client.load_model("no-such-model", headers=ADMIN)
        assert caught.value.status() == "StatusCode.NOT_FOUND"
