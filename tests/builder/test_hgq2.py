"""HGQ2 (Keras 3) `.keras` models build end to end: the file passes the allow-list, HGQ2 and
hls4ml's Keras 3 parser run in the Keras 3 interpreter (`.venv-keras3`, where HGQ2 cannot shadow
QKeras), and the kernel and the fixed-point engine equal hls4ml's own C simulation bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fpgaas.builder.engine import self_check_inputs
from fpgaas.builder.keras3 import parse_in_child
from fpgaas.builder.settings import PROJECT_KERAS3_PYTHON, BuilderSettings
from fpgaas.kernels.errors import BuildError
from fpgaas.kernels.model_file import inspect_model_file
from fpgaas.kernels.twin import ENGINE_FIXED_POINT, EngineKernel, KernelLibrary, open_cpu_kernel
from tests.fixtures.builds import BuiltModel, build_with_reference


@pytest.fixture(scope="module")
def hgq2_build(hgq2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> BuiltModel:
    return build_with_reference(hgq2_model, tmp_path_factory.mktemp("hgq2-build"), "hgq2")


def test_an_hgq2_file_passes_the_allow_list(hgq2_model: Path) -> None:
    summary = inspect_model_file(hgq2_model)
    assert summary.format == "keras"
    assert summary.layers == (("InputLayer", "inputs"), ("QDense", "dense_1"), ("QDense", "output"))


def test_hgq2_quantizers_become_fixed_point_types_of_the_artifact(hgq2_build: BuiltModel) -> None:
    manifest = hgq2_build.artifact.manifest
    assert manifest.source_model == "model/hgq2.keras"
    assert [t.width for t in manifest.inputs] == [6] and [t.width for t in manifest.outputs] == [2]
    types = {layer.name: layer.types for layer in manifest.layers}
    assert {"inputs", "dense_1", "dense_1_relu", "output"} <= types.keys()
    # hls4ml folds HGQ2's input quantizers (FixedPointQuantizer, kif, RND, WRAP) into the types of
    # the tensors they quantize: the model input and the relu output feeding the last layer.
    assert "AP_RND,AP_WRAP" in types["inputs"]["result"]
    assert "AP_RND,AP_WRAP" in types["dense_1_relu"]["result"]


def test_hgq2_emulation_and_engine_equal_hls4ml_csim_bit_for_bit(hgq2_build: BuiltModel) -> None:
    x = np.random.default_rng(5).normal(0.0, 3.0, size=(4000, 6)).astype(np.float32)
    x[:200] = self_check_inputs(6, rows=200, seed=7)  # far out of range (WRAP) and rounding ties
    expected = np.asarray(hgq2_build.reference.predict(x), dtype=np.float32).reshape(len(x), -1)
    assert np.array_equal(KernelLibrary.from_artifact(hgq2_build.artifact).run(x), expected)
    assert hgq2_build.artifact.manifest.engine == ENGINE_FIXED_POINT
    twin = open_cpu_kernel(hgq2_build.artifact)
    assert isinstance(twin, EngineKernel)
    assert np.array_equal(twin.run(x), expected)
    assert np.unique(expected).size > 100  # a real function of the input, not a constant


def test_an_interpreter_without_hgq2_is_a_build_error_naming_it(hgq2_model: Path, tmp_path: Path) -> None:
    # The builder's own interpreter (.venv) must not have HGQ2: its qkeras shim would shadow QKeras.
    with pytest.raises(BuildError, match=r"lacks hgq \(PyPI hgq2\)") as caught:
        parse_in_child(
            hgq2_model, tmp_path / "work", log=tmp_path / "keras3.log", python=Path(sys.executable)
        )
    assert sys.executable in caught.value.message


def test_a_missing_keras3_interpreter_is_a_build_error(hgq2_model: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        parse_in_child(hgq2_model, tmp_path / "work", log=tmp_path / "keras3.log", python=tmp_path / "nope")


def test_the_keras3_interpreter_is_a_builder_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FPGAAS_KERAS3_PYTHON", raising=False)
    default = BuilderSettings().keras3_interpreter()
    assert default == (PROJECT_KERAS3_PYTHON if PROJECT_KERAS3_PYTHON.is_file() else Path(sys.executable))
    monkeypatch.setenv("FPGAAS_KERAS3_PYTHON", str(tmp_path / "python"))
    assert BuilderSettings().keras3_interpreter() == tmp_path / "python"
