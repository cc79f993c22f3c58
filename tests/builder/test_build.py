"""The whole pipeline on a small QKeras model: artifact contents, bit-exact emulation, failure paths."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from fpgaas.builder import DEFAULT_PART, DEFAULT_PLATFORM, build
from fpgaas.kernels.artifact import load_artifact, sha256_file
from fpgaas.kernels.errors import ArtifactError, BadInput, BuildError, ToolMissing
from fpgaas.kernels.twin import KernelLibrary
from tests.fixtures.builds import BuiltModel


def samples(n: int, n_in: int, seed: int) -> np.ndarray:
    """Random inputs covering the whole ap_fixed<16,6> range and well beyond it (wrap-around)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 4.0, size=(n, n_in))
    x[n // 4 : n // 2] *= 16.0  # mostly outside +-32
    x[n // 2 : n // 2 + 64] = rng.choice([-32.0, 31.984375, 1e6, -1e6, 2.0**-11, 0.0], size=(64, n_in))
    return x.astype(np.float32)


def test_the_manifest_describes_the_build(small_build: BuiltModel) -> None:
    m = small_build.artifact.manifest
    assert (m.name, m.version, m.kernel_name, m.project_name) == ("small", "1", "fpgaas_kernel", "myproject")
    assert (m.part, m.platform, m.backend, m.io_type) == (
        DEFAULT_PART,
        DEFAULT_PLATFORM,
        "Vitis",
        "io_parallel",
    )
    (x,), (y,) = m.inputs, m.outputs
    assert (x.shape, x.dtype, x.fixed_point) == ((27,), "float32", "ap_fixed<16,6>")
    assert (y.shape, y.dtype) == ((1,), "float32")
    assert y.fixed_point.startswith("ap_fixed<")
    layers = {layer.name: layer for layer in m.layers}
    assert layers["dense_1"].class_name == "Dense"
    assert layers["dense_1"].types["weight"] == "ap_fixed<16,6>"  # quantized_bits(16,5,alpha=1)
    assert layers["dense_1"].types["bias"] == "ap_fixed<16,6>"
    assert layers["relu_1"].types["result"] == "ap_ufixed<16,6,AP_RND_CONV,AP_SAT,0>"  # quantized_relu(16,6)
    assert "accum" in layers["output"].types
    assert set(m.toolchain) == {"hls4ml", "g++", "v++", "python", "fpgaas"}
    assert m.toolchain["hls4ml"] == "1.3.0"
    assert m.toolchain["g++"].startswith("g++")
    assert m.source_model == "model/small.h5"
    assert m.created.endswith("+00:00")


def test_the_artifact_holds_the_source_model_hls_project_kernel_and_library(small_build: BuiltModel) -> None:
    root = small_build.artifact.path
    assert load_artifact(root).manifest == small_build.artifact.manifest
    assert sha256_file(root / "model/small.h5") == sha256_file(root.parent / "small.h5")
    for relative in ("hls/firmware/myproject.cpp", "hls/fpgaas_kernel.cpp", "hls/fpgaas_kernel.cfg",
                     "emulation/libkernel.so", "logs/gxx.log", "logs/hls4ml.log"):  # fmt: skip
        assert (root / relative).is_file(), relative
    assert not list(root.rglob("*.txt")), "weights are compiled in, no text weight files"
    assert all(not p.stat().st_mode & stat.S_IWUSR for p in root.rglob("*") if p.is_file())


def test_the_kernel_top_has_the_fpgaas_abi_and_vitis_interfaces(small_build: BuiltModel) -> None:
    top = (small_build.artifact.path / "hls/fpgaas_kernel.cpp").read_text()
    assert 'extern "C" FPGAAS_EXPORT void fpgaas_kernel(const float *x, float *y, unsigned int n)' in top
    for pragma in ("m_axi port = x offset = slave bundle = gmem0", "m_axi port = y offset = slave bundle = gmem1",
                   "s_axilite port = n", "s_axilite port = return", "PIPELINE II = 1"):  # fmt: skip
        assert f"#pragma HLS INTERFACE {pragma}" in top or f"#pragma HLS {pragma}" in top, pragma
    assert "input_t(x[" in top and "myproject(in, out);" in top and "float(out[j])" in top
    cfg = (small_build.artifact.path / "hls/fpgaas_kernel.cfg").read_text()
    assert "sp=fpgaas_kernel_1.x:DDR[0]" in cfg and "sp=fpgaas_kernel_1.y:DDR[1]" in cfg


def test_emulation_equals_hls4ml_predict_bit_for_bit(small_build: BuiltModel) -> None:
    x = samples(4096, 27, seed=1)
    kernel = KernelLibrary.from_artifact(small_build.artifact)
    expected = np.asarray(small_build.reference.predict(x), dtype=np.float32).reshape(len(x), 1)
    got = kernel.run(x)
    assert np.array_equal(got, expected)
    assert len(np.unique(got)) > 100, "the model must not be trivially constant"


@pytest.mark.skipif(bool(os.environ.get("FPGAAS_HAVE_VITIS")), reason="checks the no-Vitis path")
def test_without_vpp_there_is_no_xclbin_but_the_commands_are_recorded(small_build: BuiltModel) -> None:
    b = small_build.artifact.manifest.binaries
    assert (b.xclbin, b.xclbin_status, small_build.artifact.xclbin) == (None, "v++ not on PATH", None)
    compile_cmd, link_cmd = b.xclbin_command
    assert compile_cmd.startswith("v++ -c -t hw --platform " + DEFAULT_PLATFORM)
    assert "-k fpgaas_kernel" in compile_cmd and "hls/fpgaas_kernel.cpp" in compile_cmd
    assert link_cmd.startswith("v++ -l -t hw --platform " + DEFAULT_PLATFORM)
    assert "--config hls/fpgaas_kernel.cfg" in link_cmd and link_cmd.count("xclbin/small.xclbin") == 1
    # Only the emulation stand-in the emulated PYNQ card loads; never a pretended hardware xclbin.
    assert sorted(p.name for p in (small_build.artifact.path / "xclbin").iterdir()) == ["emulation.xclbin"]


def test_an_existing_artifact_is_never_overwritten(small_build: BuiltModel, tiny_model: Path) -> None:
    before = small_build.artifact.manifest
    with pytest.raises(ArtifactError, match="immutable"):
        build(tiny_model, name="tiny", out=small_build.artifact.path)
    assert load_artifact(small_build.artifact.path).manifest == before


def test_a_failing_vpp_raises_build_error_naming_its_log(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "v++"
    fake.write_text('#!/bin/sh\necho "ERROR: [v++ 60-602] platform $5 not found"\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "artifact"

    with pytest.raises(BuildError, match="v\\+\\+ exited with status 1") as caught:
        build(tiny_model, name="tiny", out=out)

    log = Path(caught.value.log or "")
    assert log == tmp_path / "artifact.build-logs" / "vpp_compile.log"
    assert "platform xilinx_u250_gen3x16_xdma_4_1_202210_1 not found" in log.read_text()
    assert str(log) in str(caught.value)
    assert not out.exists(), "a failed build leaves nothing at the destination"
    assert not [p for p in tmp_path.iterdir() if ".building-" in p.name]


def test_without_gxx_the_build_says_which_tool_is_missing(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolMissing, match="g\\+\\+ is not on PATH") as caught:
        build(tiny_model, name="tiny", out=tmp_path / "artifact")
    assert caught.value.tool == "g++"
    assert not (tmp_path / "artifact").exists()


@pytest.mark.parametrize("name", ["", "../escape", "a b", "x" * 65])
def test_names_that_are_not_safe_path_components_are_bad_input(
    name: str, tiny_model: Path, tmp_path: Path
) -> None:
    with pytest.raises(BadInput) as caught:
        build(tiny_model, name=name, out=tmp_path / "artifact")
    assert caught.value.field == "name"
