"""`PynqDevice` on an emulated card: the paper's PYNQ call path, resident and bit-exact."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import DeviceError
from fpgaas.service.devices.pynq import PynqDevice, open_pynq_devices
from fpgaas.service.devices.pynq_emulation import EmulatedCard


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("n", [1, 7, 64])
def test_results_are_bit_identical_to_the_kernel_library(
    device: PynqDevice, artifact: Artifact, twin, samples: np.ndarray, n: int
) -> None:
    kernel = device.load(artifact, max_batch=64)

    y, _ = kernel.run(samples[:n])

    assert y.shape == (n, artifact.manifest.outputs[0].width)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(bits(y), bits(twin.run(samples[:n])))


def test_buffers_are_allocated_once_per_load_and_reused_by_every_call(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], samples: np.ndarray
) -> None:
    card = cards[0]
    before_allocations, before_downloads = card.allocations, card.downloads

    kernel = device.load(artifact, max_batch=64)
    for n in [1, 64, 3, 64, 1] * 10:
        kernel.run(samples[:n])

    assert card.allocations - before_allocations == 2  # one input and one output buffer
    assert card.downloads - before_downloads == 1  # the overlay stays resident
    assert card.kernel_runs >= 50


def test_every_call_reports_the_three_stage_times(
    device: PynqDevice, artifact: Artifact, samples: np.ndarray
) -> None:
    kernel = device.load(artifact, max_batch=64)

    _, times = kernel.run(samples)

    assert times.to_device_s > 0 and times.kernel_s > 0 and times.from_device_s > 0
    assert times.to_device_s + times.kernel_s + times.from_device_s < 1.0


def test_a_slow_kernel_is_waited_for_within_the_deadline(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    kernel = device.load(artifact, max_batch=64)
    cards[0].kernel_latency_s = 0.02  # the handle is not done on return: the waiter thread waits

    y, times = kernel.run(samples)

    assert times.kernel_s >= 0.02
    np.testing.assert_array_equal(bits(y), bits(twin.run(samples)))


def test_info_names_the_card_and_the_model_it_holds(device: PynqDevice, artifact: Artifact) -> None:
    assert device.info.kind == "pynq" and device.info.healthy
    assert device.info.name.startswith("pynq-")
    assert "emulated" in device.info.detail

    device.load(artifact, max_batch=8)

    assert device.info.healthy
    assert f"{artifact.manifest.name} v{artifact.manifest.version}" in device.info.detail


def test_a_card_holds_one_xclbin_at_a_time(
    device: PynqDevice, artifact: Artifact, samples: np.ndarray
) -> None:
    kernel = device.load(artifact, max_batch=8)

    with pytest.raises(DeviceError, match="one xclbin at a time"):
        device.load(artifact, max_batch=8)

    kernel.close()
    again = device.load(artifact, max_batch=8)
    assert again.run(samples[:8])[0].shape[0] == 8


def test_closing_frees_the_card_buffers(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], samples: np.ndarray
) -> None:
    live_before = cards[0].live_buffers
    kernel = device.load(artifact, max_batch=8)
    assert cards[0].live_buffers == live_before + 2

    kernel.close()

    assert cards[0].live_buffers == live_before
    with pytest.raises(DeviceError, match="unloaded"):
        kernel.run(samples[:1])


@pytest.mark.parametrize("problem", ["more rows than max_batch", "wrong width", "one-dimensional"])
def test_batches_that_do_not_fit_the_buffers_are_a_device_fault_never_the_clients(
    device: PynqDevice, artifact: Artifact, problem: str
) -> None:
    kernel = device.load(artifact, max_batch=8)
    width = artifact.manifest.inputs[0].width
    shape = {
        "more rows than max_batch": (9, width),
        "wrong width": (4, width + 1),
        "one-dimensional": (width,),
    }

    # The dataplane checked the client's rows already: what still does not fit is a 503.
    with pytest.raises(DeviceError) as refused:
        kernel.run(np.zeros(shape[problem], dtype=np.float32))
    assert refused.value.status_code == 503


def test_one_device_per_card_from_the_pynq_device_list(cards: list[EmulatedCard]) -> None:
    devices = open_pynq_devices(emulated_cards=2)

    names = [d.info.name for d in devices]
    assert len(names) == len(set(names)) >= 2
    assert {c.tag for c in cards} <= {d.card.tag for d in devices}


def test_a_card_index_pynq_does_not_list_is_refused() -> None:
    with pytest.raises(DeviceError, match="no PYNQ card at index 99"):
        PynqDevice(99)
