"""Cards are programmed from the bytes the server verified, never from the artifact's files again.

Both card runtimes (PYNQ and XRT, on their emulated cards): the device seals the verified
xclbin in memory and programs the card from that copy at the first load and at every reload,
and the emulated card runs the library of the verified manifest, not of whatever manifest is on
disk by then. The forged library is the one of test_signed_artifacts (its constructor writes a
marker file).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from fpgaas.kernels.artifact import MANIFEST_NAME, SIGNATURE_NAME, Artifact, write_manifest
from fpgaas.kernels.errors import ArtifactIntegrityError, DeviceError, DeviceTimeout
from fpgaas.kernels.signing import TrustedKeys, verify_artifact
from fpgaas.kernels.twin import ENGINE_LIBRARY
from fpgaas.kernels.xclbin import EMULATION_XCLBIN
from tests.fixtures.signing import TEST_PUBLIC_KEY, reseal


def verified_copy(artifact: Artifact, target: Path) -> Artifact:
    """`artifact` signed anew with its manifest selecting the g++ library, and verified."""
    reseal(artifact, target, name="tiny", version="1", engine=ENGINE_LIBRARY)
    return verify_artifact(target, TrustedKeys.load([TEST_PUBLIC_KEY]))


def replace_file(path: Path, data: bytes) -> None:
    staged = path.with_name(f".{path.name}.swap")
    staged.write_bytes(data)
    os.replace(staged, path)


def test_a_card_never_runs_an_artifact_forged_in_place_after_verification(
    rig, artifact: Artifact, payload: tuple[Path, Path], tmp_path: Path
) -> None:
    """By load time the directory holds a consistent forgery: the forged library and a manifest
    whose hashes all match it (the old signature beside it, which nothing reads again)."""
    forged, marker = payload
    verified = verified_copy(artifact, tmp_path / "tiny" / "1")
    root = verified.path
    replace_file(root / "emulation" / "libkernel.so", forged.read_bytes())
    signature = (root / SIGNATURE_NAME).read_bytes()
    (root / SIGNATURE_NAME).unlink()
    (root / MANIFEST_NAME).unlink()
    write_manifest(root, dataclasses.replace(verified.manifest, files={}))
    (root / SIGNATURE_NAME).write_bytes(signature)

    with pytest.raises(DeviceError, match="changed after the artifact was verified"):
        rig.device.load(verified, max_batch=8)

    assert not marker.exists(), "the card ran the forged library: its constructor ran"
    assert not rig.device.info.healthy


def test_a_reload_programs_the_card_from_the_verified_xclbin_not_the_file_on_disk(
    rig, artifact: Artifact, twin, samples: np.ndarray, tmp_path: Path
) -> None:
    verified = verified_copy(artifact, tmp_path / "tiny" / "1")
    kernel = rig.device.load(verified, max_batch=64)
    replace_file(verified.path / EMULATION_XCLBIN, b"not an xclbin")
    rig.cards[0].inject("hang")

    with pytest.raises(DeviceTimeout):
        kernel.run(samples)

    assert rig.device.info.healthy and "reloaded after" in rig.device.info.detail
    y, _ = kernel.run(samples)
    np.testing.assert_array_equal(y, twin.run(samples))


def test_an_xclbin_changed_before_the_load_is_refused_saying_so(
    rig, artifact: Artifact, tmp_path: Path
) -> None:
    verified = verified_copy(artifact, tmp_path / "tiny" / "1")
    xclbin = verified.path / EMULATION_XCLBIN
    replace_file(xclbin, xclbin.read_bytes() + b"\0")

    with pytest.raises(ArtifactIntegrityError, match="changed after the artifact was verified") as caught:
        rig.device.load(verified, max_batch=8)

    assert caught.value.reason == "hash_mismatch"
