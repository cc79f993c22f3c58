"""`PyxrtDevice` on emulated pyxrt cards: XRT's call path, resident, bit-exact, pipelined.

The kernels here run on cards whose xclbins were linked with 1 or 4 compute units
(`nk=fpgaas_kernel:N` in the artifact's v++ config, which the emulated card honours) and keep
k buffer sets per CU; a call is cut into runs that are dealt over them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fpgaas.builder.connectivity import connectivity_config
from fpgaas.kernels.artifact import MANIFEST_NAME, SIGNATURE_NAME, Artifact, load_artifact, write_manifest
from fpgaas.kernels.errors import DeviceError
from fpgaas.service.devices import xrt_emulation
from fpgaas.service.devices.xrt import PyxrtDevice, XrtOptions, load_pyxrt, open_xrt_devices
from fpgaas.service.devices.xrt_emulation import EmulatedXrtCard, TimingModel

OPTIONS = XrtOptions(kernel_timeout_s=0.5, reload_attempts=2, reload_backoff_s=0.01)


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def with_compute_units(artifact: Artifact, target: Path, compute_units: int) -> Artifact:
    """A copy of `artifact` whose v++ config links `compute_units` CUs (as the builder writes it)."""
    shutil.copytree(artifact.path, target, ignore=shutil.ignore_patterns(MANIFEST_NAME, SIGNATURE_NAME))
    cfg = target / "hls" / "fpgaas_kernel.cfg"
    for path in (target, *target.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    cfg.write_text(connectivity_config("fpgaas_kernel", compute_units))
    write_manifest(target, artifact.manifest)
    return load_artifact(target)


@pytest.fixture(scope="module")
def four_cu_artifact(artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return with_compute_units(artifact, tmp_path_factory.mktemp("four-cu") / "tiny", 4)


@pytest.fixture
def card(xrt_cards: list[EmulatedXrtCard]) -> EmulatedXrtCard:
    yield xrt_cards[0]
    xrt_cards[0].timing = None
    xrt_cards[0].clear_faults()


def open_device(**options: object) -> PyxrtDevice:
    return PyxrtDevice(xrt_emulation, 0, options=XrtOptions(**{**OPTIONS.__dict__, **options}))


@pytest.mark.parametrize("n", [1, 7, 64])
def test_results_are_bit_identical_to_the_twin(
    card, artifact: Artifact, twin, samples: np.ndarray, n: int
) -> None:
    device = open_device()
    kernel = device.load(artifact, max_batch=64)

    y, _ = kernel.run(samples[:n])

    assert y.shape == (n, artifact.manifest.outputs[0].width) and y.dtype == np.float32
    np.testing.assert_array_equal(bits(y), bits(twin.run(samples[:n])))
    device.close()


@pytest.mark.parametrize(
    ("compute_units", "buffer_sets", "run_rows"), [(1, 1, 8), (1, 3, 5), (4, 2, 3), (4, 1, 64)]
)
def test_a_call_cut_into_runs_over_cus_and_buffer_sets_gives_every_row_its_own_answer_in_order(
    card, four_cu_artifact: Artifact, twin, compute_units: int, buffer_sets: int, run_rows: int
) -> None:
    device = open_device(compute_units=compute_units, buffer_sets=buffer_sets, run_rows=run_rows)
    kernel = device.load(four_cu_artifact, max_batch=1000)
    x = np.random.default_rng(5).normal(0.0, 8.0, size=(1000, 6)).astype(np.float32)
    runs_before = card.kernel_runs

    for n in (1000, 1, run_rows, run_rows + 1, 333):
        y, _ = kernel.run(x[:n])
        np.testing.assert_array_equal(bits(y), bits(twin.run(x[:n])))

    calls = (1000, 1, run_rows, run_rows + 1, 333)
    assert card.kernel_runs - runs_before == sum(-(-n // run_rows) for n in calls)
    assert kernel.buffer_sets == compute_units * buffer_sets
    device.close()


def test_buffers_are_allocated_once_per_load_two_per_buffer_set(
    card, four_cu_artifact: Artifact, samples
) -> None:
    before_allocations, before_downloads = card.allocations, card.downloads
    device = open_device(compute_units=4, buffer_sets=2)

    kernel = device.load(four_cu_artifact, max_batch=64)
    for n in [1, 64, 3, 64, 1] * 10:
        kernel.run(samples[:n])

    assert card.allocations - before_allocations == 4 * 2 * 2  # x and y per set, 8 sets
    assert card.downloads - before_downloads == 1
    assert card.compute_units == [f"fpgaas_kernel_{c}" for c in range(1, 5)]
    kernel.close()
    assert card.live_buffers == 0
    with pytest.raises(DeviceError, match="unloaded"):
        kernel.run(samples[:1])


def test_asking_for_more_compute_units_than_the_xclbin_has_fails_the_load_naming_them(
    card, artifact: Artifact
) -> None:
    device = open_device(compute_units=2)

    with pytest.raises(DeviceError, match=r"xclbin failed to load.*fpgaas_kernel:\{fpgaas_kernel_2\}"):
        device.load(artifact, max_batch=8)

    assert not device.info.healthy


def test_with_the_timing_model_overlapped_runs_beat_the_no_overlap_bound(
    card, four_cu_artifact, twin
) -> None:
    # 1 ms a transfer, ~2.6 ms a run of 512 rows: serial would take 4.6 ms a run.
    card.timing = TimingModel(
        dma_gbps=1.0, dma_latency_s=1e-3, clock_mhz=200.0, ii_cycles=1000, time_scale=1.0
    )
    x = np.random.default_rng(1).normal(0.0, 8.0, size=(8 * 512, 6)).astype(np.float32)
    walls = {}
    for cus, sets in ((1, 1), (4, 2)):
        device = open_device(compute_units=cus, buffer_sets=sets, run_rows=512, kernel_timeout_s=5.0)
        kernel = device.load(four_cu_artifact, max_batch=x.shape[0])
        started = time.perf_counter()
        y, stages = kernel.run(x)
        walls[(cus, sets)] = time.perf_counter() - started
        np.testing.assert_array_equal(bits(y), bits(twin.run(x)))
        assert abs(stages.to_device_s + stages.kernel_s + stages.from_device_s - walls[(cus, sets)]) < 0.01
        device.close()

    serial = 8 * (card.timing.dma_s(512 * 24) + card.timing.kernel_s(512) + card.timing.dma_s(512 * 8))
    assert walls[(1, 1)] >= serial * 0.95  # one set: nothing overlaps
    assert walls[(4, 2)] < walls[(1, 1)] * 0.7  # kernels run while transfers go on


def test_one_device_per_emulated_card(xrt_cards) -> None:
    devices = open_xrt_devices(emulated_cards=2, options=OPTIONS)

    assert [d.info.name for d in devices][:2] == ["xrt-0", "xrt-1"]
    assert all(d.info.kind == "xrt" and d.info.healthy and "emulated" in d.info.detail for d in devices)


def test_a_card_index_xrt_does_not_list_is_refused(xrt_cards) -> None:
    with pytest.raises(DeviceError, match="no XRT card at index 99"):
        PyxrtDevice(xrt_emulation, 99)


def test_a_card_holds_one_xclbin_at_a_time(card, artifact: Artifact, samples) -> None:
    device = open_device()
    kernel = device.load(artifact, max_batch=8)

    with pytest.raises(DeviceError, match="one xclbin at a time"):
        device.load(artifact, max_batch=8)

    kernel.close()
    assert device.load(artifact, max_batch=8).run(samples[:8])[0].shape == (8, 2)
    device.close()


@pytest.mark.parametrize("problem", ["more rows than max_batch", "wrong width", "one-dimensional"])
def test_batches_that_do_not_fit_the_buffers_are_a_device_fault(
    card, artifact: Artifact, problem: str
) -> None:
    device = open_device()
    kernel = device.load(artifact, max_batch=8)
    shape = {"more rows than max_batch": (9, 6), "wrong width": (4, 7), "one-dimensional": (6,)}

    with pytest.raises(DeviceError) as refused:
        kernel.run(np.zeros(shape[problem], dtype=np.float32))
    assert refused.value.status_code == 503
    device.close()


def test_without_xrt_the_xrt_device_says_what_is_missing() -> None:
    if "pyxrt" in sys.modules or _importable("pyxrt"):
        pytest.fail("this machine has XRT's pyxrt; the test expects the binding to be missing")
    with pytest.raises(DeviceError, match=r"needs XRT's Python binding `pyxrt`.*FPGAAS_XRT_EMULATED_CARDS"):
        load_pyxrt(emulated_cards=0)


def _importable(name: str) -> bool:
    env = {**os.environ, "PYTHONPATH": ""}
    return (
        subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True).returncode == 0
    )
