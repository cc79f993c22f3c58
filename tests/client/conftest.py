"""Shared fixtures: the same scenario through `Client` and `AsyncClient` (over a mock
transport), and live fpgaas servers serving a model built by the real builder."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fpgaas.client import AsyncClient, Client
from tests.fixtures.servers import serving


class BlockingAsync:
    """Drives an `AsyncClient` on one private event loop so a test can call it like `Client`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(method(*args, **kwargs))

        return call

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


Handler = Callable[[httpx.Request], httpx.Response]
MakeClient = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest) -> Iterator[MakeClient]:
    """make_client(handler, **settings) -> a client (sync, or async behind `BlockingAsync`)
    whose requests go to `handler` instead of the network."""
    made: list[Any] = []

    def make(handler: Handler, **settings: Any) -> Any:
        settings.setdefault("backoff_s", 0.0)
        if request.param == "sync":
            client: Any = Client("http://fpgaas.test", transport=httpx.MockTransport(handler), **settings)
        else:
            client = BlockingAsync(
                AsyncClient("http://fpgaas.test", transport=httpx.MockTransport(handler), **settings)
            )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


# --- a live fpgaas server on a free loopback port -------------------------------------------


@dataclass(frozen=True)
class ServedModel:
    """The model the live servers serve (27 float32 inputs -> 1 output), and its kernel's CPU
    twin run directly: what every served answer must equal bit for bit."""

    name: str
    n_inputs: int
    repository: Path
    twin: Callable[[np.ndarray], np.ndarray]

    def rows(self, n: int, seed: int) -> np.ndarray:
        """n random float32 samples of the model's width."""
        return np.random.default_rng(seed).normal(0.0, 3.0, size=(n, self.n_inputs)).astype(np.float32)


@pytest.fixture(scope="session")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """The session's small QKeras model (built once by the real builder: hls4ml + g++), installed
    as `<repository>/<name>/<version>`."""
    from fpgaas.kernels.twin import KernelLibrary
    from tests.fixtures.builds import shared_small_build

    artifact = shared_small_build(tmp_path_factory).artifact
    manifest = artifact.manifest
    repository = tmp_path_factory.mktemp("client-repo")
    shutil.copytree(artifact.path, repository / manifest.name / manifest.version)
    library = KernelLibrary.from_artifact(artifact)
    return ServedModel(manifest.name, library.n_inputs, repository, library.run)


@pytest.fixture(scope="session")
def server_url(served_model: ServedModel) -> Iterator[str]:
    """A server with default settings."""
    with serving(model_repository=served_model.repository) as url:
        yield url


@pytest.fixture(scope="session")
def slow_server_url(served_model: ServedModel) -> Iterator[str]:
    """A server whose batcher holds every request 0.2 s and queues at most 100 rows, so that
    bursts overload it and short client timeouts expire."""
    with serving(model_repository=served_model.repository, max_delay_us=200_000, max_queue_rows=100) as url:
        yield url
