"""fpgaas client SDK: numpy in, numpy out, over HTTP. Needs only httpx and numpy.

    from fpgaas.client import Client, AsyncClient

    with Client("http://127.0.0.1:8000") as c:
        y = c.predict(x)                # float32 (n_samples, n_outputs)

    async with AsyncClient("http://127.0.0.1:8000") as c:
        y = await c.predict(x)

    with Client(url, headers={"Authorization": "Bearer <admin token>"}) as c:
        build = c.upload("model.h5", name="muon-pt", max_batch=256)   # queued on the server
        build.wait(progress=True)                                    # builder stage by stage

Small batches go as JSON, large ones as raw little-endian float32 (see `binary_threshold`).
Errors are drawn in `fpgaas.client._errors`; every one derives from `FpgaasClientError`.
"""

from __future__ import annotations

from fpgaas.client._async import AsyncClient
from fpgaas.client._builds import AsyncBuild, Build, BuildFailed, BuildInfo
from fpgaas.client._errors import (
    BadRequest,
    FpgaasClientError,
    InvalidResponse,
    ModelNotFoundError,
    RequestTimeout,
    ServerError,
    ServerOverloaded,
    ServerUnavailable,
    TransportError,
)
from fpgaas.client._retry import RetryPolicy
from fpgaas.client._sync import Client
from fpgaas.client._types import ModelInfo, Prediction, TensorInfo

__all__ = [
    "AsyncBuild",
    "AsyncClient",
    "BadRequest",
    "Build",
    "BuildFailed",
    "BuildInfo",
    "Client",
    "FpgaasClientError",
    "InvalidResponse",
    "ModelInfo",
    "ModelNotFoundError",
    "Prediction",
    "RequestTimeout",
    "RetryPolicy",
    "ServerError",
    "ServerOverloaded",
    "ServerUnavailable",
    "TensorInfo",
    "TransportError",
]
