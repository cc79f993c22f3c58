"""Signed artifacts: a manifest signed by a trusted ed25519 key vouches for every file; anything
else is refused with the reason, and nothing but the manifest and its signature is opened first."""

from __future__ import annotations

import base64
import dataclasses
import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fpgaas.kernels.artifact import MANIFEST_NAME, SIGNATURE_NAME, hash_tree, write_manifest
from fpgaas.kernels.errors import ArtifactError, ArtifactUntrusted
from fpgaas.kernels.signing import (
    TrustedKeys,
    ensure_keypair,
    generate_keypair,
    key_id,
    load_private_key,
    sign_manifest,
    verify_artifact,
)
from tests.kernels.test_artifact import FILES, manifest


@pytest.fixture
def builder_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trusted(builder_key: Ed25519PrivateKey) -> TrustedKeys:
    return TrustedKeys.of(builder_key.public_key())


@pytest.fixture
def signed(tmp_path: Path, builder_key: Ed25519PrivateKey) -> Path:
    root = tmp_path / "artifact"
    for relative, content in FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    write_manifest(root, manifest())
    sign_manifest(root, builder_key)
    return root


def _writable(path: Path) -> Path:
    path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return path


def _reason(root: Path, trusted: TrustedKeys) -> str:
    with pytest.raises(ArtifactUntrusted) as caught:
        verify_artifact(root, trusted)
    return caught.value.reason


def _forge_manifest(root: Path, **changes: object) -> None:
    """Rewrite manifest.json with `changes` and hashes that match the files: what a meddler
    without the private key can do."""
    data = json.loads((root / MANIFEST_NAME).read_text())
    data.update(changes)
    data["files"] = hash_tree(root)
    _writable(root / MANIFEST_NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def test_a_signed_artifact_verifies_and_its_manifest_covers_every_file(
    signed: Path, trusted: TrustedKeys
) -> None:
    artifact = verify_artifact(signed, trusted)
    assert artifact.manifest.files.keys() == FILES.keys()
    on_disk = {p.relative_to(signed).as_posix() for p in signed.rglob("*") if p.is_file()}
    assert on_disk == set(FILES) | {MANIFEST_NAME, SIGNATURE_NAME}
    signature = json.loads((signed / SIGNATURE_NAME).read_text())
    assert signature["algorithm"] == "ed25519" and signature["key_id"] in trusted.keys
    assert not (signed / SIGNATURE_NAME).stat().st_mode & stat.S_IWUSR  # read-only like the rest


def test_an_unsigned_artifact_is_refused_even_though_its_hashes_match(
    signed: Path, trusted: TrustedKeys
) -> None:
    (signed / SIGNATURE_NAME).unlink()
    assert _reason(signed, trusted) == "unsigned"


def test_a_forged_manifest_with_matching_hashes_fails_the_signature(
    signed: Path, trusted: TrustedKeys
) -> None:
    _writable(signed / "emulation" / "libkernel.so").write_bytes(b"\x7fELF someone else's code")
    _forge_manifest(signed, name="demo")
    assert _reason(signed, trusted) == "bad_signature"


def test_a_manifest_renamed_to_another_model_fails_the_signature(signed: Path, trusted: TrustedKeys) -> None:
    _forge_manifest(signed, name="muon-pt", version="9")
    assert _reason(signed, trusted) == "bad_signature"


def test_a_signature_by_a_key_the_server_does_not_trust_is_refused(
    signed: Path, trusted: TrustedKeys
) -> None:
    stranger = Ed25519PrivateKey.generate()
    _writable(signed / SIGNATURE_NAME)
    sign_manifest(signed, stranger)
    with pytest.raises(ArtifactUntrusted) as caught:
        verify_artifact(signed, trusted)
    assert caught.value.reason == "unknown_key"
    assert key_id(stranger.public_key()) in caught.value.message


def test_a_forged_signature_under_the_trusted_key_id_is_refused(signed: Path, trusted: TrustedKeys) -> None:
    document = json.loads((signed / SIGNATURE_NAME).read_text())
    document["signature"] = base64.b64encode(bytes(64)).decode()
    _writable(signed / SIGNATURE_NAME).write_text(json.dumps(document))
    assert _reason(signed, trusted) == "bad_signature"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b'{"algorithm": "rsa", "key_id": "x", "signature": "AA=="}',
        b'{"algorithm": "ed25519"}',
    ],
)
def test_a_signature_file_that_is_not_one_is_refused(
    signed: Path, trusted: TrustedKeys, content: bytes
) -> None:
    _writable(signed / SIGNATURE_NAME).write_bytes(content)
    assert _reason(signed, trusted) == "malformed_signature"


def test_a_changed_file_under_a_valid_signature_is_refused(signed: Path, trusted: TrustedKeys) -> None:
    _writable(signed / "hls" / "firmware" / "myproject.cpp").write_bytes(b"void evil() {}\n")
    assert _reason(signed, trusted) == "hash_mismatch"


def test_an_added_file_is_refused(signed: Path, trusted: TrustedKeys) -> None:
    (signed / "emulation" / "libextra.so").write_bytes(b"\x7fELF")
    assert _reason(signed, trusted) == "extra_file"


def test_a_removed_file_is_refused(signed: Path, trusted: TrustedKeys) -> None:
    (signed / "logs" / "gxx.log").unlink()
    assert _reason(signed, trusted) == "missing_file"


def test_a_server_that_trusts_no_key_refuses_everything(signed: Path) -> None:
    assert _reason(signed, TrustedKeys({})) == "no_trusted_keys"


class _Opens:
    """Paths below one directory that this process opens (through the `open` audit event, which
    every Python-level open raises, ctypes' dlopen included via `ctypes.dlopen`)."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.seen: list[str] = []

    def __call__(self, event: str, args: tuple[object, ...]) -> None:
        if self.root is not None and event in ("open", "ctypes.dlopen") and args and args[0] is not None:
            path = str(args[0])
            if path.startswith(str(self.root)):
                self.seen.append(Path(path).relative_to(self.root).as_posix())


_OPENS = _Opens()
sys.addaudithook(_OPENS)  # audit hooks cannot be removed; this one records only while `root` is set


@pytest.fixture
def opened() -> Iterator[_Opens]:
    _OPENS.seen = []
    yield _OPENS
    _OPENS.root = None


@pytest.mark.parametrize("forgery", ["unsigned", "bad_signature", "unknown_key"])
def test_only_the_manifest_and_its_signature_are_opened_before_the_signature_passes(
    signed: Path, trusted: TrustedKeys, opened: _Opens, forgery: str
) -> None:
    if forgery == "unsigned":
        (signed / SIGNATURE_NAME).unlink()
    elif forgery == "bad_signature":
        _forge_manifest(signed, version="4")
    else:
        _writable(signed / SIGNATURE_NAME)
        sign_manifest(signed, Ed25519PrivateKey.generate())
    opened.root = signed
    assert _reason(signed, trusted) == forgery
    assert set(opened.seen) <= {MANIFEST_NAME, SIGNATURE_NAME}


def test_the_open_recorder_sees_every_file_once_the_signature_passes(
    signed: Path, trusted: TrustedKeys, opened: _Opens
) -> None:
    opened.root = signed
    verify_artifact(signed, trusted)
    assert set(FILES) <= set(opened.seen)


def test_keys_rotate_by_trusting_old_and_new_until_old_artifacts_are_re_signed(tmp_path: Path) -> None:
    old_private, old_public = generate_keypair(tmp_path / "old")
    new_private, new_public = generate_keypair(tmp_path / "new")
    trusted_dir = tmp_path / "trusted"
    trusted_dir.mkdir()
    for name, public in (("old.pub", old_public), ("new.pub", new_public)):
        (trusted_dir / name).write_bytes(public.read_bytes())
    artifacts = {}
    for name, private in (("old", old_private), ("new", new_private)):
        root = tmp_path / f"artifact-{name}"
        root.mkdir()
        (root / "emulation").mkdir()
        (root / "emulation" / "libkernel.so").write_bytes(b"\x7fELF")
        write_manifest(root, dataclasses.replace(manifest(), name=name))
        sign_manifest(root, private)
        artifacts[name] = root

    both = TrustedKeys.load([trusted_dir])
    assert len(both.keys) == 2
    assert {verify_artifact(root, both).manifest.name for root in artifacts.values()} == {"old", "new"}

    # Retire the old key: its artifacts are refused until re-signed with the new one.
    (trusted_dir / "old.pub").unlink()
    only_new = TrustedKeys.load([trusted_dir])
    assert _reason(artifacts["old"], only_new) == "unknown_key"
    _writable(artifacts["old"] / SIGNATURE_NAME)
    sign_manifest(artifacts["old"], new_private)
    assert verify_artifact(artifacts["old"], only_new).manifest.name == "old"


def test_key_files_private_key_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert load_private_key(private).public_key() is not None
    assert ensure_keypair(tmp_path / "keys") == (private, public)  # the existing pair, kept
    with pytest.raises(ArtifactError, match="exists"):
        generate_keypair(tmp_path / "keys")
    with pytest.raises(ArtifactError, match="does not exist"):
        TrustedKeys.load([tmp_path / "typo.pub"])
    with pytest.raises(ArtifactError, match="not an unencrypted PEM private key"):
        load_private_key(public)
