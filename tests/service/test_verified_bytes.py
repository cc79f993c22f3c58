"""The server loads exactly the bytes it verified: a file replaced after `verify_artifact` never runs.

Someone who can write to the model repository may swap `emulation/libkernel.so` between the
check of its sha256 and dlopen. The server reads each file it loads once, checks it against the
verified manifest and loads that copy (sealed in memory), so a swap after the read comes too
late to matter and a swap before it is refused by name. The library swapped in is the forged one
of test_signed_artifacts: its ELF constructor writes a marker file.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fpgaas.kernels.artifact import MANIFEST_NAME, SIGNATURE_NAME, Artifact
from fpgaas.kernels.errors import ArtifactIntegrityError
from fpgaas.kernels.signing import TrustedKeys, verify_artifact
from fpgaas.kernels.twin import ENGINE_FIXED_POINT, ENGINE_LIBRARY
from fpgaas.service.devices.emulated import EmulatedDevice
from fpgaas.service.registry import ModelRegistry
from tests.fixtures.signing import TEST_PUBLIC_KEY, reseal

LIBRARY = "emulation/libkernel.so"


def swap(path: Path, data: bytes) -> None:
    """Replace `path` the way an attacker with write access to the directory would."""
    staged = path.with_name(f".{path.name}.swap")
    staged.write_bytes(data)
    os.replace(staged, path)


def signed_copy(tiny: Artifact, target: Path, *, engine: str = ENGINE_LIBRARY, salt: bytes = b"") -> Artifact:
    """tiny signed anew with its manifest selecting `engine` (by default the g++ library), and
    verified. `salt`, appended to the library (the loader ignores bytes past the ELF's sections),
    makes bytes no test in this process has loaded yet."""
    staging = target.with_name(f"{target.name}.staging")
    shutil.copytree(tiny.path, staging, ignore=shutil.ignore_patterns(MANIFEST_NAME, SIGNATURE_NAME))
    (staging / LIBRARY).chmod(0o644)
    with (staging / LIBRARY).open("ab") as library:
        library.write(salt)
    reseal(Artifact(staging, tiny.manifest), target, name="tiny", version="1", engine=engine)
    shutil.rmtree(staging)
    return verify_artifact(target, TrustedKeys.load([TEST_PUBLIC_KEY]))


def rows(n: int = 32) -> np.ndarray:
    return np.random.default_rng(5).normal(0.0, 4.0, size=(n, 6)).astype(np.float32)


def test_a_library_swapped_in_just_before_dlopen_never_runs_and_the_verified_one_serves(
    tiny_artifact: Artifact,
    payload: tuple[Path, Path],
    reference: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forged, marker = payload
    on_disk = tmp_path / "repo" / "tiny" / "1" / LIBRARY
    signed_copy(tiny_artifact, on_disk.parent.parent, salt=b"swapped before dlopen")
    real_cdll = ctypes.CDLL

    def attacker_wins_the_race(name: str, *args: Any, **kwargs: Any) -> ctypes.CDLL:
        # The verification is done; the file is replaced at the last moment before dlopen.
        swap(on_disk, forged.read_bytes())
        return real_cdll(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", attacker_wins_the_race)
    registry = ModelRegistry.open(
        tmp_path / "repo", [EmulatedDevice()], max_batch=32, trusted=TrustedKeys.load([TEST_PUBLIC_KEY])
    )
    try:
        assert registry.names() == ["tiny"], registry.refused
        served, _times = registry.get("tiny").replicas[0].kernel.run(rows())
    finally:
        registry.close()

    assert on_disk.read_bytes() == forged.read_bytes(), "the swap did not happen: nothing was dlopen()ed"
    assert not marker.exists(), "the swapped-in library was loaded: its constructor ran"
    np.testing.assert_array_equal(served, reference(rows()))


@pytest.mark.parametrize("engine", [ENGINE_LIBRARY, ENGINE_FIXED_POINT])
def test_a_file_changed_after_verification_is_refused_saying_so(
    tiny_artifact: Artifact, payload: tuple[Path, Path], tmp_path: Path, engine: str
) -> None:
    forged, marker = payload
    artifact = signed_copy(tiny_artifact, tmp_path / "tiny" / "1", engine=engine)
    if engine == ENGINE_LIBRARY:
        changed = LIBRARY
        swap(artifact.path / changed, forged.read_bytes())
    else:
        changed = next(f for f in sorted(artifact.manifest.files) if f.startswith("hls/firmware/weights/"))
        swap(artifact.path / changed, (artifact.path / changed).read_bytes() + b"\n// 1 -> 9\n")

    with pytest.raises(ArtifactIntegrityError, match="changed after the artifact was verified") as caught:
        EmulatedDevice().load(artifact, max_batch=8)

    assert caught.value.reason == "hash_mismatch"
    assert changed in caught.value.message
    assert not marker.exists()
