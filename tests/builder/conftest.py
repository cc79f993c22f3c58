"""Builder test fixtures: the small QKeras model and its artifact, built once per session; Keras 3
model files (plain Keras 3 and HGQ2) written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.builds import BuiltModel, shared_small_build
from tests.fixtures.hgq2_models import write_hgq2_model
from tests.fixtures.keras3_models import Keras3Models, write_keras3_models
from tests.fixtures.models import make_small_qkeras_model


@pytest.fixture(scope="session")
def small_build(tmp_path_factory: pytest.TempPathFactory) -> BuiltModel:
    return shared_small_build(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 -> 4 -> 1 model: quick to build, for the failure-path tests."""
    return make_small_qkeras_model(tmp_path_factory.mktemp("tiny") / "tiny.h5", n_in=4, hidden=(4,), seed=1)


@pytest.fixture(scope="session")
def keras3_models(tmp_path_factory: pytest.TempPathFactory) -> Keras3Models:
    """plain.keras (6 -> 8 -> 2, Dense/relu) and lambda.keras, written once by Keras 3."""
    work = tmp_path_factory.mktemp("keras3")
    marker = work / "lambda-ran"
    return write_keras3_models(work / "models", marker)


@pytest.fixture(scope="session")
def hgq2_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hgq2.keras (6 -> 8 -> 2, HGQ2 QDense/relu), written once by HGQ2 in the Keras 3 venv."""
    return write_hgq2_model(tmp_path_factory.mktemp("hgq2") / "hgq2.keras")
