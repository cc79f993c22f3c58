"""An emulated Alveo card that PYNQ 3.0.1 discovers like a real one.

`EmulatedCard` subclasses `pynq.Device`, so `pynq.Overlay(xclbin, device=card)`,
`pynq.allocate(shape, dtype, target=card)`, `PynqBuffer.sync_to_device()` /
`sync_from_device()` and `ip.call(...)` / `ip.start(...).wait()` run unmodified on it. It keeps
two copies of every buffer, as a card does: the host array PYNQ hands out and the card's own
memory; syncs copy between them, and the compute unit reads x from and writes y to card memory
only, so a forgotten sync gives stale data exactly as on hardware. The compute unit runs the
artifact's kernel on the CPU through its twin `fpgaas.kernels.twin.open_cpu_kernel` (for the library named in the
xclbin's USER_METADATA section, see `fpgaas.kernels.xclbin`), so results are bit-exact with the twin.
`PynqDevice` hands a card a sealed copy of the verified xclbin, and the card then runs the verified
bytes of that artifact's library (`fpgaas.kernels.twin.open_emulation_twin`), never the files on disk.

Cards are enabled by configuration: `install_emulated_cards(n)` (or the environment variable
`FPGAAS_PYNQ_EMULATED_CARDS=n` before PYNQ first probes) adds them to `pynq.Device.devices`,
after any real card. `inject(fault)` makes a card fail the way hardware does:

    "hang"        the next kernel command never completes (until the overlay is reloaded)
    "sync_error"  the next buffer sync (either direction) raises like a failed XRT DMA
    "load_error"  the next xclbin download fails like XRT refusing to program the card

Thread-safety: one lock per card guards its memory, registers and fault counters.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pynq
from pynq._3rdparty import ert
from pynq.buffer import PynqBuffer
from pynq.pl_server.xclbin_parser import XclBin

from fpgaas.kernels.errors import ArtifactError
from fpgaas.kernels.twin import open_emulation_twin
from fpgaas.kernels.xclbin import read_xclbin
from fpgaas.service.devices.pynq import EMULATION_CAPABILITY
from fpgaas.service.devices.pynq_compat import ensure_pynq_numpy2_compat

Fault = Literal["hang", "sync_error", "load_error"]
FAULTS: tuple[Fault, ...] = ("hang", "sync_error", "load_error")
ENV_CARDS = "FPGAAS_PYNQ_EMULATED_CARDS"

_PAGE = 4096
_EXEC_BO_BYTES = 4096
_CTRL_START, _CTRL_DONE, _CTRL_IDLE = 0x1, 0x2, 0x4
_State = ert.ert_cmd_state


@dataclass
class _Bo:
    """One buffer object: a host mirror (what PYNQ maps) and the card-side copy."""

    address: int
    host: bytearray
    card: bytearray


class EmulatedMemory:
    """A memory bank of an emulated card; hands out PynqBuffers (see `pynq.allocate`)."""

    def __init__(self, card: EmulatedCard, desc: dict[str, Any]) -> None:
        self.card = card
        self.idx = desc["idx"]
        self.tag = desc["tag"]
        self.desc = desc

    def allocate(self, shape: Any, dtype: Any, **_kwargs: Any) -> PynqBuffer:
        dtype = np.dtype(dtype)
        elements = int(np.prod(shape, dtype=np.int64))
        bo = self.card.allocate_bo(elements * dtype.itemsize, self.idx, 0)
        buf = PynqBuffer(
            shape,
            dtype,
            bo=bo,
            device=self.card,
            buffer=self.card.map_bo(bo),
            device_address=self.card.get_device_address(bo),
            coherent=False,
        )
        # PYNQ's buffer-cache protocol: freebuffer() hands `pointer` back to `return_to`
        # instead of unmapping XRT memory, so freeing works explicitly and on garbage collection.
        buf.memory = self
        buf.pointer = bo
        buf.return_to = self
        buf.freed = True  # nothing for PYNQ to munmap: without this a second free would try
        return buf

    def return_pointer(self, bo: int) -> None:
        self.card.free_bo(bo)


class EmulatedRun:
    """The wait handle of one kernel command, shaped like PYNQ's ErtWaitHandle."""

    def __init__(self) -> None:
        self._finished = threading.Event()
        self.state = _State.ERT_CMD_STATE_RUNNING

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self) -> None:
        """Block until the command ends; raises if it ended in error or was aborted."""
        self._finished.wait()
        if self.state != _State.ERT_CMD_STATE_COMPLETED:
            raise RuntimeError(f"Execution failed: {self.state}")

    def finish(self, state: int) -> None:
        self.state = state
        self._finished.set()


class EmulatedExecBo:
    """A command buffer, shaped like PYNQ's ExecBo (packets are cast over its bytes)."""

    def __init__(self) -> None:
        self.raw = (ctypes.c_char * _EXEC_BO_BYTES)()

    def as_packet(self, ptype: Any) -> Any:
        return ctypes.cast(self.raw, ctypes.POINTER(ptype))[0]


class EmulatedCard(pynq.Device):
    """One emulated card; PYNQ lists it in `pynq.Device.devices` once installed."""

    _probe_priority_: ClassVar[int] = 900  # after real XRT cards (200) and embedded boards (50)

    @classmethod
    def _probe_(cls) -> list[EmulatedCard]:
        wanted = int(os.environ.get(ENV_CARDS, "0") or 0)
        return _ensure_cards(wanted)

    def __init__(self, index: int) -> None:
        super().__init__(f"emulated{index}")
        self.index = index
        self.capabilities = {"REGISTER_RW": True, "CALLABLE": True, "ERT": True, EMULATION_CAPABILITY: True}
        self.bitfile_name = ""
        self.timestamp = ""
        self.mem_dict: dict[str, Any] = {}
        self.ip_dict: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._bos: dict[int, _Bo] = {}
        self._bo_ids = itertools.count(1)  # 0 would read as "no pointer" to PynqBuffer
        self._next_address: dict[int, int] = {}
        self._faults: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self._pending: list[EmulatedRun] = []
        self._exec_bos: list[EmulatedExecBo] = []
        self._registers: dict[int, bytearray] = {}  # CU base address -> register file
        self._library: Any = None
        self._layout: dict[str, int] = {}
        self._n_inputs = self._n_outputs = 0
        self._allocations = self._downloads = self._kernel_runs = 0
        self.kernel_latency_s = 0.0

    # --- what tests observe and control -------------------------------------------------
    @property
    def name(self) -> str:
        return "xilinx_u250_gen3x16_xdma_shell (emulated)"

    @property
    def allocations(self) -> int:
        """Buffer objects allocated on this card since it was created."""
        return self._allocations

    @property
    def live_buffers(self) -> int:
        return len(self._bos)

    @property
    def downloads(self) -> int:
        """Successful xclbin downloads since the card was created."""
        return self._downloads

    @property
    def kernel_runs(self) -> int:
        return self._kernel_runs

    kernel_latency_s: float
    """Seconds a command takes to complete. At 0 the CU finishes within `execute_bo` (the handle
    is done on return); above 0 it finishes on a timer thread, as a card finishes while the host
    waits."""

    def inject(self, fault: Fault, count: int = 1) -> None:
        """Make the next `count` operations of that kind fail (see the module docstring)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        with self._lock:
            self._faults[fault] += count

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = dict.fromkeys(FAULTS, 0)

    def _take_fault(self, fault: Fault) -> bool:
        with self._lock:
            if self._faults[fault] > 0:
                self._faults[fault] -= 1
                return True
            return False

    # --- programming the card -----------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name: str) -> XclBin:
        return XclBin(bitfile_name)

    def gen_cache(self, bitstream: Any, parser: Any = None) -> None:
        pass

    def download(self, bitstream: Any, parser: Any = None) -> None:
        """Program the card: abort running commands, then bind the xclbin's CPU kernel."""
        with self._lock:
            self._abort_pending()
            if self._take_fault("load_error"):
                self._unbind()
                raise RuntimeError("Programming Device failed: EIO (5) Input/output error (injected)")
            path = Path(bitstream.bitfile_name)
            meta = read_xclbin(path).user_metadata
            if "emulation_library" not in meta:
                raise RuntimeError(f"{path} holds no emulation library: it needs a real card")
            try:
                _artifact, self._library = open_emulation_twin(path, meta["emulation_library"])
            except ArtifactError as exc:
                raise RuntimeError(f"Programming Device failed: {exc.message}") from exc
            self._n_inputs, self._n_outputs = int(meta["n_inputs"]), int(meta["n_outputs"])
            parser = parser if parser is not None else XclBin(str(path))
            self._bind_registers(parser.ip_dict)
            self._downloads += 1
        super().post_download(bitstream, parser)

    def free_bitstream(self) -> None:
        with self._lock:
            self._abort_pending()
            self._unbind()

    def close(self) -> None:
        """Nothing to release: the card lives as long as the process (like an XRT handle)."""

    def open_context(self, description: dict[str, Any], shared: bool = True) -> int:
        return int(description["cu_index"])

    def close_context(self, cu_name: str) -> None:
        pass

    def _bind_registers(self, ip_dict: dict[str, Any]) -> None:
        ips = [ip for ip in ip_dict.values() if {"x", "y", "n"} <= set(ip.get("registers", {}))]
        if len(ips) != 1:
            raise RuntimeError(f"expected one fpgaas kernel compute unit, found {len(ips)}")
        regs = ips[0]["registers"]
        self._layout = {name: regs[name]["address_offset"] for name in ("x", "y", "n")}
        self._registers = {ips[0]["phys_addr"]: bytearray(ips[0]["addr_range"])}
        self._registers[ips[0]["phys_addr"]][0:4] = struct.pack("<I", _CTRL_IDLE)

    def _unbind(self) -> None:
        self._library = None
        self._registers = {}
        self.bitfile_name = ""
        self.timestamp = ""

    def _abort_pending(self) -> None:
        for run in self._pending:
            run.finish(_State.ERT_CMD_STATE_ABORT)
        self._pending = []

    # --- memory -------------------------------------------------------------------------
    @property
    def default_memory(self) -> EmulatedMemory:
        used = [m for m in self.mem_dict.values() if m["used"] and not m["streaming"]]
        if len(used) != 1:
            raise RuntimeError(f"expected one active memory bank, the design has {len(used)}")
        return EmulatedMemory(self, used[0])

    def get_memory(self, desc: dict[str, Any]) -> EmulatedMemory:
        return EmulatedMemory(self, desc)

    def get_memory_by_name(self, name: str) -> EmulatedMemory:
        if name not in self.mem_dict:
            raise RuntimeError("Could not find memory")
        return EmulatedMemory(self, self.mem_dict[name])

    def get_memory_by_idx(self, idx: int) -> EmulatedMemory:
        for desc in self.mem_dict.values():
            if desc["idx"] == idx:
                return EmulatedMemory(self, desc)
        raise RuntimeError("Could not find memory")

    def allocate_bo(self, size: int, idx: int, cacheable: int) -> int:
        with self._lock:
            bank = next((m for m in self.mem_dict.values() if m["idx"] == idx), None)
            if bank is None:
                raise RuntimeError(f"Allocate failed: no memory bank {idx} (is an overlay loaded?)")
            address = self._next_address.get(idx, bank["base_address"])
            if address + size > bank["base_address"] + bank["size"]:
                raise RuntimeError(f"Allocate failed: bank {bank['tag']} is full")
            self._next_address[idx] = address + -(-max(size, 1) // _PAGE) * _PAGE
            bo = next(self._bo_ids)
            self._bos[bo] = _Bo(address, bytearray(size), bytearray(size))
            self._allocations += 1
            return bo

    def free_bo(self, bo: int) -> None:
        with self._lock:
            self._bos.pop(bo, None)

    def map_bo(self, bo: int) -> bytearray:
        return self._bos[bo].host

    def get_device_address(self, bo: int) -> int:
        return self._bos[bo].address

    def flush(self, bo: int, offset: int, ptr: int, size: int) -> None:
        """sync_to_device: copy host bytes [offset, offset+size) of the buffer to the card."""
        if self._take_fault("sync_error"):
            raise RuntimeError("Flush Failed: 4294967291 (injected DMA error)")
        with self._lock:
            b = self._bos[bo]
            memoryview(b.card)[offset : offset + size] = memoryview(b.host)[offset : offset + size]

    def invalidate(self, bo: int, offset: int, ptr: int, size: int) -> None:
        """sync_from_device: copy card bytes [offset, offset+size) back to the host mirror."""
        if self._take_fault("sync_error"):
            raise RuntimeError("Invalidate Failed: 4294967291 (injected DMA error)")
        with self._lock:
            b = self._bos[bo]
            memoryview(b.host)[offset : offset + size] = memoryview(b.card)[offset : offset + size]

    def _card_memory(self, address: int, nbytes: int) -> memoryview:
        for b in self._bos.values():
            if b.address <= address and address + nbytes <= b.address + len(b.card):
                start = address - b.address
                return memoryview(b.card)[start : start + nbytes]
        raise RuntimeError(f"address {address:#x}+{nbytes} is outside every allocated buffer")

    # --- registers and the compute unit -------------------------------------------------
    def read_registers(self, address: int, length: int) -> bytes:
        with self._lock:
            for base, regs in self._registers.items():
                if base <= address < base + len(regs):
                    return bytes(regs[address - base : address - base + length])
        return b"\x00" * length

    def write_registers(self, address: int, data: bytes) -> None:
        """AXI-lite writes; setting AP_START runs the kernel (PYNQ's start_sw path)."""
        with self._lock:
            for base, regs in self._registers.items():
                if base <= address < base + len(regs):
                    regs[address - base : address - base + len(data)] = data
                    if address == base and data and data[0] & _CTRL_START:
                        state = self._run_kernel(bytes(regs))
                        done = state == _State.ERT_CMD_STATE_COMPLETED
                        regs[0:4] = struct.pack("<I", (_CTRL_DONE | _CTRL_IDLE) if done else 0)
                    return

    def get_exec_bo(self, size: int = _EXEC_BO_BYTES) -> EmulatedExecBo:
        with self._lock:
            return self._exec_bos.pop() if self._exec_bos else EmulatedExecBo()

    def return_exec_bo(self, bo: EmulatedExecBo) -> None:
        with self._lock:
            self._exec_bos.append(bo)

    def execute_bo(self, bo: EmulatedExecBo) -> EmulatedRun:
        """Run a START_CU command packet; the handle completes when the CU finishes."""
        packet = bo.as_packet(ert.ert_start_kernel_cmd)
        words = packet.m_uert.m_start_cmd_struct.count - 1  # payload words after the CU mask
        registers = ctypes.string_at(ctypes.addressof(packet.data), 4 * words)
        self.return_exec_bo(bo)  # the command is copied out: the buffer can be reused
        run = EmulatedRun()
        with self._lock:
            if self._take_fault("hang"):
                self._pending.append(run)  # never finishes; a reload aborts it
                return run
            if self.kernel_latency_s <= 0:
                run.finish(self._run_kernel(registers))
                return run
            self._pending.append(run)
        threading.Timer(self.kernel_latency_s, self._complete_later, (run, registers)).start()
        return run

    def _complete_later(self, run: EmulatedRun, registers: bytes) -> None:
        with self._lock:
            if run in self._pending:  # not aborted by a reload meanwhile
                self._pending.remove(run)
                run.finish(self._run_kernel(registers))

    def execute_bo_with_waitlist(self, bo: EmulatedExecBo, waitlist: Any) -> EmulatedRun:
        raise RuntimeError("waitfor list to schedule dependent executions is not supported by XRT anymore.")

    def _run_kernel(self, registers: bytes) -> int:
        """Execute fpgaas_kernel(x, y, n) from a register image; returns the ERT state."""
        if self._library is None:
            return _State.ERT_CMD_STATE_ERROR
        x_addr = struct.unpack_from("<Q", registers, self._layout["x"])[0]
        y_addr = struct.unpack_from("<Q", registers, self._layout["y"])[0]
        n = struct.unpack_from("<I", registers, self._layout["n"])[0]
        try:
            x_mem = self._card_memory(x_addr, 4 * n * self._n_inputs)
            y_mem = self._card_memory(y_addr, 4 * n * self._n_outputs)
        except RuntimeError:
            return _State.ERT_CMD_STATE_ERROR  # a real CU would raise an AXI error
        if n:
            x = np.frombuffer(x_mem, dtype=np.float32).reshape(n, self._n_inputs)
            y = np.frombuffer(y_mem, dtype=np.float32).reshape(n, self._n_outputs)
            self._library.run_into(x, y)
        self._kernel_runs += 1
        return _State.ERT_CMD_STATE_COMPLETED


_cards: list[EmulatedCard] = []
_cards_lock = threading.Lock()


def _ensure_cards(count: int) -> list[EmulatedCard]:
    with _cards_lock:
        while len(_cards) < count:
            _cards.append(EmulatedCard(len(_cards)))
        return list(_cards)


def install_emulated_cards(count: int) -> list[EmulatedCard]:
    """Make at least `count` emulated cards visible in `pynq.Device.devices`; returns them all.

    Idempotent: cards are created once per process and reused (like the cards in a host).
    """
    ensure_pynq_numpy2_compat()
    cards = _ensure_cards(count)
    devices = pynq.Device.devices  # probes now if nothing has yet, which lists our cards
    for card in cards:
        if card not in devices:
            devices.append(card)  # PYNQ had probed before we were configured
    return cards


def emulated_cards() -> list[EmulatedCard]:
    """The registry: every emulated card created in this process, by index."""
    with _cards_lock:
        return list(_cards)
