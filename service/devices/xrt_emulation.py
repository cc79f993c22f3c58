"""An emulated `pyxrt`: the subset of XRT's Python binding that `PyxrtDevice` uses, on emulated cards.

XRT cannot run here, so this module stands in for the `pyxrt` extension module (XRT's
`src/python/pybind11/src/pyxrt.cpp`) with the same names, argument orders, flags and errors:

    pyxrt.enumerate_devices() -> int
    pyxrt.device(index)                .load_xclbin(xclbin | path) -> uuid, .get_xclbin_uuid(),
                                       .get_info(pyxrt.xrt_info_device.name | .bdf | .platform | .thermal | .electrical)
    pyxrt.xclbin(path)                 .get_uuid(), .get_xsa_name(), .get_kernels(), .get_mems()
    pyxrt.uuid                         .to_string()
    pyxrt.kernel(device, uuid, name, pyxrt.kernel.shared)   name "k" or "k:{k_1}" (one CU)
                                       .group_id(argno) -> memory group; kernel(*args) -> run (started)
    pyxrt.run(kernel)                  .set_arg(i, bo | int), .start(), .wait(timeout_ms=0) -> state,
                                       .state() -> pyxrt.ert_cmd_state
    pyxrt.bo(device, size, pyxrt.bo.normal, group)
                                       .map() -> memoryview, .write(buffer, seek), .read(size, skip),
                                       .sync(pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE
                                             | XCL_BO_SYNC_BO_FROM_DEVICE[, size, offset]),
                                       .size(), .address()

It is the module object passed to `PyxrtDevice` when `FPGAAS_XRT_EMULATED_CARDS` > 0 and is
imported only then (the production path imports the real `pyxrt`).

Fidelity, as on the emulated PYNQ card (`pynq_emulation`):
- host and card memory are separate: `map()`/`write()`/`read()` touch the host copy, `sync`
  copies between the two, and a compute unit reads x from and writes y to card memory only, so
  a missing sync gives stale data;
- the compute unit runs the artifact's CPU twin (`fpgaas.kernels.twin.open_cpu_kernel`), so its
  bits are the kernel's; given the sealed xclbin `PyxrtDevice` makes, it runs the verified bytes
  of that artifact (`fpgaas.kernels.twin.open_emulation_twin`), never the files on disk;
- `inject("hang" | "sync_error" | "load_error")` fails the next run / sync / xclbin load the
  way hardware does; reloading an xclbin aborts the runs in flight (ERT_CMD_STATE_ABORT).
- compute units: an xclbin linked with `nk=fpgaas_kernel:N` has CUs fpgaas_kernel_1..N. The
  emulation xclbin describes one; the card instantiates as many as the artifact's v++
  connectivity config (`hls/fpgaas_kernel.cfg`) asks for. Each CU executes its runs in start
  order on its own thread, several runs may be queued on one CU (as XRT queues commands).
- timing model (`TimingModel`, off by default): a sync takes a fixed latency plus bytes /
  bandwidth on that direction's DMA channel; a run takes (depth + II x rows) / clock on its CU.

Where this may differ from real XRT (from XRT's headers `xrt_kernel.h`, `xrt_bo.h` and pyxrt.cpp;
the whole list, with what fpgaas does about each, is docs/xrt-emulation.md):
- pyxrt's `sync`, `wait` and `kernel.__call__` do not release the GIL (no `gil_scoped_release`
  in pyxrt.cpp), so on real XRT a blocking `run.wait()` stalls every Python thread; here the
  waits release it. `PyxrtDevice` polls `run.state()` and sleeps instead of calling `wait`.
- the emulated `wait(timeout_ms)` returns ERT_CMD_STATE_TIMEOUT exactly at the timeout; XRT's may
  return later while other runs keep completing (documented in xrt_kernel.h).
- errors: XRT raises `RuntimeError` carrying a `system_error` text such as "load_axlf: ..." or
  "failed to sync bo"; the texts here are similar, not identical.
- a real hung compute unit usually needs `xbutil reset` before a new xclbin loads; here a reload
  always clears the hang (unless "load_error" is injected).
- memory groups: every argument reports group 0 (the one bank of the emulation xclbin) while a
  real `sp=` assignment gives each CU's x and y their own banks; bo addresses are page-aligned
  offsets in that bank. No `hw_context`, `xclbin.get_axlf`, sub-buffers, P2P, AIE, or `wait2`.
- `kernel(device, uuid, name, mode)` and `load_xclbin` are deprecated in XRT master in favour of
  `hw_context`; they exist in every XRT from 2.12 and are what this subset offers.
"""

from __future__ import annotations

import enum
import itertools
import json
import re
import threading
import time
import uuid as _uuid
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import ArtifactError
from fpgaas.kernels.twin import open_emulation_twin
from fpgaas.kernels.xclbin import XclbinInfo, read_xclbin

FPGAAS_EMULATION = True  # what `PyxrtDevice` checks to pick the emulation xclbin of an artifact

Fault = Literal["hang", "sync_error", "load_error"]
FAULTS: tuple[Fault, ...] = ("hang", "sync_error", "load_error")
_PAGE = 4096
_NK = re.compile(r"^\s*nk\s*=\s*([A-Za-z_]\w*):(\d+)", re.MULTILINE)


class xclBOSyncDirection(enum.IntEnum):
    XCL_BO_SYNC_BO_TO_DEVICE = 0
    XCL_BO_SYNC_BO_FROM_DEVICE = 1
    XCL_BO_SYNC_BO_GMIO_TO_AIE = 2
    XCL_BO_SYNC_BO_AIE_TO_GMIO = 3


class ert_cmd_state(enum.IntEnum):
    ERT_CMD_STATE_NEW = 1
    ERT_CMD_STATE_QUEUED = 2
    ERT_CMD_STATE_RUNNING = 3
    ERT_CMD_STATE_COMPLETED = 4
    ERT_CMD_STATE_ERROR = 5
    ERT_CMD_STATE_ABORT = 6
    ERT_CMD_STATE_SUBMITTED = 7
    ERT_CMD_STATE_TIMEOUT = 8
    ERT_CMD_STATE_NORESPONSE = 9
    ERT_CMD_STATE_SKERROR = 10
    ERT_CMD_STATE_SKCRASHED = 11


_FINAL = frozenset(
    {
        ert_cmd_state.ERT_CMD_STATE_COMPLETED,
        ert_cmd_state.ERT_CMD_STATE_ERROR,
        ert_cmd_state.ERT_CMD_STATE_ABORT,
        ert_cmd_state.ERT_CMD_STATE_TIMEOUT,
        ert_cmd_state.ERT_CMD_STATE_NORESPONSE,
        ert_cmd_state.ERT_CMD_STATE_SKERROR,
        ert_cmd_state.ERT_CMD_STATE_SKCRASHED,
    }
)


class xrt_info_device(enum.Enum):
    bdf = "bdf"
    name = "name"
    platform = "platform"
    max_clock_frequency_mhz = "max_clock_frequency_mhz"
    thermal = "thermal"
    electrical = "electrical"


@dataclass(frozen=True)
class TimingModel:
    """How long the emulated card takes. Seconds, bytes, MHz; all durations x `time_scale`.

    `time_scale` > 1 runs the model slower than the hardware it describes, so that the CPU
    twin computing the bits (~1e6 rows/s per core, against 2e8 for a 200 MHz II=1 kernel) and
    Python's own overhead stay small beside the modelled times; a benchmark divides the measured
    wall time by it. `wire_bytes_per_value` is what one float32 ABI value costs on the wire
    (2 models a kernel whose interface is ap_fixed<16,.>, 4 the float32 ABI as built)."""

    dma_gbps: float = 12.0  # per direction, PCIe Gen3 x16 effective
    dma_latency_s: float = 15e-6  # per sync call
    clock_mhz: float = 200.0
    ii_cycles: float = 1.0  # initiation interval: cycles per row
    depth_cycles: int = 100  # pipeline latency of one run
    time_scale: float = 1.0
    wire_bytes_per_value: float = 4.0

    def dma_s(self, nbytes: int) -> float:
        wire = nbytes / 4.0 * self.wire_bytes_per_value
        return (self.dma_latency_s + wire / (self.dma_gbps * 1e9)) * self.time_scale

    def kernel_s(self, rows: int) -> float:
        return (self.depth_cycles + self.ii_cycles * rows) / (self.clock_mhz * 1e6) * self.time_scale


class uuid:
    """An xclbin's UUID."""

    def __init__(self, value: str) -> None:
        self._value = str(_uuid.UUID(value))

    def to_string(self) -> str:
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, uuid) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class xclbin:
    """An xclbin file's metadata (`pyxrt.xclbin(filename)`); raises RuntimeError when unreadable."""

    class xclbinkernel:
        def __init__(self, name: str, num_args: int) -> None:
            self._name, self._num_args = name, num_args

        def get_name(self) -> str:
            return self._name

        def get_num_args(self) -> int:
            return self._num_args

    class xclbinmem:
        def __init__(self, tag: str, base: int, size: int, index: int) -> None:
            self._tag, self._base, self._size, self._index = tag, base, size, index

        def get_tag(self) -> str:
            return self._tag

        def get_base_address(self) -> int:
            return self._base

        def get_size_kb(self) -> int:
            return self._size // 1024

        def get_used(self) -> bool:
            return True

        def get_index(self) -> int:
            return self._index

    def __init__(self, filename: str) -> None:
        self.path = Path(filename)
        try:
            self.info: XclbinInfo = read_xclbin(self.path)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"{filename}: {exc}") from exc

    def get_uuid(self) -> uuid:
        return uuid(self.info.uuid)

    def get_xsa_name(self) -> str:
        return self.info.platform

    def get_kernels(self) -> list[xclbin.xclbinkernel]:
        return [xclbin.xclbinkernel(self.info.kernel_name, len(self.info.args))]

    def get_mems(self) -> list[xclbin.xclbinmem]:
        return [
            xclbin.xclbinmem(tag, base, size, i)
            for i, (tag, (base, size)) in enumerate(self.info.memories.items())
        ]


class bo:
    """A buffer object: a host copy (what `map` returns) and the card's own copy."""

    class flags(enum.IntEnum):
        normal = 0
        cacheable = 1 << 24
        device_only = 1 << 28
        host_only = 1 << 29
        p2p = 1 << 30
        svm = 1 << 27

    normal = flags.normal
    cacheable = flags.cacheable
    device_only = flags.device_only
    host_only = flags.host_only
    p2p = flags.p2p
    svm = flags.svm

    def __init__(self, dev: device, size: int, flags: bo.flags, group: int) -> None:
        if not isinstance(dev, device):
            raise TypeError("__init__(): incompatible constructor arguments")
        self._card = dev._card
        self._size = int(size)
        self._address = self._card._allocate(self, self._size, int(group))
        self._host = bytearray(self._size)
        self._mem = bytearray(self._size)  # the card's DDR contents
        self._generation = self._card.generation

    def size(self) -> int:
        return self._size

    def address(self) -> int:
        return self._address

    def map(self) -> memoryview:
        return memoryview(self._host)

    def write(self, buffer: Any, seek: int) -> None:
        data = memoryview(buffer).cast("B")
        if seek + len(data) > self._size:
            raise RuntimeError("write: Invalid argument (size + seek > bo size)")
        self._host[seek : seek + len(data)] = data

    def read(self, size: int, skip: int) -> np.ndarray:
        if skip + size > self._size:
            raise RuntimeError("read: Invalid argument (size + skip > bo size)")
        return np.frombuffer(bytes(self._host[skip : skip + size]), dtype=np.int8)

    def sync(self, direction: xclBOSyncDirection, size: int | None = None, offset: int = 0) -> None:
        size = self._size if size is None else int(size)
        if offset < 0 or size < 0 or offset + size > self._size:
            raise RuntimeError("failed to sync bo: Invalid argument (offset + size > bo size)")
        self._card._sync(self, xclBOSyncDirection(direction), size, offset)

    def __del__(self) -> None:
        card = getattr(self, "_card", None)
        if card is not None:
            card._free(self)


class kernel:
    """The compute units of one kernel in the loaded xclbin (`name` or `name:{cu_1,...}`)."""

    class cu_access_mode(enum.IntEnum):
        exclusive = 0
        shared = 1
        none = 2

    exclusive = cu_access_mode.exclusive
    shared = cu_access_mode.shared
    none = cu_access_mode.none

    def __init__(
        self, dev: device, xclbin_uuid: uuid, name: str, mode: kernel.cu_access_mode = shared
    ) -> None:
        card = dev._card
        self._card = card
        self._generation = card.generation
        self._cus = card._open_cus(xclbin_uuid, name)
        self._next = itertools.cycle(self._cus)

    def group_id(self, argno: int) -> int:
        if not 0 <= argno < 2:
            raise RuntimeError(f"kernel argument {argno} is not a global memory argument")
        return 0

    def __call__(self, *args: Any) -> run:
        r = run(self)
        for i, arg in enumerate(args):
            r.set_arg(i, arg)
        r.start()
        return r


class run:
    """One execution of a kernel; restartable once it has finished."""

    def __init__(self, k: kernel) -> None:
        self._kernel = k
        self._args: dict[int, Any] = {}
        self._state = ert_cmd_state.ERT_CMD_STATE_NEW
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._hung = False

    def set_arg(self, index: int, value: Any) -> None:
        if not 0 <= index < 3:
            raise RuntimeError(f"set_arg: argument index {index} out of range")
        self._args[index] = value

    def start(self) -> None:
        with self._lock:
            if self._state not in _FINAL and self._state != ert_cmd_state.ERT_CMD_STATE_NEW:
                raise RuntimeError("run is already in flight")
            self._state = ert_cmd_state.ERT_CMD_STATE_QUEUED
            self._done.clear()
        self._kernel._card._start(self, next(self._kernel._next))

    def state(self) -> ert_cmd_state:
        return self._state

    def wait(self, timeout_ms: int = 0) -> ert_cmd_state:
        if not self._done.wait(None if timeout_ms == 0 else timeout_ms / 1000):
            return ert_cmd_state.ERT_CMD_STATE_TIMEOUT
        return self._state

    def _finish(self, state: ert_cmd_state) -> None:
        self._state = state
        self._done.set()


class _ComputeUnit:
    """One CU: runs its queue in start order on its own thread (when the timing model is on)."""

    def __init__(self, card: _Card, name: str) -> None:
        self.card = card
        self.name = name
        self.queue: deque[run] = deque()
        self.free_at = 0.0  # perf_counter() when the CU finishes what it has (timing model)
        self.wake = threading.Condition(card.lock)
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name=f"{card.tag}-{name}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        card = self.card
        with card.lock:
            while True:
                while not self.stopped and (not self.queue or self.queue[0]._hung):
                    self.wake.wait()  # a hung run holds the CU until a reload aborts it
                if self.stopped:
                    return
                r = self.queue[0]
                timing = card.timing
                rows = int(r._args.get(2, 0))
                started = max(time.perf_counter(), self.free_at)
                ends = started + (timing.kernel_s(rows) if timing else card.kernel_latency_s)
                job = card._prepare(r)
                card.lock.release()
                try:
                    state = card._compute(job)
                    delay = ends - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    elif timing is not None:
                        card.late_runs += 1  # the CPU twin was slower than the model
                finally:
                    card.lock.acquire()
                self.free_at = max(ends, time.perf_counter())
                if self.queue and self.queue[0] is r:  # not aborted by a reload meanwhile
                    self.queue.popleft()
                    card._kernel_runs += state == ert_cmd_state.ERT_CMD_STATE_COMPLETED
                    r._finish(state)
                del r, job  # a finished run must not keep its buffers alive from this thread


_Job = (
    tuple[Any, np.ndarray, np.ndarray] | ert_cmd_state
)  # (twin, x rows, y rows) in card memory, or a failure


class _Card:
    """One emulated Alveo card: memory, compute units, fault counters. Process-global."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.tag = f"xrt-emulated{index}"
        self.lock = threading.RLock()
        self.timing: TimingModel | None = None
        self.kernel_latency_s = 0.0  # extra seconds every run takes (tests: a slow kernel)
        self.generation = 0  # bumps at every xclbin load: older handles are stale
        self.late_runs = 0
        self.flip_every_rows = 0  # > 0: a marginal card, see `flip_one_bit_every`
        # Sensor readings `get_info(thermal | electrical)` reports; None: the sensor is absent
        # (XRT then says is_present "false" / "N/A", as for a card whose firmware exposes none).
        self.fpga_temperature_c: float | None = None
        self.power_w: float | None = None
        self._rows_computed = 0
        self._faults: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self._uuid: uuid | None = None
        self._info: XclbinInfo | None = None
        self._library: Any = None
        self._cus: dict[str, _ComputeUnit] = {}
        self._bos: weakref.WeakValueDictionary[int, bo] = weakref.WeakValueDictionary()  # live bos
        self._next_address = 0
        self._dma = {d: threading.Lock() for d in xclBOSyncDirection}
        self._allocations = self._downloads = self._kernel_runs = 0

    # --- what tests observe and control -------------------------------------------------
    @property
    def name(self) -> str:
        return "xilinx_u250_gen3x16_xdma_shell (emulated)"

    @property
    def allocations(self) -> int:
        return self._allocations

    @property
    def live_buffers(self) -> int:
        with self.lock:
            return len(self._bos)

    @property
    def downloads(self) -> int:
        return self._downloads

    @property
    def kernel_runs(self) -> int:
        return self._kernel_runs

    @property
    def compute_units(self) -> list[str]:
        with self.lock:
            return list(self._cus)

    def inject(self, fault: Fault, count: int = 1) -> None:
        """Make the next `count` operations of that kind fail (see the module docstring)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        with self.lock:
            self._faults[fault] += count

    def clear_faults(self) -> None:
        with self.lock:
            self._faults = dict.fromkeys(FAULTS, 0)
            self.flip_every_rows = 0

    def flip_one_bit_every(self, rows: int) -> None:
        """A marginal card: the last row of every `rows` rows the CUs compute gets the lowest bit
        of its first output flipped; nothing else notices (0 stops it)."""
        with self.lock:
            self.flip_every_rows = rows
            self._rows_computed = 0

    def _take_fault(self, fault: Fault) -> bool:
        with self.lock:
            if self._faults[fault] > 0:
                self._faults[fault] -= 1
                return True
            return False

    # --- programming ----------------------------------------------------------------------
    def load(self, xb: xclbin) -> uuid:
        with self.lock:
            self._unload()
            if self._take_fault("load_error"):
                raise RuntimeError("load_axlf: Input/output error (injected)")
            meta = xb.info.user_metadata
            if "emulation_library" not in meta:
                raise RuntimeError(f"load_axlf: {xb.path} holds no emulation library: it needs a real card")
            try:
                artifact, self._library = open_emulation_twin(xb.path, meta["emulation_library"])
            except ArtifactError as exc:
                raise RuntimeError(f"load_axlf: {exc.message}") from exc
            self._info = xb.info
            self._uuid = xb.get_uuid()
            count = _compute_units(artifact, xb.info.kernel_name)
            self._cus = {
                f"{xb.info.kernel_name}_{i}": _ComputeUnit(self, f"{xb.info.kernel_name}_{i}")
                for i in range(1, count + 1)
            }
            self.generation += 1
            self._downloads += 1
            return self._uuid

    def _unload(self) -> None:
        for cu in self._cus.values():
            cu.stopped = True
            for r in cu.queue:
                r._finish(ert_cmd_state.ERT_CMD_STATE_ABORT)
            cu.queue.clear()
            cu.wake.notify_all()
        self._cus = {}
        self._library = self._info = self._uuid = None
        self._bos = weakref.WeakValueDictionary()
        self._next_address = 0

    def _open_cus(self, xclbin_uuid: uuid, name: str) -> list[_ComputeUnit]:
        with self.lock:
            if self._uuid is None or xclbin_uuid != self._uuid:
                raise RuntimeError(f"No such kernel {name}: xclbin {xclbin_uuid.to_string()} is not loaded")
            kernel_name, _, selection = name.partition(":")
            if self._info is None or kernel_name != self._info.kernel_name:
                raise RuntimeError(f"No such kernel '{kernel_name}'")
            if not selection:
                return list(self._cus.values())
            wanted = [s.strip() for s in selection.strip("{}").split(",")]
            missing = [w for w in wanted if w not in self._cus]
            if missing:
                raise RuntimeError(f"No compute units matching '{name}'")
            return [self._cus[w] for w in wanted]

    # --- memory ---------------------------------------------------------------------------
    def _allocate(self, buffer: bo, size: int, group: int) -> int:
        with self.lock:
            if self._info is None:
                raise RuntimeError("bo: no xclbin is loaded: no memory bank to allocate in")
            if group != 0:
                raise RuntimeError(f"bo: no memory group {group}")
            base, bank_size = next(iter(self._info.memories.values()))
            address = base + self._next_address
            if self._next_address + size > bank_size:
                raise RuntimeError("bo: Cannot allocate memory (bank full)")
            self._next_address += -(-max(size, 1) // _PAGE) * _PAGE
            self._bos[id(buffer)] = buffer
            self._allocations += 1
            return address

    def _free(self, buffer: bo) -> None:
        # Called from bo.__del__, which the garbage collector may run on any thread at any
        # moment, also while another thread holds `lock` and waits for this one (a compute
        # unit's thread starting inside `load` did exactly that: a deadlock). So no lock: one
        # dict pop is atomic, and only this live buffer can have its id as a key.
        if buffer._generation == self.generation:
            self._bos.pop(id(buffer), None)

    def _sync(self, buffer: bo, direction: xclBOSyncDirection, size: int, offset: int) -> None:
        if buffer._generation != self.generation:
            raise RuntimeError("failed to sync bo: No such device (the xclbin was reloaded)")
        if self._take_fault("sync_error"):
            raise RuntimeError("failed to sync bo: Input/output error (injected DMA error)")
        timing = self.timing
        with self._dma[direction]:  # one DMA channel per direction
            if timing is not None:
                time.sleep(timing.dma_s(size))
            src, dst = (
                (buffer._host, buffer._mem)
                if direction == xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE
                else (buffer._mem, buffer._host)
            )
            memoryview(dst)[offset : offset + size] = memoryview(src)[offset : offset + size]

    # --- execution ------------------------------------------------------------------------
    def _start(self, r: run, cu: _ComputeUnit) -> None:
        with self.lock:
            if cu.stopped:
                r._finish(ert_cmd_state.ERT_CMD_STATE_ABORT)
                return
            r._hung = self._take_fault("hang")  # never finishes; a reload aborts it
            if not r._hung and self.timing is None and self.kernel_latency_s <= 0 and not cu.queue:
                # An idle CU without a timing model: the run is done when start returns.
                state = self._compute(self._prepare(r))
                self._kernel_runs += state == ert_cmd_state.ERT_CMD_STATE_COMPLETED
                r._finish(state)
                return
            r._state = ert_cmd_state.ERT_CMD_STATE_RUNNING
            cu.queue.append(r)
            cu.wake.notify()

    def _prepare(self, r: run) -> _Job:
        """Under the card lock: the card-memory rows fpgaas_kernel(x, y, n) reads and writes."""
        if self._library is None or self._info is None:
            return ert_cmd_state.ERT_CMD_STATE_ERROR
        x, y, n = r._args.get(0), r._args.get(1), int(r._args.get(2, 0))
        if not (isinstance(x, bo) and isinstance(y, bo)) or x._generation != self.generation:
            return ert_cmd_state.ERT_CMD_STATE_ERROR  # a real CU would raise an AXI error
        n_in, n_out = int(self._info.user_metadata["n_inputs"]), int(self._info.user_metadata["n_outputs"])
        if 4 * n * n_in > x._size or 4 * n * n_out > y._size:
            return ert_cmd_state.ERT_CMD_STATE_ERROR
        xs = np.frombuffer(x._mem, dtype=np.float32, count=n * n_in).reshape(n, n_in)
        ys = np.frombuffer(y._mem, dtype=np.float32, count=n * n_out).reshape(n, n_out)
        return self._library, xs, ys

    def _compute(self, job: _Job) -> ert_cmd_state:
        """The CPU twin computes the rows (outside the card lock: CUs run in parallel)."""
        if isinstance(job, ert_cmd_state):
            return job
        library, xs, ys = job
        if xs.shape[0]:
            library.run_into(xs, ys)
            if self.flip_every_rows > 0:
                self._flip_bits(ys)
        return ert_cmd_state.ERT_CMD_STATE_COMPLETED

    def _flip_bits(self, ys: np.ndarray) -> None:
        with self.lock:
            every, first = self.flip_every_rows, self._rows_computed
            self._rows_computed += ys.shape[0]
        # rows r of this run with (first + r + 1) % every == 0
        start = (every - 1 - first) % every
        bits = ys.view(np.uint32)
        bits[start::every, 0] ^= np.uint32(1)


class device:
    """`pyxrt.device(index)`: a handle on one emulated card."""

    def __init__(self, index: int) -> None:
        with _cards_lock:
            if not 0 <= index < len(_cards):
                raise RuntimeError(f"Could not open device with index '{index}'")
            self._card = _cards[index]

    def load_xclbin(self, xb: xclbin | str) -> uuid:
        return self._card.load(xb if isinstance(xb, xclbin) else xclbin(xb))

    def get_xclbin_uuid(self) -> uuid:
        return self._card._uuid or uuid("00000000-0000-0000-0000-000000000000")

    def get_info(self, key: xrt_info_device) -> str:
        card = self._card
        return {
            xrt_info_device.bdf: f"0000:{0x3B + card.index:02x}:00.1",
            xrt_info_device.name: card.name,
            xrt_info_device.platform: "xilinx_u250_gen3x16_xdma_4_1_202210_1",
            xrt_info_device.max_clock_frequency_mhz: str(int(card.timing.clock_mhz) if card.timing else 300),
            xrt_info_device.thermal: _thermal_json(card.fpga_temperature_c),
            xrt_info_device.electrical: _electrical_json(card.power_w),
        }.get(key, "NA")


def _thermal_json(fpga_c: float | None) -> str:
    """XRT's `thermal` report as its legacy sensor path writes it (boost ptree JSON: every value a
    string; an absent sensor reads "0" with is_present "false"); only the FPGA die sensor here."""
    present = fpga_c is not None
    entry = {
        "location_id": "fpga0",
        "description": "FPGA",
        "temp_C": f"{fpga_c:g}" if present else "0",
        "is_present": "true" if present else "false",
    }
    return json.dumps({"thermals": [entry]})


def _electrical_json(watts: float | None) -> str:
    """XRT's `electrical` report: board power in W, "N/A" where the card cannot measure it."""
    return json.dumps(
        {
            "power_rails": [],
            "power_consumption_max_watts": "225" if watts is not None else "N/A",
            "power_consumption_watts": f"{watts:.6f}" if watts is not None else "N/A",
            "power_consumption_warning": "false" if watts is not None else "N/A",
        }
    )


# --- the card registry (fpgaas-only; not part of pyxrt) ------------------------------------
_cards: list[_Card] = []
_cards_lock = threading.Lock()

EmulatedXrtCard = _Card


def enumerate_devices() -> int:
    with _cards_lock:
        return len(_cards)


def install_emulated_cards(count: int) -> list[_Card]:
    """Make at least `count` emulated cards visible to `pyxrt.device(i)`; returns them all.

    Idempotent: cards are created once per process and reused, like the cards in a host."""
    with _cards_lock:
        while len(_cards) < count:
            _cards.append(_Card(len(_cards)))
        return list(_cards)


def emulated_cards() -> list[_Card]:
    with _cards_lock:
        return list(_cards)


def _compute_units(artifact: Artifact, kernel_name: str) -> int:
    """How many CUs v++ would instantiate: `nk=<kernel>:N` of the artifact's connectivity config
    (its verified bytes)."""
    config = f"hls/{kernel_name}.cfg"
    if config in artifact.manifest.files:
        for name, count in _NK.findall(artifact.read_verified(config).decode()):
            if name == kernel_name:
                return max(1, int(count))
    return 1
