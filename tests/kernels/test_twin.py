"""The CPU twin: the artifact's emulation library behind the kernel ABI, called through ctypes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fpgaas.kernels.engine import FixedPointEngine
from fpgaas.kernels.errors import ArtifactError, BadInput
from fpgaas.kernels.twin import EngineKernel, KernelLibrary
from tests.fixtures.builds import BuiltModel, shared_small_build


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> BuiltModel:
    return shared_small_build(tmp_path_factory)


@pytest.fixture(scope="module")
def kernel(small: BuiltModel) -> KernelLibrary:
    return KernelLibrary.from_artifact(small.artifact)


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 8.0, size=(n, 27)).astype(np.float32)


def test_widths_come_from_the_manifest(kernel: KernelLibrary, small: BuiltModel) -> None:
    assert (kernel.n_inputs, kernel.n_outputs) == (27, 1)
    assert kernel.path == small.artifact.emulation_library


def test_run_matches_hls4ml_and_run_into_writes_the_same_values_in_place(
    kernel: KernelLibrary, small: BuiltModel
) -> None:
    x = batch(2000)
    y = kernel.run(x)
    assert (y.shape, y.dtype) == ((2000, 1), np.float32)
    assert np.array_equal(y, np.asarray(small.reference.predict(x), dtype=np.float32).reshape(2000, 1))
    out = np.full((2000, 1), np.nan, dtype=np.float32)
    kernel.run_into(x, out)
    assert np.array_equal(out, y)


def test_each_row_is_independent_of_the_batch_it_is_in(kernel: KernelLibrary) -> None:
    x = batch(64, seed=3)
    whole = kernel.run(x)
    one_by_one = np.concatenate([kernel.run(x[i : i + 1]) for i in range(len(x))])
    assert np.array_equal(whole, one_by_one)


def test_an_empty_batch_gives_an_empty_result(kernel: KernelLibrary) -> None:
    assert kernel.run(np.empty((0, 27), dtype=np.float32)).shape == (0, 1)


def test_concurrent_calls_from_many_threads_give_the_sequential_results(kernel: KernelLibrary) -> None:
    inputs = [batch(500, seed=s) for s in range(16)]
    expected = [kernel.run(x) for x in inputs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(kernel.run, inputs))
    assert all(np.array_equal(r, e) for r, e in zip(results, expected, strict=True))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((4, 27), dtype=np.float64), "float32"),
        (np.zeros((4, 26), dtype=np.float32), r"shape \(n, 27\)"),
        (np.zeros(27, dtype=np.float32), r"shape \(n, 27\)"),
        (np.zeros((27, 4), dtype=np.float32).T, "C-contiguous"),
        ([[0.0] * 27], "numpy array"),
    ],
    ids=["float64", "wrong-width", "1-d", "fortran-order", "list"],
)
def test_malformed_inputs_are_bad_input_naming_x(kernel: KernelLibrary, x: object, message: str) -> None:
    with pytest.raises(BadInput, match=message) as caught:
        kernel.run(x)  # type: ignore[arg-type]
    assert caught.value.field == "x"


@pytest.fixture(scope="module")
def engine_kernel(small: BuiltModel) -> EngineKernel:
    return EngineKernel(FixedPointEngine.from_hls_project(small.artifact.path / "hls"))


@pytest.mark.parametrize("rows", [1, 2, 33, 3000])
def test_the_engine_writes_the_librarys_bits_into_the_callers_buffer(
    kernel: KernelLibrary, engine_kernel: EngineKernel, rows: int
) -> None:
    x = batch(rows, seed=rows)
    backing = np.full((rows + 1, 1), np.nan, dtype=np.float32)
    out = backing[:rows]  # a view: the answer must land in it, not in a new array
    engine_kernel.run_into(x, out)
    want = kernel.run(x).view(np.uint32)
    assert np.array_equal(backing[:rows].view(np.uint32), want)
    assert np.isnan(backing[rows, 0])
    # A device's own checked buffers skip the checks, not the arithmetic.
    for twin in (engine_kernel, kernel):
        unchecked = np.full((rows, 1), np.nan, dtype=np.float32)
        twin.compute_into(x, unchecked)
        assert np.array_equal(unchecked.view(np.uint32), want)


@pytest.mark.parametrize("twin", ["kernel", "engine_kernel"])
def test_run_into_checks_both_buffers(twin: str, request: pytest.FixtureRequest) -> None:
    """The library and the engine refuse the same buffers with the same messages."""
    kernel: KernelLibrary | EngineKernel = request.getfixturevalue(twin)
    x = batch(8)
    with pytest.raises(BadInput, match="rows") as caught:
        kernel.run_into(x, np.empty((7, 1), dtype=np.float32))
    assert caught.value.field == "out"
    read_only = np.empty((8, 1), dtype=np.float32)
    read_only.flags.writeable = False
    with pytest.raises(BadInput, match="read-only"):
        kernel.run_into(x, read_only)
    with pytest.raises(BadInput, match="float32"):
        kernel.run_into(x, np.empty((8, 1), dtype=np.float64))
    with pytest.raises(BadInput, match="float32") as caught:
        kernel.run_into(x.astype(np.float64), np.empty((8, 1), dtype=np.float32))
    assert caught.value.field == "x"


def test_a_file_without_the_kernel_symbol_is_an_artifact_error(small: BuiltModel) -> None:
    with pytest.raises(ArtifactError, match="fpgaas_kernel"):
        KernelLibrary(small.artifact.path / "model" / "small.h5", 27, 1)


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_the_multi_threaded_batch_entry_gives_the_single_threaded_bits(
    kernel: KernelLibrary, threads: int
) -> None:
    assert kernel.has_batch_entry
    x = np.random.default_rng(3).normal(0.0, 30.0, size=(1001, kernel.n_inputs)).astype(np.float32)
    single = kernel.run(x)
    assert np.array_equal(kernel.run(x, threads=threads), single)
    out = np.empty_like(single)
    kernel.run_into(x, out, threads=threads)
    assert np.array_equal(out, single)


def test_zero_threads_is_bad_input(kernel: KernelLibrary) -> None:
    with pytest.raises(BadInput, match="threads"):
        kernel.run(np.zeros((4, kernel.n_inputs), dtype=np.float32), threads=0)
