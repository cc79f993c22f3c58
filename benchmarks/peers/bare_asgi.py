"""The ceiling: a raw ASGI app (no framework) on uvicorn with httptools, uvloop and orjson.

    python benchmarks/peers/bare_asgi.py --port P

Routes (127.0.0.1 only), each a numpy forward pass of `network.muon_network()` per request:

- `POST /predict` with JSON `{"inputs": [[27 numbers], ...]}` -> `{"outputs": [[y], ...]}`; with
  `Content-Type: application/octet-stream`, raw little-endian float32 rows -> raw float32 outputs.
- `POST /v2/models/<name>/infer`: an Open Inference Protocol request with one FP32 input tensor.
- `GET /readyz`: 200.

Only what a request needs is checked (the row width); anything malformed gets a 400. This is the
least work a Python HTTP server can do per request, so it bounds what fpgaas can reach.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

if __package__ in (None, ""):  # run as a script: make `benchmarks.peers` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers.network import N_INPUTS, Network, muon_network

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_BINARY = [(b"content-type", b"application/octet-stream")]
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


class BadRequest(ValueError):
    """The body is not a batch of N_INPUTS-wide rows."""


def predict_json(net: Network, body: bytes) -> bytes:
    """`{"inputs": [[...]]}` -> `{"outputs": [[...]]}`."""
    try:
        x = np.asarray(orjson.loads(body)["inputs"], dtype=np.float32)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadRequest(str(exc)) from exc
    if x.ndim != 2 or x.shape[1] != N_INPUTS:
        raise BadRequest(f"inputs must be rows of {N_INPUTS} numbers")
    return orjson.dumps({"outputs": net.forward(x)}, option=_NUMPY)


def predict_binary(net: Network, body: bytes) -> bytes:
    """Raw little-endian float32 rows in, raw float32 outputs out."""
    if not body or len(body) % (4 * N_INPUTS):
        raise BadRequest(f"the body must be whole rows of {N_INPUTS} float32")
    x = np.frombuffer(body, dtype="<f4").reshape(-1, N_INPUTS)
    return net.forward(x).astype("<f4", copy=False).tobytes()


def infer_v2(net: Network, model: str, body: bytes) -> bytes:
    """An Open Inference Protocol request (one FP32 tensor of shape [n, 27]) -> its response."""
    try:
        tensor = orjson.loads(body)["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise BadRequest(str(exc)) from exc
    if x.ndim != 2 or x.shape[1] != N_INPUTS:
        raise BadRequest(f"the input tensor must have shape [n, {N_INPUTS}]")
    y = net.forward(x)
    output = {"name": "output", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel()}
    return orjson.dumps({"model_name": model, "outputs": [output]}, option=_NUMPY)


def create_app(net: Network) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI callable serving `net` (HTTP only; run it with lifespan off)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if scope["method"] == "GET" and path == "/readyz":
            await _respond(send, 200, b"ready", [(b"content-type", b"text/plain")])
            return
        if scope["method"] != "POST":
            await _respond(send, 404, b'{"error":"not found"}', _JSON)
            return
        body = await _read_body(receive)
        try:
            if path == "/predict":
                if _content_type(scope) == b"application/octet-stream":
                    await _respond(send, 200, predict_binary(net, body), _BINARY)
                else:
                    await _respond(send, 200, predict_json(net, body), _JSON)
            elif path.startswith("/v2/models/") and path.endswith("/infer"):
                model = path[len("/v2/models/") : -len("/infer")]
                await _respond(send, 200, infer_v2(net, model, body), _JSON)
            else:
                await _respond(send, 404, b'{"error":"not found"}', _JSON)
        except BadRequest as exc:
            await _respond(send, 400, orjson.dumps({"error": str(exc)}), _JSON)

    return app


def _content_type(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value).split(b";", 1)[0].strip().lower()
    return b""


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(muon_network()),
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
