"""Builder test fixtures: the small QKeras model and its artifact, built once per session (the Keras 3
model files, `keras3_models` and `hgq2_model`, are the suite's: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.builds import BuiltModel, shared_small_build
from tests.fixtures.models import make_small_qkeras_model


@pytest.fixture(scope="session")
def small_build(tmp_path_factory: pytest.TempPathFactory) -> BuiltModel:
    return shared_small_build(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 -> 4 -> 1 model: quick to build, for the failure-path tests."""
    return make_small_qkeras_model(tmp_path_factory.mktemp("tiny") / "tiny.h5", n_in=4, hidden=(4,), seed=1)
