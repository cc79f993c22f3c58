"""The builder picks the CPU engine that serves without a card, and the manifest says which and why."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fpgaas.builder import build
from fpgaas.builder.engine import self_check_inputs
from fpgaas.kernels.twin import (
    ENGINE_FIXED_POINT,
    ENGINE_LIBRARY,
    EngineKernel,
    KernelLibrary,
    open_cpu_kernel,
)
from tests.fixtures.builds import BuiltModel


def test_a_supported_network_is_served_by_the_fixed_point_engine(small_build: BuiltModel) -> None:
    manifest = small_build.artifact.manifest
    assert manifest.engine == ENGINE_FIXED_POINT
    assert "bit-identical" in manifest.engine_note
    twin = open_cpu_kernel(small_build.artifact)
    assert isinstance(twin, EngineKernel)
    x = self_check_inputs(twin.n_inputs, rows=8192, seed=11)
    expected = np.asarray(small_build.reference.predict(x), dtype=np.float32).reshape(len(x), -1)
    assert np.array_equal(twin.run(x), expected)


def make_tanh_model(path: Path) -> Path:
    """A QKeras net with a quantized tanh, which the fixed-point engine does not implement."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras
    from qkeras import QActivation, QDense, quantized_bits, quantized_tanh

    inputs = tf_keras.Input(shape=(5,), name="inputs")
    x = QDense(
        4,
        kernel_quantizer=quantized_bits(12, 3, alpha=1),
        bias_quantizer=quantized_bits(12, 3, alpha=1),
        name="dense_1",
    )(inputs)
    x = QActivation(quantized_tanh(12, 1), name="tanh_1")(x)
    outputs = QDense(
        1,
        kernel_quantizer=quantized_bits(12, 3, alpha=1),
        bias_quantizer=quantized_bits(12, 3, alpha=1),
        name="output",
    )(x)
    tf_keras.Model(inputs, outputs).save(path, save_format="h5")
    return path


@pytest.fixture(scope="module")
def tanh_artifact(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    work = tmp_path_factory.mktemp("tanh")
    return build(make_tanh_model(work / "tanh.h5"), name="tanh", out=work / "tanh" / "1")


def test_an_unsupported_layer_falls_back_to_the_kernel_library(tanh_artifact) -> None:  # type: ignore[no-untyped-def]
    manifest = tanh_artifact.manifest
    assert manifest.engine == ENGINE_LIBRARY
    assert "not applicable" in manifest.engine_note and "tanh" in manifest.engine_note.lower()
    twin = open_cpu_kernel(tanh_artifact)
    assert isinstance(twin, KernelLibrary)
    x = np.random.default_rng(0).normal(0.0, 2.0, size=(64, 5)).astype(np.float32)
    assert np.all(np.isfinite(twin.run(x)))
