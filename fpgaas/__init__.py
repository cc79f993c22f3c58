"""fpgaas: hls4ml kernels kept resident on AMD/Xilinx cards, served over HTTP and gRPC.

Public import names:

    fpgaas.client    the Python SDK (needs only httpx and numpy): `from fpgaas import Client`
    fpgaas.service   the inference server
    fpgaas.builder   the model -> kernel artifact pipeline
    fpgaas.kernels   the contract between builder and service (artifact, errors, CPU twin)
    fpgaas.cli       the `fpgaas` command

`Client` and `AsyncClient` are loaded on first use, so `import fpgaas` stays free of httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fpgaas.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fpgaas import client

        return getattr(client, name)
    raise AttributeError(f"module 'fpgaas' has no attribute {name!r}")
