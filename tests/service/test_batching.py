"""The dynamic batcher, on a real kernel: the tiny artifact loaded on an `EmulatedDevice`.

Every answer is compared bit for bit with the kernel's CPU twin run directly, and batch
sizes are read from the Prometheus registry the batcher reports to.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import numpy as np
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import DeviceError, NotReady, Overloaded, PayloadTooLarge
from fpgaas.service.batching import Batcher, BatchPolicy
from fpgaas.service.devices.base import LoadedKernel, StageTimes
from fpgaas.service.devices.emulated import EmulatedDevice
from fpgaas.service.metrics import ServiceMetrics
from fpgaas.service.statistics import ModelStatistics

N_INPUTS = 6  # the tiny model of conftest.py: 6 inputs -> 2 outputs
N_OUTPUTS = 2


def rows(n: int, seed: int = 0) -> np.ndarray:
    """n random float32 rows for the tiny model."""
    return np.random.default_rng(seed).normal(0.0, 4.0, size=(n, N_INPUTS)).astype(np.float32)


pytestmark = pytest.mark.asyncio

POISON = -12345.0


class PoisonedKernel:
    """Test device at the edge: the real emulated kernel, except that a batch holding the value
    POISON fails (as a card whose DMA broke would), with a DeviceError or a foreign error."""

    def __init__(self, real: LoadedKernel, foreign: bool = False) -> None:
        self.real = real
        self.foreign = foreign
        self.calls = 0

    @property
    def max_batch(self) -> int:
        return self.real.max_batch

    def run_into(self, x: np.ndarray, out: np.ndarray) -> StageTimes:
        self.calls += 1
        if (x == POISON).any():
            if self.foreign:
                raise RuntimeError("DMA engine wedged")
            raise DeviceError("DMA sync failed")
        return self.real.run_into(x, out)

    def close(self) -> None:
        self.real.close()


class SlowKernel:
    """Test device at the edge: the real emulated kernel on a card whose every call takes
    `seconds` more (a long pipeline or a slow link), run on the batcher's worker thread."""

    def __init__(self, real: LoadedKernel, seconds: float) -> None:
        self.real = real
        self.seconds = seconds

    @property
    def max_batch(self) -> int:
        return self.real.max_batch

    def run_into(self, x: np.ndarray, out: np.ndarray) -> StageTimes:
        time.sleep(self.seconds)
        return self.real.run_into(x, out)

    def close(self) -> None:
        self.real.close()


@pytest.fixture
def device() -> Iterator[EmulatedDevice]:
    dev = EmulatedDevice()
    yield dev
    dev.close()


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics(CollectorRegistry())


MakeBatcher = Callable[..., Awaitable[Batcher]]


@pytest_asyncio.fixture
async def make_batcher(
    tiny_artifact: Artifact, device: EmulatedDevice, metrics: ServiceMetrics
) -> AsyncIterator[MakeBatcher]:
    started: list[Batcher] = []

    async def make(
        max_batch: int,
        max_delay_s: float,
        max_queue_rows: int = 1 << 16,
        wrap: Callable[[LoadedKernel], LoadedKernel] | None = None,
        max_queue_delay_s: float = math.inf,
        stats: ModelStatistics | None = None,
    ) -> Batcher:
        kernel: LoadedKernel = device.load(tiny_artifact, max_batch)
        if wrap is not None:
            kernel = wrap(kernel)
        policy = BatchPolicy(
            max_delay_s=max_delay_s,
            max_queue_rows=max_queue_rows,
            device_timeout_s=10.0,
            max_queue_delay_s=max_queue_delay_s,
        )
        batcher = Batcher(
            kernel,
            model="tiny",
            device=device.info.name,
            n_inputs=N_INPUTS,
            n_outputs=N_OUTPUTS,
            policy=policy,
            metrics=metrics,
            stats=stats,
        )
        batcher.start()
        started.append(batcher)
        return batcher

    yield make
    for batcher in started:
        await batcher.close()


def batch_sizes(metrics: ServiceMetrics) -> tuple[int, int]:
    """(device calls, rows sent) so far for model tiny."""
    r = metrics.registry
    count = r.get_sample_value("fpgaas_batch_size_count", {"model": "tiny"}) or 0
    total = r.get_sample_value("fpgaas_batch_size_sum", {"model": "tiny"}) or 0
    return int(count), int(total)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


async def test_concurrent_requests_merge_into_one_full_batch(make_batcher, metrics, reference) -> None:
    batcher = await make_batcher(max_batch=8, max_delay_s=5.0)
    inputs = [rows(2, seed) for seed in range(4)]
    start = time.monotonic()
    outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
    # A full batch goes at once: nobody waits out the 5 s delay.
    assert time.monotonic() - start < 2.0
    assert batch_sizes(metrics) == (1, 8)
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, reference(x))


async def test_a_lone_request_waits_max_delay_for_company_then_goes(make_batcher, metrics, reference) -> None:
    batcher = await make_batcher(max_batch=1024, max_delay_s=0.2)
    x = rows(3)
    start = time.monotonic()
    y = await batcher.submit(x)
    waited = time.monotonic() - start
    assert 0.2 <= waited < 1.0
    assert batch_sizes(metrics) == (1, 3)
    np.testing.assert_array_equal(y, reference(x))


async def test_a_caller_alone_on_an_idle_device_is_answered_before_enqueue_returns(
    make_batcher, metrics, reference
) -> None:
    batcher = await make_batcher(max_batch=1024, max_delay_s=0.0)
    x = rows(2)
    future = batcher.enqueue(x, alone=True)  # the CPU twin runs calls this small on the loop
    assert future.done()
    np.testing.assert_array_equal(future.result(), reference(x))
    # Its bookkeeping does not delay the answer: it is recorded later in this loop iteration.
    assert batch_sizes(metrics) == (0, 0)
    await asyncio.sleep(0)
    assert batch_sizes(metrics) == (1, 2)


async def test_a_woken_caller_finds_its_call_recorded(make_batcher, metrics) -> None:
    """Callers that awaited their rows resume after the call's metrics and statistics are in."""
    stats = ModelStatistics("tiny", "1")
    batcher = await make_batcher(max_batch=1024, max_delay_s=0.0, stats=stats)

    async def caller(seed: int) -> tuple[tuple[int, int], int, float]:
        await batcher.submit(rows(1, seed))
        return batch_sizes(metrics), stats.execution_count, batcher.busy_seconds

    seen = await asyncio.gather(*(caller(seed) for seed in range(3)))
    assert [(sizes, executed) for sizes, executed, _ in seen] == [((1, 3), 1)] * 3
    assert all(busy > 0 for _, _, busy in seen)
    assert (stats.inference_count, stats.queue.count) == (3, 3)
    assert (stats.compute_infer.count, stats.batches[3].compute_infer.count) == (3, 1)
    assert metrics.registry.get_sample_value("fpgaas_rows_total", {"model": "tiny"}) == 3


async def test_without_alone_requests_of_one_loop_iteration_share_a_call(
    make_batcher, metrics, reference
) -> None:
    batcher = await make_batcher(max_batch=1024, max_delay_s=0.0)
    inputs = [rows(1, seed) for seed in range(3)]
    futures = [batcher.enqueue(x) for x in inputs]
    assert not any(f.done() for f in futures)  # they go at the end of this iteration, together
    outputs = await asyncio.gather(*futures)
    assert batch_sizes(metrics) == (1, 3)
    # A caller alone behind rows already queued waits for them: it joins their call.
    queued = batcher.enqueue(inputs[0])
    joined = batcher.enqueue(inputs[1], alone=True)
    assert not joined.done()
    outputs += [await queued, await joined]
    assert batch_sizes(metrics) == (2, 5)
    for x, y in zip([*inputs, inputs[0], inputs[1]], outputs, strict=True):
        np.testing.assert_array_equal(y, reference(x))


async def test_hundreds_of_mixed_requests_each_get_their_own_rows_in_order(
    make_batcher, metrics, reference
) -> None:
    batcher = await make_batcher(max_batch=64, max_delay_s=0.001)
    rng = np.random.default_rng(3)
    inputs = [rows(int(n), seed) for seed, n in enumerate(rng.integers(1, 41, size=300))]

    async def staggered(i: int, x: np.ndarray) -> np.ndarray:
        await asyncio.sleep(float(rng.uniform(0, 0.05)) if i % 3 else 0.0)
        return await batcher.submit(x)

    outputs = await asyncio.gather(*(staggered(i, x) for i, x in enumerate(inputs)))
    for x, y in zip(inputs, outputs, strict=True):
        assert y.shape == (x.shape[0], N_OUTPUTS)
        np.testing.assert_array_equal(y, reference(x))
    calls, sent = batch_sizes(metrics)
    total = sum(x.shape[0] for x in inputs)
    assert sent == total
    assert calls >= math.ceil(total / 64)
    full_or_less = metrics.registry.get_sample_value(
        "fpgaas_batch_size_bucket", {"model": "tiny", "le": "64.0"}
    )
    assert full_or_less == calls  # no device call exceeded max_batch
    assert batcher.accepted_rows == 0


async def test_a_request_larger_than_max_batch_is_split_over_several_calls(
    make_batcher, metrics, reference
) -> None:
    batcher = await make_batcher(max_batch=64, max_delay_s=0.0)
    x = rows(1000)
    y = await batcher.submit(x)
    np.testing.assert_array_equal(y, reference(x))
    assert batch_sizes(metrics) == (math.ceil(1000 / 64), 1000)


async def test_a_full_queue_refuses_with_overloaded_and_a_retry_hint(make_batcher, reference) -> None:
    # The 10 s delay holds the first 10 rows in the queue until the batch of 16 fills up.
    batcher = await make_batcher(max_batch=16, max_delay_s=10.0, max_queue_rows=16)
    first = asyncio.create_task(batcher.submit(rows(10, 1)))
    await wait_until(lambda: batcher.accepted_rows == 10)

    with pytest.raises(Overloaded) as refused:
        await batcher.submit(rows(10, 2))
    assert refused.value.status_code == 503
    assert refused.value.retry_after_s > 0
    with pytest.raises(PayloadTooLarge):
        await batcher.submit(rows(17, 3))  # could never fit: told so, not to retry

    last = rows(6, 4)  # exactly fills the batch: both go at once
    y_last = await batcher.submit(last)
    np.testing.assert_array_equal(await first, reference(rows(10, 1)))
    np.testing.assert_array_equal(y_last, reference(last))
    assert batcher.accepted_rows == 0


async def test_a_request_whose_expected_wait_exceeds_the_budget_is_refused_and_the_rest_served(
    make_batcher, reference
) -> None:
    # Calls of >= 10 ms, 8 rows each, a 100 ms budget. The margins are wide on purpose: the
    # admitted requests would need calls of 50 ms to be refused, the refused one calls under 5 ms.
    batcher = await make_batcher(
        max_batch=8, max_delay_s=0.0, max_queue_delay_s=0.1, wrap=lambda k: SlowKernel(k, 0.01)
    )
    first, second = rows(8, 1), rows(8, 2)
    answers = [batcher.enqueue(first), batcher.enqueue(second)]  # 2 calls ahead: ~20 ms
    big = rows(160, 3)  # 22 calls with the 16 rows ahead: >= 220 ms
    with pytest.raises(Overloaded) as refused:
        batcher.enqueue(big)
    assert refused.value.status_code == 503
    assert "over the queue budget of 100 ms" in refused.value.message
    assert refused.value.retry_after_s >= 0.22  # come back when the queue ahead has drained
    third = rows(8, 4)  # refusal is per request: one that fits is still taken
    answers.append(batcher.enqueue(third))
    assert batcher.accepted_rows == 24

    for x, answer in zip((first, second, third), answers, strict=True):
        np.testing.assert_array_equal(await answer, reference(x))
    assert batcher.accepted_rows == 0
    # With nothing ahead the same request is taken, though its own calls exceed the budget:
    # refusing it would refuse it forever (PayloadTooLarge is the row bound's job).
    np.testing.assert_array_equal(await batcher.submit(big), reference(big))


@pytest.mark.parametrize("foreign", [False, True], ids=["device-error", "foreign-exception"])
async def test_a_device_error_fails_every_request_of_that_batch_and_serving_goes_on(
    make_batcher, reference, foreign: bool
) -> None:
    batcher = await make_batcher(max_batch=12, max_delay_s=5.0, wrap=lambda k: PoisonedKernel(k, foreign))
    poisoned = rows(4, 1)
    poisoned[2, 3] = POISON
    results = await asyncio.gather(
        batcher.submit(rows(4, 0)),
        batcher.submit(poisoned),
        batcher.submit(rows(4, 2)),
        return_exceptions=True,
    )
    assert all(isinstance(r, DeviceError) for r in results), results
    assert all(r.status_code == 503 for r in results)  # type: ignore[union-attr]

    # The batcher keeps serving: a full batch of good rows right after is answered exactly.
    good = rows(12, 5)
    np.testing.assert_array_equal(await batcher.submit(good), reference(good))
    assert batcher.accepted_rows == 0


async def test_a_failing_slice_of_a_split_request_fails_it_once_and_skips_its_remaining_rows(
    make_batcher, metrics
) -> None:
    batcher = await make_batcher(max_batch=10, max_delay_s=0.0, wrap=PoisonedKernel)
    x = rows(100)
    x[5, 0] = POISON  # in the first of ten slices
    with pytest.raises(DeviceError):
        await batcher.submit(x)
    assert batch_sizes(metrics)[0] == 1  # the other nine slices never reached the device
    assert batcher.accepted_rows == 0


async def test_close_answers_every_accepted_request_then_refuses_new_ones(make_batcher, reference) -> None:
    batcher = await make_batcher(max_batch=1024, max_delay_s=10.0)
    inputs = [rows(5, seed) for seed in range(3)]
    pending = [asyncio.create_task(batcher.submit(x)) for x in inputs]
    await wait_until(lambda: batcher.accepted_rows == 15)
    start = time.monotonic()
    await batcher.close()
    assert time.monotonic() - start < 2.0  # draining does not wait out the delay
    for x, task in zip(inputs, pending, strict=True):
        np.testing.assert_array_equal(task.result(), reference(x))
    with pytest.raises(NotReady):
        await batcher.submit(rows(1))


async def test_a_caller_that_goes_away_does_not_disturb_the_others(make_batcher, reference) -> None:
    batcher = await make_batcher(max_batch=1024, max_delay_s=0.1)
    gone = asyncio.create_task(batcher.submit(rows(7, 1)))
    stays = asyncio.create_task(batcher.submit(rows(3, 2)))
    await wait_until(lambda: batcher.accepted_rows == 10)
    gone.cancel()
    np.testing.assert_array_equal(await stays, reference(rows(3, 2)))
    await wait_until(lambda: batcher.accepted_rows == 0)


async def test_stage_times_and_queue_wait_are_recorded(make_batcher, metrics) -> None:
    batcher = await make_batcher(max_batch=32, max_delay_s=0.0)
    await batcher.submit(rows(32))
    r = metrics.registry
    for stage in ("input_transfer", "kernel", "output_transfer"):
        labels = {"model": "tiny", "device": "emulated-0", "stage": stage}
        assert r.get_sample_value("fpgaas_device_stage_seconds_count", labels) == 1
    assert r.get_sample_value("fpgaas_queue_wait_seconds_count", {"model": "tiny"}) == 1


async def test_full_calls_queued_behind_a_busy_device_run_while_the_event_loop_is_busy(
    make_batcher, reference
) -> None:
    kernels: list[PoisonedKernel] = []

    def counted(real: LoadedKernel) -> LoadedKernel:
        kernels.append(PoisonedKernel(real))
        return kernels[-1]

    batcher = await make_batcher(max_batch=10, max_delay_s=0.0, wrap=counted)
    before = kernels[0].calls  # the batcher's calibration calls
    inputs = [rows(10, seed) for seed in range(4)]
    futures = [batcher.enqueue(x) for x in inputs]  # four full calls, queued in one loop iteration
    # The event loop stays blocked (as a loop busy refusing a retry storm would be): no call's
    # answer is seen by it, yet the device runs all four calls back to back.
    deadline = time.monotonic() + 5.0
    while kernels[0].calls - before < 4 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert kernels[0].calls - before == 4
    for x, y in zip(inputs, await asyncio.gather(*futures), strict=True):
        np.testing.assert_array_equal(y, reference(x))
    assert batcher.accepted_rows == 0
