"""`PyxrtDevice`: a kernel resident on one AMD/Xilinx card through XRT's own Python binding, `pyxrt`.

PYNQ 3.0.1 drives cards through XRT's legacy C API, which XRT 2.17+ no longer offers; `pyxrt`
(XRT's pybind11 module) is the supported way. The calls are XRT's documented ones:
`pyxrt.device(i)`, `pyxrt.xclbin(path)` + `device.load_xclbin`, one `pyxrt.kernel(device, uuid,
"fpgaas_kernel:{fpgaas_kernel_<c>}", pyxrt.kernel.shared)` per compute unit, `pyxrt.bo(device,
bytes, pyxrt.bo.normal, kernel.group_id(arg))`, `bo.sync(XCL_BO_SYNC_BO_TO_DEVICE /
FROM_DEVICE, bytes, 0)` and one reusable `pyxrt.run` per buffer set (`set_arg`, `start`, `state`).

Overlap. The card has N compute units (`nk=fpgaas_kernel:N` in the builder's v++ config) and
the kernel keeps k buffer sets (an input and an output bo of `run_rows` rows, with their run
object) per CU, N x k in all. One `run_into` call of n rows is cut into runs of at most
`run_rows` rows, dealt round-robin over the buffer sets (CU c gets sets c, c+N, ...): the input
of run i+1 is encoded and synced while runs i, i-1, ... execute on the CUs, and the output of
run i-N*k+1 is synced back while later runs execute; up to N x k runs are in flight. A set is
reused only after its previous run has been waited for and its output read back, and each run's
rows go back to their own place in `out`, so every caller's rows stay its own and in order. The
pipeline lives in the device (not in several batcher calls in flight) so that the batcher's
rules (one call per replica, a deadline per call, a failed call fails exactly its requests)
hold unchanged; a call therefore fills and drains the pipeline (see
docs/benchmarks/card_pipeline.md for what that costs).

Syncs and waits are issued from the calling thread only: pyxrt's `sync` and `run.wait` hold the
GIL while XRT blocks (pyxrt.cpp has no `gil_scoped_release` for them), so a second Python
thread would not overlap the two DMA directions anyway, and a blocking `wait` would stall the
server's event loop. Waiting is therefore `run.state()` polled with short sleeps, against
the kernel deadline.

Faults, as on `PynqDevice`: a run that does not finish by the deadline (DeviceTimeout), a
failed sync, a run that ends in error (DeviceError) fail the call (503), mark the device
unhealthy, and reload the xclbin (which aborts what is still in flight) and reallocate before
the call returns; if the reload fails the device stays unhealthy and every later call tries
again. A card holds one xclbin at a time, so a `PyxrtDevice` holds one artifact; it programs the card
from a sealed copy of the xclbin's verified bytes (`seal_xclbin`), never from the artifact's path.
"""

from __future__ import annotations

import importlib
import json
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import DeviceError, DeviceTimeout
from fpgaas.kernels.sealed import SealedFile
from fpgaas.service.devices.base import StageTimes
from fpgaas.service.devices.card import Card, CardKernel

_FLOAT = np.dtype(np.float32)


@dataclass(frozen=True)
class XrtOptions:
    """Tunables of a pyxrt device. Times in seconds."""

    kernel_timeout_s: float = 1.0
    reload_attempts: int = 3
    reload_backoff_s: float = 0.05
    compute_units: int = 1  # N: CUs the xclbin was linked with (nk=fpgaas_kernel:N)
    buffer_sets: int = 2  # k: buffer sets per CU
    run_rows: int | None = None  # rows per kernel run; None: max_batch / (N * k), rounded up
    poll_s: float = 20e-6  # sleep between run.state() polls


@dataclass
class _Slot:
    """One buffer set: its CU's kernel, input/output bos, host views of them, a reusable run."""

    x_bo: Any
    y_bo: Any
    x_host: np.ndarray  # float32 (run_rows, n_in) over x_bo.map()
    y_host: np.ndarray
    run: Any


class XrtKernel(CardKernel):
    """An artifact's kernel resident on one card, N x k buffer sets of `run_rows` rows.

    Each call pipelines internally (see the module docstring); the fault rule and lifetime are
    `CardKernel`'s."""

    def __init__(self, device: PyxrtDevice, artifact: Artifact, xclbin: SealedFile, max_batch: int) -> None:
        super().__init__(device, artifact, xclbin, max_batch)
        opts = device.options
        self._xrt_device = device
        self._pyxrt = device.pyxrt
        sets = opts.compute_units * opts.buffer_sets
        self.run_rows = opts.run_rows or -(-max_batch // sets)
        self._handle: Any = None  # pyxrt.device
        self._slots: list[_Slot] = []
        self._ready = False

    @property
    def buffer_sets(self) -> int:
        return len(self._slots)

    @property
    def _loaded(self) -> bool:
        return self._ready

    def _run_locked(self, x: np.ndarray, out: np.ndarray) -> StageTimes:
        """One call, pipelined over the buffer sets. Stage times are summed over the call's runs:
        input = encode + sync to the card, output = sync back + decode, kernel = the rest of the
        call's wall time (waiting for CUs: the part of kernel time not hidden behind transfers).
        They add up to the wall time."""
        pyxrt = self._pyxrt
        to_card = pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE
        n, rows, slots = x.shape[0], self.run_rows, self._slots
        in_flight: deque[tuple[_Slot, int, int, float]] = deque()  # slot, first row, end row, started
        t_in = t_out = 0.0
        t0 = time.perf_counter()
        for i, first in enumerate(range(0, n, rows)):
            slot = slots[i % len(slots)]
            if len(in_flight) == len(slots):  # round-robin: the oldest run holds this set
                t_out += self._finish(*in_flight.popleft(), out)
            end = min(n, first + rows)
            k = end - first
            ti = time.perf_counter()
            np.copyto(slot.x_host[:k], x[first:end], casting="same_kind")
            self._guard("DMA sync to the device failed", slot.x_bo.sync, to_card, k * self._n_in * 4, 0)
            started = time.perf_counter()
            t_in += started - ti  # starting the run is the kernel stage's, as in the paper
            slot.run.set_arg(2, k)
            self._guard("kernel start failed", slot.run.start)
            in_flight.append((slot, first, end, started))
        while in_flight:
            t_out += self._finish(*in_flight.popleft(), out)
        wall = time.perf_counter() - t0
        return StageTimes(to_device_s=t_in, kernel_s=max(0.0, wall - t_in - t_out), from_device_s=t_out)

    def _finish(self, slot: _Slot, first: int, end: int, started: float, out: np.ndarray) -> float:
        """Wait for a run, sync its rows back into `out[first:end]`; the seconds of the output stage."""
        self._wait(slot.run, started)
        t = time.perf_counter()
        k = end - first
        from_card = self._pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE
        self._guard("DMA sync from the device failed", slot.y_bo.sync, from_card, k * self._n_out * 4, 0)
        np.copyto(out[first:end], slot.y_host[:k], casting="same_kind")
        return time.perf_counter() - t

    def _wait(self, run: Any, started: float) -> None:
        states = self._pyxrt.ert_cmd_state
        completed = states.ERT_CMD_STATE_COMPLETED
        running = (
            states.ERT_CMD_STATE_NEW,
            states.ERT_CMD_STATE_QUEUED,
            states.ERT_CMD_STATE_RUNNING,
            states.ERT_CMD_STATE_SUBMITTED,
        )
        timeout = self._device.options.kernel_timeout_s
        poll = self._xrt_device.options.poll_s
        while True:
            state = run.state()
            if state == completed:
                return
            if state not in running:
                self._fault(DeviceError(f"{self._device.name}: kernel execution failed: {state.name}"), None)
            if time.perf_counter() - started > timeout:
                self._fault(
                    DeviceTimeout(f"{self._device.name}: kernel did not finish within {timeout} s"), None
                )
            time.sleep(poll)

    def _loaded_detail(self) -> str:
        return f"holds {self._label} on {len(self._slots)} buffer sets"

    def _acquire(self) -> None:
        pyxrt, opts = self._pyxrt, self._xrt_device.options
        handle = pyxrt.device(self._xrt_device.index)
        xclbin_uuid = handle.load_xclbin(pyxrt.xclbin(self._xclbin.path))
        name = self._artifact.manifest.kernel_name
        cus = [
            pyxrt.kernel(handle, xclbin_uuid, f"{name}:{{{name}_{c}}}", pyxrt.kernel.shared)
            for c in range(1, opts.compute_units + 1)
        ]
        slots = []
        for s in range(opts.compute_units * opts.buffer_sets):
            cu = cus[s % len(cus)]
            x_bo = pyxrt.bo(handle, self.run_rows * self._n_in * 4, pyxrt.bo.normal, cu.group_id(0))
            y_bo = pyxrt.bo(handle, self.run_rows * self._n_out * 4, pyxrt.bo.normal, cu.group_id(1))
            run = pyxrt.run(cu)
            run.set_arg(0, x_bo)
            run.set_arg(1, y_bo)
            slots.append(_Slot(x_bo, y_bo, _host_view(x_bo, self._n_in), _host_view(y_bo, self._n_out), run))
        self._handle, self._slots, self._ready = handle, slots, True

    def _release(self) -> None:
        self._ready = False
        self._slots = []  # dropping the last reference frees the bos (XRT's RAII)
        self._handle = None


def _host_view(buffer: Any, width: int) -> np.ndarray:
    """float32 rows over the bo's host mapping (no copy)."""
    return np.frombuffer(buffer.map(), dtype=_FLOAT).reshape(-1, width)


class PyxrtDevice(Card):
    """One card (`pyxrt.device(index)`) as an fpgaas `Device` (see `Card`).

    `pyxrt` is the binding module: the real `pyxrt`, or `fpgaas.service.devices.xrt_emulation`."""

    kind = "xrt"
    program = "xclbin"

    def __init__(self, pyxrt: ModuleType, index: int, *, options: XrtOptions | None = None) -> None:
        count = int(pyxrt.enumerate_devices())
        if not 0 <= index < count:
            raise DeviceError(f"no XRT card at index {index}: XRT lists {count}")
        self.pyxrt = pyxrt
        self.index = index
        self.options: XrtOptions = options or XrtOptions()
        try:
            card = pyxrt.device(index)
            self._card = card  # kept for `sensors` (a scrape must not open the device each time)
            label = (
                f"{card.get_info(pyxrt.xrt_info_device.bdf)} ({card.get_info(pyxrt.xrt_info_device.name)})"
            )
        except Exception as exc:
            raise DeviceError(f"cannot open XRT card {index}: {exc}") from exc
        self._is_emulation = bool(getattr(pyxrt, "FPGAAS_EMULATION", False))
        super().__init__(f"xrt-{index}", self.options, label)

    def sensors(self) -> dict[str, float]:
        """The card's FPGA die temperature (°C, key "temperature_c") and board power (W, key
        "power_w") from XRT's `thermal` and `electrical` reports, each only where XRT says the
        sensor is present: absent, never 0, when the card or its firmware has none. Read at
        every Prometheus scrape, from the scraping thread (XRT reads the card's sysfs)."""
        pyxrt, readings = self.pyxrt, {}
        thermal = _json_report(self._card.get_info(pyxrt.xrt_info_device.thermal))
        for sensor in thermal.get("thermals", []):
            if sensor.get("location_id") == "fpga0" and sensor.get("is_present") == "true":
                temperature = _number(sensor.get("temp_C"))
                if temperature is not None:
                    readings["temperature_c"] = temperature
        electrical = _json_report(self._card.get_info(pyxrt.xrt_info_device.electrical))
        power = _number(electrical.get("power_consumption_watts"))
        if power is not None and power > 0:
            readings["power_w"] = power
        return readings

    def _emulated(self) -> bool:
        return self._is_emulation

    def _kernel(self, artifact: Artifact, xclbin: SealedFile, max_batch: int) -> XrtKernel:
        return XrtKernel(self, artifact, xclbin, max_batch)


def load_pyxrt(*, emulated_cards: int = 0) -> ModuleType:
    """XRT's `pyxrt`, or with `emulated_cards` > 0 the emulated binding with that many cards.

    Raises DeviceError naming what is missing when XRT's Python binding cannot be imported."""
    if emulated_cards:
        from fpgaas.service.devices import xrt_emulation

        xrt_emulation.install_emulated_cards(emulated_cards)
        return xrt_emulation
    try:
        pyxrt = importlib.import_module("pyxrt")  # XRT's binding: on PYTHONPATH via setup.sh
    except ImportError as exc:
        raise DeviceError(
            "device=xrt needs XRT's Python binding `pyxrt` (XRT >= 2.12: source /opt/xilinx/xrt/setup.sh "
            f"so that PYTHONPATH holds it), or FPGAAS_XRT_EMULATED_CARDS > 0: {exc}"
        ) from exc
    return pyxrt


def open_xrt_devices(
    *, indices: Sequence[int] | None = None, emulated_cards: int = 0, options: XrtOptions | None = None
) -> list[PyxrtDevice]:
    """One `PyxrtDevice` per card: those at `indices`, or every card XRT enumerates."""
    pyxrt = load_pyxrt(emulated_cards=emulated_cards)
    chosen = range(int(pyxrt.enumerate_devices())) if indices is None else indices
    return [PyxrtDevice(pyxrt, i, options=options) for i in chosen]


def _json_report(text: str) -> dict[str, Any]:
    """An XRT `get_info` JSON report; {} where XRT has none (an empty string, "NA")."""
    try:
        report = json.loads(text)
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


def _number(value: object) -> float | None:
    """A ptree JSON value ("45", "23.456789"); None for "N/A", "NA", "" and anything else."""
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None
