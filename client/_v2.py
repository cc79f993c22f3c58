"""The Open Inference Protocol (KServe v2) as a `WireProtocol`: fpgaas, Triton or KServe alike.

    metadata  GET  /v2/models/NAME[/versions/V]        -> input and output names and shapes
    predict   POST /v2/models/NAME[/versions/V]/infer  one FP32 tensor per model input
    models    POST /v2/repository/index                (Triton's and fpgaas's model index)
    probes    GET  /v2/health/live, /v2/health/ready

A v2 request names every input tensor, so `predict` needs the model's metadata: `prepare`
returns the call that fetches it (None once it is known), and the client runs it before the
first predict of each (model, version). Binary bodies use the binary tensor data extension
(`Inference-Header-Content-Length`, `binary_data_size`, `binary_data_output`); JSON bodies
carry flat row-major `data`. The metadata cache is guarded by a lock: thread-safe.
"""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from fpgaas.client._arrays import check_width
from fpgaas.client._errors import InvalidResponse, ModelNotFoundError, ServerError
from fpgaas.client._protocol import Call, Request, error_from_response, json_body, json_request
from fpgaas.client._types import ModelInfo, Prediction, TensorInfo

HEADER_LENGTH = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"

# The protocol's numeric datatypes as little-endian numpy dtypes (answers are read as these,
# then converted to float32). BF16 is decoded by hand.
_NUMPY = {
    "BOOL": "?",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


def _model_path(model: str, version: str | None) -> str:
    path = "/v2/models/" + quote(model, safe="")
    return path if version is None else f"{path}/versions/{quote(version, safe='')}"


class V2Protocol:
    """Builds Open Inference Protocol calls. Thread-safe; the metadata cache lives as long as it."""

    name = "v2"
    # Binary tensors cost no float formatting or parsing and are exact: the default for arrays.
    default_binary_threshold = 0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metadata: dict[tuple[str, str | None], ModelInfo] = {}

    def prepare(self, model: str | None, version: str | None) -> Call[None] | None:
        """The call that fetches `model`'s metadata for `predict`, or None when it is cached."""
        name = _required(model)
        with self._lock:
            if (name, version) in self._metadata:
                return None

        def remember(response: httpx.Response) -> None:
            info = _model_info(json_body(response), version)
            with self._lock:
                self._metadata[(name, version)] = info

        return Call(Request("GET", _model_path(name, version)), remember, v2_error)

    def predict(
        self, batch: np.ndarray, model: str | None, version: str | None, *, binary: bool
    ) -> Call[Prediction]:
        """batch: float32 (n_samples, n_features); `prepare` must have run for (model, version)."""
        name = _required(model)
        with self._lock:
            info = self._metadata.get((name, version))
        if info is None:
            raise RuntimeError(f"no metadata for model {name!r}: run prepare({name!r}, {version!r}) first")
        check_width(batch, info.n_inputs, name)
        n = batch.shape[0]
        inputs: list[dict[str, Any]] = []
        blobs: list[bytes] = []
        start = 0
        for tensor in info.inputs:
            values = batch[:, start : start + tensor.width]
            start += tensor.width
            entry: dict[str, Any] = {"name": tensor.name, "shape": [n, *tensor.shape], "datatype": "FP32"}
            if binary:
                blob = np.ascontiguousarray(values, dtype="<f4").tobytes()
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = values.ravel().tolist()
            inputs.append(entry)
        body = {"inputs": inputs, "parameters": {"binary_data_output": binary}}
        path = _model_path(name, version) + "/infer"
        if binary:
            header = json.dumps(body, separators=(",", ":")).encode()
            request = Request(
                "POST",
                path,
                headers={"Content-Type": OCTET_STREAM, HEADER_LENGTH: str(len(header))},
                content=b"".join([header, *blobs]),
            )
        else:
            request = json_request("POST", path, body)

        def forget_on_error(response: httpx.Response) -> ServerError:
            # The model may have changed under this name: fetch its metadata again next time.
            with self._lock:
                self._metadata.pop((name, version), None)
            return v2_error(response)

        return Call(request, lambda response: _prediction(response, info, n), forget_on_error)

    def models(self) -> Call[list[ModelInfo]]:
        return Call(Request("POST", "/v2/repository/index", content=b"{}"), _index, v2_error)

    def model(self, name: str, version: str | None) -> Call[ModelInfo]:
        def remember(response: httpx.Response) -> ModelInfo:
            info = _model_info(json_body(response), version)
            with self._lock:
                self._metadata[(name, version)] = info
            return info

        return Call(Request("GET", _model_path(name, version)), remember, v2_error)

    def health(self) -> Request:
        return Request("GET", "/v2/health/live")

    def ready(self) -> Request:
        return Request("GET", "/v2/health/ready")


def v2_error(response: httpx.Response) -> ServerError:
    """Map a non-2xx answer; a 404 carrying the protocol's `{"error": "..."}` means no such
    model or version (any other 404, e.g. a server without /v2 routes, stays a BadRequest)."""
    error = error_from_response(response)
    if response.status_code == 404 and not isinstance(error, ModelNotFoundError):
        try:
            body = response.json()
        except ValueError:
            return error
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return ModelNotFoundError(404, "model_not_found", body["error"])
    return error


def _required(model: str | None) -> str:
    if not model:
        raise ValueError("the Open Inference Protocol addresses models by name: pass model=")
    return model


def _model_info(data: Any, version: str | None) -> ModelInfo:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise InvalidResponse(f"model metadata needs a 'name': {str(data)[:200]}")
    versions = tuple(str(v) for v in data.get("versions") or ())
    # v2 metadata does not say which version answered: the one asked for, else the highest.
    return ModelInfo(
        name=data["name"],
        version=version or (versions[-1] if versions else ""),
        versions=versions,
        inputs=_tensors(data.get("inputs")),
        outputs=_tensors(data.get("outputs")),
        extra={k: v for k, v in data.items() if k not in ("name", "versions", "inputs", "outputs")},
    )


def _tensors(data: Any) -> tuple[TensorInfo, ...]:
    if not isinstance(data, list):
        raise InvalidResponse(f"model metadata tensors must be a list, got {str(data)[:200]}")
    tensors = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("shape"), list) or "name" not in item:
            raise InvalidResponse(f"malformed metadata tensor {str(item)[:200]}")
        shape = [int(d) for d in item["shape"]]
        # The batch axis (-1) is implicit in TensorInfo, as in the fpgaas protocol.
        per_sample = tuple(shape[1:] if shape and shape[0] == -1 else shape)
        datatype = str(item.get("datatype", "FP32"))
        dtype = np.dtype(_NUMPY[datatype]).name if datatype in _NUMPY else datatype
        tensors.append(TensorInfo(str(item["name"]), per_sample, dtype))
    return tuple(tensors)


def _index(response: httpx.Response) -> list[ModelInfo]:
    body = json_body(response)
    if not isinstance(body, list):
        raise InvalidResponse(f"repository index is not a list: {str(body)[:200]}")
    models = []
    for item in body:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidResponse(f"malformed repository index entry {str(item)[:200]}")
        extra = {k: v for k, v in item.items() if k not in ("name", "version")}
        models.append(ModelInfo(name=item["name"], version=str(item.get("version", "")), extra=extra))
    return models


def _prediction(response: httpx.Response, info: ModelInfo, n: int) -> Prediction:
    content = response.content
    length = response.headers.get(HEADER_LENGTH)
    try:
        json_end = len(content) if length is None else int(length)
        header = json.loads(content[:json_end])
    except ValueError as exc:
        raise InvalidResponse(f"inference answer is not a v2 JSON header: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("outputs"), list):
        raise InvalidResponse(f"inference answer has no 'outputs': {str(header)[:200]}")
    offset = json_end
    by_name: dict[str, np.ndarray] = {}
    for output in header["outputs"]:
        values, offset = _output_values(output, content, offset)
        by_name[str(output.get("name"))] = values
    columns = []
    for tensor in info.outputs:
        if tensor.name not in by_name:
            raise InvalidResponse(f"inference answer lacks output {tensor.name!r}")
        values = by_name[tensor.name]
        if values.size != n * tensor.width:
            raise InvalidResponse(
                f"output {tensor.name!r} has {values.size} values, {n} samples need {n * tensor.width}"
            )
        columns.append(values.reshape(n, tensor.width))
    parameters = header.get("parameters") or {}
    return Prediction(
        model=str(header.get("model_name", "")),
        version=str(header.get("model_version", "")),
        device=str(parameters.get("device", "")) if isinstance(parameters, dict) else "",
        outputs=np.concatenate(columns, axis=1) if len(columns) != 1 else columns[0],
    )


def _output_values(output: Any, content: bytes, offset: int) -> tuple[np.ndarray, int]:
    """One output's values as float32 (flat), and where the next binary output starts."""
    if not isinstance(output, dict):
        raise InvalidResponse(f"malformed output {str(output)[:200]}")
    datatype = output.get("datatype")
    if datatype not in _NUMPY and datatype != "BF16":
        raise InvalidResponse(f"output {output.get('name')!r} has non-numeric datatype {datatype!r}")
    size = (output.get("parameters") or {}).get("binary_data_size")
    if size is None:
        try:
            values = np.asarray(output.get("data"), dtype=_NUMPY.get(datatype, "<f4")).ravel()
        except (TypeError, ValueError) as exc:
            raise InvalidResponse(f"output {output.get('name')!r} 'data' is not numbers: {exc}") from exc
        return values.astype(np.float32), offset
    end = offset + int(size)
    if end > len(content):
        raise InvalidResponse(f"output {output.get('name')!r} runs past the end of the answer")
    raw = content[offset:end]
    if datatype == "BF16":
        values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        values = np.frombuffer(raw, dtype=_NUMPY[datatype])
    return values.astype(np.float32), end
