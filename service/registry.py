"""The model registry: owns which models are served and the lifetime of their kernels.

Repository layout: `<repository>/<name>/<version>/manifest.json`, each version directory an
artifact. `ModelRegistry.open` verifies every artifact (`verify_artifact`: the ed25519 signature of
its manifest by a trusted key first, before any other file is opened, then every file's sha256) and
only then loads it: a model named in the placement onto each of its devices (one replica per device), any
other model onto one device, round-robin. An artifact no device loads is refused, logged and
listed in `refused`, and the server still serves the others; a placed model that loads on only
some of its devices is served by those (the others are logged). `close` closes every kernel,
then every device.
Not thread-safe for `open`/`close`; lookups after `open` are read-only and safe anywhere.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import (
    ArtifactError,
    ArtifactUntrusted,
    DeviceError,
    FpgaasError,
    ModelNotFound,
)
from fpgaas.kernels.signing import TrustedKeys, verify_artifact
from fpgaas.service.devices.base import Device, LoadedKernel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replica:
    """One copy of a model version, resident on one device until the registry closes."""

    device: Device
    kernel: LoadedKernel


@dataclass(frozen=True)
class LoadedModel:
    """One model version and its replicas (at least one; in placement order)."""

    name: str
    version: str
    artifact: Artifact
    replicas: tuple[Replica, ...]

    @property
    def n_inputs(self) -> int:
        return sum(t.width for t in self.artifact.manifest.inputs)

    @property
    def n_outputs(self) -> int:
        return sum(t.width for t in self.artifact.manifest.outputs)


@dataclass(frozen=True)
class RefusedArtifact:
    """A version directory that was not served, and why. `untrusted` is the
    `ArtifactUntrusted.reason` (e.g. "unsigned", "bad_signature") when that was why, else None."""

    path: Path
    reason: str
    untrusted: str | None = None


def version_key(version: str) -> tuple[int, int, str]:
    """Sort key: numeric versions numerically ("10" after "9"), after any non-numeric ones."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelRegistry:
    """The models a server holds; build with `ModelRegistry.open`, end with `close`."""

    def __init__(
        self,
        devices: Sequence[Device],
        placement: Mapping[str, Sequence[str]] | None = None,
        *,
        trusted: TrustedKeys | None = None,
    ) -> None:
        """`trusted`: the keys whose signatures are accepted; None trusts none (refuses all)."""
        if not devices:
            raise ValueError("a registry needs at least one device")
        self._devices = list(devices)
        self._trusted = trusted if trusted is not None else TrustedKeys({})
        self._placement = {model: list(names) for model, names in (placement or {}).items()}
        self._models: dict[str, dict[str, LoadedModel]] = {}
        self.refused: list[RefusedArtifact] = []

    @classmethod
    def open(
        cls,
        repository: Path,
        devices: Sequence[Device],
        max_batch: int,
        placement: Mapping[str, Sequence[str]] | None = None,
        *,
        trusted: TrustedKeys | None = None,
    ) -> ModelRegistry:
        """Verify and load every artifact below `repository` (see the module docstring).

        `placement`: model name -> device names (`DeviceInfo.name`). Raises ValueError, after
        closing the devices, when it names a device this server does not have. `trusted`: the
        public keys artifact signatures are checked against (None: none, every artifact refused).
        """
        registry = cls(devices, placement, trusted=trusted)
        try:
            registry._check_placement()
            # Placed models first, so that round-robin never takes a card a placement names.
            version_dirs = sorted(
                _version_dirs(repository), key=lambda d: d.parent.name not in registry._placement
            )
            for version_dir in version_dirs:
                registry._load_one(version_dir, max_batch)
        except BaseException:
            registry.close()
            raise
        for model in sorted(set(registry._placement) - set(registry._models)):
            log.warning("placement names model %r but it is not served", model)
        log.info(
            "model repository %s: %d model version(s) loaded, %d refused",
            repository,
            sum(len(v) for v in registry._models.values()),
            len(registry.refused),
        )
        return registry

    def _check_placement(self) -> None:
        known = [d.info.name for d in self._devices]
        for model, names in self._placement.items():
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(
                    f"placement of model {model!r} names unknown device(s) {', '.join(unknown)}; "
                    f"this server has {', '.join(known)}"
                )

    def _load_one(self, version_dir: Path, max_batch: int) -> None:
        name, version = version_dir.parent.name, version_dir.name
        try:
            if not (_NAME.match(name) and _NAME.match(version)):
                raise ArtifactError("model and version names are letters, digits, '.', '_' and '-'")
            # Nothing of the artifact but its manifest and signature is opened before this passes;
            # devices load only bytes read once and checked against this verified manifest
            # (`Artifact.read_verified`, `fpgaas.kernels.sealed`), never a path opened again.
            artifact = verify_artifact(version_dir, self._trusted)
            manifest = artifact.manifest
            if (manifest.name, manifest.version) != (name, version):
                raise ArtifactError(
                    f"manifest says {manifest.name!r} version {manifest.version!r} but the artifact "
                    f"lives at {name}/{version}"
                )
            named = self._placement.get(name)
            replicas = (
                self._place_on(named, artifact, max_batch) if named else self._place(artifact, max_batch)
            )
        except FpgaasError as exc:
            log.error("refusing to serve %s: %s", version_dir, exc.message)
            untrusted = exc.reason if isinstance(exc, ArtifactUntrusted) else None
            self.refused.append(RefusedArtifact(version_dir, exc.message, untrusted))
            return
        self._models.setdefault(name, {})[version] = LoadedModel(name, version, artifact, replicas)
        log.info("loaded %s version %s on %s", name, version, ", ".join(r.device.info.name for r in replicas))

    def _place(self, artifact: Artifact, max_batch: int) -> tuple[Replica]:
        """Round-robin over devices; a device that refuses (e.g. a card already holding an
        xclbin) passes the artifact on to the next one."""
        first = sum(len(v) for v in self._models.values())
        errors = []
        for i in range(len(self._devices)):
            device = self._devices[(first + i) % len(self._devices)]
            try:
                return (Replica(device, device.load(artifact, max_batch)),)
            except DeviceError as exc:
                errors.append(f"{device.info.name}: {exc.message}")
        raise DeviceError("no device could load it: " + "; ".join(errors))

    def _place_on(self, names: list[str], artifact: Artifact, max_batch: int) -> tuple[Replica, ...]:
        """One replica on each named device that loads it; a device that fails is only logged,
        because the others serve the model (and `/devices` shows that card unhealthy)."""
        by_name = {d.info.name: d for d in self._devices}
        replicas, errors = [], []
        for device in (by_name[n] for n in names):
            try:
                replicas.append(Replica(device, device.load(artifact, max_batch)))
            except FpgaasError as exc:
                errors.append(f"{device.info.name}: {exc.message}")
        if not replicas:
            raise DeviceError("none of its placed devices could load it: " + "; ".join(errors))
        for error in errors:
            log.error("%s is served without its replica on %s", artifact.manifest.name, error)
        return tuple(replicas)

    def prepare(
        self, version_dir: Path, max_batch: int, check: Callable[[Artifact, Replica], None] | None = None
    ) -> LoadedModel:
        """Hot load, first step (any thread): verify and place `version_dir` as `open` does, then
        run `check` on each replica (the self-check). Raises FpgaasError, with every replica it
        placed closed again. Nothing is served until `adopt` (event loop thread)."""
        name, version = version_dir.parent.name, version_dir.name
        if not (_NAME.match(name) and _NAME.match(version)):
            raise ArtifactError("model and version names are letters, digits, '.', '_' and '-'")
        artifact = verify_artifact(version_dir, self._trusted)
        if (artifact.manifest.name, artifact.manifest.version) != (name, version):
            raise ArtifactError(
                f"manifest says {artifact.manifest.name!r} version {artifact.manifest.version!r} but "
                f"the artifact lives at {name}/{version}"
            )
        named = self._placement.get(name)
        replicas = self._place_on(named, artifact, max_batch) if named else self._place(artifact, max_batch)
        try:
            for replica in replicas:
                if check is not None:
                    check(artifact, replica)
        except BaseException:
            for replica in replicas:
                replica.kernel.close()
            raise
        return LoadedModel(name, version, artifact, replicas)

    def adopt(self, model: LoadedModel) -> None:
        """Hot load, second step: `model` (from `prepare`) is listed and may be looked up."""
        self._models.setdefault(model.name, {})[model.version] = model
        self.refused = [
            r for r in self.refused if (r.path.parent.name, r.path.name) != (model.name, model.version)
        ]
        log.info(
            "hot-loaded %s version %s on %s",
            model.name,
            model.version,
            ", ".join(r.device.info.name for r in model.replicas),
        )

    def retire(self, name: str, version: str) -> LoadedModel:
        """Stop listing a loaded version (its kernels stay open: the caller drains, then closes them)."""
        model = self.get(name, version)
        del self._models[name][version]
        if not self._models[name]:
            del self._models[name]
        return model

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
            for replica in model.replicas:
                try:
                    replica.kernel.close()
                except Exception:
                    log.exception(
                        "closing %s version %s on %s failed",
                        model.name,
                        model.version,
                        replica.device.info.name,
                    )
        for device in self._devices:
            try:
                device.close()
            except Exception:
                log.exception("closing device %s failed", device.info.name)


def _version_dirs(repository: Path) -> list[Path]:
    """Every `<name>/<version>` directory below the repository, sorted."""
    return [
        version_dir
        # Hidden directories (the artifact store's uploads and staging, `.fpgaas/`) are not models.
        for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
        for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir())
    ]
