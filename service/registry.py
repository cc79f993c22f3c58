"""The model registry: owns which models are served and the lifetime of their kernels.

Repository layout: `<repository>/<name>/<version>/manifest.json`, each version directory an
artifact. `ModelRegistry.open` verifies every artifact (sha256, via `load_artifact`) and loads
it onto a device once; an artifact that fails is refused, logged and listed in `refused`,
and the server still serves the others. `close` closes every kernel, then every device.
Not thread-safe for `open`/`close`; lookups after `open` are read-only and safe anywhere.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kernels.artifact import Artifact, load_artifact
from kernels.errors import ArtifactError, DeviceError, FpgaasError, ModelNotFound
from service.devices.base import Device, LoadedKernel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One model version resident on a device until the registry closes."""

    name: str
    version: str
    artifact: Artifact
    device: Device
    kernel: LoadedKernel

    @property
    def n_inputs(self) -> int:
        return sum(t.width for t in self.artifact.manifest.inputs)

    @property
    def n_outputs(self) -> int:
        return sum(t.width for t in self.artifact.manifest.outputs)


@dataclass(frozen=True)
class RefusedArtifact:
    """A version directory that was not served, and why."""

    path: Path
    reason: str


def version_key(version: str) -> tuple[int, int, str]:
    """Sort key: numeric versions numerically ("10" after "9"), after any non-numeric ones."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelRegistry:
    """The models a server holds; build with `ModelRegistry.open`, end with `close`."""

    def __init__(self, devices: Sequence[Device]) -> None:
        if not devices:
            raise ValueError("a registry needs at least one device")
        self._devices = list(devices)
        self._models: dict[str, dict[str, LoadedModel]] = {}
        self.refused: list[RefusedArtifact] = []

    @classmethod
    def open(cls, repository: Path, devices: Sequence[Device], max_batch: int) -> ModelRegistry:
        """Verify and load every artifact below `repository`, model versions spread over devices."""
        registry = cls(devices)
        try:
            for version_dir in _version_dirs(repository):
                registry._load_one(version_dir, max_batch)
        except BaseException:
            registry.close()
            raise
        log.info(
            "model repository %s: %d model version(s) loaded, %d refused",
            repository,
            sum(len(v) for v in registry._models.values()),
            len(registry.refused),
        )
        return registry

    def _load_one(self, version_dir: Path, max_batch: int) -> None:
        name, version = version_dir.parent.name, version_dir.name
        try:
            if not (_NAME.match(name) and _NAME.match(version)):
                raise ArtifactError("model and version names are letters, digits, '.', '_' and '-'")
            artifact = load_artifact(version_dir)
            manifest = artifact.manifest
            if (manifest.name, manifest.version) != (name, version):
                raise ArtifactError(
                    f"manifest says {manifest.name!r} version {manifest.version!r} but the artifact "
                    f"lives at {name}/{version}"
                )
            device, kernel = self._place(artifact, max_batch)
        except FpgaasError as exc:
            log.error("refusing to serve %s: %s", version_dir, exc.message)
            self.refused.append(RefusedArtifact(version_dir, exc.message))
            return
        model = LoadedModel(name, version, artifact, device, kernel)
        self._models.setdefault(name, {})[version] = model
        log.info("loaded %s version %s on %s", name, version, device.info.name)

    def _place(self, artifact: Artifact, max_batch: int) -> tuple[Device, LoadedKernel]:
        """Round-robin over devices; a device that refuses (e.g. a card already holding an
        xclbin) passes the artifact on to the next one."""
        first = sum(len(v) for v in self._models.values())
        errors = []
        for i in range(len(self._devices)):
            device = self._devices[(first + i) % len(self._devices)]
            try:
                return device, device.load(artifact, max_batch)
            except DeviceError as exc:
                errors.append(f"{device.info.name}: {exc.message}")
        raise DeviceError("no device could load it: " + "; ".join(errors))

    @property
    def devices(self) -> list[Device]:
        return list(self._devices)

    def all(self) -> list[LoadedModel]:
        """Every loaded model version, by name then version."""
        return [
            versions[v]
            for name in sorted(self._models)
            for versions in (self._models[name],)
            for v in sorted(versions, key=version_key)
        ]

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[str]:
        if name not in self._models:
            raise ModelNotFound(f"no model named {name!r} is loaded", field="model")
        return sorted(self._models[name], key=version_key)

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The named model; `version` None means its highest version. Raises ModelNotFound."""
        versions = self.versions(name)
        chosen = versions[-1] if version is None else version
        if chosen not in self._models[name]:
            raise ModelNotFound(
                f"model {name!r} has no version {chosen!r} (loaded: {', '.join(versions)})", field="version"
            )
        return self._models[name][chosen]

    def close(self) -> None:
        """Close every kernel, then every device. Idempotent."""
        models, self._models = self.all(), {}
        for model in models:
            try:
                model.kernel.close()
            except Exception:
                log.exception("closing %s version %s failed", model.name, model.version)
        for device in self._devices:
            try:
                device.close()
            except Exception:
                log.exception("closing device %s failed", device.info.name)


def _version_dirs(repository: Path) -> list[Path]:
    """Every `<name>/<version>` directory below the repository, sorted."""
    return [
        version_dir
        for model_dir in sorted(p for p in repository.iterdir() if p.is_dir())
        for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir())
    ]
