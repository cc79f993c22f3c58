"""The blocking client: I/O and the retry loop only; building and parsing live in the protocol."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import numpy as np

from fpgaas.client._base import DEFAULT_URL, ClientBase
from fpgaas.client._builds import Build, BuildInfo, parse, upload_request
from fpgaas.client._errors import ServerError, TransportError, translate_transport_error
from fpgaas.client._protocol import Call, Request, error_from_response, json_body
from fpgaas.client._types import ModelInfo, Prediction

T = TypeVar("T")


class Client(ClientBase):
    """A blocking fpgaas client over one pooled `httpx.Client`.

    Thread-safe (httpx.Client is); close it with `close()` or use it as a context manager.
    See `ClientBase` for the settings; `transport` replaces httpx's network transport.
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
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        protocol: str = "fpgaas",
    ) -> None:
        super().__init__(
            base_url,
            timeout=timeout,
            retries=retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            binary_threshold=binary_threshold,
            headers=headers,
            protocol=protocol,
        )
        self._http = httpx.Client(transport=transport, **self._http_options)

    def predict(
        self, data: Any, model: str | None = None, version: str | None = None, *, binary: bool | None = None
    ) -> np.ndarray:
        """Run samples through a model: float32 (n_samples, n_outputs), rows in input order.

        `data` is 2-D (samples x features) or 1-D (one sample); ValueError if malformed.
        `binary` forces raw float32 (True) or JSON (False); None picks by `binary_threshold`.
        """
        return self.predict_result(data, model, version, binary=binary).outputs

    def predict_result(
        self, data: Any, model: str | None = None, version: str | None = None, *, binary: bool | None = None
    ) -> Prediction:
        """Like `predict`, also saying which model version and device answered."""
        prepare = self._protocol.prepare(model, version)
        if prepare is not None:
            self._run(prepare)
        return self._run(self._predict_call(data, model, version, binary))

    def models(self) -> list[ModelInfo]:
        """Every model the server holds."""
        return self._run(self._protocol.models())

    def model(self, name: str, version: str | None = None) -> ModelInfo:
        """One model (at its highest version unless `version` is given); ModelNotFoundError if
        the server has no such model or version."""
        return self._run(self._protocol.model(name, version))

    def health(self) -> bool:
        """True if the server process answers its liveness probe (once, no retries);
        False if it answers otherwise or cannot be reached."""
        return self._probe(self._protocol.health())

    def ready(self) -> bool:
        """True if the server is ready to predict (once, no retries); False otherwise."""
        return self._probe(self._protocol.ready())

    def upload(self, path: Path | str, name: str, **options: Any) -> Build:
        """Upload a Keras model file (.h5 or .keras) as a new version of `name` and queue its build.

        `options`: version, part, platform, max_batch, reuse_factor, strategy ("Latency" or
        "Resource"), precision ({"layer" or "layer.role": "fixed<16,6>"}), sha256 (checked by the
        server). Not retried (a second upload would be a second build). Raises BadRequest (400,
        e.g. 409 for a version that exists), ServerError for the rest."""
        route, form, model = upload_request(path, name, options)
        with model.open("rb") as f:  # httpx streams the file in chunks
            response = self._http.post(route, files={"file": (model.name, f)}, data=form)
        return Build(self._http, parse(response))

    def builds(self, name: str | None = None) -> list[Build]:
        """Recent builds, newest first (of model `name` only, if given)."""
        response = self._http.get("/builds", params={"name": name} if name else None)
        if not response.is_success:
            raise error_from_response(response)
        return [Build(self._http, BuildInfo.of(b)) for b in json_body(response)["builds"]]

    def build(self, build_id: int) -> Build:
        """One build by id."""
        return Build(self._http, parse(self._http.get(f"/builds/{int(build_id)}")))

    def close(self) -> None:
        """Close the pooled connections. The client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                return call.settle(self._send(call.request))
            except (ServerError, TransportError) as error:
                delay = self.retry_policy.delay(attempt, error)
                if delay is None:
                    raise
            time.sleep(delay)
            attempt += 1

    def _send(self, request: Request) -> httpx.Response:
        try:
            return self._http.request(
                request.method,
                request.path,
                params=request.params,
                headers=request.headers,
                content=request.content,
            )
        except httpx.TransportError as exc:
            raise translate_transport_error(exc, request.method, request.path) from exc

    def _probe(self, request: Request) -> bool:
        try:
            return self._send(request).is_success
        except TransportError:
            return False
