"""A live fpgaas server for the Open Inference Protocol tests: uvicorn on a free loopback port in
its own process, serving `tiny` versions 1 and 2 (the session's built artifact, see
`tests/service/conftest.py`), shared by the whole v2 session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from v2_live import LiveServer

from fpgaas.kernels.artifact import Artifact
from fpgaas.service.app import create_app
from fpgaas.service.settings import Settings
from tests.fixtures.servers import serving
from tests.fixtures.signing import reseal


@pytest.fixture(scope="session")
def v2_repo(tiny_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny v1 and v2 (the same kernel sealed twice)."""
    repo = tmp_path_factory.mktemp("repo-v2")
    for version in ("1", "2"):
        reseal(tiny_artifact, repo / "tiny" / version, name="tiny", version=version)
    return repo


@pytest.fixture(scope="session")
def live_server(v2_repo: Path) -> Iterator[LiveServer]:
    with serving(model_repository=v2_repo, max_delay_us=200) as url:
        yield LiveServer(url, url.removeprefix("http://"))


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
