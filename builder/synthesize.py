"""Stage 5: build the xclbin with Vitis `v++` when it is on PATH; otherwise record how to.

Platforms: the default is the Alveo U250 (`xilinx_u250_gen3x16_xdma_4_1_202210_1`). AWS F1 is
`xilinx_aws-vu9p-f1_shell-v04261818_201920_2` (target name `aws-f1`); there the xclbin then goes
through the AFI step (`fpgaas.builder.afi`, boto3), which makes the `.awsxclbin` F1 loads. AWS F2
cannot load Vitis xclbins yet and is refused.

Without `v++` nothing is pretended: the manifest records `xclbin=None`, the reason and the exact
commands, which a Vitis host runs from a writable copy of the artifact directory.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fpgaas.builder import afi
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
    awsxclbin: str | None = None  # AWS F1 only: the .awsxclbin (relative path) once the AFI is available
    agfi_id: str | None = None  # AWS F1 only: the AFI's global id


def resolve_platform(platform: str) -> str:
    """The Vitis platform for a platform name or target alias ("aws-f1"); F2 is refused (BadInput)."""
    afi.refuse_f2(platform)
    return AWS_F1_PLATFORM if platform == afi.AWS_F1_TARGET else platform


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


def synthesize(
    root: Path, *, name: str, platform: str, project: str, logs: Path, afi_target: afi.AfiTarget | None = None
) -> XclbinResult:
    """Run v++ in `root` if available, and for AWS F1 the AFI step (to `afi_target`'s S3 bucket).
    Raises BuildError naming the v++ log when v++ fails, or when F1 has no `afi_target`."""
    platform = resolve_platform(platform)
    commands = vpp_commands(name, platform, project)
    lines = [shlex.join(cmd) for cmd in commands]
    f1 = platform == AWS_F1_PLATFORM
    if f1:
        lines += afi.afi_commands(
            name, f"xclbin/{name}.xclbin", afi_target or afi.AfiTarget(bucket="<bucket>")
        )
    if shutil.which(VPP) is None:
        return XclbinResult(xclbin=None, status="v++ not on PATH", commands=lines)
    if f1 and afi_target is None:
        raise BuildError("target aws-f1 needs an S3 bucket for the AFI step: set FPGAAS_AFI_S3_BUCKET")
    (root / "xclbin").mkdir(exist_ok=True)
    try:
        for step, cmd in zip(("compile", "link"), commands, strict=True):
            run_logged(cmd, log=logs / f"vpp_{step}.log", cwd=root, timeout_s=TIMEOUT_S)
    finally:
        shutil.rmtree(root / SCRATCH, ignore_errors=True)
    xclbin = f"xclbin/{name}.xclbin"
    if not (root / xclbin).is_file():
        raise BuildError(f"v++ reported success but wrote no {xclbin}", log=str(logs / "vpp_link.log"))
    if not f1 or afi_target is None:
        return XclbinResult(xclbin=xclbin, status="built", commands=lines)
    s3, ec2 = afi.aws_clients(afi_target.region)
    made = afi.make_afi(root, xclbin, name=name, target=afi_target, s3=s3, ec2=ec2, logs=logs)
    return XclbinResult(
        xclbin=xclbin,
        status=f"built; AFI {made.afi_id} ({made.agfi_id}) available",
        commands=lines,
        awsxclbin=made.awsxclbin,
        agfi_id=made.agfi_id,
    )
