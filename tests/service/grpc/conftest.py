"""A live fpgaas server with its gRPC front end, for the SONIC-door tests: `serve()` in its own
process on free loopback ports (HTTP and gRPC), serving `tiny` versions 1 and 2 (the session's
built artifact, see `tests/service/conftest.py`), shared by the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_live import GrpcServer

from fpgaas.kernels.artifact import Artifact
from tests.fixtures.servers import serving_process
from tests.fixtures.signing import reseal


@pytest.fixture(scope="session")
def grpc_repo(tiny_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny v1 and v2 (the same kernel sealed twice)."""
    repo = tmp_path_factory.mktemp("repo-grpc")
    for version in ("1", "2"):
        reseal(tiny_artifact, repo / "tiny" / version, name="tiny", version=version)
    return repo


@pytest.fixture(scope="module")
def grpc_server(grpc_repo: Path) -> Iterator[GrpcServer]:
    """A fresh server per module, so each module's statistics start at zero."""
    with serving_process(grpc=True, model_repository=grpc_repo, max_delay_us=200) as server:
        assert server.grpc_target is not None
        yield GrpcServer(server.url, server.grpc_target)
