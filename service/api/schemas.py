"""Wire schemas of the fpgaas routes (pydantic lives here and nowhere else in the service).

`PredictRequest` documents the JSON body in OpenAPI; the route parses bodies itself
(`fpgaas.service.api.payload`) because validating 100k numbers through pydantic is slow and its
errors do not name the offending row and column.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fpgaas.service.dataplane import ModelMetadata, Readiness, TensorMetadata
from fpgaas.service.devices.base import DeviceInfo
from fpgaas.service.registry import RefusedArtifact


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="model name; optional when exactly one model is loaded")
    version: str | None = Field(None, description="model version; default: the highest loaded")
    inputs: list[list[float]] = Field(..., description="one row of n_inputs finite numbers per sample")


class PredictResponse(BaseModel):
    model: str
    version: str
    device: str
    outputs: list[list[float]] = Field(..., description="one row of n_outputs float32 values per input row")


class ErrorDetail(BaseModel):
    code: str = Field(..., description="machine-readable, e.g. bad_input, model_not_found, overloaded")
    message: str
    field: str | None = Field(None, description="the request field at fault, e.g. inputs[3][5]")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class TensorOut(BaseModel):
    name: str
    dtype: str = Field(..., description="wire dtype of each scalar")
    shape: list[int] = Field(..., description="per sample; the batch axis is implicit")
    fixed_point: str = Field(..., description="HLS type inside the kernel, e.g. ap_fixed<16,6>")

    @classmethod
    def of(cls, t: TensorMetadata) -> TensorOut:
        return cls(name=t.name, dtype=t.datatype, shape=list(t.shape), fixed_point=t.fixed_point)


class DeviceOut(BaseModel):
    name: str
    kind: str
    healthy: bool
    detail: str

    @classmethod
    def fields_of(cls, info: DeviceInfo) -> dict[str, Any]:
        """The wire fields of a device's state (subclasses add their own)."""
        return {"name": info.name, "kind": info.kind, "healthy": info.healthy, "detail": info.detail}


class ModelOut(BaseModel):
    name: str
    version: str = Field(..., description="the version described here (the highest unless asked)")
    versions: list[str] = Field(..., description="every loaded version, ascending")
    inputs: list[TensorOut]
    outputs: list[TensorOut]
    device: DeviceOut
    engine: str = Field(..., description="CPU implementation serving emulation, from the manifest")
    engine_note: str = Field("", description="why the builder chose that engine")
    xclbin_status: str = Field(..., description='"built", or why there is no xclbin')
    max_batch: int = Field(..., description="rows per device call")
    backend: str
    part: str
    platform: str
    created: str

    @classmethod
    def of(cls, m: ModelMetadata) -> ModelOut:
        return cls(
            name=m.name,
            version=m.version,
            versions=list(m.versions),
            inputs=[TensorOut.of(t) for t in m.inputs],
            outputs=[TensorOut.of(t) for t in m.outputs],
            device=DeviceOut(**DeviceOut.fields_of(m.device)),
            engine=m.engine,
            engine_note=m.engine_note,
            xclbin_status=m.xclbin_status,
            max_batch=m.max_batch,
            backend=m.backend,
            part=m.part,
            platform=m.platform,
            created=m.created,
        )


class RefusedOut(BaseModel):
    path: str
    reason: str
    untrusted: str | None = Field(
        default=None,
        description="why the artifact's signature was not accepted (unsigned, bad_signature, "
        "unknown_key, hash_mismatch, missing_file, extra_file, ...), when that is why it is refused",
    )

    @classmethod
    def of(cls, r: RefusedArtifact) -> RefusedOut:
        return cls(path=str(r.path), reason=r.reason, untrusted=r.untrusted)


class ModelList(BaseModel):
    models: list[ModelOut] = Field(..., description="one entry per model name, at its highest version")
    refused: list[RefusedOut] = Field(..., description="artifacts in the repository that are not served")


class Health(BaseModel):
    status: str


class ReadyOut(BaseModel):
    ready: bool
    reason: str

    @classmethod
    def of(cls, r: Readiness) -> ReadyOut:
        return cls(ready=r.ready, reason=r.reason)
