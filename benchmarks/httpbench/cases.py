"""The request cases: which route, which body, how many rows; the same bytes for every server.

Inputs are drawn from a fixed seed and rounded to 6 decimals (what a client would print), so the
JSON and the binary bodies carry the same numbers up to float32 rounding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import numpy as np
from numpy.typing import NDArray

MODEL = "muon-pt"
N_INPUTS = 27
JSON = "application/json"
BINARY = "application/octet-stream"
GRPC = "application/grpc"  # a gRPC case: `body` is a serialized ModelInferRequest for the gRPC port
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Case:
    """One kind of request: `body` POSTed to `path` with `content_type`, `rows` rows of 27 inputs."""

    name: str
    label: str
    path: str
    content_type: str
    body: bytes
    rows: int


def inputs(rows: int, seed: int = 0) -> NDArray[np.float64]:
    """(rows, 27) inputs, normal(0, 0.5) rounded to 6 decimals."""
    return np.round(np.random.default_rng(seed).normal(0.0, 0.5, size=(rows, N_INPUTS)), 6)


def predict_json(x: NDArray[np.float64]) -> Case:
    body = json.dumps({"model": MODEL, "inputs": x.tolist()}, separators=(",", ":")).encode()
    return Case("json", "JSON /predict", "/predict", JSON, body, len(x))


def infer_v2(x: NDArray[np.float64], input_name: str) -> Case:
    tensor = {"name": input_name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    body = json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()
    return Case("v2", "v2 JSON infer", f"/v2/models/{MODEL}/infer", JSON, body, len(x))


def predict_binary(x: NDArray[np.float64], name: str = "binary") -> Case:
    body = x.astype("<f4").tobytes()
    label = "binary /predict" if len(x) == 1 else f"binary /predict, {len(x):,} rows"
    return Case(name, label, f"/predict?model={MODEL}", BINARY, body, len(x))


def infer_grpc(x: NDArray[np.float64], input_name: str, name: str = "grpc") -> Case:
    """KServe v2 over gRPC (Triton's ModelInfer), the rows in raw_input_contents as SONIC sends them."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[x.astype("<f4").tobytes()])
    request.inputs.add(name=input_name, datatype="FP32", shape=list(x.shape))
    label = "gRPC ModelInfer" if len(x) == 1 else f"gRPC ModelInfer, {len(x):,} rows"
    return Case(name, label, GRPC_METHOD, GRPC, request.SerializeToString(), len(x))


def make_cases(input_name: str, seed: int = 0) -> dict[str, Case]:
    """The wrk cases (single-row JSON, v2 JSON and binary, a 1,024-row binary request) and the
    gRPC cases driven by h2load (single row, and the same 1,024 rows, raw)."""
    row = inputs(1, seed)
    rows = inputs(1024, seed + 1)
    cases = [predict_json(row), infer_v2(row, input_name), predict_binary(row)]
    cases.append(predict_binary(rows, "binary-1024"))
    cases += [infer_grpc(row, input_name), infer_grpc(rows, input_name, "grpc-1024")]
    return {c.name: c for c in cases}


def is_grpc(case: Case) -> bool:
    return case.content_type == GRPC


def grpc_response_problem(case: Case, answer: bytes) -> str | None:
    """Why a serialized ModelInferResponse is not a valid answer to `case` (None when it is)."""
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse.FromString(answer)
    if not response.outputs or not response.raw_output_contents:
        return f"no outputs in {response}"
    rows = int(response.outputs[0].shape[0])
    return None if rows == case.rows else f"{rows} output rows for {case.rows} input rows"


def response_problem(case: Case, response: httpx.Response) -> str | None:
    """Why `response` is not a valid answer to `case` (None when it is: 200 and one output per row)."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    try:
        if case.content_type == BINARY:
            rows = len(response.content) // 4
        elif case.name == "v2":
            rows = int(response.json()["outputs"][0]["shape"][0])
        else:
            rows = len(response.json()["outputs"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"unexpected response ({exc}): {response.text[:200]}"
    return None if rows == case.rows else f"{rows} output rows for {case.rows} input rows"
