"""AWS F1 (legacy): turn a Vitis xclbin into an Amazon FPGA Image and an `.awsxclbin`, with boto3.

F1 cards do not load an xclbin's bitstream directly: AWS must first make an AFI from the design
checkpoint. This is what AWS's `create_vitis_afi.sh` (aws-fpga, Vitis flow) does, step by step:

1. `xclbinutil --dump-section BITSTREAM:RAW:<dcp>` takes the routed design checkpoint out of the
   xclbin (on F1 platforms v++ stores the DCP, not a bitstream, in that section);
2. a tar `<stamp>_Developer_CL.tar` holding `to_aws/<stamp>_SH_CL_routed.dcp` and
   `to_aws/<stamp>_manifest.txt` (manifest format 2: PCI ids of the F1 shell, shell version
   0x04261818, the DCP's sha256 and file name, the clock recipes) is what `create-fpga-image`
   ingests;
3. the tar goes to S3, `ec2.create_fpga_image` starts the AFI build (logs to S3 too), and the AFI
   is polled with `ec2.describe_fpga_images` until its state is `available` (or `failed`);
4. `xclbinutil --remove-section BITSTREAM --add-section BITSTREAM:RAW:<agfi.txt>` writes the
   `.awsxclbin`: the same xclbin whose bitstream section is the AGFI id, which XRT on F1 loads.

AWS F2 cannot load Vitis xclbins yet (its shell has no Vitis/XRT flow), so F2 targets are refused.
"""

from __future__ import annotations

import hashlib
import shlex
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from fpgaas.builder.tools import require, run_logged
from fpgaas.kernels.errors import BadInput, BuildError

AWS_F1_TARGET: Final = "aws-f1"
XCLBINUTIL: Final = "xclbinutil"
F1_SHELL_VERSION: Final = "0x04261818"  # xilinx_aws-vu9p-f1_shell-v04261818_201920_2
SCRATCH: Final = "_afi"  # relative to the artifact root; removed after the step
POLL_S: Final = 30.0
TIMEOUT_S: Final = 6 * 3600.0  # AWS quotes "usually under an hour"; large designs take longer
F2_REFUSAL: Final = (
    "AWS F2 cannot load Vitis xclbins yet (its shell has no Vitis/XRT flow); build for AWS F1 "
    "(target aws-f1, platform xilinx_aws-vu9p-f1_shell-v04261818_201920_2) or an Alveo card"
)


def refuse_f2(target: str) -> None:
    """BadInput (field "platform") for an AWS F2 target, platform or part."""
    lowered = target.lower()
    if "aws-f2" in lowered or "f2_shell" in lowered or "aws_f2" in lowered or lowered.startswith("xcvu47p"):
        raise BadInput(f"{target}: {F2_REFUSAL}", field="platform")


@dataclass(frozen=True)
class AfiResult:
    """An available AFI and the `.awsxclbin` (path relative to the artifact root) that loads it."""

    afi_id: str  # afi-..., the regional id
    agfi_id: str  # agfi-..., the global id XRT loads
    awsxclbin: str
    tarball_key: str  # the S3 key of the uploaded tar


@dataclass(frozen=True)
class AfiTarget:
    """Where the AFI step puts its files: s3://bucket/prefix/{dcp,logs}/..., in `region`."""

    bucket: str
    prefix: str = "fpgaas"
    region: str = "us-east-1"


def afi_commands(name: str, xclbin: str, target: AfiTarget) -> list[str]:
    """The shell commands a Vitis host with the AWS CLI runs for the AFI step (from the artifact root)."""
    stamp = "STAMP"  # the date stamp create_vitis_afi.sh uses, e.g. 26_12_03-190000
    dcp_key = f"{target.prefix}/dcp/{stamp}_Developer_CL.tar"
    return [
        shlex.join(
            [
                XCLBINUTIL,
                "--input",
                xclbin,
                "--dump-section",
                f"BITSTREAM:RAW:to_aws/{stamp}_SH_CL_routed.dcp",
            ]
        ),
        f"# write to_aws/{stamp}_manifest.txt (manifest_format_version=2, shell_version={F1_SHELL_VERSION}, "
        "dcp_hash=<sha256 of the dcp>, ...), then:",
        shlex.join(["tar", "-cf", f"{stamp}_Developer_CL.tar", "to_aws"]),
        shlex.join(["aws", "s3", "cp", f"{stamp}_Developer_CL.tar", f"s3://{target.bucket}/{dcp_key}"]),
        shlex.join(
            [
                "aws",
                "ec2",
                "create-fpga-image",
                "--region",
                target.region,
                "--name",
                name,
                "--input-storage-location",
                f"Bucket={target.bucket},Key={dcp_key}",
                "--logs-storage-location",
                f"Bucket={target.bucket},Key={target.prefix}/logs/",
            ]
        ),
        "# poll `aws ec2 describe-fpga-images --fpga-image-ids <afi-id>` until State.Code is available, then:",
        shlex.join(
            [
                XCLBINUTIL,
                "--input",
                xclbin,
                "--remove-section",
                "BITSTREAM",
                "--add-section",
                "BITSTREAM:RAW:agfi.txt",
                "--output",
                f"xclbin/{name}.awsxclbin",
            ]
        ),
    ]


def manifest_text(dcp: Path, stamp: str) -> str:
    """`to_aws/<stamp>_manifest.txt`, format 2, for the F1 shell (values as create_vitis_afi.sh writes)."""
    digest = hashlib.sha256(dcp.read_bytes()).hexdigest()
    lines = [
        "manifest_format_version=2",
        "pci_vendor_id=0x1D0F",
        "pci_device_id=0xF010",
        "pci_subsystem_id=0x1D51",
        "pci_subsystem_vendor_id=0xFEDD",
        f"dcp_hash={digest}",
        f"shell_version={F1_SHELL_VERSION}",
        f"dcp_file_name={dcp.name}",
        "hdk_version=1.4.23",
        "tool_version=v2021.2",
        f"date={stamp}",
        "clock_recipe_a=A0",
        "clock_recipe_b=B0",
        "clock_recipe_c=C0",
    ]
    return "\n".join(lines) + "\n"


def make_afi(
    root: Path,
    xclbin: str,
    *,
    name: str,
    target: AfiTarget,
    s3: Any,
    ec2: Any,
    logs: Path,
    poll_s: float = POLL_S,
    timeout_s: float = TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.monotonic,
) -> AfiResult:
    """Run the AFI step for `root`/`xclbin` with the boto3 clients `s3` and `ec2`; see the module
    docstring. Raises ToolMissing without xclbinutil, BuildError when AWS reports the AFI failed
    or it is not available within `timeout_s`."""
    require(XCLBINUTIL, "take the design checkpoint out of the xclbin for the AWS F1 AFI step")
    work = root / SCRATCH
    to_aws = work / "to_aws"
    to_aws.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%y_%m_%d-%H%M%S")
    dcp = to_aws / f"{stamp}_SH_CL_routed.dcp"
    try:
        run_logged(
            [XCLBINUTIL, "--input", str(root / xclbin), "--dump-section", f"BITSTREAM:RAW:{dcp}"],
            log=logs / "afi_dump.log",
            cwd=root,
            timeout_s=600,
        )
        if not dcp.is_file():
            raise BuildError(
                f"xclbinutil wrote no design checkpoint {dcp.name}", log=str(logs / "afi_dump.log")
            )
        (to_aws / f"{stamp}_manifest.txt").write_text(manifest_text(dcp, stamp))
        tarball = work / f"{stamp}_Developer_CL.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(to_aws, arcname="to_aws")
        key = f"{target.prefix}/dcp/{tarball.name}"
        with tarball.open("rb") as body:
            s3.put_object(Bucket=target.bucket, Key=key, Body=body)
        created = ec2.create_fpga_image(
            InputStorageLocation={"Bucket": target.bucket, "Key": key},
            LogsStorageLocation={"Bucket": target.bucket, "Key": f"{target.prefix}/logs/"},
            Name=name,
            Description=f"fpgaas {name}",
        )
        afi_id, agfi_id = created["FpgaImageId"], created["FpgaImageGlobalId"]
        _wait_available(ec2, afi_id, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep, now=now)
        agfi = work / "agfi.txt"
        agfi.write_text(agfi_id)
        awsxclbin = f"xclbin/{name}.awsxclbin"
        run_logged(
            [
                XCLBINUTIL, "--input", str(root / xclbin), "--remove-section", "BITSTREAM",
                "--add-section", f"BITSTREAM:RAW:{agfi}", "--output", str(root / awsxclbin),
            ],
            log=logs / "afi_awsxclbin.log",
            cwd=root,
            timeout_s=600,
        )  # fmt: skip
        if not (root / awsxclbin).is_file():
            raise BuildError(f"xclbinutil wrote no {awsxclbin}", log=str(logs / "afi_awsxclbin.log"))
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return AfiResult(afi_id=afi_id, agfi_id=agfi_id, awsxclbin=awsxclbin, tarball_key=key)


def _wait_available(
    ec2: Any,
    afi_id: str,
    *,
    poll_s: float,
    timeout_s: float,
    sleep: Callable[[float], None],
    now: Callable[[], float],
) -> None:
    deadline = now() + timeout_s
    while True:
        images = ec2.describe_fpga_images(FpgaImageIds=[afi_id])["FpgaImages"]
        state = images[0]["State"] if images else {"Code": "unknown", "Message": "not listed"}
        code = state.get("Code")
        if code == "available":
            return
        if code in ("failed", "unavailable"):
            raise BuildError(f"AWS reports AFI {afi_id} {code}: {state.get('Message', 'no message')}")
        if now() >= deadline:
            raise BuildError(f"AFI {afi_id} is still {code} after {timeout_s:.0f} s")
        sleep(poll_s)


def aws_clients(region: str) -> tuple[Any, Any]:
    """boto3 S3 and EC2 clients for `region` (credentials the usual boto3 way: env, profile, role)."""
    import boto3

    return boto3.client("s3", region_name=region), boto3.client("ec2", region_name=region)
