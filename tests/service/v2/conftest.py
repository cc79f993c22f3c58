"""A live fpgaas server for the Open Inference Protocol tests: uvicorn on a free loopback port in
a background thread, serving `tiny` versions 1 and 2 (the session's built artifact, see
`tests/service/conftest.py`), shared by the whole v2 session.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import uvicorn
from v2_live import LiveServer

from kernels.artifact import MANIFEST_NAME, Artifact, write_manifest
from service.app import create_app
from service.settings import Settings


@pytest.fixture(scope="session")
def v2_repo(tiny_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny v1 and v2 (the same kernel sealed twice)."""
    repo = tmp_path_factory.mktemp("repo-v2")
    for version in ("1", "2"):
        target = repo / "tiny" / version
        shutil.copytree(tiny_artifact.path, target, ignore=shutil.ignore_patterns(MANIFEST_NAME))
        write_manifest(target, dataclasses.replace(tiny_artifact.manifest, version=version, files={}))
    return repo


@pytest.fixture(scope="session")
def live_server(v2_repo: Path) -> Iterator[LiveServer]:
    app = create_app(Settings(model_repository=v2_repo, max_delay_us=200))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fpgaas server did not become ready within 60 s")
        time.sleep(0.05)
    yield LiveServer(url, f"127.0.0.1:{port}", app)
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest_asyncio.fixture
async def v2_app() -> AsyncIterator[Callable[[Settings], Awaitable[httpx.AsyncClient]]]:
    """start(settings) -> an httpx client on a fresh in-process app (lifespan run);
    every app is drained and closed after the test."""
    async with AsyncExitStack() as stack:

        async def start(settings: Settings) -> httpx.AsyncClient:
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fpgaas.test")
            return await stack.enter_async_context(client)

        yield start
