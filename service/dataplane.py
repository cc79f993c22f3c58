"""The protocol-agnostic core of the server: model lookup, input checks, batching.

Front ends (`service.api` for the fpgaas routes; an Open Inference Protocol router later) turn
their wire format into numpy rows and call `DataPlane`; nothing here knows about HTTP.
Errors are `kernels.errors` exceptions carrying their status. Lifetime: `DataPlane.start`
inside the running event loop, `close` at shutdown (drains, then closes the registry).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.errors import BadInput, NotReady
from service.batching import Batcher, BatchPolicy
from service.devices.base import DeviceInfo
from service.metrics import ServiceMetrics
from service.registry import LoadedModel, ModelRegistry, RefusedArtifact


@dataclass(frozen=True)
class TensorMetadata:
    """One input or output tensor per sample; `datatype` is the wire dtype ("float32")."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    fixed_point: str  # the HLS type inside the kernel

    @property
    def width(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class ModelMetadata:
    """One loaded model version, as every front end describes it."""

    name: str
    version: str
    versions: tuple[str, ...]  # every loaded version of this model, ascending
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    device: DeviceInfo
    engine: str
    xclbin_status: str
    max_batch: int
    backend: str
    part: str
    platform: str
    created: str

    @property
    def n_inputs(self) -> int:
        return sum(t.width for t in self.inputs)

    @property
    def n_outputs(self) -> int:
        return sum(t.width for t in self.outputs)


@dataclass(frozen=True)
class InferResult:
    """outputs: float32 (n_samples, n_outputs), row i answering input row i."""

    model: str
    version: str
    device: str
    outputs: np.ndarray


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str  # why not ready, or a summary when ready


class DataPlane:
    """Serves inference on the models of one registry. Use from the event loop only."""

    def __init__(
        self, registry: ModelRegistry, batchers: dict[tuple[str, str], Batcher], metrics: ServiceMetrics
    ) -> None:
        self._registry = registry
        self._batchers = batchers
        self._metrics = metrics
        self._closing = False

    @classmethod
    def start(cls, registry: ModelRegistry, policy: BatchPolicy, metrics: ServiceMetrics) -> DataPlane:
        """One started batcher per loaded model version; call inside the running event loop."""
        batchers: dict[tuple[str, str], Batcher] = {}
        for m in registry.all():
            batcher = Batcher(
                m.kernel,
                model=m.name,
                device=m.device.info.name,
                n_inputs=m.n_inputs,
                n_outputs=m.n_outputs,
                policy=policy,
                metrics=metrics,
            )
            batcher.start()
            batchers[(m.name, m.version)] = batcher
        return cls(registry, batchers, metrics)

    async def close(self) -> None:
        """Stop accepting, answer every accepted request, then close kernels and devices."""
        self._closing = True
        try:
            for batcher in self._batchers.values():
                await batcher.close()
        finally:
            self._registry.close()

    def resolve(self, model: str | None, version: str | None = None) -> LoadedModel:
        """The model a request means: `model` None is allowed when exactly one model is loaded."""
        if model is None:
            names = self._registry.names()
            if not names:
                raise NotReady("no model is loaded")
            if len(names) != 1:
                loaded = ", ".join(names) or "none"
                raise BadInput(f"name the model: {len(names)} models are loaded ({loaded})", field="model")
            model = names[0]
        return self._registry.get(model, version)

    async def infer(self, model: str | None, version: str | None, x: np.ndarray) -> InferResult:
        """Run float32 rows (n_samples, n_inputs) through a model; raises BadInput naming the problem."""
        if self._closing:
            raise NotReady("the server is shutting down")
        loaded = self.resolve(model, version)
        batch = check_rows(x, loaded.n_inputs)
        outputs = await self._batchers[(loaded.name, loaded.version)].submit(batch)
        self._metrics.rows.labels(loaded.name).inc(batch.shape[0])
        return InferResult(loaded.name, loaded.version, loaded.device.info.name, outputs)

    def models(self) -> list[ModelMetadata]:
        """Every loaded model version, by name then version."""
        return [self._metadata(m) for m in self._registry.all()]

    def model(self, name: str, version: str | None = None) -> ModelMetadata:
        """One model version (its highest when `version` is None); raises ModelNotFound."""
        return self._metadata(self._registry.get(name, version))

    def refused(self) -> list[RefusedArtifact]:
        """Artifacts found in the repository but not served, with the reason."""
        return list(self._registry.refused)

    def live(self) -> bool:
        """The process serves requests (it may still be unready)."""
        return True

    def ready(self) -> Readiness:
        """Ready when not shutting down, at least one model is loaded and every device is healthy."""
        if self._closing:
            return Readiness(False, "shutting down")
        if not self._registry.names():
            return Readiness(False, f"no model loaded ({len(self._registry.refused)} refused)")
        sick = [d.info for d in self._registry.devices if not d.info.healthy]
        if sick:
            return Readiness(False, "; ".join(f"device {i.name} unhealthy: {i.detail}" for i in sick))
        return Readiness(True, f"{len(self._registry.all())} model version(s) loaded")

    def _metadata(self, m: LoadedModel) -> ModelMetadata:
        manifest = m.artifact.manifest
        return ModelMetadata(
            name=m.name,
            version=m.version,
            versions=tuple(self._registry.versions(m.name)),
            inputs=tuple(TensorMetadata(t.name, t.dtype, t.shape, t.fixed_point) for t in manifest.inputs),
            outputs=tuple(TensorMetadata(t.name, t.dtype, t.shape, t.fixed_point) for t in manifest.outputs),
            device=m.device.info,
            engine=manifest.engine,
            xclbin_status=manifest.binaries.xclbin_status,
            max_batch=m.kernel.max_batch,
            backend=manifest.backend,
            part=manifest.part,
            platform=manifest.platform,
            created=manifest.created,
        )


def check_rows(x: np.ndarray, n_inputs: int) -> np.ndarray:
    """Return x as C-contiguous float32 (n >= 1, n_inputs) rows, or raise BadInput naming the problem."""
    if x.ndim != 2:
        raise BadInput(
            f"inputs must be 2-D (samples x {n_inputs} features), got shape {x.shape}", field="inputs"
        )
    if x.shape[0] == 0:
        raise BadInput("inputs hold no samples: send at least one row", field="inputs")
    if x.shape[1] != n_inputs:
        raise BadInput(f"each row needs {n_inputs} values, got {x.shape[1]}", field="inputs")
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf, reported below
        batch = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(batch)
    if not finite.all():
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise BadInput(
            f"inputs[{row}][{col}] is {float(x[row, col])!r}: values must be finite and fit in float32",
            field=f"inputs[{row}][{col}]",
        )
    return batch
