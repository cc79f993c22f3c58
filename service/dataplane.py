"""The protocol-agnostic core of the server: model lookup, input checks, batching.

Front ends (`fpgaas.service.api` for the fpgaas routes, `fpgaas.service.api.v2` for the Open
Inference Protocol) resolve the model a request names once into a `ModelHandle` (built at start,
with the tensor metadata every front end needs), turn their wire format into numpy rows, and
call `DataPlane.infer(handle, rows)`, which checks the rows once (shape, dtype, finite) and
hands them to a batcher that trusts them. Nothing here knows about HTTP or about which kind of
device a replica runs on. Errors are `fpgaas.kernels.errors` exceptions
carrying their status. Lifetime: `DataPlane.start` inside the running event loop, `close` at
shutdown (drains, then closes the registry).

Replicas: a model version placed on several devices has one batcher (one worker) per device.
A request goes to the least-loaded replica on a healthy device; if that device call fails it is
retried once on another healthy replica (kernels are stateless, so re-running rows is safe),
so one card failing loses no accepted request while another can answer it. Devices heal
themselves on their next call (a card reloads its overlay); a watcher sends one zero row to
each idle replica on an unhealthy device every `probe_interval_s`, because a card whose reload
failed would otherwise wait for traffic that its unreadiness keeps away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fpgaas.kernels.errors import BadInput, DeviceError, FpgaasError, NotReady
from fpgaas.service.batching import Batcher, BatchPolicy
from fpgaas.service.devices.base import Device, DeviceInfo
from fpgaas.service.metrics import ServiceMetrics
from fpgaas.service.registry import LoadedModel, ModelRegistry, RefusedArtifact
from fpgaas.service.statistics import ServiceStatistics

log = logging.getLogger(__name__)


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
    device: DeviceInfo  # the first healthy replica's device (else the first replica's)
    engine: str
    engine_note: str
    xclbin_status: str
    max_batch: int
    backend: str
    part: str
    platform: str
    created: str
    replicas: tuple[DeviceInfo, ...] = ()  # every device holding this version, in placement order

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


@dataclass(frozen=True)
class DeviceStatus:
    """A device and the model versions (name, version) resident on it."""

    info: DeviceInfo
    models: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Replica:
    device: Device
    batcher: Batcher

    @property
    def healthy(self) -> bool:
        return self.batcher.available and self.device.info.healthy


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A loaded model version as a request resolved it: fixed from load to shutdown."""

    name: str
    version: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    n_inputs: int
    n_outputs: int
    loaded: LoadedModel
    replicas: tuple[_Replica, ...]


class DataPlane:
    """Serves inference on the models of one registry. Use from the event loop only."""

    def __init__(
        self,
        registry: ModelRegistry,
        replicas: dict[tuple[str, str], tuple[_Replica, ...]],
        metrics: ServiceMetrics,
        probe_interval_s: float,
        statistics: ServiceStatistics | None = None,
    ) -> None:
        self._registry = registry
        # Triton's per-version statistics (ModelStatistics, the stats route, nv_inference_*).
        self.statistics = statistics if statistics is not None else ServiceStatistics()
        self._replicas = replicas
        self._handles: dict[tuple[str, str | None], ModelHandle] = {}
        for m in registry.all():
            handle = _handle(m, replicas[(m.name, m.version)])
            self._handles[(m.name, m.version)] = handle
            self._handles[(m.name, None)] = handle  # versions ascend: the highest is the default
        self._metrics = metrics
        self._probe_interval_s = probe_interval_s
        self._closing = False
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def start(
        cls,
        registry: ModelRegistry,
        policy: BatchPolicy,
        metrics: ServiceMetrics,
        probe_interval_s: float = 1.0,
    ) -> DataPlane:
        """One started batcher per replica, and the watcher; call inside the running event loop."""
        replicas: dict[tuple[str, str], tuple[_Replica, ...]] = {}
        statistics = ServiceStatistics()
        for m in registry.all():
            started = []
            for r in m.replicas:
                batcher = Batcher(
                    r.kernel,
                    model=m.name,
                    device=r.device.info.name,
                    n_inputs=m.n_inputs,
                    n_outputs=m.n_outputs,
                    policy=policy,
                    metrics=metrics,
                    stats=statistics.model(m.name, m.version),
                )
                batcher.start()
                started.append(_Replica(r.device, batcher))
            replicas[(m.name, m.version)] = tuple(started)
        dataplane = cls(registry, replicas, metrics, probe_interval_s, statistics)
        dataplane._watcher = asyncio.get_running_loop().create_task(dataplane._watch(), name="device-watcher")
        return dataplane

    async def close(self) -> None:
        """Stop accepting, answer every accepted request, then close kernels and devices."""
        self._closing = True
        try:
            if self._watcher is not None:
                self._watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watcher
            for replicas in self._replicas.values():
                for replica in replicas:
                    await replica.batcher.close()
        finally:
            self._registry.close()

    def add(self, model: LoadedModel, policy: BatchPolicy) -> None:
        """Serve a hot-loaded version (placed and self-checked by the registry's `prepare`): its
        batchers start, then it is adopted and resolvable at once. It becomes the model's default
        only if it is now the highest version. Event loop thread only."""
        started = []
        for r in model.replicas:
            batcher = Batcher(
                r.kernel,
                model=model.name,
                device=r.device.info.name,
                n_inputs=model.n_inputs,
                n_outputs=model.n_outputs,
                policy=policy,
                metrics=self._metrics,
                stats=self.statistics.model(model.name, model.version),
            )
            batcher.start()
            started.append(_Replica(r.device, batcher))
        replicas = tuple(started)
        # No await from here on: a request sees the version wholly or not at all.
        self._registry.adopt(model)
        self._replicas[(model.name, model.version)] = replicas
        self._handles[(model.name, model.version)] = _handle(model, replicas)
        self._set_default(model.name)

    async def remove(self, name: str, version: str) -> None:
        """Stop serving one version: new requests for it get 404 at once (the default moves to the
        highest remaining version), the requests it accepted are all answered, then its kernels
        close. Raises ModelNotFound when it is not loaded."""
        model = self._registry.retire(name, version)
        replicas = self._replicas.pop((name, version), ())
        self._handles.pop((name, version), None)
        self.statistics.drop(name, version)  # Triton reports loaded versions only
        self._set_default(name)
        for replica in replicas:
            await replica.batcher.close()
        for r in model.replicas:
            try:
                r.kernel.close()
            except Exception:
                log.exception("closing %s version %s on %s failed", name, version, r.device.info.name)

    def loaded(self) -> set[tuple[str, str]]:
        """(name, version) of every version served now."""
        return {(m.name, m.version) for m in self._registry.all()}

    def _set_default(self, name: str) -> None:
        try:
            highest = self._registry.versions(name)[-1]
        except FpgaasError:  # no version of it left
            self._handles.pop((name, None), None)
            return
        self._handles[(name, None)] = self._handles[(name, highest)]

    def resolve(self, model: str | None, version: str | None = None) -> ModelHandle:
        """The model a request means (its highest version when `version` is None); `model` None
        is allowed when exactly one model is loaded. Raises ModelNotFound, BadInput, NotReady."""
        handle = self._handles.get((model, version)) if model is not None else None
        if handle is not None:
            return handle
        if model is None:
            names = self._registry.names()
            if not names:
                raise NotReady("no model is loaded")
            if len(names) != 1:
                loaded = ", ".join(names) or "none"
                raise BadInput(f"name the model: {len(names)} models are loaded ({loaded})", field="model")
            return self.resolve(names[0], version)
        found = self._registry.get(model, version)  # raises ModelNotFound naming what is loaded
        return self._handles[(found.name, found.version)]

    async def infer(self, handle: ModelHandle, x: np.ndarray, *, alone: bool = False) -> InferResult:
        """Run rows (n_samples, n_inputs) through a resolved model; BadInput names a bad value.
        `alone`: the caller knows of no other request being served (see `Batcher.enqueue`).

        `x` may be any real dtype; it is checked once here (2-D, width, finite in float32).
        Counted in `statistics` as a success or a failure, with its wall time."""
        stats = self.statistics.model(handle.name, handle.version)
        start = time.perf_counter()
        # One coroutine down to the batcher's future (each frame in between is resumed for
        # every answer).
        try:
            if self._closing:
                raise NotReady("the server is shutting down")
            batch = check_rows(x, handle.n_inputs)
            replicas = handle.replicas
            replica = _least_loaded(replicas)
            try:
                outputs = await replica.batcher.enqueue(batch, alone=alone)
            except DeviceError as exc:
                # Once only: a fault everywhere still answers within two device deadlines.
                others = [r for r in replicas if r is not replica and r.healthy]
                if not others:
                    raise
                failed, replica = replica, _least_loaded(others)
                log.warning(
                    "%s: %s failed (%s); retrying on %s",
                    handle.name,
                    failed.device.info.name,
                    exc.message,
                    replica.device.info.name,
                )
                outputs = await replica.batcher.enqueue(batch)
        except Exception:
            stats.request_done(time.perf_counter() - start, ok=False)
            raise
        stats.request_done(time.perf_counter() - start, ok=True)
        return InferResult(handle.name, handle.version, replica.device.info.name, outputs)

    def admit(self, handle: ModelHandle, rows: int) -> None:
        """Refuse at once (Overloaded, PayloadTooLarge) `rows` rows that the model's least loaded
        replica would refuse now, so that a request which declares its size (a raw body's
        Content-Length) is answered before its body is read: under a retry storm of large
        requests the loop then spends its time on the accepted ones. `infer` checks again."""
        try:
            _least_loaded(handle.replicas).batcher.admit(rows)
        except FpgaasError:
            self.statistics.model(handle.name, handle.version).request_done(0.0, ok=False)
            raise

    def models(self) -> list[ModelMetadata]:
        """Every loaded model version, by name then version."""
        return [self._metadata(m) for m in self._registry.all()]

    def model(self, name: str, version: str | None = None) -> ModelMetadata:
        """One model version (its highest when `version` is None); raises ModelNotFound."""
        return self._metadata(self.resolve(name, version).loaded)

    def refused(self) -> list[RefusedArtifact]:
        """Artifacts found in the repository but not served, with the reason."""
        return list(self._registry.refused)

    def live(self) -> bool:
        """The process serves requests (it may still be unready)."""
        return True

    def ready(self) -> Readiness:
        """Ready when not shutting down, at least one model is loaded and every model version
        has a replica on a healthy device: a sick card whose models are served elsewhere is
        named in the reason (and in `devices()`) but does not take the server out of service."""
        if self._closing:
            return Readiness(False, "shutting down")
        if not self._registry.names():
            return Readiness(False, f"no model loaded ({len(self._registry.refused)} refused)")
        sick = "; ".join(
            f"device {d.info.name} {'suspect' if d.info.healthy else 'unhealthy'}: {d.info.detail}"
            for d in self._registry.devices
            if not d.info.healthy or d.info.suspect
        )
        stranded = [
            f"{n} v{v}" for (n, v), replicas in self._replicas.items() if not any(r.healthy for r in replicas)
        ]
        if stranded:
            return Readiness(False, f"no healthy device serves {', '.join(stranded)}: {sick}")
        summary = f"{len(self._registry.all())} model version(s) loaded"
        return Readiness(True, f"{summary}; {sick}; every model is served elsewhere" if sick else summary)

    def card_load(self) -> list[tuple[Device, float, int]]:
        """Every device, in opening order, with the cumulative seconds its replicas' calls took
        and the calls running on it now (the card gauges of `fpgaas.service.card_metrics`)."""
        busy = {id(d): 0.0 for d in self._registry.devices}
        calls = {id(d): 0 for d in self._registry.devices}
        for replicas in self._replicas.values():
            for r in replicas:
                busy[id(r.device)] += r.batcher.busy_seconds
                calls[id(r.device)] += r.batcher.calls_in_flight
        return [(d, busy[id(d)], calls[id(d)]) for d in self._registry.devices]

    def devices(self) -> list[DeviceStatus]:
        """Every device of the server, in opening order, with the model versions it holds."""
        held: dict[int, list[tuple[str, str]]] = {id(d): [] for d in self._registry.devices}
        for m in self._registry.all():
            for r in m.replicas:
                held[id(r.device)].append((m.name, m.version))
        return [DeviceStatus(d.info, tuple(held[id(d)])) for d in self._registry.devices]

    async def _watch(self) -> None:
        """Every probe interval, one zero row through each idle replica on an unhealthy device:
        the call makes the device retry its recovery (the answer is discarded)."""
        while True:
            await asyncio.sleep(self._probe_interval_s)
            probes = [
                self._probe(r.batcher, self._handles[(name, version)].n_inputs)
                for (name, version), replicas in self._replicas.items()
                for r in replicas
                if not r.device.info.healthy and r.batcher.available and r.batcher.accepted_rows == 0
            ]
            if probes:
                await asyncio.gather(*probes)

    @staticmethod
    async def _probe(batcher: Batcher, n_inputs: int) -> None:
        with contextlib.suppress(FpgaasError):  # still sick: the device's own detail says why
            await batcher.submit(np.zeros((1, n_inputs), dtype=np.float32))

    def _metadata(self, m: LoadedModel) -> ModelMetadata:
        manifest = m.artifact.manifest
        handle = self._handles[(m.name, m.version)]
        infos = tuple(r.device.info for r in m.replicas)
        return ModelMetadata(
            name=m.name,
            version=m.version,
            versions=tuple(self._registry.versions(m.name)),
            inputs=handle.inputs,
            outputs=handle.outputs,
            device=next((i for i in infos if i.healthy), infos[0]),
            engine=manifest.engine,
            engine_note=manifest.engine_note,
            xclbin_status=manifest.binaries.xclbin_status,
            max_batch=m.replicas[0].kernel.max_batch,  # every replica was loaded with the same
            backend=manifest.backend,
            part=manifest.part,
            platform=manifest.platform,
            created=manifest.created,
            replicas=infos,
        )


def _handle(m: LoadedModel, replicas: tuple[_Replica, ...]) -> ModelHandle:
    manifest = m.artifact.manifest
    return ModelHandle(
        name=m.name,
        version=m.version,
        inputs=tuple(TensorMetadata(t.name, t.dtype, t.shape, t.fixed_point) for t in manifest.inputs),
        outputs=tuple(TensorMetadata(t.name, t.dtype, t.shape, t.fixed_point) for t in manifest.outputs),
        n_inputs=m.n_inputs,
        n_outputs=m.n_outputs,
        loaded=m,
        replicas=replicas,
    )


def _least_loaded(replicas: Sequence[_Replica]) -> _Replica:
    """The healthy replica with the fewest rows waiting (the first on ties); if none is healthy,
    the least loaded of all, whose call lets its device attempt recovery."""
    first = replicas[0]
    # The common cases, nothing to weigh: one replica, or the first healthy one with nothing queued.
    if len(replicas) == 1 or (first.batcher.accepted_rows == 0 and first.healthy):
        return first
    healthy = [r for r in replicas if r.healthy]
    return min(healthy or replicas, key=lambda r: r.batcher.accepted_rows)


_FLOAT32_MAX_SQUARED = float(np.finfo(np.float32).max) ** 2


def check_rows(x: np.ndarray, n_inputs: int) -> np.ndarray:
    """Return x as C-contiguous float32 (n >= 1, n_inputs) rows (x itself when it already is),
    or raise BadInput naming the problem. The one check of a request's rows."""
    if x.ndim != 2:
        raise BadInput(
            f"inputs must be 2-D (samples x {n_inputs} features), got shape {x.shape}", field="inputs"
        )
    if x.shape[0] == 0:
        raise BadInput("inputs hold no samples: send at least one row", field="inputs")
    if x.shape[1] != n_inputs:
        raise BadInput(f"each row needs {n_inputs} values, got {x.shape[1]}", field="inputs")
    if x.dtype == np.float32:
        batch = np.ascontiguousarray(x)
        # One float64 sum proves every value finite: float32 values cannot overflow it.
        proven = math.isfinite(np.add.reduce(batch, axis=None, dtype=np.float64))
    elif x.dtype.kind in "iu":  # every 64-bit integer is a finite float32
        batch, proven = np.ascontiguousarray(x, dtype=np.float32), True
    else:
        # A sum of squares below float32's largest value squared proves every value finite and
        # within float32's range (NaN and inf fail it); one BLAS call, where min and max are two.
        flat = x.reshape(-1)
        proven = bool(np.dot(flat, flat) < _FLOAT32_MAX_SQUARED)
        if proven:  # (np.errstate costs more than the cast of a row)
            batch = np.ascontiguousarray(x, dtype=np.float32)
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # out of range: inf, found below
                batch = np.ascontiguousarray(x, dtype=np.float32)
    if not proven:
        finite = np.isfinite(batch)
        if finite.all():  # large but in range (or rounding to float32's largest value)
            return batch
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise BadInput(
            f"inputs[{row}][{col}] is {float(x[row, col])!r}: values must be finite and fit in float32",
            field=f"inputs[{row}][{col}]",
        )
    return batch
