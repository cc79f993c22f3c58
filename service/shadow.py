"""Shadow verification: a sample of device calls recomputed on the CPU twin, off the hot path.

The served twin is bit-exact with the kernel, so any disagreement between a card's answer and
the twin's is a real fault (a wrong bitstream, a build of another model version, a marginal
card). One `ShadowChecker` per server owns one daemon thread and a bounded queue; each replica
(model version on a device) gets a `ReplicaShadow`, and its kernel is wrapped in a
`ShadowedKernel` whose `run_into` hands a sampled call's rows and answer to the queue after the
device returned them. The hand-off is a copy of that call's rows and a `put_nowait`: nothing
waits for the check, and a call that would exceed the queue or the CPU budget is dropped
(counted), never delayed.

Sampling is stratified and seeded: the calls of a replica fall in windows of ceil(1/fraction)
calls, and one call at a seeded random position of each window is checked (a dropped one passes
its turn to the next call). So a fault that corrupts at least one row of every call is caught
within one window (100 calls at the default 1 %) whenever the budget allows, and a fault that
touches a share q of calls within W windows with probability 1 - (1 - q)^W.

On the first mismatch of a replica its rows (inputs, card output, twin output: the first few)
are logged and the card becomes suspect: `DeviceInfo.suspect` says why, so `/devices` shows it
and `/readyz` names it. With policy "keep-serving" the card goes on serving; with "drain" it
reports itself unhealthy, so the dataplane sends its requests to the model's other replicas (a
model with no other replica keeps being served by it, and the server reports unready so that
the load balancer moves traffic to another server). Suspicion lasts until the server restarts:
a card that computed a wrong bit once is not trusted again by itself.

The seam is the device: `with_shadow(devices, ...)` wraps each card device in a
`ShadowedDevice` whose kernels are `ShadowedKernel`s, so every replica of every model version
(loaded at start or later) is covered without the batcher or dataplane knowing. The CPU
emulated device is not wrapped: it is the twin. Counters: fpgaas_shadow_checked_rows_total,
fpgaas_shadow_mismatched_rows_total, fpgaas_shadow_dropped_calls_total {model, device}.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.twin import open_cpu_kernel
from fpgaas.service.devices.base import Device, DeviceInfo, KernelRunMixin, LoadedKernel, Resume, StageTimes
from fpgaas.service.metrics import ServiceMetrics

if TYPE_CHECKING:
    from fpgaas.service.settings import Settings

log = logging.getLogger(__name__)

MismatchPolicy = Literal["keep-serving", "drain"]
LOGGED_ROWS = 5  # mismatching rows written to the log at the first mismatch


class Twin(Protocol):
    """What computes the reference bits (`fpgaas.kernels.twin.CpuKernel`)."""

    def run_into(self, x: np.ndarray, y: np.ndarray) -> None: ...


class RowCounter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


@dataclass(frozen=True)
class ShadowPolicy:
    """fraction: share of device calls checked (0 off, 1 every call); cpu_budget: CPU-seconds per
    second of wall time the checks may use; queue_calls: sampled calls waiting at most."""

    fraction: float = 0.01
    cpu_budget: float = 0.25
    mismatch_policy: MismatchPolicy = "keep-serving"
    seed: int = 0
    queue_calls: int = 8
    burst_s: float = 0.5  # CPU-seconds the budget may run ahead by (one big call at start)

    @classmethod
    def of(cls, settings: Settings) -> ShadowPolicy:
        return cls(
            fraction=settings.shadow_fraction,
            cpu_budget=settings.shadow_cpu_budget,
            mismatch_policy=settings.shadow_mismatch_policy,
            seed=settings.shadow_seed,
        )


@dataclass(frozen=True)
class ShadowCounters:
    checked_rows: RowCounter
    mismatched_rows: RowCounter
    dropped_calls: RowCounter

    @classmethod
    def of(cls, metrics: ServiceMetrics, model: str, device: str) -> ShadowCounters:
        return cls(
            metrics.shadow_checked_rows.labels(model, device),
            metrics.shadow_mismatched_rows.labels(model, device),
            metrics.shadow_dropped_calls.labels(model, device),
        )


class ReplicaShadow:
    """The shadow state of one replica. `offer` runs on the device worker thread; `suspect`,
    `draining` may be read from any thread."""

    def __init__(
        self, checker: ShadowChecker, model: str, device: str, twin: Twin, counters: ShadowCounters
    ) -> None:
        self.model, self.device = model, device
        self._checker = checker
        self._twin = twin
        self._counters = counters
        policy = checker.policy
        self._window = math.ceil(1 / policy.fraction) if policy.fraction > 0 else 0
        self._rng = random.Random(zlib.crc32(f"{policy.seed}/{model}/{device}".encode()))
        self._calls = 0
        self._pick = self._next_pick(0)
        self._owed = False  # the chosen call of this window was dropped: take the next one
        self.suspect: str | None = None  # why, from the first mismatch on

    @property
    def draining(self) -> bool:
        return self.suspect is not None and self._checker.policy.mismatch_policy == "drain"

    def _next_pick(self, window_start: int) -> int:
        return window_start + (self._rng.randrange(self._window) if self._window > 1 else 0)

    def offer(self, x: np.ndarray, y: np.ndarray) -> None:
        """A device call returned `y` for `x`: maybe queue it for a check. Never blocks."""
        if not self._window:
            return
        call = self._calls
        self._calls += 1
        chosen = call == self._pick or self._owed
        if (call + 1) % self._window == 0:  # the next window starts with the next call
            self._pick = self._next_pick(call + 1)
        if not chosen:
            return
        if self._checker.submit(self, x, y):
            self._owed = False
        else:
            self._owed = True
            self._counters.dropped_calls.inc()

    def check(self, x: np.ndarray, y: np.ndarray) -> None:
        """On the checker thread: recompute `x` on the twin and compare the bits with `y`."""
        expected = np.empty_like(y)
        self._twin.run_into(x, expected)
        bad = np.flatnonzero((expected.view(np.uint32) != y.view(np.uint32)).any(axis=1))
        self._counters.checked_rows.inc(x.shape[0])
        if not bad.size:
            return
        self._counters.mismatched_rows.inc(bad.size)
        if self.suspect is None:
            shown = bad[:LOGGED_ROWS]
            log.error(
                "shadow check: %d of %d rows of model %s on %s differ from the CPU twin; rows %s: "
                "inputs %s, device %s, twin %s",
                bad.size,
                x.shape[0],
                self.model,
                self.device,
                shown.tolist(),
                x[shown].tolist(),
                y[shown].tolist(),
                expected[shown].tolist(),
            )
            action = "drained" if self._checker.policy.mismatch_policy == "drain" else "still serving"
            self.suspect = (
                f"suspect: shadow check found {bad.size} of {x.shape[0]} rows of {self.model} differing "
                f"from the CPU twin (first row {int(bad[0])}); {action}"
            )


class ShadowChecker:
    """The server's one shadow thread; lifetime `start` .. `close`."""

    def __init__(self, policy: ShadowPolicy) -> None:
        self.policy = policy
        self._queue: queue.Queue[tuple[ReplicaShadow, np.ndarray, np.ndarray] | None] = queue.Queue(
            maxsize=max(1, policy.queue_calls)
        )
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._cpu_spent = 0.0  # CPU-seconds the checks have used
        self._last_check_s: float | None = None  # CPU-seconds of the latest check; None before one
        self.replicas: list[ReplicaShadow] = []
        self.users = 0  # devices sharing this checker; the last `release` stops the thread

    def replica(self, model: str, device: str, twin: Twin, counters: ShadowCounters) -> ReplicaShadow:
        shadow = ReplicaShadow(self, model, device, twin, counters)
        self.replicas.append(shadow)
        return shadow

    def start(self) -> None:
        if self._thread is None and self.policy.fraction > 0:
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._work, name="shadow-check", daemon=True)
            self._thread.start()

    def submit(self, shadow: ReplicaShadow, x: np.ndarray, y: np.ndarray) -> bool:
        """Queue a copy of one call (the caller's arrays go to clients); False when dropped."""
        if self._thread is None or not self._within_budget():
            return False
        try:
            self._queue.put_nowait((shadow, np.array(x, dtype=np.float32), np.array(y, dtype=np.float32)))
        except queue.Full:
            return False
        return True

    def _within_budget(self) -> bool:
        """Checks still queued count at the latest check's cost (before any check has finished,
        its cost is unknown, so one at a time): otherwise calls admitted while the first checks
        run would all pass a budget that their cost has not reached yet."""
        allowed = self.policy.cpu_budget * (time.monotonic() - self._started) + self.policy.burst_s
        pending = self._queue.unfinished_tasks
        if pending and self._last_check_s is None:
            return False
        return self._cpu_spent + pending * (self._last_check_s or 0.0) <= allowed

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            shadow, x, y = job
            started = time.thread_time()
            try:
                shadow.check(x, y)
            except Exception:  # a broken check must not end the thread, nor reach a client
                log.exception("shadow check of %s on %s failed", shadow.model, shadow.device)
            spent = time.thread_time() - started
            self._cpu_spent += spent
            self._last_check_s = spent
            self._queue.task_done()

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued check is done (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.001)

    def release(self) -> None:
        """One device sharing the checker closed; the last one stops it."""
        self.users -= 1
        if self.users <= 0:
            self.close()

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(5.0)


class ShadowedKernel(KernelRunMixin):
    """A `LoadedKernel` whose calls are offered to a replica's shadow once the device returned."""

    def __init__(self, kernel: LoadedKernel, shadow: ReplicaShadow) -> None:
        self._kernel = kernel
        self.shadow = shadow
        self.n_outputs = int(getattr(kernel, "n_outputs", 0))
        self.inline_rows = int(getattr(kernel, "inline_rows", 0))

    @property
    def max_batch(self) -> int:
        return self._kernel.max_batch

    def run_into(self, x: np.ndarray, out: np.ndarray) -> StageTimes:
        stages = self._kernel.run_into(x, out)
        self.shadow.offer(x, out)
        return stages

    def run_inline(self, x: np.ndarray, out: np.ndarray) -> StageTimes | Resume:
        begun = self._kernel.run_inline(x, out)
        if isinstance(begun, StageTimes):
            self.shadow.offer(x, out)
            return begun

        def resume() -> StageTimes:
            stages = begun()
            self.shadow.offer(x, out)
            return stages

        return resume

    def close(self) -> None:
        self._kernel.close()


class ShadowedDevice:
    """A card device whose kernels are shadow-checked; `info` adds the suspicion (see the module
    docstring). Lifetime: that of the device it wraps; closing it closes the device."""

    def __init__(self, device: Device, checker: ShadowChecker, metrics: ServiceMetrics) -> None:
        self._device = device
        self._checker = checker
        self._metrics = metrics
        self._shadows: list[ReplicaShadow] = []

    @property
    def device(self) -> Device:
        return self._device

    def sensors(self) -> dict[str, float]:
        """The wrapped card's sensor readings (see `fpgaas.service.card_metrics`), {} without any."""
        read = getattr(self._device, "sensors", None)
        return dict(read()) if callable(read) else {}

    @property
    def info(self) -> DeviceInfo:
        info = self._device.info
        suspect = next((s.suspect for s in self._shadows if s.suspect), None)
        if suspect is None:
            return info
        drained = self._checker.policy.mismatch_policy == "drain"
        return DeviceInfo(
            name=info.name,
            kind=info.kind,
            healthy=info.healthy and not drained,
            detail=f"{info.detail}; {suspect}",
            suspect=suspect,
        )

    def load(self, artifact: Artifact, max_batch: int) -> LoadedKernel:
        kernel = self._device.load(artifact, max_batch)
        name, model = self._device.info.name, artifact.manifest.name
        shadow = self._checker.replica(
            model, name, open_cpu_kernel(artifact), ShadowCounters.of(self._metrics, model, name)
        )
        self._shadows.append(shadow)
        return ShadowedKernel(kernel, shadow)

    def close(self) -> None:
        try:
            self._device.close()
        finally:
            self._checker.release()


def with_shadow(devices: list[Device], policy: ShadowPolicy, metrics: ServiceMetrics) -> list[Device]:
    """`devices` with every card wrapped in a `ShadowedDevice` sharing one started checker; as
    they are when the fraction is 0 or there is no card (the emulated device is the twin)."""
    cards = [d for d in devices if d.info.kind != "emulated"]
    if policy.fraction <= 0 or not cards:
        return devices
    checker = ShadowChecker(policy)
    checker.start()
    checker.users = len(cards)
    return [ShadowedDevice(d, checker, metrics) if d in cards else d for d in devices]
