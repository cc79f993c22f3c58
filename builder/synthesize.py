"""Stage 5: build the xclbin with Vitis `v++` when it is on PATH; otherwise record how to.

Platforms: the default is the Alveo U250 (`xilinx_u250_gen3x16_xdma_4_1_202210_1`). AWS F1 is
`xilinx_aws-vu9p-f1_shell-v04261818_201920_2`; on AWS the xclbin must additionally go through the
AFI step (`create_vitis_afi.sh`), which turns it into an `.awsxclbin` loadable on F1. F2 is planned.

Without `v++` nothing is pretended: the manifest records `xclbin=None`, the reason and the exact
commands, which a Vitis host runs from a writable copy of the artifact directory.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fpgaas.builder.kernel import KERNEL_NAME
from fpgaas.builder.tools import run_logged
from fpgaas.kernels.errors import BuildError

VPP: Final = "v++"
DEFAULT_PLATFORM: Final = "xilinx_u250_gen3x16_xdma_4_1_202210_1"
AWS_F1_PLATFORM: Final = "xilinx_aws-vu9p-f1_shell-v04261818_201920_2"
SCRATCH: Final = "_vitis"  # v++ temporaries, relative to the artifact root; removed after the build
TIMEOUT_S: Final = 12 * 3600.0  # place and route of a large kernel takes hours


@dataclass(frozen=True)
class XclbinResult:
    """What stage 5 produced: the xclbin (relative path) or None, and why."""

    xclbin: str | None
    status: str
    commands: list[str]  # shell command lines, run from the artifact root


def vpp_commands(name: str, platform: str, project: str) -> list[list[str]]:
    """`v++ -c` (kernel -> .xo) then `v++ -l` (.xo -> xclbin), paths relative to the artifact root."""
    xo = f"{SCRATCH}/{KERNEL_NAME}.xo"
    common = ["-t", "hw", "--platform", platform]
    scratch = [
        "--temp_dir",
        f"{SCRATCH}/tmp",
        "--log_dir",
        f"{SCRATCH}/logs",
        "--report_dir",
        f"{SCRATCH}/reports",
    ]
    compile_cmd = [
        VPP, "-c", *common, "-k", KERNEL_NAME, "-I", "hls/firmware", *scratch,
        "-o", xo, f"hls/{KERNEL_NAME}.cpp", f"hls/firmware/{project}.cpp",
    ]  # fmt: skip
    link_cmd = [
        VPP, "-l", *common, "--config", f"hls/{KERNEL_NAME}.cfg", *scratch,
        "-o", f"xclbin/{name}.xclbin", xo,
    ]  # fmt: skip
    return [compile_cmd, link_cmd]


def synthesize(root: Path, *, name: str, platform: str, project: str, logs: Path) -> XclbinResult:
    """Run v++ in `root` if available. Raises BuildError naming the v++ log when v++ fails."""
    commands = vpp_commands(name, platform, project)
    lines = [shlex.join(cmd) for cmd in commands]
    if shutil.which(VPP) is None:
        return XclbinResult(xclbin=None, status="v++ not on PATH", commands=lines)
    (root / "xclbin").mkdir(exist_ok=True)
    try:
        for step, cmd in zip(("compile", "link"), commands, strict=True):
            run_logged(cmd, log=logs / f"vpp_{step}.log", cwd=root, timeout_s=TIMEOUT_S)
    finally:
        shutil.rmtree(root / SCRATCH, ignore_errors=True)
    xclbin = f"xclbin/{name}.xclbin"
    if not (root / xclbin).is_file():
        raise BuildError(f"v++ reported success but wrote no {xclbin}", log=str(logs / "vpp_link.log"))
    return XclbinResult(xclbin=xclbin, status="built", commands=lines)
