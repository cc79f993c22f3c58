"""Fixtures of the management tests: the session's PostgreSQL, a fresh `Stack` per test, and the
small model (27 -> 8 -> 1) with hls4ml's own C simulation of it as the bit-exact reference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fpgaas.kernels.builds.postgres import EmbeddedPostgres
from tests.fixtures.builds import BuiltModel, shared_small_build
from tests.fixtures.management import Stack, deployment
from tests.fixtures.postgres import postgres_cluster

__all__ = ["postgres_cluster"]


@pytest.fixture
def stack(postgres_cluster: EmbeddedPostgres, tmp_path: Path) -> Iterator[Stack]:
    with deployment(postgres_cluster, tmp_path) as fresh:
        yield fresh


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> BuiltModel:
    return shared_small_build(tmp_path_factory)


@pytest.fixture(scope="session")
def small_h5(small: BuiltModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Keras 2 / QKeras file the small artifact was built from (a copy, as a user holds it)."""
    target = tmp_path_factory.mktemp("upload") / "small.h5"
    target.write_bytes((small.artifact.path / "model" / "small.h5").read_bytes())
    return target
