"""The emulated pyxrt behaves like XRT's binding where `PyxrtDevice` relies on it: separate host
and card memory, the twin's bits, runs that queue per compute unit, errors and faults."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.xclbin import EMULATION_XCLBIN
from fpgaas.service.devices import xrt_emulation as pyxrt

TO_DEVICE = pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE
FROM_DEVICE = pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE
COMPLETED = pyxrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED


@pytest.fixture
def loaded(xrt_cards, artifact: Artifact):  # type: ignore[no-untyped-def]
    """XRT's documented sequence: device, xclbin, kernel, one bo per argument."""
    device = pyxrt.device(0)
    xclbin_uuid = device.load_xclbin(pyxrt.xclbin(str(artifact.file(EMULATION_XCLBIN))))
    kernel = pyxrt.kernel(device, xclbin_uuid, "fpgaas_kernel", pyxrt.kernel.shared)
    x = pyxrt.bo(device, 64 * 6 * 4, pyxrt.bo.normal, kernel.group_id(0))
    y = pyxrt.bo(device, 64 * 2 * 4, pyxrt.bo.normal, kernel.group_id(1))
    yield device, kernel, x, y
    xrt_cards[0].clear_faults()


def host(bo: pyxrt.bo, width: int) -> np.ndarray:
    return np.frombuffer(bo.map(), dtype=np.float32).reshape(-1, width)


def test_the_documented_call_sequence_gives_the_twin_result(loaded, twin, samples: np.ndarray) -> None:
    _device, kernel, x, y = loaded
    host(x, 6)[:] = samples
    x.sync(TO_DEVICE, x.size(), 0)

    run = kernel(x, y, 64)
    assert run.wait() == COMPLETED
    y.sync(FROM_DEVICE)

    np.testing.assert_array_equal(host(y, 2), twin.run(samples))


def test_without_sync_to_device_the_kernel_reads_stale_card_memory(loaded, twin, samples: np.ndarray) -> None:
    _device, kernel, x, y = loaded
    host(x, 6)[:] = samples  # never synced: the card still holds zeros

    assert kernel(x, y, 64).wait() == COMPLETED
    y.sync(FROM_DEVICE, y.size(), 0)

    np.testing.assert_array_equal(host(y, 2), twin.run(np.zeros_like(samples)))


def test_without_sync_from_device_the_host_sees_stale_results(loaded, samples: np.ndarray) -> None:
    _device, kernel, x, y = loaded
    host(x, 6)[:] = samples
    x.sync(TO_DEVICE)

    assert kernel(x, y, 64).wait() == COMPLETED

    assert not host(y, 2).any()  # the results are on the card only


def test_a_reusable_run_object_restarts_with_new_arguments(loaded, twin, samples: np.ndarray) -> None:
    _device, kernel, x, y = loaded
    run = pyxrt.run(kernel)
    run.set_arg(0, x)
    run.set_arg(1, y)
    host(x, 6)[:] = samples
    x.sync(TO_DEVICE)
    for n in (64, 3):
        run.set_arg(2, n)
        run.start()
        assert run.wait(1000) == COMPLETED and run.state() == COMPLETED
    y.sync(FROM_DEVICE)

    np.testing.assert_array_equal(host(y, 2)[:3], twin.run(samples[:3]))


def test_a_hung_run_times_out_in_wait_and_a_reload_aborts_it(loaded, xrt_cards, artifact: Artifact) -> None:
    device, kernel, x, y = loaded
    xrt_cards[0].inject("hang")

    run = kernel(x, y, 1)
    assert run.wait(20) == pyxrt.ert_cmd_state.ERT_CMD_STATE_TIMEOUT
    assert run.state() == pyxrt.ert_cmd_state.ERT_CMD_STATE_RUNNING

    device.load_xclbin(pyxrt.xclbin(str(artifact.file(EMULATION_XCLBIN))))
    assert run.wait(1000) == pyxrt.ert_cmd_state.ERT_CMD_STATE_ABORT


def test_buffers_of_an_earlier_load_are_gone_after_a_reload(loaded, artifact: Artifact) -> None:
    device, _kernel, x, _y = loaded
    device.load_xclbin(str(artifact.file(EMULATION_XCLBIN)))

    with pytest.raises(RuntimeError, match="failed to sync bo"):
        x.sync(TO_DEVICE)


def test_injected_sync_and_load_errors_raise_like_xrt(loaded, xrt_cards, artifact: Artifact) -> None:
    device, _kernel, x, _y = loaded
    xrt_cards[0].inject("sync_error")
    with pytest.raises(RuntimeError, match="failed to sync bo"):
        x.sync(TO_DEVICE)
    x.sync(TO_DEVICE)  # one fault, one failure

    xrt_cards[0].inject("load_error")
    with pytest.raises(RuntimeError, match="load_axlf"):
        device.load_xclbin(str(artifact.file(EMULATION_XCLBIN)))


def test_a_buffer_collected_on_another_thread_never_waits_for_the_card_lock(loaded, xrt_cards) -> None:
    """The garbage collector runs a bo's finalizer on whatever thread it happens on; once that was
    a compute unit's thread starting inside `load_xclbin`, which holds the card's lock and waits
    for that thread: both waited for ever."""
    device, kernel, _x, _y = loaded
    card = xrt_cards[0]
    doomed = [pyxrt.bo(device, 4096, pyxrt.bo.normal, kernel.group_id(0))]
    live = card.live_buffers
    freed = threading.Event()

    def drop_the_last_reference() -> None:
        doomed.clear()
        freed.set()

    with card.lock:  # as `load_xclbin` holds it
        dropper = threading.Thread(target=drop_the_last_reference)
        dropper.start()
        assert freed.wait(5.0), "the finalizer waited for the card's lock"
    dropper.join(5.0)
    assert card.live_buffers == live - 1


def test_a_compute_unit_xclbin_does_not_have_is_refused(loaded) -> None:
    device, _kernel, _x, _y = loaded
    with pytest.raises(RuntimeError, match="No compute units matching"):
        pyxrt.kernel(device, device.get_xclbin_uuid(), "fpgaas_kernel:{fpgaas_kernel_2}", pyxrt.kernel.shared)


def test_an_unknown_fault_is_refused(xrt_cards) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        xrt_cards[0].inject("melt")  # type: ignore[arg-type]


def test_the_timing_model_charges_latency_plus_bytes_over_bandwidth_and_ii_rows_over_clock() -> None:
    model = pyxrt.TimingModel(
        dma_gbps=10.0, dma_latency_s=1e-5, clock_mhz=250.0, ii_cycles=2.0, depth_cycles=50
    )

    assert model.dma_s(10_000) == pytest.approx(1e-5 + 1e-6)
    assert model.kernel_s(1000) == pytest.approx((50 + 2000) / 250e6)
    assert pyxrt.TimingModel(wire_bytes_per_value=2.0, time_scale=10).dma_s(4000) == pytest.approx(
        10 * (15e-6 + 2000 / 12e9)
    )
