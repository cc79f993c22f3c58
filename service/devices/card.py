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
`_abandon` (what to give up on a timeout) and `_loaded_detail`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Protocol

import numpy as np

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import DeviceError, DeviceTimeout
from fpgaas.kernels.sealed import SealedFile
from fpgaas.service.devices.base import DeviceInfo, KernelRunMixin, StageTimes, seal_xclbin


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
        if x.ndim != 2 or x.shape[1] != self._n_in or x.shape[0] > self._max_batch:
            raise DeviceError(
                f"{self._device.name}: takes float32 (n <= {self._max_batch}, {self._n_in}), "
                f"got {x.dtype} {x.shape}"
            )
        if out.shape != (x.shape[0], self._n_out):
            raise DeviceError(f"{self._device.name}: output buffer {out.shape} for {x.shape[0]} rows")
        with self._lock:
            if self._closed:
                raise DeviceError(f"{self._device.name}: the kernel of {self._label} was unloaded")
            if not self._loaded:
                self._recover("the previous reload failed")
            return self._run_locked(x, out)

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
        """step(*args), a failure of it handled by the fault rule as `what`."""
        try:
            return step(*args)
        except Exception as exc:
            self._fail(DeviceError(f"{self._device.name}: {what}: {exc}"), exc)

    def _fail(self, error: DeviceError, cause: BaseException | None) -> None:
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
