"""The artifact: an immutable directory holding one built model.

Layout (paths relative to the artifact directory)::

    manifest.json          this schema, written last but one
    manifest.sig           the builder's ed25519 signature of manifest.json (fpgaas.kernels.signing)
    model/<file>           the source model as uploaded (never executed)
    hls/                   the hls4ml project (firmware/, the kernel top, scripts)
    emulation/libkernel.so the kernel source compiled with g++ (batch C ABI, see kernels.twin)
    xclbin/<name>.xclbin   present only when v++ built it on a Vitis host

`manifest.json` lists the sha256 of every other file (all but itself and `manifest.sig`);
`load_artifact` refuses a directory whose files do not match, and `write_manifest` makes the tree
read-only once written. `load_artifact` checks integrity only: a server opens artifacts with
`fpgaas.kernels.signing.verify_artifact`, which checks the signature before anything else.

A path checked once may name other bytes when it is opened again, so what is loaded after
verification is read with `Artifact.read_verified` (read once, compared with the verified
manifest) and code is run only from those bytes (`fpgaas.kernels.sealed`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fpgaas.kernels.errors import ArtifactError, ArtifactIntegrityError, ArtifactUntrusted

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
_UNHASHED = frozenset({MANIFEST_NAME, SIGNATURE_NAME})


@dataclass(frozen=True)
class TensorSpec:
    """One kernel input or output, per sample (the batch axis is implicit)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # the wire/buffer dtype, e.g. "float32"
    fixed_point: str  # the HLS type inside the kernel, e.g. "ap_fixed<16,6>"

    @property
    def width(self) -> int:
        """Number of scalars per sample."""
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class LayerTypes:
    """The fixed-point types hls4ml generated for one layer."""

    name: str
    class_name: str
    types: dict[str, str]  # role ("result", "weight", "bias", "accum") -> HLS type


@dataclass(frozen=True)
class Binaries:
    """Which executable forms of the kernel exist in the artifact."""

    emulation_library: str | None  # relative path, or None
    xclbin: str | None  # relative path, or None when v++ was not available
    xclbin_status: str  # "built", or why not (e.g. "v++ not on PATH")
    xclbin_command: list[str]  # shell command lines (v++ -c, v++ -l) a Vitis host runs from the artifact root
    awsxclbin: str | None = None  # AWS F1: the .awsxclbin (relative path) made by the AFI step
    agfi_id: str | None = None  # AWS F1: the global id of the AFI the .awsxclbin loads


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    created: str  # ISO 8601, UTC
    kernel_name: str  # the extern "C" kernel top, e.g. "fpgaas_kernel"
    project_name: str  # the hls4ml project name, e.g. "myproject"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    layers: tuple[LayerTypes, ...]
    part: str
    platform: str
    backend: str  # hls4ml backend, e.g. "Vitis"
    io_type: str  # hls4ml io type, e.g. "io_parallel"
    source_model: str  # relative path of the uploaded model
    toolchain: dict[str, str]  # tool -> version (hls4ml, g++, v++, python, fpgaas)
    binaries: Binaries
    engine: str = "kernel-library"  # which CPU implementation serves emulation (fpgaas.kernels.twin)
    engine_note: str = ""  # why that one
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        try:
            if data.get("schema_version") != SCHEMA_VERSION:
                raise ArtifactError(
                    f"unsupported manifest schema_version {data.get('schema_version')!r}, "
                    f"this fpgaas reads {SCHEMA_VERSION}"
                )
            values = dict(data)
            values["inputs"] = tuple(_tensor(t) for t in data["inputs"])
            values["outputs"] = tuple(_tensor(t) for t in data["outputs"])
            values["layers"] = tuple(LayerTypes(**layer) for layer in data["layers"])
            b = dict(data["binaries"])
            b["xclbin_command"] = list(b.get("xclbin_command", []))
            values["binaries"] = Binaries(**b)
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"malformed manifest: {exc}") from exc


def _tensor(data: dict[str, Any]) -> TensorSpec:
    return TensorSpec(
        name=data["name"],
        shape=tuple(int(d) for d in data["shape"]),
        dtype=data["dtype"],
        fixed_point=data["fixed_point"],
    )


@dataclass(frozen=True)
class Artifact:
    """A verified artifact directory and its manifest."""

    path: Path
    manifest: Manifest

    def file(self, relative: str) -> Path:
        return self.path / relative

    @property
    def emulation_library(self) -> Path | None:
        lib = self.manifest.binaries.emulation_library
        return None if lib is None else self.path / lib

    @property
    def xclbin(self) -> Path | None:
        xb = self.manifest.binaries.xclbin
        return None if xb is None else self.path / xb

    def read_verified(self, relative: str) -> bytes:
        """The bytes of `relative`, read once, whose sha256 is the one the manifest lists.

        Whatever uses a file after verification uses these bytes, never the path again: the
        file may have been replaced since `verify_artifact` hashed it. Raises
        ArtifactIntegrityError (`missing_file`, `hash_mismatch`) saying the file changed.
        """
        expected = self.manifest.files.get(relative)
        path = self.path / relative
        if expected is None:
            raise ArtifactIntegrityError(
                f"{path} is not listed in the verified manifest of {self.path}", reason="missing_file"
            )
        try:
            # O_NOFOLLOW: a link planted since verification is refused rather than followed
            # (the hash below would catch other bytes anyway; this names the problem).
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise ArtifactIntegrityError(
                f"cannot open {path} after verification: {exc.strerror}", reason="missing_file"
            ) from exc
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ArtifactIntegrityError(f"{path} is no longer a regular file", reason="extra_file")
            data = fh.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ArtifactIntegrityError(
                f"{path} changed after the artifact was verified (sha256 {actual}, the verified "
                f"manifest lists {expected}); it is not loaded",
                reason="hash_mismatch",
            )
        return data


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file below `root` except the manifest and its signature, by POSIX
    relative path. Anything else that is not a directory (a link, a FIFO, a device) is refused."""
    hashes: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise ArtifactUntrusted(f"artifacts hold no symbolic links: {relative}", reason="extra_file")
        if not (path.is_file() or path.is_dir()):
            raise ArtifactUntrusted(
                f"artifacts hold only regular files and directories: {relative}", reason="extra_file"
            )
        if path.is_file() and relative not in _UNHASHED:
            hashes[relative] = sha256_file(path)
    return hashes


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Hash the tree, write manifest.json last and make the whole artifact read-only."""
    if (root / MANIFEST_NAME).exists() or (root / SIGNATURE_NAME).exists():
        raise ArtifactError(f"{root} already holds an artifact; artifacts are immutable")
    sealed = Manifest(**{**manifest.__dict__, "files": hash_tree(root)})
    (root / MANIFEST_NAME).write_text(sealed.to_json())
    _make_read_only(root)
    return sealed


def load_artifact(root: Path | str) -> Artifact:
    """Read an artifact and check its files against its manifest (integrity, not authenticity:
    see `fpgaas.kernels.signing.verify_artifact`). Raises ArtifactIntegrityError on any mismatch."""
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ArtifactError(f"{root} has no {MANIFEST_NAME}")
    manifest = parse_manifest(manifest_path.read_bytes(), root)
    check_files(root, manifest)
    return Artifact(path=root, manifest=manifest)


def parse_manifest(raw: bytes, root: Path) -> Manifest:
    """The Manifest in the bytes of `root`/manifest.json; ArtifactError when they are not one."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{root / MANIFEST_NAME} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{root / MANIFEST_NAME} is not a JSON object")
    return Manifest.from_dict(data)


def check_files(root: Path, manifest: Manifest) -> None:
    """Every file below `root` is listed in `manifest.files` with its sha256, and nothing else is
    there. Raises ArtifactIntegrityError whose `reason` is the first of hash_mismatch,
    missing_file, extra_file that applies (the message lists them all)."""
    actual = hash_tree(root)
    missing = sorted(set(manifest.files) - set(actual))
    extra = sorted(set(actual) - set(manifest.files))
    changed = sorted(p for p in manifest.files if p in actual and actual[p] != manifest.files[p])
    if missing or extra or changed:
        problems = []
        if changed:
            problems.append(f"sha256 mismatch {changed[:5]}")
        if missing:
            problems.append(f"missing {missing[:5]}")
        if extra:
            problems.append(f"unlisted {extra[:5]}")
        reason = "hash_mismatch" if changed else "missing_file" if missing else "extra_file"
        raise ArtifactIntegrityError(
            f"artifact {root} failed verification: {'; '.join(problems)}", reason=reason
        )


def _make_read_only(root: Path) -> None:
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            p.chmod(p.stat().st_mode & ~write_bits)
