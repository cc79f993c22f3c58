"""Dynamic batching: concurrent requests of any size merged into device calls of at most
`max_batch` rows.

One `Batcher` per loaded kernel. Requests queue in arrival order; once the first row is
queued the batcher waits at most `max_delay_s` for more rows (or until `max_batch` rows are
waiting), then sends up to `max_batch` rows to the kernel, taking a slice of a request larger
than that and the rest in later calls. Each caller gets exactly its own rows back, in order.

Device calls run on one dedicated worker thread per kernel, so one call at a time per kernel
and the event loop never blocks. Rows accepted and not yet answered are bounded by
`max_queue_rows`; a request that does not fit raises `Overloaded`. A failed device call fails
every request with rows in that call (never a partial or wrong answer) and the batcher keeps
serving. `close` stops accepting, drains every accepted request, then stops the worker.
All methods must be called from the event loop the batcher was started on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fpgaas.kernels.errors import DeviceError, DeviceTimeout, FpgaasError, NotReady, Overloaded, PayloadTooLarge
from fpgaas.service.devices.base import LoadedKernel
from fpgaas.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPolicy:
    """How a batcher merges and bounds work; times in seconds."""

    max_delay_s: float
    max_queue_rows: int
    device_timeout_s: float
    retry_after_s: float = 1.0


@dataclass(eq=False)
class _Request:
    x: np.ndarray  # float32 (n, n_inputs)
    out: np.ndarray  # float32 (n, n_outputs), filled slice by slice
    future: asyncio.Future[np.ndarray]
    enqueued: float  # loop.time()
    sent: int = 0  # rows handed to the device
    answered: int = 0  # rows whose outputs are in `out`
    finished: bool = False  # rows released from the queue bound

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


_Slice = tuple[_Request, int, int]  # request, first row, end row


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
    ) -> None:
        self._kernel = kernel
        self._model = model
        self._device = device
        self._n_inputs = n_inputs
        self._n_outputs = n_outputs
        self._policy = policy
        self._metrics = metrics
        self._max_batch = kernel.max_batch
        self._queue: deque[_Request] = deque()
        self._unsent = 0  # rows in the queue not yet handed to the device
        self._accepted = 0  # rows accepted and not yet answered or failed: the bounded quantity
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"device-{model}")

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def accepted_rows(self) -> int:
        """Rows accepted and not yet answered (the quantity bounded by `max_queue_rows`)."""
        return self._accepted

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self._model}")

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """x: float32 (n, n_inputs), n >= 1 -> float32 (n, n_outputs), row i answering x[i].

        Raises Overloaded when the rows do not fit in the queue, PayloadTooLarge when they never
        could, NotReady when closing, DeviceError/DeviceTimeout when a device call fails.
        """
        if self._task is None or self._closing:
            raise NotReady(f"model {self._model} is not accepting requests (shutting down)")
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] != self._n_inputs or x.dtype != np.float32:
            raise ValueError(
                f"batcher takes float32 (n >= 1, {self._n_inputs}) rows, got {x.dtype} {x.shape}"
            )
        n = int(x.shape[0])
        limit = self._policy.max_queue_rows
        if n > limit:
            raise PayloadTooLarge(
                f"{n} rows exceed the queue of {limit} rows of model {self._model}: split the request",
                field="inputs",
            )
        if self._accepted + n > limit:
            raise Overloaded(
                f"model {self._model} has {self._accepted} rows queued, {n} more do not fit in {limit}",
                retry_after_s=self._policy.retry_after_s,
            )
        loop = asyncio.get_running_loop()
        request = _Request(
            x=x,
            out=np.empty((n, self._n_outputs), dtype=np.float32),
            future=loop.create_future(),
            enqueued=loop.time(),
        )
        self._queue.append(request)
        self._unsent += n
        self._accepted += n
        self._metrics.queue_rows.labels(self._model, self._device).set(self._accepted)
        self._wakeup.set()
        # Cancelling this await (client gone) cancels the future; the batcher then skips its rows.
        return await request.future

    async def close(self) -> None:
        """Refuse new requests, answer every accepted one, then stop the worker thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        try:
            # A kernel hung past its deadline must not hang shutdown as well.
            await asyncio.wait_for(
                asyncio.to_thread(self._executor.shutdown, True), self._policy.device_timeout_s
            )
        except TimeoutError:
            log.error("model %s: the device worker is still busy at shutdown; leaving it", self._model)

    async def _run(self) -> None:
        try:
            while True:
                slices = await self._collect()
                if slices:
                    await self._dispatch(slices)
                elif self._closing and not self._queue:
                    return
        except BaseException as exc:
            # A bug here must not strand callers: fail everything still queued, then re-raise.
            log.exception("batcher of %s stopped", self._model)
            error = DeviceError(f"batcher of model {self._model} stopped: {exc!r}")
            for request in self._queue:
                self._fail(request, error)
            self._queue.clear()
            raise

    async def _collect(self) -> list[_Slice]:
        """Wait for the first row, then up to max_delay_s for a full batch; take <= max_batch rows."""
        while not self._queue:
            if self._closing:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        loop = asyncio.get_running_loop()
        deadline = self._queue[0].enqueued + self._policy.max_delay_s
        while self._unsent < self._max_batch and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        return self._take()

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

    async def _dispatch(self, slices: list[_Slice]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for request, start, _ in slices:
            if start == 0:
                self._metrics.queue_wait.labels(self._model).observe(now - request.enqueued)
        if len(slices) == 1:
            request, start, end = slices[0]
            x = request.x[start:end]
        else:
            x = np.concatenate([request.x[start:end] for request, start, end in slices])
        n = int(x.shape[0])
        self._metrics.batch_size.labels(self._model).observe(n)
        try:
            call = loop.run_in_executor(self._executor, self._kernel.run, x)
            y, stages = await asyncio.wait_for(call, self._policy.device_timeout_s)
            if y.shape != (n, self._n_outputs):
                raise DeviceError(
                    f"device answered shape {y.shape} for {n} rows, expected ({n}, {self._n_outputs})"
                )
        except TimeoutError:
            self._fail_all(
                slices, DeviceTimeout(f"device call of {n} rows took over {self._policy.device_timeout_s} s")
            )
            return
        except FpgaasError as exc:
            self._fail_all(slices, exc)
            return
        except Exception as exc:
            log.exception("device call of model %s failed", self._model)
            error = DeviceError(f"device call failed: {exc!r}")
            error.__cause__ = exc
            self._fail_all(slices, error)
            return
        self._metrics.observe_stages(self._model, self._device, stages)
        offset = 0
        for request, start, end in slices:
            k = end - start
            if not request.future.done():
                request.out[start:end] = y[offset : offset + k]
                request.answered += k
                if request.answered == request.n:
                    request.future.set_result(request.out)
                    self._release(request)
            elif request.sent == request.n:
                self._release(request)
            offset += k

    def _fail_all(self, slices: list[_Slice], error: FpgaasError) -> None:
        log.warning(
            "model %s: device call failed, %d request(s) get the error: %s", self._model, len(slices), error
        )
        for request, _, _ in slices:
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
            self._metrics.queue_rows.labels(self._model, self._device).set(self._accepted)
