"""`PynqDevice`: a kernel kept resident on one AMD/Xilinx card through PYNQ.

The per-call path is the source paper's (`sync_to_device`, kernel call, `sync_from_device`)
without its per-call set-up: the overlay is downloaded once per (artifact, card) and the input
and output buffers are allocated once at `max_batch` rows and reused; a call only encodes into
the input buffer, syncs the rows it uses, starts the compute unit, waits with a deadline, syncs
the rows back and decodes.

Where a call runs. A call of at most `inline_rows` rows on an idle card is begun on the event
loop (encode, sync, start: a few KiB and one command, no wait), which saves the batcher's
hand-off to its worker thread and back (~100 µs at c=1). If the card is already done (the
emulated card's kernel can finish within `start`), it is finished there too; otherwise the wait
and the output transfer run on the worker (under pynq 3.0.1 on XRT a handle is only seen done by
a wait, so a real card always takes this path and saves the first hand-off only). Larger calls
run wholly on the worker.

Faults (a kernel that does not finish in time, a failed DMA sync, an overlay that does not
load) never yield a wrong answer: the call raises `DeviceTimeout` / `DeviceError` (HTTP 503),
the device is marked unhealthy with the reason, and the failing call reloads the overlay and
reallocates the buffers before returning, so the next call finds the card back in service. If
the reload fails too, the card stays unhealthy and every later call tries the reload again.

A card holds one xclbin at a time (as XRT does), so a `PynqDevice` holds one artifact.
Real cards run `artifact.xclbin` (the v++ output); emulated cards (see `pynq_emulation`) run
`xclbin/emulation.xclbin`; either from a sealed copy of its verified bytes (`seal_xclbin`).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pynq

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import DeviceError, DeviceTimeout
from fpgaas.kernels.sealed import SealedFile
from fpgaas.service.devices.base import StageTimes
from fpgaas.service.devices.card import INLINE_ROWS, Begun, Card, CardKernel
from fpgaas.service.devices.pynq_compat import ensure_pynq_numpy2_compat

# What an emulated card (fpgaas.service.devices.pynq_emulation) reports in `has_capability`;
# that module is imported only when emulated cards are asked for.
EMULATION_CAPABILITY = "FPGAAS_EMULATION"


class Codec(Protocol):
    """How samples become the kernel's buffer contents and back (the kernel ABI's types)."""

    buffer_dtype: np.dtype

    def encode(self, x: np.ndarray, out: np.ndarray) -> None:
        """Write float32 (n, n_inputs) into the input buffer rows `out` without allocating."""
        ...

    def decode_into(self, y: np.ndarray, out: np.ndarray) -> None:
        """Write float32 (n, n_outputs) from output buffer rows into `out` (the one copy)."""
        ...


class Float32Codec:
    """The ABI `fpgaas_kernel(const float* x, float* y, unsigned int n)`: float32 both ways."""

    buffer_dtype = np.dtype(np.float32)

    def encode(self, x: np.ndarray, out: np.ndarray) -> None:
        np.copyto(out, x, casting="same_kind")

    def decode_into(self, y: np.ndarray, out: np.ndarray) -> None:
        np.copyto(out, y, casting="same_kind")


@dataclass(frozen=True)
class PynqOptions:
    """Tunables of a PYNQ device. Times in seconds."""

    kernel_timeout_s: float = 1.0
    reload_attempts: int = 3
    reload_backoff_s: float = 0.05


class _Waiter:
    """Waits on PYNQ run handles in a daemon thread so the caller can give up at a deadline.

    PYNQ's `wait()` has no timeout. A hung handle pins this thread, so a timed-out waiter is
    abandoned (it exits once the handle is released, e.g. by the card being reprogrammed).
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, Future[None]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            handle, done = job
            try:
                handle.wait()
                done.set_result(None)
            except BaseException as exc:
                done.set_exception(exc)

    def wait(self, handle: Any, timeout_s: float) -> None:
        """Raises concurrent.futures.TimeoutError after timeout_s, or what handle.wait raised."""
        done: Future[None] = Future()
        self._jobs.put((handle, done))
        done.result(timeout=timeout_s)

    def abandon(self) -> None:
        self._jobs.put(None)


class PynqKernel(CardKernel):
    """An artifact's kernel resident on one card through PYNQ, with one pair of buffers for
    `max_batch` rows (one compute unit). The fault rule and lifetime are `CardKernel`'s."""

    def __init__(
        self, device: PynqDevice, artifact: Artifact, xclbin: SealedFile, max_batch: int, codec: Codec
    ) -> None:
        super().__init__(device, artifact, xclbin, max_batch)
        self._pynq_device = device
        self._codec = codec
        self._overlay: Any = None
        self._ip: Any = None
        self._x_buf: Any = None
        self._y_buf: Any = None
        self._waiter: _Waiter | None = None
        self._rows: dict[int, tuple[Any, Any]] = {}  # n -> views of the first n buffer rows
        self.inline_rows = INLINE_ROWS  # begun on the event loop: see `card`

    @property
    def _loaded(self) -> bool:
        return self._ip is not None

    def _run_locked(self, x: np.ndarray, out: np.ndarray) -> StageTimes:
        return self._begin_locked(x, out).finish()

    def _begin_locked(self, x: np.ndarray, out: np.ndarray) -> Begun:
        n = x.shape[0]
        rows = self._rows.get(n)
        if rows is None:  # a PynqBuffer view costs ~5 us to make; batch sizes repeat
            rows = self._rows[n] = (self._x_buf[:n], self._y_buf[:n])
        x_rows, y_rows = rows
        t0 = time.perf_counter()
        self._codec.encode(x, x_rows)
        self._guard("DMA sync to the device failed", x_rows.sync_to_device)
        t1 = time.perf_counter()
        handle = self._guard("kernel start failed", self._ip.start, self._x_buf, self._y_buf, n)
        waiter = self._waiter
        assert waiter is not None

        def finish() -> StageTimes:
            timeout = self._device.options.kernel_timeout_s
            try:
                # A handle already done costs nothing to wait for; otherwise hand it to the waiter
                # thread (a ~40 us switch) because PYNQ's own wait() cannot time out.
                if getattr(handle, "done", False):
                    handle.wait()
                else:
                    waiter.wait(handle, timeout)
            except FutureTimeout as exc:
                self._fault(
                    DeviceTimeout(f"{self._device.name}: kernel did not finish within {timeout} s"), exc
                )
            except Exception as exc:
                self._fault(DeviceError(f"{self._device.name}: kernel execution failed: {exc}"), exc)
            t2 = time.perf_counter()
            self._guard("DMA sync from the device failed", y_rows.sync_from_device)
            self._codec.decode_into(y_rows, out)
            t3 = time.perf_counter()
            return StageTimes(to_device_s=t1 - t0, kernel_s=t2 - t1, from_device_s=t3 - t2)

        # Under pynq 3.0.1 on XRT a handle is done only once a wait has seen it; the emulated
        # card's kernel may already have finished inside `start`.
        return Begun(ready=bool(getattr(handle, "done", False)), finish=finish)

    def _acquire(self) -> None:
        card = self._pynq_device.card
        self._overlay = pynq.Overlay(self._xclbin.path, device=card)
        ip = _find_kernel_ip(self._overlay, self._artifact.manifest.kernel_name)
        rows = self._max_batch
        self._x_buf = pynq.allocate((rows, self._n_in), self._codec.buffer_dtype, target=_bank(card, ip, "x"))
        self._y_buf = pynq.allocate(
            (rows, self._n_out), self._codec.buffer_dtype, target=_bank(card, ip, "y")
        )
        self._waiter = self._waiter or _Waiter(f"{self._device.name}-wait")
        self._ip = ip

    def _release(self) -> None:
        self._ip = None
        self._rows = {}
        for buf in (self._x_buf, self._y_buf):
            if buf is not None:
                buf.freebuffer()
        self._x_buf = self._y_buf = None
        if self._overlay is not None:
            # The card is being reprogrammed anyway; a stale context must not block that.
            with contextlib.suppress(Exception):
                self._overlay.free()
            self._overlay = None

    def _abandon(self) -> None:
        # The waiter may be pinned by a hung handle: a reload starts a new one.
        if self._waiter is not None:
            self._waiter.abandon()
            self._waiter = None


class PynqDevice(Card):
    """One PYNQ card (`pynq.Device.devices[index]`) as an fpgaas `Device` (see `Card`)."""

    kind = "pynq"
    program = "overlay"

    def __init__(self, index: int, *, options: PynqOptions | None = None, codec: Codec | None = None) -> None:
        ensure_pynq_numpy2_compat()
        cards = pynq.Device.devices
        if not 0 <= index < len(cards):
            raise DeviceError(f"no PYNQ card at index {index}: PYNQ lists {len(cards)}")
        self.card: Any = cards[index]
        self.options: PynqOptions = options or PynqOptions()
        self._codec: Codec = codec or Float32Codec()
        label = f"{self.card.tag} ({getattr(self.card, 'name', 'unknown card')})"
        super().__init__(f"pynq-{index}", self.options, label)

    def _emulated(self) -> bool:
        return bool(self.card.has_capability(EMULATION_CAPABILITY))

    def _kernel(self, artifact: Artifact, xclbin: SealedFile, max_batch: int) -> PynqKernel:
        return PynqKernel(self, artifact, xclbin, max_batch, self._codec)


def open_pynq_devices(
    *, indices: Sequence[int] | None = None, emulated_cards: int = 0, options: PynqOptions | None = None
) -> list[PynqDevice]:
    """One `PynqDevice` per card: those at `indices` of `pynq.Device.devices`, or all of them.

    `emulated_cards` > 0 first installs that many emulated cards (listed after real ones).
    """
    if emulated_cards:
        from fpgaas.service.devices.pynq_emulation import install_emulated_cards

        install_emulated_cards(emulated_cards)
    chosen = range(len(pynq.Device.devices)) if indices is None else indices
    return [PynqDevice(i, options=options) for i in chosen]


def _find_kernel_ip(overlay: Any, kernel_name: str) -> Any:
    for name, desc in overlay.ip_dict.items():
        if desc.get("type", "").split(":")[2:3] == [kernel_name] or name.startswith(kernel_name):
            return getattr(overlay, name)
    raise DeviceError(f"the overlay has no compute unit of kernel {kernel_name!r}: {list(overlay.ip_dict)}")


def _bank(card: Any, ip: Any, arg: str) -> Any:
    """The memory bank the kernel argument is wired to (cards have several), else the card."""
    details = getattr(ip, "args", {}).get(arg)
    if details is not None and details.mem is not None:
        return card.get_memory_by_name(details.mem)
    return card
