"""The naive server: FastAPI, a pydantic request model and a numpy forward pass per request.

    python benchmarks/peers/naive_fastapi.py --port P

What a first FastAPI wrapper around a model looks like (the source paper's per-call pattern: every
request builds its arrays, runs the network alone, and is answered on its own; nothing is batched):
a synchronous route (FastAPI runs it in its thread pool), pydantic validation of the body, and
FastAPI's default JSON response. Routes (127.0.0.1 only): `POST /predict` with
`{"inputs": [[27 numbers], ...]}` -> `{"outputs": [[y], ...]}`, `GET /readyz`.
uvicorn runs with its defaults (which pick httptools and uvloop when installed), access log off.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

if __package__ in (None, ""):  # run as a script: make `benchmarks.peers` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers.network import Network, muon_network


class PredictRequest(BaseModel):
    """The body of `POST /predict`; `model` is accepted (fpgaas's body carries it) and ignored."""

    model: str | None = None
    inputs: list[list[float]]


class PredictResponse(BaseModel):
    outputs: list[list[float]]


def create_app(net: Network) -> FastAPI:
    app = FastAPI(title="naive muon pT server")

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(request: PredictRequest) -> PredictResponse:
        x = np.array(request.inputs, dtype=np.float32)
        return PredictResponse(outputs=net.forward(x).tolist())

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(muon_network()), host="127.0.0.1", port=args.port, access_log=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
