"""Keras 3 `.keras` models build through the same pipeline: hls4ml's Keras 3 parser (in a child
process, see fpgaas.builder.keras3), then the same kernel, library and signed artifact, bit-exact
against hls4ml's own C simulation of the same conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fpgaas.kernels.artifact import SIGNATURE_NAME
from fpgaas.kernels.signing import TrustedKeys, verify_artifact
from fpgaas.kernels.twin import KernelLibrary
from tests.fixtures.builds import BuiltModel, build_with_reference
from tests.fixtures.keras3_models import Keras3Models
from tests.fixtures.signing import TEST_PUBLIC_KEY


@pytest.fixture(scope="module")
def keras3_build(keras3_models: Keras3Models, tmp_path_factory: pytest.TempPathFactory) -> BuiltModel:
    return build_with_reference(keras3_models.plain, tmp_path_factory.mktemp("keras3-build"), "plain3")


def test_a_keras3_model_builds_into_a_signed_artifact(keras3_build: BuiltModel) -> None:
    artifact = keras3_build.artifact
    manifest = artifact.manifest
    assert manifest.source_model == "model/plain.keras"
    assert [t.width for t in manifest.inputs] == [6] and [t.width for t in manifest.outputs] == [2]
    assert {layer.name for layer in manifest.layers} >= {"dense_1", "output"}
    assert (artifact.path / "logs" / "keras3.log").is_file()
    assert json.loads((artifact.path / SIGNATURE_NAME).read_text())["algorithm"] == "ed25519"
    assert verify_artifact(artifact.path, TrustedKeys.load([TEST_PUBLIC_KEY])).manifest == manifest


def test_keras3_emulation_equals_hls4ml_predict_bit_for_bit(keras3_build: BuiltModel) -> None:
    x = np.random.default_rng(3).normal(0.0, 3.0, size=(1000, 6)).astype(np.float32)
    got = KernelLibrary.from_artifact(keras3_build.artifact).run(x)
    expected = np.asarray(keras3_build.reference.predict(x), dtype=np.float32).reshape(got.shape)
    assert np.array_equal(got, expected)
    assert np.unique(got).size > 100  # a real function of the input, not a constant


def test_the_keras3_parse_ran_in_a_child_and_left_no_scratch_in_the_artifact(
    keras3_build: BuiltModel,
) -> None:
    files = set(keras3_build.artifact.manifest.files)
    assert not any("keras3-" in name or name.endswith(".npz") for name in files)
    assert Path(keras3_build.artifact.path / "model" / "plain.keras").is_file()
