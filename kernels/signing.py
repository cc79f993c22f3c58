"""Artifact authenticity: the builder signs `manifest.json` with ed25519; servers verify it first.

The signature is detached, in `manifest.sig` beside the manifest (JSON)::

    {"algorithm": "ed25519", "key_id": "<sha256 hex of the raw 32-byte public key>",
     "signature": "<base64 of the 64-byte signature>"}

The signed bytes are `SIGNED_PREFIX` followed by the exact bytes of `manifest.json` (written
canonically by `Manifest.to_json`: sorted keys, fixed indent), and the manifest lists the sha256 of
every other file of the artifact. So a valid signature vouches for every byte of the artifact, and
for its name and version (the registry checks those against the directory it lives in).

`verify_artifact` reads `manifest.sig` and `manifest.json` and checks the signature before it opens
any other file of the artifact; only then are the files hashed and compared. Servers trust a set of
public keys (`TrustedKeys`), each known by its key id, so keys rotate by trusting the new key beside
the old one until no served artifact is signed by the old one (README, "Signing keys").

Key files are PEM: PKCS#8 for the private key (written 0600), SubjectPublicKeyInfo for public keys
(what `openssl pkey -pubout` writes too).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fpgaas.kernels.artifact import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    check_files,
    parse_manifest,
)
from fpgaas.kernels.errors import ArtifactError, ArtifactUntrusted

ALGORITHM: Final = "ed25519"
# Domain separation: these signatures cannot be replayed as signatures of anything else.
SIGNED_PREFIX: Final = b"fpgaas artifact manifest v1\n"
PRIVATE_KEY_NAME: Final = "signing.key"
PUBLIC_KEY_NAME: Final = "signing.pub"
PUBLIC_KEY_SUFFIX: Final = ".pub"
_MAX_MANIFEST_BYTES: Final = 64 * 1024 * 1024
_MAX_SIGNATURE_BYTES: Final = 4096
_MAX_KEY_BYTES: Final = 16 * 1024


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 (hex) of the raw 32-byte public key: how manifests and logs name a key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_keypair(directory: Path) -> tuple[Path, Path]:
    """Write a new key pair as `directory`/signing.key (0600) and signing.pub; returns both paths.

    Refuses (ArtifactError) to overwrite an existing key: a lost private key cannot be recovered.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise ArtifactError(f"{path} exists; move it away to make a new key pair")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # O_EXCL + mode 0600: the private key is never readable by others, not even for an instant.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def ensure_keypair(directory: Path) -> tuple[Path, Path]:
    """The key pair in `directory`, generated on first use (the embedded default)."""
    private_path, public_path = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    if private_path.is_file() and public_path.is_file():
        return private_path, public_path
    return generate_keypair(directory)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The ed25519 private key in the PEM file `path`; ArtifactError naming the file otherwise."""
    try:
        key = serialization.load_pem_private_key(_read_small(path, _MAX_KEY_BYTES), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ArtifactError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ArtifactError(f"{path} holds a {type(key).__name__}, not an ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The ed25519 public key in the PEM file `path`; ArtifactError naming the file otherwise."""
    try:
        key = serialization.load_pem_public_key(_read_small(path, _MAX_KEY_BYTES))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ArtifactError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ArtifactError(f"{path} holds a {type(key).__name__}, not an ed25519 key")
    return key


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a server accepts artifact signatures from, by key id. Immutable."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def load(cls, paths: Iterable[Path]) -> TrustedKeys:
        """Keys from PEM files and from every `*.pub` file in directories (a missing path is an
        error: a typo must not silently trust nothing). No paths: an empty set."""
        keys: dict[str, Ed25519PublicKey] = {}
        for path in paths:
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.name.endswith(PUBLIC_KEY_SUFFIX))
            elif path.is_file():
                files = [path]
            else:
                raise ArtifactError(f"trusted key path {path} does not exist")
            for file in files:
                key = load_public_key(file)
                keys[key_id(key)] = key
        return cls(keys)

    @classmethod
    def of(cls, *public_keys: Ed25519PublicKey) -> TrustedKeys:
        return cls({key_id(k): k for k in public_keys})

    @property
    def ids(self) -> list[str]:
        return sorted(self.keys)


def sign_manifest(artifact_dir: Path, private_key: Ed25519PrivateKey | Path) -> Path:
    """Write `artifact_dir`/manifest.sig signing its manifest.json (read-only, like the artifact).

    The manifest must already be written (`write_manifest`); a second signature of the same
    artifact (re-signing under a new key during a rotation) replaces the first.
    """
    key = load_private_key(private_key) if isinstance(private_key, Path) else private_key
    manifest = _read_small(artifact_dir / MANIFEST_NAME, _MAX_MANIFEST_BYTES)
    signature = key.sign(SIGNED_PREFIX + manifest)
    document = {
        "algorithm": ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    path = artifact_dir / SIGNATURE_NAME
    tmp = artifact_dir / f".{SIGNATURE_NAME}.tmp"
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    tmp.chmod(0o444)
    tmp.replace(path)
    return path


def verify_artifact(artifact_dir: Path | str, trusted: TrustedKeys) -> Artifact:
    """The artifact at `artifact_dir`, once its signature and then every file are verified.

    Order: manifest.sig and manifest.json are read (nothing else is opened); the signature must be
    ed25519 by a key in `trusted` over those manifest bytes; only then is the manifest parsed and
    every other file hashed and compared with it. Raises ArtifactUntrusted whose `reason` says why
    (`fpgaas.kernels.errors.UNTRUSTED_REASONS`), or ArtifactError for an unreadable manifest.
    """
    root = Path(artifact_dir)
    if not trusted.keys:
        raise ArtifactUntrusted(
            f"{root}: this server trusts no signing key (set FPGAAS_TRUSTED_KEYS)", reason="no_trusted_keys"
        )
    signature_path = root / SIGNATURE_NAME
    if not signature_path.exists():
        raise ArtifactUntrusted(f"{root} is unsigned: it has no {SIGNATURE_NAME}", reason="unsigned")
    signer_id, signature = _read_signature(signature_path)
    public_key = trusted.keys.get(signer_id)
    if public_key is None:
        raise ArtifactUntrusted(
            f"{root} is signed by key {signer_id}, which this server does not trust "
            f"(trusted: {', '.join(trusted.ids)})",
            reason="unknown_key",
        )
    try:
        manifest_bytes = _read_small(root / MANIFEST_NAME, _MAX_MANIFEST_BYTES)
    except ArtifactError as exc:
        raise ArtifactUntrusted(exc.message, reason="missing_file") from exc
    try:
        public_key.verify(signature, SIGNED_PREFIX + manifest_bytes)
    except InvalidSignature as exc:
        raise ArtifactUntrusted(
            f"{root}: the signature of {MANIFEST_NAME} by key {signer_id} does not verify; "
            "the manifest was changed after signing or the signature is forged",
            reason="bad_signature",
        ) from exc
    manifest = parse_manifest(manifest_bytes, root)
    check_files(root, manifest)
    return Artifact(path=root, manifest=manifest)


def _read_signature(path: Path) -> tuple[str, bytes]:
    def malformed(why: str) -> ArtifactUntrusted:
        return ArtifactUntrusted(f"{path} is not an fpgaas signature: {why}", reason="malformed_signature")

    try:
        document = json.loads(_read_small(path, _MAX_SIGNATURE_BYTES))
    except (ArtifactError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise malformed(str(exc)) from exc
    if not isinstance(document, dict):
        raise malformed("not a JSON object")
    if document.get("algorithm") != ALGORITHM:
        raise malformed(f"algorithm {document.get('algorithm')!r}, expected {ALGORITHM!r}")
    signer_id, encoded = document.get("key_id"), document.get("signature")
    if not isinstance(signer_id, str) or not isinstance(encoded, str):
        raise malformed("key_id and signature must be strings")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise malformed(f"signature is not base64: {exc}") from exc
    if len(signature) != 64:
        raise malformed(f"an ed25519 signature has 64 bytes, this one {len(signature)}")
    return signer_id, signature


def _read_small(path: Path, limit: int) -> bytes:
    """Read a regular file of at most `limit` bytes, never following a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ArtifactError(f"cannot open {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ArtifactError(f"{path} is not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ArtifactError(f"{path} is larger than {limit} bytes")
    return data
