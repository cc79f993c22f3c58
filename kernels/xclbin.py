"""Write and read the xclbin container (AMD's "axlf" format) for the emulated card.

A real xclbin comes from `v++ --link` and holds a bitstream. Where v++ is missing, the builder
writes an xclbin with the same metadata but no bitstream: the sections PYNQ's parser
(`pynq.pl_server.xclbin_parser.XclBin`) reads to build an overlay — EMBEDDED_METADATA (the kernel
XML: control port, args x, y, n with their register offsets), MEM_TOPOLOGY (one DDR bank),
IP_LAYOUT (one compute unit) and CONNECTIVITY (x and y wired to the bank) — plus a USER_METADATA
JSON section that tells the emulated card which CPU library runs the kernel.

The register layout follows Vitis HLS for our ABI `fpgaas_kernel(const float* x, float* y,
unsigned int n)`: control word at 0x0, each pointer 8 bytes plus one reserved word from 0x10,
then the scalar. Written with `struct` (not PYNQ's ctypes classes) so the builder needs no PYNQ
and the tests can check one implementation against the other.
"""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from fpgaas.kernels.errors import ArtifactError

EMULATION_XCLBIN = "xclbin/emulation.xclbin"  # where an artifact holds it, relative path
MAGIC = b"xclbin2\x00"

# Section kinds, from xclbin.h.
EMBEDDED_METADATA = 2
MEM_TOPOLOGY = 6
CONNECTIVITY = 7
IP_LAYOUT = 8
USER_METADATA = 16

XCLBIN_SW_EMU = 6
MEM_DDR4 = 1
IP_KERNEL = 1
USER_METADATA_NAME = "fpgaas_emulation"

# struct axlf up to its first section header: magic, cipher, key block, unique id, then axlf_header.
_AXLF = struct.Struct("<8s32s256sQ" + "QQQHBBI16s64s16s16sI4x")
_SECTION_HEADER = struct.Struct("<I16s4xQQ")  # kind, name, offset, size (40 bytes)
_MEM_DATA = struct.Struct("<BB6xqq16s")  # type, used, size in KiB, base address, tag
_CONNECTION = struct.Struct("<iii")  # arg index, ip layout index, mem data index
_IP_DATA = struct.Struct("<IIQ64s")  # type, properties, base address, name

DEFAULT_PLATFORM = "xilinx_u250_gen3x16_xdma_4_1_202210_1"
DEFAULT_MEMORY_TAG = "DDR[0]"
DEFAULT_MEMORY_BASE = 0x40_0000_0000
DEFAULT_MEMORY_SIZE = 16 << 30  # bytes, one U250 DDR4 bank
DEFAULT_CU_BASE = 0x180_0000
CONTROL_RANGE = 0x1000


@dataclass(frozen=True)
class KernelArg:
    """One kernel argument as the control register map exposes it."""

    name: str
    id: int
    type: str  # C type, e.g. "float*", "unsigned int"
    offset: int  # byte offset in the control register map
    size: int  # register bytes (8 for pointers)
    memory: str | None  # memory tag a pointer argument is connected to

    @property
    def is_pointer(self) -> bool:
        return self.type.endswith("*")


@dataclass(frozen=True)
class XclbinInfo:
    """What an xclbin says about its single kernel, as read back from the file."""

    uuid: str  # hex, 32 characters
    platform: str
    mode: int
    kernel_name: str
    cu_name: str  # the compute-unit instance, e.g. "fpgaas_kernel_1"
    cu_base_address: int
    args: tuple[KernelArg, ...]
    memories: dict[str, tuple[int, int]]  # tag -> (base address, size in bytes)
    user_metadata: dict[str, Any] = field(default_factory=dict)
    section_kinds: tuple[int, ...] = ()

    def arg(self, name: str) -> KernelArg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)


def abi_args(memory_tag: str = DEFAULT_MEMORY_TAG) -> tuple[KernelArg, ...]:
    """The fpgaas kernel ABI as Vitis HLS lays it out in the control registers."""
    return (
        KernelArg("x", 0, "float*", 0x10, 8, memory_tag),
        KernelArg("y", 1, "float*", 0x1C, 8, memory_tag),
        KernelArg("n", 2, "unsigned int", 0x28, 4, None),
    )


def write_emulation_xclbin(
    path: Path | str,
    *,
    kernel_name: str = "fpgaas_kernel",
    n_inputs: int,
    n_outputs: int,
    emulation_library: str = "../emulation/libkernel.so",
    platform: str = DEFAULT_PLATFORM,
    memory_size: int = DEFAULT_MEMORY_SIZE,
) -> XclbinInfo:
    """Write an xclbin without a bitstream for the emulated PYNQ card; returns what it holds.

    `emulation_library` is the kernel's CPU build, relative to the xclbin's directory (or
    absolute); n_inputs/n_outputs are float32 scalars per sample. Deterministic: the same
    arguments give the same bytes (the UUID is a hash of the content).
    """
    if not kernel_name.isidentifier():
        raise ValueError(f"kernel_name must be a C identifier, got {kernel_name!r}")
    if n_inputs < 1 or n_outputs < 1:
        raise ValueError(f"n_inputs and n_outputs must be >= 1, got {n_inputs}, {n_outputs}")
    args = abi_args()
    cu_name = f"{kernel_name}_1"
    user = {
        "kernel_abi": "fpgaas_kernel(const float* x, float* y, unsigned int n)",
        "emulation_library": emulation_library,
        "n_inputs": n_inputs,
        "n_outputs": n_outputs,
    }
    sections = [
        (EMBEDDED_METADATA, "embedded_xml", _kernel_xml(kernel_name, cu_name, args)),
        (MEM_TOPOLOGY, "mem_topology", _mem_topology(memory_size)),
        (IP_LAYOUT, "ip_layout", _ip_layout(kernel_name, cu_name)),
        (CONNECTIVITY, "connectivity", _connectivity(args)),
        (USER_METADATA, USER_METADATA_NAME, json.dumps(user, sort_keys=True).encode()),
    ]
    content_hash = hashlib.sha256(repr((platform, sections)).encode()).digest()
    xclbin_uuid = uuid.UUID(bytes=content_hash[:16], version=4)
    data = _pack(sections, platform=platform, xclbin_uuid=xclbin_uuid)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return read_xclbin(path)


def read_xclbin(path: Path | str) -> XclbinInfo:
    """Parse an xclbin's header and the kernel sections; raises ArtifactError when malformed."""
    data = Path(path).read_bytes()
    try:
        return _parse(data)
    except (struct.error, ElementTree.ParseError, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not a readable xclbin: {exc}") from exc


def _pack(sections: list[tuple[int, str, bytes]], *, platform: str, xclbin_uuid: uuid.UUID) -> bytes:
    first_header = _AXLF.size
    offset = _align(first_header + _SECTION_HEADER.size * len(sections))
    headers, bodies = [], []
    for kind, name, body in sections:
        headers.append(_SECTION_HEADER.pack(kind, name.encode()[:15], offset, len(body)))
        padded = body + b"\x00" * (_align(len(body)) - len(body))
        bodies.append(padded)
        offset += len(padded)
    axlf = _AXLF.pack(
        MAGIC,
        b"\xff" * 32,  # no encryption
        b"\xff" * 256,
        0,  # unique id
        offset,  # m_length: the whole file
        0,  # build time stamp: 0 keeps the file reproducible
        0,
        0,  # version patch, major, minor
        2,
        1,
        XCLBIN_SW_EMU,
        b"\x00" * 16,  # feature ROM uuid
        platform.encode()[:63],
        xclbin_uuid.bytes,
        b"",  # debug bin
        len(sections),
    )
    head = axlf + b"".join(headers)
    return head + b"\x00" * (_align(len(head)) - len(head)) + b"".join(bodies)


def _parse(data: bytes) -> XclbinInfo:
    fields = _AXLF.unpack_from(data, 0)
    if fields[0] != MAGIC:
        raise ValueError(f"bad magic {fields[0]!r}")
    length, mode, platform, raw_uuid, n_sections = fields[4], fields[10], fields[12], fields[13], fields[15]
    if length != len(data):
        raise ValueError(f"header says {length} bytes, file has {len(data)}")
    sections: dict[int, bytes] = {}
    for i in range(n_sections):
        kind, _name, offset, size = _SECTION_HEADER.unpack_from(data, _AXLF.size + i * _SECTION_HEADER.size)
        if offset + size > len(data):
            raise ValueError(f"section {kind} runs past the end of the file")
        sections[kind] = data[offset : offset + size]

    memories: list[tuple[str, int, int]] = []
    if MEM_TOPOLOGY in sections:
        (count,) = struct.unpack_from("<i4x", sections[MEM_TOPOLOGY])
        for i in range(count):
            _t, _used, size_kib, base, tag = _MEM_DATA.unpack_from(
                sections[MEM_TOPOLOGY], 8 + i * _MEM_DATA.size
            )
            memories.append((_cstr(tag), base, size_kib * 1024))
    wiring: dict[int, str] = {}
    if CONNECTIVITY in sections:
        (count,) = struct.unpack_from("<i", sections[CONNECTIVITY])
        for i in range(count):
            arg_index, _ip, mem_index = _CONNECTION.unpack_from(
                sections[CONNECTIVITY], 4 + i * _CONNECTION.size
            )
            wiring[arg_index] = memories[mem_index][0]

    xml = ElementTree.fromstring(sections[EMBEDDED_METADATA].decode())
    kernel = xml.find("platform/device/core/kernel")
    instance = kernel.find("instance") if kernel is not None else None
    if kernel is None or instance is None:
        raise ValueError("EMBEDDED_METADATA holds no kernel instance")
    remap = instance.find("addrRemap")
    args = tuple(
        KernelArg(
            name=a.attrib["name"],
            id=int(a.attrib["id"]),
            type=a.attrib["type"],
            offset=int(a.attrib["offset"], 0),
            size=int(a.attrib["size"], 0),
            memory=wiring.get(int(a.attrib["id"])),
        )
        for a in kernel.findall("arg")
    )
    user = json.loads(sections[USER_METADATA]) if USER_METADATA in sections else {}
    return XclbinInfo(
        uuid=raw_uuid.hex(),
        platform=_cstr(platform),
        mode=mode,
        kernel_name=kernel.attrib["name"],
        cu_name=instance.attrib["name"],
        cu_base_address=int(remap.attrib["base"], 0) if remap is not None else 0,
        args=args,
        memories={tag: (base, size) for tag, base, size in memories},
        user_metadata=user,
        section_kinds=tuple(sections),
    )


def _kernel_xml(kernel_name: str, cu_name: str, args: tuple[KernelArg, ...]) -> bytes:
    project = ElementTree.Element("project", name=kernel_name)
    platform = ElementTree.SubElement(project, "platform", vendor="xilinx", boardid="u250", name="emulated")
    device = ElementTree.SubElement(platform, "device", name="fpga0", fpgaDevice="virtexuplus")
    core = ElementTree.SubElement(device, "core", name="OCL_REGION_0", target="sw_emu", type="clc_region")
    kernel = ElementTree.SubElement(
        core,
        "kernel",
        name=kernel_name,
        language="c",
        vlnv=f"xilinx.com:hls:{kernel_name}:1.0",
        preferredWorkGroupSizeMultiple="0",
        workGroupSize="1",
        interrupt="true",
        hwControlProtocol="ap_ctrl_chain",
    )
    ElementTree.SubElement(
        kernel, "port", name="S_AXI_CONTROL", mode="slave", range=hex(CONTROL_RANGE), dataWidth="32",
        portType="addressable", base="0x0",
    )  # fmt: skip
    for a in args:
        if a.is_pointer:
            ElementTree.SubElement(
                kernel, "port", name=_port(a), mode="master", range="0xFFFFFFFFFFFFFFFF", dataWidth="32",
                portType="addressable", base="0x0",
            )  # fmt: skip
    for a in args:
        ElementTree.SubElement(
            kernel, "arg", name=a.name, addressQualifier="1" if a.is_pointer else "0", id=str(a.id),
            port=_port(a), size=hex(a.size), offset=hex(a.offset), hostOffset="0x0", hostSize=hex(a.size),
            type=a.type,
        )  # fmt: skip
    inst = ElementTree.SubElement(kernel, "instance", name=cu_name)
    ElementTree.SubElement(inst, "addrRemap", base=hex(DEFAULT_CU_BASE), port="S_AXI_CONTROL")
    return ElementTree.tostring(project, xml_declaration=True, encoding="UTF-8")


def _port(arg: KernelArg) -> str:
    return f"M_AXI_GMEM{arg.id}" if arg.is_pointer else "S_AXI_CONTROL"


def _mem_topology(memory_size: int) -> bytes:
    bank = _MEM_DATA.pack(MEM_DDR4, 1, memory_size // 1024, DEFAULT_MEMORY_BASE, DEFAULT_MEMORY_TAG.encode())
    return struct.pack("<i4x", 1) + bank


def _ip_layout(kernel_name: str, cu_name: str) -> bytes:
    name = f"{kernel_name}:{cu_name}".encode()
    if len(name) > 63:
        raise ValueError(f"compute unit name {name!r} is longer than 63 bytes")
    return struct.pack("<i4x", 1) + _IP_DATA.pack(IP_KERNEL, 0, DEFAULT_CU_BASE, name)


def _connectivity(args: tuple[KernelArg, ...]) -> bytes:
    wired = [a for a in args if a.memory is not None]
    return struct.pack("<i", len(wired)) + b"".join(_CONNECTION.pack(a.id, 0, 0) for a in wired)


def _align(n: int, to: int = 8) -> int:
    return (n + to - 1) // to * to


def _cstr(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode()
