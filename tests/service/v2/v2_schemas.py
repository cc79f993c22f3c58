"""JSON Schemas of the Open Inference Protocol's response objects, written from kserve's
`required_api.md` ($metadata_server_response, $metadata_model_response, $inference_response,
the error objects) and Triton's binary tensor data extension (`binary_data_size`).

`additionalProperties` stays open where the spec lets servers add fields; shapes, datatypes
and parameter values are as tight as the spec says.
"""

from __future__ import annotations

from typing import Any

DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]

_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
}

_METADATA_TENSOR: dict[str, Any] = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "datatype": {"enum": DATATYPES},
        # Variable-size dimensions are -1.
        "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
    },
}

SERVER_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "version", "extensions"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
    },
}

MODEL_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _METADATA_TENSOR},
        "outputs": {"type": "array", "items": _METADATA_TENSOR},
    },
}

_RESPONSE_OUTPUT: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        # Each dimension an unsigned 64-bit integer.
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"enum": DATATYPES},
        "parameters": {
            **_PARAMETERS,
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
        "data": {"type": "array"},
    },
    # Data travels either in JSON or, with the binary extension, after the JSON header.
    "oneOf": [
        {
            "required": ["data"],
            "not": {
                "required": ["parameters"],
                "properties": {"parameters": {"required": ["binary_data_size"]}},
            },
        },
        {
            "required": ["parameters"],
            "properties": {"parameters": {"required": ["binary_data_size"]}},
            "not": {"required": ["data"]},
        },
    ],
}

INFERENCE_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "outputs": {"type": "array", "items": _RESPONSE_OUTPUT},
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "minLength": 1}},
}
