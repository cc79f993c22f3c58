"""AWS F1 (legacy): the AFI step through boto3, against botocore's Stubber (AWS is out of reach
here), with a stand-in `xclbinutil` (a Vitis tool, absent here) that does what the real one does
for the two calls the step makes. F2 is refused; without v++ the exact commands are reported."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from fpgaas.builder import build
from fpgaas.builder.afi import F1_SHELL_VERSION, AfiTarget, make_afi
from fpgaas.builder.synthesize import AWS_F1_PLATFORM, synthesize
from fpgaas.kernels.errors import BadInput, BuildError, ToolMissing

# --dump-section BITSTREAM:RAW:<file> writes the section; --remove-section BITSTREAM
# --add-section BITSTREAM:RAW:<file> --output <out> writes the xclbin with that section replaced.
_XCLBINUTIL = r"""#!/bin/sh
input=""; dump=""; add=""; output=""
while [ $# -gt 0 ]; do
  case "$1" in
    --input) input="$2"; shift 2;;
    --dump-section) dump="${2#BITSTREAM:RAW:}"; shift 2;;
    --add-section) add="${2#BITSTREAM:RAW:}"; shift 2;;
    --remove-section) shift 2;;
    --output) output="$2"; shift 2;;
    *) echo "unknown argument $1"; exit 2;;
  esac
done
if [ -n "$dump" ]; then tail -c +9 "$input" > "$dump"; fi
if [ -n "$output" ]; then { head -c 8 "$input"; cat "$add"; } > "$output"; fi
"""
DCP = b"routed design checkpoint of the kernel"
TARGET = AfiTarget(bucket="physics-fpga", prefix="cms/l1t", region="us-east-1")


@pytest.fixture
def xclbinutil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "xclbinutil"
    tool.write_text(_XCLBINUTIL)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tool


@pytest.fixture
def artifact_root(tmp_path: Path) -> Path:
    root = tmp_path / "artifact"
    (root / "xclbin").mkdir(parents=True)
    (root / "xclbin" / "muon.xclbin").write_bytes(b"xclbin2\x00" + DCP)
    return root


def _client(service: str) -> Any:
    return boto3.client(
        service, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def _uploads(s3: Any) -> list[bytes]:
    """Bodies of the PutObject calls (read as botocore sends them)."""
    bodies: list[bytes] = []

    def capture(params: dict[str, Any], **_: Any) -> None:
        body = params["Body"]
        data = body.read() if hasattr(body, "read") else bytes(body)
        bodies.append(data)
        params["Body"] = data

    s3.meta.events.register("provide-client-params.s3.PutObject", capture)
    return bodies


def _afi_calls(ec2: Stubber, states: list[dict[str, str]]) -> None:
    ec2.add_response(
        "create_fpga_image",
        {"FpgaImageId": "afi-0123456789abcdef0", "FpgaImageGlobalId": "agfi-0fedcba9876543210"},
        {
            "InputStorageLocation": {"Bucket": TARGET.bucket, "Key": ANY},
            "LogsStorageLocation": {"Bucket": TARGET.bucket, "Key": "cms/l1t/logs/"},
            "Name": "muon",
            "Description": "fpgaas muon",
        },
    )
    for state in states:
        ec2.add_response(
            "describe_fpga_images",
            {"FpgaImages": [{"FpgaImageId": "afi-0123456789abcdef0", "State": state}]},
            {"FpgaImageIds": ["afi-0123456789abcdef0"]},
        )


def test_the_afi_step_uploads_the_checkpoint_waits_for_available_and_writes_the_awsxclbin(
    xclbinutil: Path, artifact_root: Path, tmp_path: Path
) -> None:
    s3, ec2 = _client("s3"), _client("ec2")
    bodies = _uploads(s3)
    sleeps: list[float] = []
    with Stubber(s3) as s3_stub, Stubber(ec2) as ec2_stub:
        s3_stub.add_response(
            "put_object", {"ETag": '"1"'}, {"Bucket": TARGET.bucket, "Key": ANY, "Body": ANY}
        )
        _afi_calls(ec2_stub, [{"Code": "pending"}, {"Code": "pending"}, {"Code": "available"}])
        made = make_afi(
            artifact_root,
            "xclbin/muon.xclbin",
            name="muon",
            target=TARGET,
            s3=s3,
            ec2=ec2,
            logs=tmp_path / "logs",
            poll_s=30,
            sleep=sleeps.append,
        )
        s3_stub.assert_no_pending_responses()
        ec2_stub.assert_no_pending_responses()

    assert (made.afi_id, made.agfi_id) == ("afi-0123456789abcdef0", "agfi-0fedcba9876543210")
    assert made.awsxclbin == "xclbin/muon.awsxclbin"
    assert (artifact_root / made.awsxclbin).read_bytes() == b"xclbin2\x00agfi-0fedcba9876543210"
    assert sleeps == [30, 30]  # polled until available, no longer
    assert made.tarball_key.startswith("cms/l1t/dcp/") and made.tarball_key.endswith("_Developer_CL.tar")
    assert not (artifact_root / "_afi").exists()  # the scratch never becomes part of the artifact

    [tar_bytes] = bodies
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        names = sorted(tar.getnames())
        dcp_name = next(n for n in names if n.endswith("_SH_CL_routed.dcp"))
        manifest_name = next(n for n in names if n.endswith("_manifest.txt"))
        dcp = tar.extractfile(dcp_name).read()  # type: ignore[union-attr]
        manifest = tar.extractfile(manifest_name).read().decode()  # type: ignore[union-attr]
    assert dcp == DCP
    import hashlib

    assert f"dcp_hash={hashlib.sha256(DCP).hexdigest()}" in manifest
    assert f"shell_version={F1_SHELL_VERSION}" in manifest and "manifest_format_version=2" in manifest
    assert f"dcp_file_name={Path(dcp_name).name}" in manifest


def test_a_failed_afi_is_a_build_error_with_aws_message(
    xclbinutil: Path, artifact_root: Path, tmp_path: Path
) -> None:
    s3, ec2 = _client("s3"), _client("ec2")
    with Stubber(s3) as s3_stub, Stubber(ec2) as ec2_stub:
        s3_stub.add_response(
            "put_object", {"ETag": '"1"'}, {"Bucket": TARGET.bucket, "Key": ANY, "Body": ANY}
        )
        _afi_calls(ec2_stub, [{"Code": "pending"}, {"Code": "failed", "Message": "DCP_NOT_FOUND"}])
        with pytest.raises(BuildError, match="afi-0123456789abcdef0 failed: DCP_NOT_FOUND"):
            make_afi(
                artifact_root,
                "xclbin/muon.xclbin",
                name="muon",
                target=TARGET,
                s3=s3,
                ec2=ec2,
                logs=tmp_path / "logs",
                sleep=lambda _s: None,
            )
    assert not (artifact_root / "xclbin" / "muon.awsxclbin").exists()


def test_an_afi_that_never_becomes_available_times_out(
    xclbinutil: Path, artifact_root: Path, tmp_path: Path
) -> None:
    s3, ec2 = _client("s3"), _client("ec2")
    clock = iter(range(0, 10_000, 100))
    with Stubber(s3) as s3_stub, Stubber(ec2) as ec2_stub:
        s3_stub.add_response(
            "put_object", {"ETag": '"1"'}, {"Bucket": TARGET.bucket, "Key": ANY, "Body": ANY}
        )
        _afi_calls(ec2_stub, [{"Code": "pending"}] * 4)
        with pytest.raises(BuildError, match="still pending after 250 s"):
            make_afi(
                artifact_root,
                "xclbin/muon.xclbin",
                name="muon",
                target=TARGET,
                s3=s3,
                ec2=ec2,
                logs=tmp_path / "logs",
                timeout_s=250,
                sleep=lambda _s: None,
                now=lambda: float(next(clock)),
            )


def test_without_xclbinutil_the_afi_step_names_the_missing_tool(
    artifact_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolMissing, match="xclbinutil is not on PATH"):
        make_afi(
            artifact_root, "xclbin/muon.xclbin", name="muon", target=TARGET, s3=None, ec2=None, logs=tmp_path
        )


def test_without_vpp_an_f1_build_reports_the_vpp_and_afi_commands(tmp_path: Path) -> None:
    result = synthesize(tmp_path, name="muon", platform="aws-f1", project="myproject", logs=tmp_path / "logs")
    assert result.xclbin is None and result.status == "v++ not on PATH"
    text = "\n".join(result.commands)
    assert f"--platform {AWS_F1_PLATFORM}" in text
    assert "xclbinutil --input xclbin/muon.xclbin --dump-section BITSTREAM:RAW:" in text
    assert "aws ec2 create-fpga-image" in text and "describe-fpga-images" in text
    assert "--output xclbin/muon.awsxclbin" in text


@pytest.mark.parametrize("platform", ["aws-f2", "xilinx_aws-vu47p-f2_shell-v1"])
def test_f2_targets_are_refused_before_any_work(tiny_model: Path, tmp_path: Path, platform: str) -> None:
    with pytest.raises(BadInput, match="F2 cannot load Vitis xclbins yet") as caught:
        build(tiny_model, name="tiny", out=tmp_path / "out", platform=platform)
    assert caught.value.field == "platform"
    assert not (tmp_path / "out").exists()
