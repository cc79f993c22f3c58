"""What the gRPC tests know of the live server (see conftest.py), and helpers they share."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import numpy as np
import tritonclient.grpc as triton

MODEL = "tiny"
N_INPUTS = 6  # the tiny model's widths (tests/service/conftest.py)
N_OUTPUTS = 2


@dataclass(frozen=True)
class GrpcServer:
    url: str  # "http://127.0.0.1:PORT" (HTTP)
    target: str  # "127.0.0.1:PORT" (gRPC), as tritonclient.grpc wants it


def samples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 4.0, size=(n, N_INPUTS)).astype(np.float32)


def names(client: triton.InferenceServerClient) -> tuple[str, str]:
    """(input name, output name) from the model metadata, as a Triton client learns them."""
    meta = client.get_model_metadata(MODEL)
    return meta.inputs[0].name, meta.outputs[0].name


def infer_input(name: str, x: np.ndarray, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def predict_route(server: GrpcServer, x: np.ndarray) -> np.ndarray:
    """The same rows through fpgaas's own `/predict` (binary), for comparison."""
    answer = httpx.post(
        f"{server.url}/predict",
        params={"model": MODEL},
        content=x.astype("<f4").tobytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert answer.status_code == 200, answer.text
    return np.frombuffer(answer.content, dtype="<f4").reshape(x.shape[0], -1)
