"""The protocol's metadata objects, built from the dataplane's `ModelMetadata`.

`server_metadata` is $metadata_server_response, `model_metadata` $metadata_model_response
(every tensor with its batch axis, -1), and `model_config` the minimal Triton model
configuration that tritonclient's `get_model_config` and perf_analyzer read.
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


def _config_tensor(t: TensorMetadata) -> dict[str, Any]:
    # Triton's configuration lists per-sample dims; max_batch_size adds the batch axis.
    return {"name": t.name, "data_type": f"TYPE_{protocol_datatype(t)}", "dims": list(t.shape)}


def model_config(model: ModelMetadata) -> dict[str, Any]:
    return {
        "name": model.name,
        "platform": platform(model),
        "backend": BACKEND,
        "max_batch_size": model.max_batch,
        "input": [_config_tensor(t) for t in model.inputs],
        "output": [_config_tensor(t) for t in model.outputs],
        # The batcher merges concurrent requests (see service.batching).
        "dynamic_batching": {},
        "version_policy": {"specific": {"versions": [int(v) for v in model.versions if v.isdigit()]}},
        "parameters": {
            "device": {"string_value": model.device.name},
            "part": {"string_value": model.part},
            "xclbin_status": {"string_value": model.xclbin_status},
        },
    }


def repository_index(models: list[ModelMetadata]) -> list[dict[str, Any]]:
    """Triton's model repository index: every loaded version is READY."""
    return [{"name": m.name, "version": m.version, "state": "READY", "reason": ""} for m in models]
