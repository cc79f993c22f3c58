"""Forged artifacts never run: the server checks the manifest's ed25519 signature against its
trusted keys before it opens anything else, so a forged `emulation/libkernel.so` whose ELF
constructor would write a marker file is never dlopen()ed, even when every sha256 matches.

The forged library is real: a control test loads it in a child process and the marker appears.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fpgaas.kernels.artifact import MANIFEST_NAME, SIGNATURE_NAME, Artifact, write_manifest
from fpgaas.kernels.signing import TrustedKeys, sign_manifest
from fpgaas.service.devices.emulated import EmulatedDevice
from fpgaas.service.registry import ModelRegistry
from fpgaas.service.settings import Settings
from tests.fixtures.signing import TEST_PUBLIC_KEY, reseal

pytestmark = pytest.mark.asyncio


def _forge(tiny: Artifact, target: Path, library: Path, signature: str) -> Path:
    """tiny's artifact with the forged library and a manifest whose hashes all match it.

    signature: "none" (unsigned), "stale" (the genuine signature of the genuine manifest),
    "stranger" (a valid signature by a key the server does not trust).
    """
    shutil.copytree(tiny.path, target, ignore=shutil.ignore_patterns(MANIFEST_NAME, SIGNATURE_NAME))
    lib = target / "emulation" / "libkernel.so"
    lib.chmod(0o644)
    shutil.copyfile(library, lib)
    write_manifest(target, dataclasses.replace(tiny.manifest, files={}))
    if signature == "stale":
        shutil.copyfile(tiny.path / SIGNATURE_NAME, target / SIGNATURE_NAME)
    elif signature == "stranger":
        sign_manifest(target, Ed25519PrivateKey.generate())
    return target


def test_control_the_forged_library_runs_its_constructor_when_loaded(payload: tuple[Path, Path]) -> None:
    library, marker = payload
    done = subprocess.run(
        [sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(library)!r})"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "the forged library ran"
    marker.unlink()


@pytest.mark.parametrize(
    ("signature", "untrusted"),
    [("none", "unsigned"), ("stale", "bad_signature"), ("stranger", "unknown_key")],
)
async def test_a_forged_library_with_matching_hashes_is_refused_and_never_loaded(
    app_factory,
    tiny_artifact: Artifact,
    payload: tuple[Path, Path],
    tmp_path: Path,
    signature: str,
    untrusted: str,
) -> None:
    library, marker = payload
    repo = tmp_path / "repo"
    reseal(tiny_artifact, repo / "good" / "1", name="good", version="1")
    _forge(tiny_artifact, repo / "tiny" / "1", library, signature)

    _app, client = await app_factory(Settings(model_repository=repo, trusted_keys=[TEST_PUBLIC_KEY]))
    listing = (await client.get("/models")).json()

    assert [m["name"] for m in listing["models"]] == ["good"]
    [refused] = listing["refused"]
    assert refused["path"].endswith("tiny/1")
    assert refused["untrusted"] == untrusted
    assert not marker.exists(), "the forged library was loaded: its constructor ran"
    served = await client.post("/predict", json={"model": "good", "inputs": [[0.5] * 6]})
    assert served.status_code == 200, served.text
    assert not marker.exists()


async def test_a_server_without_trusted_keys_serves_nothing_and_says_why(
    app_factory, tiny_artifact: Artifact, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    reseal(tiny_artifact, repo / "tiny" / "1", name="tiny", version="1")
    _app, client = await app_factory(Settings(model_repository=repo, trusted_keys=[]))
    listing = (await client.get("/models")).json()
    assert listing["models"] == []
    [refused] = listing["refused"]
    assert refused["untrusted"] == "no_trusted_keys" and "FPGAAS_TRUSTED_KEYS" in refused["reason"]
    ready = await client.get("/readyz")
    assert ready.status_code == 503


def test_the_registry_never_dlopens_an_unverified_library(
    tiny_artifact: Artifact, payload: tuple[Path, Path], tmp_path: Path
) -> None:
    library, marker = payload
    _forge(tiny_artifact, tmp_path / "tiny" / "1", library, "none")
    registry = ModelRegistry.open(
        tmp_path, [EmulatedDevice()], max_batch=8, trusted=TrustedKeys.load([TEST_PUBLIC_KEY])
    )
    try:
        assert registry.names() == []
        assert [r.untrusted for r in registry.refused] == ["unsigned"]
    finally:
        registry.close()
    assert not marker.exists()


def test_signed_builds_are_served_by_name_only_where_the_manifest_says(
    tiny_artifact: Artifact, tmp_path: Path
) -> None:
    """A genuine signed artifact copied under another name is refused: the signed manifest names it."""
    shutil.copytree(tiny_artifact.path, tmp_path / "muon-pt" / "1")
    registry = ModelRegistry.open(
        tmp_path, [EmulatedDevice()], max_batch=8, trusted=TrustedKeys.load([TEST_PUBLIC_KEY])
    )
    try:
        assert registry.names() == []
        [refused] = registry.refused
        assert "manifest says 'tiny'" in refused.reason and refused.untrusted is None
    finally:
        registry.close()


async def test_a_version_directory_without_a_signature_is_listed_as_unsigned(
    app_factory, tmp_path: Path
) -> None:
    """Settings read FPGAAS_TRUSTED_KEYS (the session's test key) when not given explicitly."""
    (tmp_path / "x" / "1").mkdir(parents=True)
    _app, client = await app_factory(Settings(model_repository=tmp_path))
    [refused] = (await client.get("/models")).json()["refused"]
    assert refused["untrusted"] == "unsigned" and "has no manifest.sig" in refused["reason"]
