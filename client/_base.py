"""What `Client` and `AsyncClient` share besides the protocol: settings and call preparation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from fpgaas.client._arrays import as_batch
from fpgaas.client._fpgaas import FpgaasProtocol
from fpgaas.client._protocol import Call, WireProtocol
from fpgaas.client._retry import RetryPolicy
from fpgaas.client._types import Prediction
from fpgaas.client._v2 import V2Protocol

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_BINARY_THRESHOLD = FpgaasProtocol.default_binary_threshold

_PROTOCOLS: dict[str, type[FpgaasProtocol] | type[V2Protocol]] = {"fpgaas": FpgaasProtocol, "v2": V2Protocol}


def protocol_named(name: str) -> WireProtocol:
    """The wire protocol called `name`; ValueError lists the known ones."""
    try:
        return _PROTOCOLS[name]()
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(sorted(_PROTOCOLS))}") from None


class ClientBase:
    """Settings and request preparation; subclasses add the I/O (sync or async).

    base_url: the server root, e.g. "http://127.0.0.1:8000" (a path prefix is kept).
    timeout: seconds allowed to connect, to send the body and to wait for each read;
        waiting for a free pooled connection is not bounded by it.
    retries, backoff_s, max_backoff_s: see `RetryPolicy`.
    binary_threshold: input size in bytes (float32) above which `predict` sends raw float32
        instead of JSON; 0 sends everything binary. None: the protocol's default (16 KiB for
        "fpgaas", 0 for "v2").
    headers: sent with every request (e.g. an authorization token).
    protocol: the wire protocol's name: "fpgaas", or "v2" (the Open Inference Protocol, as
        Triton and KServe speak it).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        binary_threshold: int | None = None,
        headers: Mapping[str, str] | None = None,
        protocol: str = "fpgaas",
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if binary_threshold is not None and binary_threshold < 0:
            raise ValueError(f"binary_threshold must be >= 0 bytes, got {binary_threshold}")
        self.base_url = base_url
        self.retry_policy = RetryPolicy(retries, backoff_s, max_backoff_s)
        self._protocol = protocol_named(protocol)
        self.binary_threshold = (
            self._protocol.default_binary_threshold if binary_threshold is None else binary_threshold
        )
        self._http_options: dict[str, Any] = {
            "base_url": base_url,
            "timeout": httpx.Timeout(timeout, pool=None),
            "headers": dict(headers or {}),
        }

    def _predict_call(
        self, data: Any, model: str | None, version: str | None, binary: bool | None
    ) -> Call[Prediction]:
        batch = as_batch(data)
        use_binary = batch.nbytes > self.binary_threshold if binary is None else binary
        return self._protocol.predict(batch, model, version, binary=use_binary)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, protocol={self._protocol.name!r})"
