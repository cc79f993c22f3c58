"""Card faults become 503-class errors, never wrong answers, and the card comes back by itself."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import DeviceError, DeviceTimeout
from fpgaas.service.devices.pynq import PynqDevice
from fpgaas.service.devices.pynq_emulation import EmulatedCard


def test_a_hung_kernel_times_out_then_the_overlay_is_reloaded(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    kernel = device.load(artifact, max_batch=64)
    downloads = cards[0].downloads
    cards[0].inject("hang")

    started = time.perf_counter()
    with pytest.raises(DeviceTimeout, match="did not finish within") as caught:
        kernel.run(samples)

    assert caught.value.status_code == 503
    assert time.perf_counter() - started >= device.options.kernel_timeout_s
    assert cards[0].downloads == downloads + 1
    assert device.info.healthy and "reloaded after" in device.info.detail
    y, _ = kernel.run(samples)
    np.testing.assert_array_equal(y, twin.run(samples))


def test_a_failed_dma_sync_fails_the_call_and_the_next_one_is_right(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    kernel = device.load(artifact, max_batch=64)
    cards[0].inject("sync_error")

    with pytest.raises(DeviceError, match="DMA sync") as caught:
        kernel.run(samples)

    assert caught.value.status_code == 503
    assert device.info.healthy and "DMA sync" in device.info.detail
    y, _ = kernel.run(samples)
    np.testing.assert_array_equal(y, twin.run(samples))


def test_an_overlay_that_fails_to_reload_leaves_the_card_unhealthy_until_a_reload_works(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    kernel = device.load(artifact, max_batch=64)
    cards[0].inject("hang")
    cards[0].inject("load_error", count=device.options.reload_attempts)

    with pytest.raises(DeviceTimeout):
        kernel.run(samples)

    assert not device.info.healthy
    assert "overlay failed to load" in device.info.detail
    y, _ = kernel.run(samples)  # the next call reloads first
    np.testing.assert_array_equal(y, twin.run(samples))
    assert device.info.healthy


def test_a_load_that_fails_once_is_retried(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    cards[0].inject("load_error")

    kernel = device.load(artifact, max_batch=64)

    assert device.info.healthy
    np.testing.assert_array_equal(kernel.run(samples)[0], twin.run(samples))


def test_a_load_that_keeps_failing_is_a_device_error(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard]
) -> None:
    cards[0].inject("load_error", count=device.options.reload_attempts)

    with pytest.raises(DeviceError, match="overlay failed to load"):
        device.load(artifact, max_batch=64)

    assert not device.info.healthy
    assert "Programming Device failed" in device.info.detail


def test_the_second_card_keeps_serving_while_the_first_is_hung(
    device: PynqDevice,
    second_device: PynqDevice,
    artifact: Artifact,
    cards: list[EmulatedCard],
    twin,
    samples: np.ndarray,
) -> None:
    hung, healthy = device.load(artifact, max_batch=64), second_device.load(artifact, max_batch=64)
    expected = twin.run(samples)
    cards[0].inject("hang")
    failure: list[BaseException] = []

    def call_hung_card() -> None:
        try:
            hung.run(samples)
        except DeviceError as exc:
            failure.append(exc)

    thread = threading.Thread(target=call_hung_card)
    thread.start()
    served = 0
    while thread.is_alive() and served < 10_000:
        np.testing.assert_array_equal(healthy.run(samples)[0], expected)
        served += 1
    thread.join()

    assert served >= 10  # answers kept coming during the first card's timeout
    assert len(failure) == 1 and isinstance(failure[0], DeviceTimeout)
    assert second_device.info.healthy
    np.testing.assert_array_equal(hung.run(samples)[0], expected)
