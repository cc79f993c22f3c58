"""`FixedPointEngine` computes exactly hls4ml's C simulation, read from the project text alone."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from reference_nets import N_SAMPLES, NAMED, RANDOM, REPO, SPECIAL_VALUES, Reference

from fpgaas.kernels.engine import FixedPointEngine, UnsupportedLayer
from fpgaas.kernels.errors import FpgaasError


def _mismatching_samples(engine: FixedPointEngine, ref: Reference) -> np.ndarray:
    y = engine.predict(ref.x)
    assert y.dtype == np.float32 and y.shape == ref.y.shape
    return np.flatnonzero((y.view(np.uint32) != ref.y.view(np.uint32)).any(axis=1))


@pytest.mark.parametrize("name", NAMED)
def test_every_output_bit_equals_the_c_simulation(references: dict[str, Reference], name: str) -> None:
    ref = references[name]
    engine = FixedPointEngine.from_hls_project(ref.hls_dir)
    assert len(ref.x) >= N_SAMPLES
    bad = _mismatching_samples(engine, ref)
    assert bad.size == 0, f"{bad.size} samples differ, first inputs {ref.x[bad[:2]]}"


def test_the_served_model_runs_on_the_float64_plan(references: dict[str, Reference]) -> None:
    """The builder's muon artifact (wide `auto` accumulators) takes the fast path for every layer."""
    engine = FixedPointEngine.from_hls_project(references["muon"].hls_dir)
    assert engine.path == "float64 plan"
    assert all(d["plan"] == "blas-float64" for d in engine.describe() if d["function"] == "dense")


def test_narrow_accumulators_take_the_int64_correction_path(references: dict[str, Reference]) -> None:
    engine = FixedPointEngine.from_hls_project(references["muon_narrow"].hls_dir)
    assert engine.path.startswith("int64 layers") and "drops 10 bits" in engine.path
    assert all("10-bit correction" in d["plan"] for d in engine.describe() if d["function"] == "dense")


def test_non_finite_and_huge_inputs_equal_the_c_simulation(references: dict[str, Reference]) -> None:
    """NaN, +-inf, float32 extremes, subnormals and -0.0 (rows appended to the muon inputs)."""
    ref = references["muon"]
    special = np.isin(ref.x, SPECIAL_VALUES) | np.isnan(ref.x)
    rows = special.all(axis=1)
    assert rows.sum() >= 8 * len(SPECIAL_VALUES) and np.isnan(ref.x[rows]).any()
    engine = FixedPointEngine.from_hls_project(ref.hls_dir)
    y = engine.predict(ref.x[rows])
    assert np.array_equal(y.view(np.uint32), ref.y[rows].view(np.uint32))


@pytest.mark.parametrize("name", ["muon", "sat_rnd", "unsigned_wide", "batchnorm", "keras3"])
def test_every_batch_size_and_chunk_boundary_equals_the_c_simulation(
    references: dict[str, Reference], name: str
) -> None:
    """Batch sizes 1..40 and one chunk boundary: the buffers per batch size give the same bits."""
    ref = references[name]
    engine = FixedPointEngine.from_hls_project(ref.hls_dir)
    for n in (*range(1, 41), 2047, 2049, 4100):
        x = ref.x[:n]
        assert np.array_equal(engine.predict(x).view(np.uint32), ref.y[:n].view(np.uint32)), n


def test_inputs_reach_wrap_and_saturation(references: dict[str, Reference]) -> None:
    """The reference inputs are not all tame: many lie far outside the input type's range."""
    ref = references["muon"]
    engine = FixedPointEngine.from_hls_project(ref.hls_dir)
    in_type = engine.describe()[0]["input"]
    assert in_type.startswith("ap_fixed<16,6")
    assert (np.abs(ref.x) >= 32).any(axis=1).mean() > 0.25


@pytest.mark.parametrize("name", RANDOM)
def test_random_small_networks_with_random_types(references: dict[str, Reference], name: str) -> None:
    ref = references[name]
    engine = FixedPointEngine.from_hls_project(ref.hls_dir)
    bad = _mismatching_samples(engine, ref)
    assert bad.size == 0, f"{bad.size} samples differ; layers {engine.describe()}"


def test_describe_names_every_layer_and_its_types(references: dict[str, Reference]) -> None:
    engine = FixedPointEngine.from_hls_project(references["muon"].hls_dir)
    layers = engine.describe()
    assert [d["function"] for d in layers] == ["dense", "relu"] * 6 + ["dense"]
    assert (engine.n_inputs, engine.n_outputs) == (27, 1)
    first = layers[0]
    assert (first["n_in"], first["n_out"]) == (27, 35)
    assert {"input", "weight", "bias", "accum", "result", "plan"} <= first.keys()
    assert layers[1]["result"].startswith("ap_ufixed<16,6")


def test_batchnorm_and_linear_layers_are_covered(references: dict[str, Reference]) -> None:
    functions = {
        d["function"]
        for name in NAMED
        for d in FixedPointEngine.from_hls_project(references[name].hls_dir).describe()
    }
    assert {"dense", "relu", "linear", "normalize"} <= functions


def test_concurrent_predicts_agree_with_a_single_one(references: dict[str, Reference]) -> None:
    ref = references["muon"]
    engine = FixedPointEngine.from_hls_project(ref.hls_dir)
    parts = np.array_split(ref.x[:40_000], 8)
    with ThreadPoolExecutor(max_workers=4) as pool:
        outs = list(pool.map(engine.predict, parts))
    assert np.array_equal(np.concatenate(outs).view(np.uint32), ref.y[:40_000].view(np.uint32))


def test_batch_of_one_and_empty_batch(references: dict[str, Reference]) -> None:
    ref = references["batchnorm"]
    engine = FixedPointEngine.from_hls_project(ref.hls_dir)
    assert np.array_equal(engine.predict(ref.x[:1]).view(np.uint32), ref.y[:1].view(np.uint32))
    assert engine.predict(np.empty((0, engine.n_inputs), np.float32)).shape == (0, engine.n_outputs)


def test_wrong_input_width_is_rejected(references: dict[str, Reference]) -> None:
    engine = FixedPointEngine.from_hls_project(references["keras3"].hls_dir)
    with pytest.raises(ValueError, match=r"expected shape \(n, 5\)"):
        engine.predict(np.zeros((3, 6), np.float32))


def test_unsupported_layer_is_named_at_construction(references: dict[str, Reference]) -> None:
    with pytest.raises(UnsupportedLayer, match="tanh") as info:
        FixedPointEngine.from_hls_project(references["tanh"].hls_dir)
    assert isinstance(info.value, FpgaasError)


def test_missing_project_is_unsupported(tmp_path) -> None:
    with pytest.raises(UnsupportedLayer, match=r"myproject\.cpp"):
        FixedPointEngine.from_hls_project(tmp_path)


def test_serving_imports_neither_hls4ml_nor_tensorflow(references: dict[str, Reference]) -> None:
    code = (
        "import sys; from fpgaas.kernels.engine import FixedPointEngine; "
        f"FixedPointEngine.from_hls_project({str(references['muon'].hls_dir)!r}); "
        "bad = [m for m in ('hls4ml', 'tensorflow', 'keras', 'qkeras') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)
