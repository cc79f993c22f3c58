"""The emulation xclbin: PYNQ's own parser must read what `fpgaas.kernels.xclbin` writes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pynq.pl_server.xclbin_parser import XclBin

from fpgaas.kernels.errors import ArtifactError
from fpgaas.kernels.xclbin import read_xclbin, write_emulation_xclbin

HOST_DIR = Path(__file__).resolve().parents[2] / "kernels" / "host"


@pytest.fixture
def xclbin(tmp_path: Path) -> Path:
    path = tmp_path / "xclbin" / "emulation.xclbin"
    write_emulation_xclbin(path, n_inputs=27, n_outputs=1)
    return path


def test_pynq_parser_finds_the_kernel_and_its_arguments(xclbin: Path) -> None:
    parsed = XclBin(str(xclbin))

    assert list(parsed.ip_dict) == ["fpgaas_kernel_1"]
    cu = parsed.ip_dict["fpgaas_kernel_1"]
    assert cu["cu_name"] == "fpgaas_kernel:fpgaas_kernel_1"
    assert cu["type"] == "xilinx.com:hls:fpgaas_kernel:1.0"
    regs = cu["registers"]
    assert {name: (r["address_offset"], r["type"]) for name, r in regs.items() if name != "CTRL"} == {
        "x": (0x10, "float*"),
        "y": (0x1C, "float*"),
        "n": (0x28, "unsigned int"),
    }
    assert regs["x"]["memory"] == regs["y"]["memory"] == "DDR[0]"
    assert "memory" not in regs["n"]


def test_pynq_parser_sees_one_used_memory_bank(xclbin: Path) -> None:
    bank = XclBin(str(xclbin)).mem_dict["DDR[0]"]

    assert bank["used"] and not bank["streaming"]
    assert bank["size"] == 16 << 30


def test_reader_agrees_with_pynq_and_carries_the_emulation_metadata(xclbin: Path) -> None:
    info = read_xclbin(xclbin)
    parsed = XclBin(str(xclbin))

    assert info.uuid == parsed.ip_dict["fpgaas_kernel_1"]["xclbin_uuid"]
    assert info.kernel_name == "fpgaas_kernel"
    assert [(a.name, a.offset, a.memory) for a in info.args] == [
        ("x", 0x10, "DDR[0]"),
        ("y", 0x1C, "DDR[0]"),
        ("n", 0x28, None),
    ]
    assert info.user_metadata["n_inputs"] == 27
    assert info.user_metadata["n_outputs"] == 1
    assert info.user_metadata["emulation_library"] == "../emulation/libkernel.so"


def test_writing_is_deterministic_and_the_uuid_follows_the_content(tmp_path: Path) -> None:
    a = write_emulation_xclbin(tmp_path / "a.xclbin", n_inputs=27, n_outputs=1)
    b = write_emulation_xclbin(tmp_path / "b.xclbin", n_inputs=27, n_outputs=1)
    c = write_emulation_xclbin(tmp_path / "c.xclbin", n_inputs=16, n_outputs=5)

    assert (tmp_path / "a.xclbin").read_bytes() == (tmp_path / "b.xclbin").read_bytes()
    assert a.uuid == b.uuid != c.uuid


@pytest.mark.parametrize("cut", [100, 600, -8])
def test_a_truncated_file_is_refused(xclbin: Path, cut: int) -> None:
    xclbin.write_bytes(xclbin.read_bytes()[:cut])

    with pytest.raises(ArtifactError, match="not a readable xclbin"):
        read_xclbin(xclbin)


def test_a_file_without_the_magic_is_refused(xclbin: Path) -> None:
    xclbin.write_bytes(b"not-xclb" + xclbin.read_bytes()[8:])

    with pytest.raises(ArtifactError, match="bad magic"):
        read_xclbin(xclbin)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"kernel_name": "fpgaas kernel"}, "C identifier"),
        ({"n_inputs": 0}, ">= 1"),
        ({"n_outputs": 0}, ">= 1"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, object], problem: str) -> None:
    args: dict[str, object] = {"n_inputs": 27, "n_outputs": 1, **kwargs}

    with pytest.raises(ValueError, match=problem):
        write_emulation_xclbin(tmp_path / "k.xclbin", **args)  # type: ignore[arg-type]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("xrt", [None, "/nonexistent/xrt"])
def test_native_host_program_says_clearly_when_xrt_is_missing(tmp_path: Path, xrt: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XILINX_XRT"}
    if xrt is not None:
        env["XILINX_XRT"] = xrt
    out = tmp_path / "fpgaas_host"

    result = subprocess.run(
        ["make", "-C", str(HOST_DIR), f"TARGET={out}"], env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode != 0
    assert "XRT not found" in result.stderr
    assert not out.exists()
