"""Small PYNQ calls begun on the event loop (`run_inline`), the rest on the worker only when needed.

A call of at most `inline_rows` rows on an idle card encodes, syncs and starts the kernel on the
calling thread. It is finished there when the card is already done, and otherwise handed back as
the rest of the call, which holds the card until it has run. A fault found on the calling thread
is never handled there: the reload (slow) happens when the rest runs, on the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import DeviceError, DeviceTimeout
from fpgaas.service.batching import Batcher, BatchPolicy
from fpgaas.service.devices.base import StageTimes
from fpgaas.service.devices.card import INLINE_ROWS
from fpgaas.service.devices.pynq import PynqDevice
from fpgaas.service.devices.pynq_emulation import EmulatedCard
from fpgaas.service.metrics import ServiceMetrics


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def out_for(kernel, n: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.empty((n, kernel.n_outputs), dtype=np.float32)


def test_a_small_call_the_card_finishes_at_once_is_done_on_the_calling_thread(
    device: PynqDevice, artifact: Artifact, twin, samples: np.ndarray
) -> None:
    kernel = device.load(artifact, max_batch=64)
    x = samples[:INLINE_ROWS]
    out = out_for(kernel, INLINE_ROWS)

    done = kernel.run_inline(x, out)

    assert isinstance(done, StageTimes)
    np.testing.assert_array_equal(bits(out), bits(twin.run(x)))
    y, _ = kernel.run(samples[:3])  # the card was let go: the next call runs
    np.testing.assert_array_equal(bits(y), bits(twin.run(samples[:3])))


def test_a_call_the_card_has_not_finished_is_completed_by_its_rest_on_another_thread(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    kernel = device.load(artifact, max_batch=64)
    cards[0].kernel_latency_s = 0.02  # the CU finishes on a timer, as a real card does
    x, out = samples[:2], out_for(kernel, 2)

    rest = kernel.run_inline(x, out)
    assert callable(rest)
    runs_before = cards[0].kernel_runs
    # While the rest has not run the card stays held: another inline call leaves it all to later.
    later_out = out_for(kernel, 1)
    later = kernel.run_inline(samples[5:6], later_out)
    assert callable(later) and cards[0].kernel_runs == runs_before
    stages: list[StageTimes] = []
    worker = threading.Thread(target=lambda: stages.append(rest()))
    worker.start()
    worker.join(5)

    assert stages and stages[0].kernel_s >= 0.02
    np.testing.assert_array_equal(bits(out), bits(twin.run(x)))
    later()  # run after the first let go of the card
    np.testing.assert_array_equal(bits(later_out), bits(twin.run(samples[5:6])))


def test_more_rows_than_inline_rows_leave_the_whole_call_to_the_worker(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    kernel = device.load(artifact, max_batch=64)
    n = INLINE_ROWS + 1
    runs_before = cards[0].kernel_runs

    rest = kernel.run_inline(samples[:n], out := out_for(kernel, n))

    assert callable(rest) and cards[0].kernel_runs == runs_before  # nothing reached the card yet
    rest()
    np.testing.assert_array_equal(bits(out), bits(twin.run(samples[:n])))


@pytest.mark.parametrize("fault", ["sync_error", "hang"])
def test_a_fault_met_on_the_calling_thread_is_handled_by_the_rest(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], twin, samples: np.ndarray, fault
) -> None:
    kernel = device.load(artifact, max_batch=64)
    downloads = cards[0].downloads
    cards[0].inject(fault)

    rest = kernel.run_inline(samples[:1], out_for(kernel, 1))

    assert callable(rest)
    assert cards[0].downloads == downloads  # no reload (seconds of work) on the event loop
    expected = DeviceTimeout if fault == "hang" else DeviceError
    with pytest.raises(expected):
        rest()
    assert cards[0].downloads == downloads + 1  # the rest reloaded the card before raising
    y, _ = kernel.run(samples[:4])
    np.testing.assert_array_equal(bits(y), bits(twin.run(samples[:4])))


@contextlib.asynccontextmanager
async def started_batcher(kernel, device: PynqDevice, timeout_s: float = 5.0) -> AsyncIterator[Batcher]:  # type: ignore[no-untyped-def]
    """A batcher over the card's kernel, started on the running loop and closed at the end."""
    batcher = Batcher(
        kernel,
        model="tiny",
        device=device.info.name,
        n_inputs=kernel.artifact.manifest.inputs[0].width,
        n_outputs=kernel.n_outputs,
        policy=BatchPolicy(max_delay_s=0.0, max_queue_rows=1 << 16, device_timeout_s=timeout_s),
        metrics=ServiceMetrics(CollectorRegistry()),
    )
    batcher.start()
    try:
        yield batcher
    finally:
        await batcher.close()


@pytest.mark.asyncio
async def test_the_batcher_serves_a_lone_row_on_the_loop_and_a_slow_card_through_the_worker(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    async with started_batcher(device.load(artifact, max_batch=64), device) as batcher:
        future = batcher.enqueue(samples[:1], alone=True)
        assert future.done()  # begun and finished within enqueue: no thread hand-off
        np.testing.assert_array_equal(bits(future.result()), bits(twin.run(samples[:1])))

        cards[0].kernel_latency_s = 0.02
        slow = batcher.enqueue(samples[1:3], alone=True)
        assert not slow.done()
        np.testing.assert_array_equal(bits(await slow), bits(twin.run(samples[1:3])))


@pytest.mark.asyncio
async def test_a_begun_call_whose_caller_left_still_lets_go_of_the_card(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    async with started_batcher(device.load(artifact, max_batch=64), device) as batcher:
        cards[0].kernel_latency_s = 0.05
        gone = asyncio.ensure_future(batcher.submit(samples[:1]))
        await asyncio.sleep(0)  # its call is begun on the card at the end of this iteration
        await asyncio.sleep(0)
        gone.cancel()
        cards[0].kernel_latency_s = 0.0

        answer = await asyncio.wait_for(batcher.submit(samples[2:4]), 5)

        np.testing.assert_array_equal(bits(answer), bits(twin.run(samples[2:4])))


@pytest.mark.asyncio
async def test_a_begun_call_that_hangs_trips_the_watchdog_and_the_card_serves_again(
    device: PynqDevice, artifact: Artifact, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    # The batcher's deadline (0.1 s) comes before the card's own (0.3 s, OPTIONS).
    async with started_batcher(device.load(artifact, max_batch=64), device, timeout_s=0.1) as batcher:
        cards[0].inject("hang")
        with pytest.raises(DeviceTimeout, match=r"took over 0\.1 s"):
            await batcher.submit(samples[:1])
        while not batcher.available:  # until the rest gave up on the card and reloaded it
            await asyncio.sleep(0.01)

        answer = await asyncio.wait_for(batcher.submit(samples[:2]), 5)

        np.testing.assert_array_equal(bits(answer), bits(twin.run(samples[:2])))
