"""The protocol's metadata objects, built from the dataplane's `ModelMetadata`.

`server_metadata` is $metadata_server_response, `model_metadata` $metadata_model_response
(every tensor with its batch axis, -1). Triton's model configuration is a protobuf message shared
with gRPC: `fpgaas.service.api.grpc.config`.
"""

from __future__ import annotations

from importlib import metadata as package_metadata
from typing import Any

from fpgaas.service.api.v2.tensors import protocol_datatype
from fpgaas.service.dataplane import ModelMetadata, TensorMetadata

SERVER_NAME = "fpgaas"
# What a client may rely on beyond the required API (names as Triton spells them).
EXTENSIONS = ("binary_tensor_data", "model_configuration", "parameters")
BACKEND = "fpgaas"


def server_version() -> str:
    try:
        return package_metadata.version("fpgaas")
    except package_metadata.PackageNotFoundError:  # running from a source tree
        return "0.1.0"


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}


def platform(model: ModelMetadata) -> str:
    """ "<project>_<format>" as the spec asks, e.g. "hls4ml_vitis"."""
    return f"hls4ml_{model.backend.lower() or 'unknown'}"


def _tensor(t: TensorMetadata) -> dict[str, Any]:
    return {"name": t.name, "datatype": protocol_datatype(t), "shape": [-1, *t.shape]}


def model_metadata(model: ModelMetadata) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": list(model.versions),
        "platform": platform(model),
        "inputs": [_tensor(t) for t in model.inputs],
        "outputs": [_tensor(t) for t in model.outputs],
    }
