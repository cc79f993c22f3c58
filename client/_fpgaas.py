"""The fpgaas server's own routes: `/predict` (JSON or raw float32), `/models`, probes.

JSON:   POST /predict {"model", "version", "inputs": [[...], ...]}
        -> {"model", "version", "device", "outputs": [[...], ...]}
Binary: POST /predict?model=NAME&version=V, body = little-endian float32 rows
        -> float32 rows, headers X-Model, X-Model-Version, X-Device, X-Output-Shape ("1024,1")
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from fpgaas.client._arrays import from_bytes, from_json_rows, parse_shape, to_json_rows
from fpgaas.client._errors import InvalidResponse
from fpgaas.client._protocol import Call, Request, error_from_response, json_body, json_request
from fpgaas.client._types import ModelInfo, Prediction, TensorInfo

OCTET_STREAM = "application/octet-stream"


class FpgaasProtocol:
    """Builds calls for the fpgaas REST routes. Stateless and thread-safe."""

    name = "fpgaas"
    # Above this many bytes of float32 input (~150 samples of 27 values) JSON costs the server
    # more to parse than the request costs to send, so raw float32 goes instead.
    default_binary_threshold = 16 * 1024

    def prepare(self, model: str | None, version: str | None) -> None:
        """`/predict` needs nothing fetched first."""
        return None

    def predict(
        self, batch: np.ndarray, model: str | None, version: str | None, *, binary: bool
    ) -> Call[Prediction]:
        n_samples = batch.shape[0]
        if binary:
            params = {k: v for k, v in (("model", model), ("version", version)) if v is not None}
            headers = {"Content-Type": OCTET_STREAM, "Accept": OCTET_STREAM}
            request = Request("POST", "/predict", params=params, headers=headers, content=batch.tobytes())
        else:
            body: dict[str, Any] = {"inputs": to_json_rows(batch)}
            if model is not None:
                body["model"] = model
            if version is not None:
                body["version"] = version
            request = json_request("POST", "/predict", body)
        return Call(request, lambda response: _prediction(response, n_samples), error_from_response)

    def models(self) -> Call[list[ModelInfo]]:
        return Call(Request("GET", "/models"), _model_list, error_from_response)

    def model(self, name: str, version: str | None) -> Call[ModelInfo]:
        path = "/models/" + quote(name, safe="")
        params = {} if version is None else {"version": version}
        return Call(
            Request("GET", path, params=params),
            lambda response: _model_info(json_body(response)),
            error_from_response,
        )

    def health(self) -> Request:
        return Request("GET", "/healthz")

    def ready(self) -> Request:
        return Request("GET", "/readyz")


def _prediction(response: httpx.Response, n_samples: int) -> Prediction:
    # Read the format from the answer, not from what we asked for: a server may answer JSON.
    if response.headers.get("content-type", "").startswith(OCTET_STREAM):
        h = response.headers
        outputs = from_bytes(response.content, parse_shape(h.get("x-output-shape")), n_samples)
        return Prediction(
            model=h.get("x-model", ""),
            version=h.get("x-model-version", ""),
            device=h.get("x-device", ""),
            outputs=outputs,
        )
    body = json_body(response)
    if not isinstance(body, dict) or "outputs" not in body:
        raise InvalidResponse(f"predict answer has no 'outputs': {str(body)[:200]}")
    return Prediction(
        model=str(body.get("model", "")),
        version=str(body.get("version", "")),
        device=str(body.get("device", "")),
        outputs=from_json_rows(body["outputs"], n_samples),
    )


def _model_list(response: httpx.Response) -> list[ModelInfo]:
    body = json_body(response)
    items = body.get("models") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise InvalidResponse(f"GET /models answer is not a list of models: {str(body)[:200]}")
    return [_model_info(item) for item in items]


def _model_info(data: Any) -> ModelInfo:
    if not isinstance(data, dict) or "name" not in data:
        raise InvalidResponse(f"a model description needs a 'name': {str(data)[:200]}")
    known = {"name", "version", "versions", "inputs", "outputs"}
    return ModelInfo(
        name=str(data["name"]),
        version=str(data.get("version", "")),
        versions=tuple(str(v) for v in data.get("versions", ())),
        inputs=_tensors(data.get("inputs"), "input"),
        outputs=_tensors(data.get("outputs"), "output"),
        extra={k: v for k, v in data.items() if k not in known},
    )


def _tensors(data: Any, default_name: str) -> tuple[TensorInfo, ...]:
    """Accepts a list of {"name", "shape", "dtype", "fixed_point"?}, one such dict, or a bare shape."""
    if data is None:
        return ()
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InvalidResponse(f"malformed tensor list {data!r}")
    if all(isinstance(d, int) for d in data):
        return (TensorInfo(default_name, tuple(data), "float32"),)
    tensors = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("shape"), list):
            raise InvalidResponse(f"malformed tensor description {item!r}")
        name = str(item.get("name", f"{default_name}_{i}"))
        shape = tuple(int(d) for d in item["shape"])
        dtype = str(item.get("dtype", "float32"))
        tensors.append(TensorInfo(name, shape, dtype, str(item.get("fixed_point", ""))))
    return tuple(tensors)
