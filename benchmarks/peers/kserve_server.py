"""KServe's python `ModelServer` serving the muon network over the v2 (Open Inference Protocol) REST API.

    .venv-kserve/bin/python benchmarks/peers/kserve_server.py --port P

Run with the interpreter of the KServe virtualenv (`bench_http.py` creates it; kserve's pins may
clash with ours). Serves `POST /v2/models/muon-pt/infer` and KServe's own `GET /v2/health/ready`,
one worker, gRPC off. The model is a `kserve.Model` whose synchronous `predict` does a numpy
forward pass of `network.muon_network()`, using KServe's own helpers `get_predict_input` and
`get_predict_response`, as its sklearn server does.

Two deviations from a stock `ModelServer`, both so that the comparison is fair and safe:
- it listens on 127.0.0.1: KServe hard-codes host 0.0.0.0 in its REST server's `uvicorn.Config`,
  so that one argument is overridden;
- its per-request log lines (latency logging, the `kserve.trace` timing line, uvicorn's access
  log) are off, as fpgaas's access log is by default.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks.peers` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers.network import Network, muon_network

MODEL_NAME = "muon-pt"


def _bind_loopback_only() -> None:
    """Make every `uvicorn.Config` built from here on listen on 127.0.0.1."""
    import uvicorn

    class LoopbackConfig(uvicorn.Config):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["host"] = "127.0.0.1"
            super().__init__(*args, **kwargs)

    uvicorn.Config = LoopbackConfig  # type: ignore[misc]


def serve(port: int, net: Network) -> None:
    """Blocks until SIGINT/SIGTERM."""
    import kserve
    from kserve.utils.utils import get_predict_input, get_predict_response

    class MuonModel(kserve.Model):
        def __init__(self) -> None:
            super().__init__(MODEL_NAME)
            self.load()

        def load(self) -> bool:
            self.ready = True
            return True

        def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            x = np.asarray(get_predict_input(payload), dtype=np.float32)
            return get_predict_response(payload, net.forward(x), self.name)

    _bind_loopback_only()
    server = kserve.ModelServer(http_port=port, workers=1, enable_grpc=False, enable_latency_logging=False)
    for name in ("kserve.trace", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([MuonModel()])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    args = parser.parse_args(argv)
    # kserve parses sys.argv when imported (parse_known_args); give it nothing of ours to misread.
    sys.argv = sys.argv[:1]
    serve(args.port, muon_network())


if __name__ == "__main__":
    main()
