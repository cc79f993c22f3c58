"""Dynamic batching: concurrent requests of any size merged into device calls of at most
`max_batch` rows.

One `Batcher` per replica (a model version resident on one device). Requests queue in arrival
order. An idle device starts at the end of the event loop iteration that queued the first rows
(so every request read in that iteration rides along; at once for a caller that knows it is
alone, see `enqueue`) with what is queued (up to `max_batch` rows, taking a slice
of a larger request and the rest in later calls); rows that arrive while a call runs form the
next batch, which starts the moment the call ends. `max_delay_s` > 0 lets an idle device wait
at most that long for a fuller batch (it goes early at `max_batch` rows); it is a bound, and 0
(the default) never waits. Each caller gets exactly its own rows back, in order.

Device calls run on one dedicated worker thread per replica, one call at a time, handed over
through a queue (a kernel may ask for its smallest calls, `LoadedKernel.inline_rows`, to be run
on the event loop instead when the device is idle: they cost less than the hand-off; a card's call
its card has not finished at once goes on on the worker); the answer comes back to the event
loop with `call_soon_threadsafe`. Every full call (`max_batch` rows) queued is handed over at once,
even while the device is busy, so the worker runs them back to back: the device's pace does not
depend on how soon the loop gets to a call's answer (a loop busy refusing a retry storm would
otherwise hand the device one call per loop iteration). Only a partial call waits for the device
to be idle, so that rows arriving meanwhile still join it. A watchdog timer (not a task) bounds
the progress of the handed-over calls: the oldest must return within `device_timeout_s` of the
previous return (or of its hand-over to an idle worker). No task, future chain or `wait_for` is
created per call. The output of a call is written by the device straight into the array
the callers get (a caller whose rows all ride in one call gets a view of it), so a row is
copied once on its way out. A call's metrics and statistics are recorded after its answers, in
a callback of the same loop iteration (`_record_answered`), so they never delay an answer.

Admission: rows accepted and not yet answered are bounded by `max_queue_rows` (memory), and a
request whose expected wait (the rows ahead of it, at the device speed measured so far) exceeds
`max_queue_delay_s` is refused at once with `Overloaded` (latency). A failed device call fails
every request with rows in that call (never a partial or wrong answer) and the batcher keeps
serving. A call past its deadline fails its requests and every queued one with `DeviceTimeout`
and leaves the replica unavailable until the device returns. `close` stops accepting, answers
every accepted request, then stops the worker.

All methods except the worker's must be called from the event loop the batcher was started on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from fpgaas.kernels.errors import (
    DeviceError,
    DeviceTimeout,
    FpgaasError,
    NotReady,
    Overloaded,
    PayloadTooLarge,
)
from fpgaas.service.devices.base import LoadedKernel, Resume, StageTimes
from fpgaas.service.metrics import ServiceMetrics
from fpgaas.service.statistics import ModelStatistics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPolicy:
    """How a batcher merges and bounds work; times in seconds."""

    max_delay_s: float
    max_queue_rows: int
    device_timeout_s: float
    retry_after_s: float = 1.0
    max_queue_delay_s: float = math.inf


@dataclass(eq=False)
class _Request:
    x: np.ndarray  # float32 (n, n_inputs)
    n: int  # rows, x.shape[0]
    future: asyncio.Future[np.ndarray]
    enqueued: float  # loop.time()
    admitted: float = 0.0  # perf_counter(): uvloop's loop.time() counts whole milliseconds
    out: np.ndarray | None = None  # float32 (n, n_outputs); a view of a call's output when it fits one
    sent: int = 0  # rows handed to the device
    answered: int = 0  # rows whose outputs are in `out`
    finished: bool = False  # rows released from the queue bound


_Slice = tuple[_Request, int, int]  # request, first row, end row


@dataclass(eq=False)
class _Call:
    """One device call: its rows, where its answer goes, and its outcome (set by the worker)."""

    slices: list[_Slice]
    x: np.ndarray
    out: np.ndarray
    stages: StageTimes | None = None
    error: BaseException | None = None
    started: float = 0.0  # perf_counter() on the worker
    seconds: float = 0.0  # wall time of the device call
    timed_out: bool = False
    dropped: bool = False  # never run: every request in it had failed or gone before it started
    resume: Resume | None = None  # the rest of a call begun on the loop, for the worker to finish


# A successful call once answered: the call, the requests still waiting for it (Triton counts its
# stages once for each), those of them it finished, and the rows of those.
_Answered = tuple[_Call, int, int, int]


class _CallCost:
    """Expected seconds of one device call of n rows.

    Calibrated when the replica starts (the fastest of a few calls of 1 and of `max_batch`
    rows, a straight line between them), then learned from every call: an exponentially
    weighted mean per power-of-two size class, which wins over the line once that class has
    been seen. Both ends are measured, so a deep queue is priced at full batches, not at the
    per-row cost of the single-row calls an idle server makes."""

    def __init__(self, max_batch: int, one_s: float, full_s: float, weight: float = 0.2) -> None:
        self._max_batch = max_batch
        self._one_s = one_s
        self._full_s = max(full_s, one_s)
        self._weight = weight
        self._by_class: dict[int, float] = {}
        self.ceiling_s = self._full_s  # no call of at most max_batch rows is priced higher

    def add(self, n: int, seconds: float) -> None:
        k = n.bit_length()
        seen = self._by_class.get(k)
        self._by_class[k] = seconds if seen is None else seen + self._weight * (seconds - seen)
        self.ceiling_s = max(self._full_s, *self._by_class.values())

    def seconds(self, n: int) -> float:
        seen = self._by_class.get(n.bit_length())
        if seen is not None:
            return seen
        if self._max_batch <= 1:
            return self._full_s
        return self._one_s + (self._full_s - self._one_s) * (n - 1) / (self._max_batch - 1)


def _calibrate(kernel: LoadedKernel, n_inputs: int, n_outputs: int, rows: int, repeats: int = 3) -> float:
    """The fastest of `repeats` calls of `rows` zero rows, in seconds."""
    x = np.zeros((rows, n_inputs), dtype=np.float32)
    out = np.empty((rows, n_outputs), dtype=np.float32)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        kernel.run_into(x, out)
        best = min(best, time.perf_counter() - start)
    return best


class Batcher:
    """Merges requests for one kernel; see the module docstring. Lifetime: `start` .. `close`."""

    def __init__(
        self,
        kernel: LoadedKernel,
        *,
        model: str,
        device: str,
        n_inputs: int,
        n_outputs: int,
        policy: BatchPolicy,
        metrics: ServiceMetrics,
        stats: ModelStatistics | None = None,
    ) -> None:
        self._kernel = kernel
        self._stats = stats  # Triton's statistics of this model version (shared by its replicas)
        self._model = model
        self._device = device
        self._n_inputs = n_inputs
        self._n_outputs = n_outputs
        self._policy = policy
        self._metrics = metrics.replica(model, device)
        self._max_batch = kernel.max_batch
        # Calls this small run on the event loop (a CPU kernel's choice; wrappers that do not
        # say run every call on the worker).
        self._inline_rows = int(getattr(kernel, "inline_rows", 0))
        self._queue: deque[_Request] = deque()
        self._unsent = 0  # rows in the queue not yet handed to the device
        self._accepted = 0  # rows accepted and not yet answered or failed: the bounded quantity
        self._in_flight: deque[_Call] = deque()  # handed to the worker, not yet returned; oldest first
        self._watchdog: asyncio.TimerHandle | None = None  # the oldest call's deadline
        self._busy_s = 0.0  # wall seconds of every device call that returned (card busy time)
        self._hung = False  # that call is past its deadline: the device has not returned
        self._closing = False
        self._linger: asyncio.TimerHandle | None = None
        self._dispatch_soon = False  # a dispatch is scheduled for the end of this loop iteration
        self._idle = asyncio.Event()
        self._cost = _CallCost(self._max_batch, 0.0, 0.0)
        # Answered calls whose metrics, statistics and price are not recorded yet (`_record_answered`).
        self._unrecorded: list[_Answered] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def accepted_rows(self) -> int:
        """Rows accepted and not yet answered (the quantity bounded by `max_queue_rows`)."""
        return self._accepted

    @property
    def busy_seconds(self) -> float:
        """Cumulative wall seconds of this replica's device calls that returned."""
        return self._busy_s

    @property
    def _busy(self) -> bool:
        """A call is on the device or handed to the worker."""
        return bool(self._in_flight)

    @property
    def calls_in_flight(self) -> int:
        """Device calls of this replica running now (0 or 1; more may be handed over, waiting)."""
        return int(bool(self._in_flight))

    @property
    def available(self) -> bool:
        """False while a device call is past its deadline and the device has not returned."""
        return not self._hung

    def expected_wait_s(self, n: int = 0) -> float:
        """Seconds until `n` more rows would be answered: the rows ahead (queued and on the
        device) plus these, in full calls, at the call cost measured so far."""
        rows = self._accepted + n
        full, rest = divmod(rows, self._max_batch)
        return full * self._cost.seconds(self._max_batch) + (self._cost.seconds(rest) if rest else 0.0)

    def start(self) -> None:
        """Bind to the running event loop, time a few calls (the admission's prices: blocks for
        ~6 device calls), and start the worker thread."""
        if self._worker is None:
            self._loop = asyncio.get_running_loop()
            try:
                one = _calibrate(self._kernel, self._n_inputs, self._n_outputs, 1)
                full = _calibrate(self._kernel, self._n_inputs, self._n_outputs, self._max_batch)
                self._cost = _CallCost(self._max_batch, one, full)
            except Exception as exc:  # a sick card: priced at nothing until calls are seen
                log.warning("model %s on %s: calibration failed: %s", self._model, self._device, exc)
            self._worker = threading.Thread(
                target=self._work, name=f"device-{self._model}-{self._device}", daemon=True
            )
            self._worker.start()

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """x: float32 (n, n_inputs), n >= 1, already checked -> float32 (n, n_outputs), row i
        answering x[i]. Raises PayloadTooLarge when the rows could never fit, Overloaded when they
        do not fit now (rows or expected wait), NotReady when closing, DeviceError /
        DeviceTimeout when a device call fails. Cancelling the caller (the client went away)
        drops its rows not yet sent."""
        return await self.enqueue(x)

    def enqueue(self, x: np.ndarray, *, alone: bool = False) -> asyncio.Future[np.ndarray]:
        """`submit` without the coroutine: refusals raise at once, the answer is the future's.

        `alone`: the caller knows that no other request is being served, so none can join these
        rows in this loop iteration. On an idle device with nothing else queued they go at once
        instead of at the end of the iteration; an inline call (`inline_rows`) then has the
        future done on return, so the caller's `await` does not wait a loop iteration for it."""
        if self._loop is None or self._closing:
            raise NotReady(f"model {self._model} is not accepting requests (shutting down)")
        if self._hung:
            raise DeviceTimeout(f"{self._device} has not returned from a call past its deadline")
        n = int(x.shape[0])
        self._admit(n)
        request = _Request(
            x=x,
            n=n,
            future=self._loop.create_future(),
            enqueued=self._loop.time(),
            admitted=time.perf_counter(),
        )
        self._queue.append(request)
        self._unsent += n
        self._accepted += n
        self._metrics.queue_rows.set(self._accepted)
        self._idle.clear()
        if self._unsent >= self._max_batch:
            self._dispatch()  # a full call goes at once, even behind a busy device
        elif not self._busy:
            if self._policy.max_delay_s <= 0:
                if alone and self._unsent == n and not self._dispatch_soon:
                    self._dispatch()
                # At the end of this loop iteration: every request read in it joins the batch.
                elif not self._dispatch_soon:
                    self._dispatch_soon = True
                    self._loop.call_soon(self._dispatch_if_idle)
            elif self._linger is None:
                self._linger = self._loop.call_at(
                    request.enqueued + self._policy.max_delay_s, self._linger_end
                )
        return request.future

    def admit(self, n: int) -> None:
        """Raise what `enqueue` would raise for `n` more rows now (PayloadTooLarge, Overloaded)."""
        self._admit(n)

    def _admit(self, n: int) -> None:
        policy = self._policy
        if n > policy.max_queue_rows:
            raise PayloadTooLarge(
                f"{n} rows exceed the queue of {policy.max_queue_rows} rows of model {self._model}: "
                "split the request",
                field="inputs",
            )
        if self._accepted + n > policy.max_queue_rows:
            raise Overloaded(
                f"model {self._model} has {self._accepted} rows queued, {n} more do not fit in "
                f"{policy.max_queue_rows}",
                retry_after_s=policy.retry_after_s,
            )
        # An empty queue always admits: its wait is one call. Rows that fit in the budget even at
        # the dearest call price are admitted without pricing them (the common case).
        rows = self._accepted + n
        if self._accepted and -(-rows // self._max_batch) * self._cost.ceiling_s > policy.max_queue_delay_s:
            wait = self.expected_wait_s(n)
            if wait > policy.max_queue_delay_s:
                raise Overloaded(
                    f"model {self._model} on {self._device} would answer in ~{wait * 1e3:.0f} ms, over the "
                    f"queue budget of {policy.max_queue_delay_s * 1e3:.0f} ms",
                    retry_after_s=max(policy.retry_after_s, wait),
                )

    async def close(self) -> None:
        """Refuse new requests, answer every accepted one, then stop the worker thread."""
        self._closing = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
            if not self._busy:
                self._dispatch()
        if self._queue or self._busy:
            try:
                await asyncio.wait_for(self._idle.wait(), self._policy.device_timeout_s * 2)
            except TimeoutError:
                log.error("model %s: %s did not drain in time at shutdown", self._model, self._device)
        self._jobs.put(None)
        worker = self._worker
        if worker is not None:
            # A kernel hung past its deadline must not hang shutdown as well.
            await asyncio.to_thread(worker.join, self._policy.device_timeout_s)
            if worker.is_alive():
                log.error("model %s: the device worker is still busy at shutdown; leaving it", self._model)

    def _dispatch_if_idle(self) -> None:
        self._dispatch_soon = False
        if not self._busy:
            self._dispatch()

    def _linger_end(self) -> None:
        self._linger = None
        if not self._busy:
            self._dispatch()

    def _dispatch(self) -> None:
        """Hand the worker every full call queued and, when the device is idle, one partial
        call with the rest (see the module docstring)."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        while self._unsent >= self._max_batch or (self._unsent and not self._in_flight):
            if not self._start_call():
                break
        if not self._queue and not self._in_flight:
            self._idle.set()

    def _start_call(self) -> bool:
        """Take up to `max_batch` queued rows into one call and start it; False when none was left."""
        slices = self._take()
        if not slices:
            return False
        if len(slices) == 1:
            request, start, end = slices[0]
            x = request.x[start:end]
        else:
            x = np.concatenate([request.x[start:end] for request, start, end in slices])
        n = int(x.shape[0])
        out = np.empty((n, self._n_outputs), dtype=np.float32)
        call = _Call(slices, x, out)
        idle = not self._in_flight
        self._in_flight.append(call)
        # A call this small costs less on the loop than the two thread switches of a hand-off;
        # a card's call the card has not finished at once goes on on the worker.
        if idle and n <= self._inline_rows and self._run_inline(call):
            self._returned(call)
            return True
        if idle:
            self._arm_watchdog()
        self._jobs.put(call)
        return True

    def _arm_watchdog(self) -> None:
        assert self._loop is not None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = self._loop.call_later(self._policy.device_timeout_s, self._deadline_passed)

    def _take(self) -> list[_Slice]:
        slices: list[_Slice] = []
        taken = 0
        while self._queue and taken < self._max_batch:
            request = self._queue[0]
            if request.future.done():  # its caller went away, or an earlier call of it failed
                self._queue.popleft()
                self._unsent -= request.n - request.sent
                self._release(request)
                continue
            k = min(request.n - request.sent, self._max_batch - taken)
            slices.append((request, request.sent, request.sent + k))
            request.sent += k
            self._unsent -= k
            taken += k
            if request.sent == request.n:
                self._queue.popleft()
        return slices

    def _work(self) -> None:
        """The worker thread: one device call at a time, each answer handed back to the loop.

        A call is skipped when every request in it has failed in an earlier call (the worker
        saw that failure itself) or has already been answered with an error or cancelled (read
        across threads: a late skip only costs a wasted call; `_answer` ignores such requests)."""
        loop = self._loop
        assert loop is not None
        failed: set[int] = set()  # id() of requests an earlier call of this run of calls failed
        while (call := self._jobs.get()) is not None:
            if not call.dropped and call.resume is None:  # a begun call holds the device: finish it
                call.dropped = all(id(r) in failed or r.future.done() for r, _, _ in call.slices)
            if not call.dropped:
                self._run(call)
                if call.error is not None:
                    failed.update(id(r) for r, _, _ in call.slices)
            if self._jobs.empty():
                failed.clear()  # later calls are formed after the loop has seen these failures
            try:
                loop.call_soon_threadsafe(self._returned, call)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _run(self, call: _Call) -> None:
        """On the worker: the whole call, or the rest of one begun on the loop (which timed its start)."""
        if call.resume is None:
            call.started = time.perf_counter()
        try:
            call.stages = (
                call.resume() if call.resume is not None else self._kernel.run_into(call.x, call.out)
            )
        except BaseException as exc:
            call.error = exc
        call.seconds = time.perf_counter() - call.started

    def _run_inline(self, call: _Call) -> bool:
        """On the loop: begin the call; True when it is done (answer or error), False when its
        rest (`call.resume`) is for the worker."""
        call.started = time.perf_counter()
        try:
            done = self._kernel.run_inline(call.x, call.out)
        except BaseException as exc:
            call.error = exc
        else:
            if not isinstance(done, StageTimes):
                call.resume = done
                return False
            call.stages = done
        call.seconds = time.perf_counter() - call.started
        return True

    def _returned(self, call: _Call) -> None:
        """On the loop: a call came back from the device (or was skipped, `dropped`)."""
        oldest = self._in_flight.popleft()
        assert oldest is call, "calls return in the order they were handed over"
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._in_flight and not self._hung:
            self._arm_watchdog()  # the next call is on the device now
        if call.dropped:
            for request, _, _ in call.slices:  # failed or gone already: only the queue bound is left
                if request.sent == request.n:
                    self._release(request)
        elif call.timed_out:
            self._hung = False
            log.warning("model %s: %s returned after its deadline; serving again", self._model, self._device)
        elif call.error is not None:
            self._metrics.batch_size.observe(int(call.x.shape[0]))
            self._queued(call)
            self._fail_call(call, _as_device_error(call.error, self._model))
        else:
            assert call.stages is not None
            if not self._unrecorded:
                # Before the answers: callers woken by them find the call recorded.
                assert self._loop is not None
                self._loop.call_soon(self._record_answered)
            self._unrecorded.append(self._answer(call))
        self._dispatch()  # rows that waited during the call go now: the linger is for an idle device

    def _record_answered(self) -> None:
        """On the loop, in the iteration that answered them: the metrics, Triton's statistics, busy
        time and price of the calls answered since the last time. Recorded after the answers, not
        before, because a single row alone on an idle device is answered (its response written)
        within the call that ran it, and this bookkeeping then delayed the write: measured at c=1
        on one core, the p50 went from ~191 to ~155 µs when it moved here. `/metrics`, the
        statistics routes and the card gauges read in later callbacks and see it; the admission's
        price may lag by these calls, which only refines an estimate."""
        answered, self._unrecorded = self._unrecorded, []
        metrics, stats = self._metrics, self._stats
        for call, rode, finished, rows in answered:
            stages = call.stages
            assert stages is not None
            n = int(call.x.shape[0])
            metrics.batch_size.observe(n)
            self._queued(call)
            self._cost.add(n, call.seconds)
            self._busy_s += call.seconds
            metrics.observe_stages(stages)
            if rows:
                metrics.rows.inc(rows)
            if stats is not None:
                stats.executed(n, stages)
                stats.computed(stages, rode, finished)

    def _queued(self, call: _Call) -> None:
        """Queue time of each request whose first rows this call carried: admission to the call's
        start on the device (time waiting in the worker's hand-over queue included)."""
        for request, start, _ in call.slices:
            if start == 0:
                waited = max(0.0, call.started - request.admitted)
                self._metrics.queue_wait.observe(waited)
                if self._stats is not None:
                    self._stats.queued(waited)

    def _deadline_passed(self) -> None:
        """On the loop: the oldest call did not return in time. Fail it, every call handed over
        behind it (they are never run) and everything queued (the dataplane retries them on
        another replica) until the device returns."""
        self._watchdog = None
        if not self._in_flight:
            return
        call = self._in_flight[0]
        call.timed_out = True
        self._hung = True
        error = DeviceTimeout(
            f"device call of {call.x.shape[0]} rows on {self._device} took over "
            f"{self._policy.device_timeout_s} s"
        )
        self._fail_call(call, error)
        for later in list(self._in_flight)[1:]:
            later.dropped = True
            for request, _, _ in later.slices:
                self._fail(request, error)
        while self._queue:
            request = self._queue.popleft()
            self._fail(request, error)
            self._release(request)
        self._unsent = 0
        self._idle.set()  # nothing is queued; the hung call is given up

    def _answer(self, call: _Call) -> _Answered:
        """Give each waiting request its rows of a successful call; what `_record_answered` needs."""
        offset = rode = finished = rows = 0
        for request, start, end in call.slices:
            k = end - start
            if not request.future.done():
                rode += 1  # Triton counts the stages once per request still waiting
                finished += end == request.n
                if start == 0 and end == request.n:
                    request.out = call.out[offset : offset + k]  # the whole request: a view, no copy
                else:
                    if request.out is None:
                        request.out = np.empty((request.n, self._n_outputs), dtype=np.float32)
                    request.out[start:end] = call.out[offset : offset + k]
                request.answered += k
                if request.answered == request.n:
                    rows += request.n
                    request.future.set_result(request.out)
                    self._release(request)
            elif request.sent == request.n:
                self._release(request)
            offset += k
        return call, rode, finished, rows

    def _fail_call(self, call: _Call, error: FpgaasError) -> None:
        log.warning(
            "model %s: device call failed, %d request(s) get the error: %s",
            self._model,
            len(call.slices),
            error,
        )
        for request, _, _ in call.slices:
            self._fail(request, error)

    def _fail(self, request: _Request, error: FpgaasError) -> None:
        if not request.future.done():
            request.future.set_exception(error)
        # Rows of it still queued are dropped by `_take`, which then releases it.
        if request.sent == request.n:
            self._release(request)

    def _release(self, request: _Request) -> None:
        if not request.finished:
            request.finished = True
            self._accepted -= request.n
            self._metrics.queue_rows.set(self._accepted)


def _as_device_error(exc: BaseException, model: str) -> FpgaasError:
    if isinstance(exc, FpgaasError):
        return exc
    log.error("device call of model %s failed", model, exc_info=exc)
    error = DeviceError(f"device call failed: {exc!r}")
    error.__cause__ = exc
    return error
