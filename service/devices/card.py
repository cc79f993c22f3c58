"""What every real-card device shares, whichever binding drives the card (PYNQ, pyxrt).

A card holds one xclbin at a time, so a `Card` holds at most one `CardKernel`: loading a second
artifact onto it is a DeviceError naming the one it holds. The card is programmed from a sealed
copy of the verified xclbin (`seal_xclbin`) at the first load and at every reload.

The fault rule, the same on every binding: a call that fails (a kernel past its deadline, a
failed DMA sync, a run that ends in error) never yields an answer. It marks the card unhealthy
with the reason, reloads the xclbin and reallocates the buffers (`reload_attempts` tries,
`reload_backoff_s` apart), and only then raises DeviceTimeout / DeviceError (a 503), so the
next call finds the card back in service. If the reload fails too, the card stays unhealthy
and every later call tries the reload again before it runs.

A binding implements `_acquire` (program the card, allocate buffers), `_release` (free them;
it must not fail), `_loaded` and `_run_locked` (one call, the lock held), and may extend
`_abandon` (what to give up on a timeout) and `_loaded_detail`. A failing step raises through
`_guard` / `_fault`; the fault rule is applied once, where the call entered.

Calls begun on the event loop (`run_inline`, for a binding that implements `_begin_locked`): the
rows go to the card and the kernel starts on the loop, which those small steps do not block
for long; the rest (the wait, the output transfer) runs on the loop too only when the card has
already finished, else on the batcher's worker. A fault found on the loop is handled (the
reload) on the worker: nothing slow or unbounded runs on the loop. The kernel's lock is held
from the begin to the end of the rest, across the two threads.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import numpy as np

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import DeviceError, DeviceTimeout
from fpgaas.kernels.sealed import SealedFile
from fpgaas.service.devices.base import DeviceInfo, KernelRunMixin, Resume, StageTimes, seal_xclbin

# Calls of at most this many rows are begun on the event loop by a binding that can (their
# transfers are at most a few KiB): handing them to the worker and back costs ~100 µs.
INLINE_ROWS = 16


class _CardFault(Exception):
    """A step of a call failed: `error` is what the caller gets once the fault rule has run."""

    def __init__(self, error: DeviceError, cause: BaseException | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.cause = cause


@dataclass(frozen=True)
class Begun:
    """A call whose rows are on the card and whose kernel was started (`_begin_locked`).

    `finish` waits for the kernel, brings the rows back and returns the stage times; it may
    raise `_CardFault`. `ready`: the card has finished, so `finish` does not wait."""

    ready: bool
    finish: Callable[[], StageTimes]


class CardOptions(Protocol):
    """The tunables every binding's options carry. Seconds."""

    @property
    def kernel_timeout_s(self) -> float: ...

    @property
    def reload_attempts(self) -> int: ...

    @property
    def reload_backoff_s(self) -> float: ...


class CardKernel(KernelRunMixin):
    """An artifact's kernel resident on one card, buffers allocated for `max_batch` rows.

    Lifetime: from `Card.load` to `close`, which also closes `xclbin` (the sealed verified xclbin
    every load and reload programs the card from). `run_into` may be called from any thread;
    calls are serialized by the kernel's lock."""

    def __init__(self, device: Card, artifact: Artifact, xclbin: SealedFile, max_batch: int) -> None:
        self._device = device
        self._artifact = artifact
        self._xclbin = xclbin
        self._max_batch = max_batch
        self._n_in = artifact.manifest.inputs[0].width
        self._n_out = self.n_outputs = artifact.manifest.outputs[0].width
        self._lock = threading.Lock()
        self._closed = False

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def artifact(self) -> Artifact:
        return self._artifact

    def run_into(self, x: np.ndarray, out: np.ndarray) -> StageTimes:
        """x: float32 (n, n_inputs), n <= max_batch -> float32 (n, n_outputs) into `out`; stage times.

        Raises DeviceTimeout / DeviceError when the card fails; by then it has been reloaded.
        Rows this card cannot take are a DeviceError: the batcher checked them already."""
        self._check(x, out)
        with self._lock:
            if self._closed:
                raise DeviceError(f"{self._device.name}: the kernel of {self._label} was unloaded")
            if not self._loaded:
                self._recover("the previous reload failed")
            try:
                return self._run_locked(x, out)
            except _CardFault as fault:
                self._fail(fault.error, fault.cause)

    def run_inline(self, x: np.ndarray, out: np.ndarray) -> StageTimes | Resume:
        """See `LoadedKernel.run_inline` and the module docstring. A kernel that is busy (another
        thread's call), closed or awaiting a reload leaves the whole call to the worker."""
        if self.inline_rows <= 0 or x.shape[0] > self.inline_rows:
            return lambda: self.run_into(x, out)
        self._check(x, out)
        if not self._lock.acquire(blocking=False):
            return lambda: self.run_into(x, out)
        handed_over = False
        try:
            if self._closed or not self._loaded:
                return lambda: self.run_into(x, out)
            try:
                begun = self._begin_locked(x, out)
                if begun.ready:
                    return begun.finish()
            except _CardFault as fault:
                handed_over = True
                return self._resume(self._raiser(fault))
            handed_over = True
            return self._resume(begun.finish)
        finally:
            if not handed_over:
                self._lock.release()

    def _resume(self, finish: Callable[[], StageTimes]) -> Resume:
        """The rest of an inline call, on the worker: the fault rule applied, then the lock
        (taken on the loop) released."""

        def resume() -> StageTimes:
            try:
                return finish()
            except _CardFault as fault:
                self._fail(fault.error, fault.cause)
            finally:
                self._lock.release()

        return resume

    @staticmethod
    def _raiser(fault: _CardFault) -> Callable[[], StageTimes]:
        """A `finish` that raises `fault` again (on the worker, where the fault rule runs)."""

        def finish() -> StageTimes:
            raise fault

        return finish

    def _check(self, x: np.ndarray, out: np.ndarray) -> None:
        if x.ndim != 2 or x.shape[1] != self._n_in or x.shape[0] > self._max_batch:
            raise DeviceError(
                f"{self._device.name}: takes float32 (n <= {self._max_batch}, {self._n_in}), "
                f"got {x.dtype} {x.shape}"
            )
        if out.shape != (x.shape[0], self._n_out):
            raise DeviceError(f"{self._device.name}: output buffer {out.shape} for {x.shape[0]} rows")

    def open(self) -> None:
        """Program the card and allocate the buffers, retrying as configured."""
        with self._lock:
            self._recover(None)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()
            self._xclbin.close()
            self._abandon()
        self._device.unloaded(self)

    # -- what a binding implements ---------------------------------------------------------

    @property
    def _loaded(self) -> bool:
        """Whether the card is programmed and the buffers allocated."""
        raise NotImplementedError

    def _run_locked(self, x: np.ndarray, out: np.ndarray) -> StageTimes:
        """One call on the calling thread; a failing step raises `_CardFault`."""
        raise NotImplementedError

    def _begin_locked(self, x: np.ndarray, out: np.ndarray) -> Begun:
        """Rows to the card and the kernel started, without waiting (a binding with
        `inline_rows` > 0); a failing step raises `_CardFault`."""
        raise NotImplementedError

    def _acquire(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _abandon(self) -> None:
        """Give up waiting on what may never return (a timed-out call, or at close)."""

    def _loaded_detail(self) -> str:
        return f"holds {self._label}"

    # -- the fault rule --------------------------------------------------------------------

    def _guard(self, what: str, step: Any, *args: Any) -> Any:
        """step(*args); a failure of it raises `_CardFault` as `what`."""
        try:
            return step(*args)
        except Exception as exc:
            self._fault(DeviceError(f"{self._device.name}: {what}: {exc}"), exc)

    @staticmethod
    def _fault(error: DeviceError, cause: BaseException | None) -> NoReturn:
        """Abandon the call: the fault rule runs where it entered, then the caller gets `error`."""
        raise _CardFault(error, cause)

    def _fail(self, error: DeviceError, cause: BaseException | None) -> NoReturn:
        """Mark the card unhealthy, reload it (which aborts what is in flight), raise `error`."""
        self._device.mark(healthy=False, detail=error.message)
        if isinstance(error, DeviceTimeout):
            self._abandon()
        with contextlib.suppress(DeviceError):  # if the reload fails the next call retries it
            self._recover(error.message)
        raise error from cause

    def _recover(self, reason: str | None) -> None:
        opts = self._device.options
        last: Exception | None = None
        for attempt in range(max(1, opts.reload_attempts)):
            if attempt:
                time.sleep(opts.reload_backoff_s * attempt)
            try:
                self._release()
                self._acquire()
            except Exception as exc:
                last = exc
                continue
            reloaded = f"; reloaded after: {reason}" if reason else ""
            self._device.mark(healthy=True, detail=self._loaded_detail() + reloaded)
            return
        self._release()
        message = (
            f"{self._device.name}: {self._device.program} failed to load ({reason or 'initial load'}): {last}"
        )
        self._device.mark(healthy=False, detail=message)
        raise DeviceError(message) from last

    @property
    def _label(self) -> str:
        m = self._artifact.manifest
        return f"{m.name} v{m.version}"


class Card:
    """One card as an fpgaas `Device`, holding at most one `CardKernel`.

    A binding sets `kind` and `program` (what a load downloads, for messages) and implements
    `_emulated` and `_kernel`. Thread-safety: `info` may be read from any thread; `load` and
    `close` are serialized."""

    kind = "card"
    program = "xclbin"

    def __init__(self, name: str, options: CardOptions, card_label: str) -> None:
        self.name = name
        self.options = options
        self._card_label = card_label
        self._lock = threading.Lock()
        self._held: CardKernel | None = None
        self._info = DeviceInfo(name, self.kind, True, f"{card_label}; empty")

    @property
    def info(self) -> DeviceInfo:
        return self._info

    def mark(self, *, healthy: bool, detail: str) -> None:
        self._info = DeviceInfo(self.name, self.kind, healthy, f"{self._card_label}; {detail}")

    def load(self, artifact: Artifact, max_batch: int) -> CardKernel:
        """Program the card with the artifact's verified xclbin and allocate buffers for
        `max_batch` rows a call."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        with self._lock:
            if self._held is not None:
                raise DeviceError(
                    f"{self.name} already holds {self._held.artifact.manifest.name}: "
                    "a card holds one xclbin at a time; place the model on another card"
                )
            card = f"{self.name} ({self._card_label})"
            xclbin = seal_xclbin(artifact, emulated=self._emulated(), card=card)
            kernel = self._kernel(artifact, xclbin, max_batch)
            try:
                kernel.open()
            except BaseException:
                xclbin.close()
                raise
            self._held = kernel
            return kernel

    def unloaded(self, kernel: CardKernel) -> None:
        with self._lock:
            if self._held is kernel:
                self._held = None
                self.mark(healthy=True, detail="empty")

    def close(self) -> None:
        kernel = self._held
        if kernel is not None:
            kernel.close()

    def _emulated(self) -> bool:
        """Whether this card is an emulated one (it runs the artifact's emulation xclbin)."""
        raise NotImplementedError

    def _kernel(self, artifact: Artifact, xclbin: SealedFile, max_batch: int) -> CardKernel:
        raise NotImplementedError
