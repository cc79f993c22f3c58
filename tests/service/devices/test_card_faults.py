"""Card faults become 503-class errors, never wrong answers, and the card comes back by itself.

One specification for both card runtimes: every test runs on `PynqDevice` (PYNQ's API on an
emulated PYNQ card) and on `PyxrtDevice` (XRT's pyxrt API on an emulated pyxrt card).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import DeviceError, DeviceTimeout


def test_a_hung_kernel_times_out_then_the_card_is_reloaded(
    rig, artifact: Artifact, twin, samples: np.ndarray
) -> None:
    kernel = rig.device.load(artifact, max_batch=64)
    downloads = rig.cards[0].downloads
    rig.cards[0].inject("hang")

    started = time.perf_counter()
    with pytest.raises(DeviceTimeout, match="did not finish within") as caught:
        kernel.run(samples)

    assert caught.value.status_code == 503
    assert time.perf_counter() - started >= rig.device.options.kernel_timeout_s
    assert rig.cards[0].downloads == downloads + 1
    assert rig.device.info.healthy and "reloaded after" in rig.device.info.detail
    y, _ = kernel.run(samples)
    np.testing.assert_array_equal(y, twin.run(samples))


def test_a_failed_dma_sync_fails_the_call_and_the_next_one_is_right(
    rig, artifact: Artifact, twin, samples: np.ndarray
) -> None:
    kernel = rig.device.load(artifact, max_batch=64)
    rig.cards[0].inject("sync_error")

    with pytest.raises(DeviceError, match="DMA sync") as caught:
        kernel.run(samples)

    assert caught.value.status_code == 503
    assert rig.device.info.healthy and "DMA sync" in rig.device.info.detail
    y, _ = kernel.run(samples)
    np.testing.assert_array_equal(y, twin.run(samples))


def test_a_card_that_fails_to_reload_stays_unhealthy_until_a_reload_works(
    rig, artifact: Artifact, twin, samples: np.ndarray
) -> None:
    kernel = rig.device.load(artifact, max_batch=64)
    rig.cards[0].inject("hang")
    rig.cards[0].inject("load_error", count=rig.device.options.reload_attempts)

    with pytest.raises(DeviceTimeout):
        kernel.run(samples)

    assert not rig.device.info.healthy
    assert rig.load_failed in rig.device.info.detail
    y, _ = kernel.run(samples)  # the next call reloads first
    np.testing.assert_array_equal(y, twin.run(samples))
    assert rig.device.info.healthy


def test_a_load_that_fails_once_is_retried(rig, artifact: Artifact, twin, samples: np.ndarray) -> None:
    rig.cards[0].inject("load_error")

    kernel = rig.device.load(artifact, max_batch=64)

    assert rig.device.info.healthy
    np.testing.assert_array_equal(kernel.run(samples)[0], twin.run(samples))


def test_a_load_that_keeps_failing_is_a_device_error(rig, artifact: Artifact) -> None:
    rig.cards[0].inject("load_error", count=rig.device.options.reload_attempts)

    with pytest.raises(DeviceError, match=rig.load_failed):
        rig.device.load(artifact, max_batch=64)

    assert not rig.device.info.healthy
    assert rig.load_error in rig.device.info.detail


def test_the_second_card_keeps_serving_while_the_first_is_hung(
    rig, artifact: Artifact, twin, samples: np.ndarray
) -> None:
    hung, healthy = rig.device.load(artifact, max_batch=64), rig.second_device.load(artifact, max_batch=64)
    expected = twin.run(samples)
    rig.cards[0].inject("hang")
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
    assert rig.second_device.info.healthy
    np.testing.assert_array_equal(hung.run(samples)[0], expected)
