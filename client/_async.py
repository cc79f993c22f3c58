"""The asyncio client: I/O and the retry loop only; building and parsing live in the protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import numpy as np

from fpgaas.client._base import DEFAULT_URL, ClientBase
from fpgaas.client._builds import AsyncBuild, BuildInfo, parse, upload_request
from fpgaas.client._errors import ServerError, TransportError, translate_transport_error
from fpgaas.client._protocol import Call, Request, error_from_response, json_body
from fpgaas.client._types import ModelInfo, Prediction

T = TypeVar("T")


class AsyncClient(ClientBase):
    """An asyncio fpgaas client over one pooled `httpx.AsyncClient`; the same API as `Client`
    with coroutine methods.

    Use it from one event loop; close it with `aclose()` or `async with`.
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
        transport: httpx.AsyncBaseTransport | None = None,
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
        self._http = httpx.AsyncClient(transport=transport, **self._http_options)

    async def predict(
        self, data: Any, model: str | None = None, version: str | None = None, *, binary: bool | None = None
    ) -> np.ndarray:
        """Run samples through a model: float32 (n_samples, n_outputs), rows in input order.

        `data` is 2-D (samples x features) or 1-D (one sample); ValueError if malformed.
        `binary` forces raw float32 (True) or JSON (False); None picks by `binary_threshold`.
        """
        return (await self.predict_result(data, model, version, binary=binary)).outputs

    async def predict_result(
        self, data: Any, model: str | None = None, version: str | None = None, *, binary: bool | None = None
    ) -> Prediction:
        """Like `predict`, also saying which model version and device answered."""
        prepare = self._protocol.prepare(model, version)
        if prepare is not None:
            await self._run(prepare)
        return await self._run(self._predict_call(data, model, version, binary))

    async def models(self) -> list[ModelInfo]:
        """Every model the server holds."""
        return await self._run(self._protocol.models())

    async def model(self, name: str, version: str | None = None) -> ModelInfo:
        """One model (at its highest version unless `version` is given); ModelNotFoundError if
        the server has no such model or version."""
        return await self._run(self._protocol.model(name, version))

    async def health(self) -> bool:
        """True if the server process answers its liveness probe (once, no retries);
        False if it answers otherwise or cannot be reached."""
        return await self._probe(self._protocol.health())

    async def ready(self) -> bool:
        """True if the server is ready to predict (once, no retries); False otherwise."""
        return await self._probe(self._protocol.ready())

    async def upload(self, path: Path | str, name: str, **options: Any) -> AsyncBuild:
        """`Client.upload`, awaited: the file goes in chunks, the build is queued on the server."""
        route, form, model = upload_request(path, name, options)
        with model.open("rb") as f:
            response = await self._http.post(route, files={"file": (model.name, f)}, data=form)
        return AsyncBuild(self._http, parse(response))

    async def builds(self, name: str | None = None) -> list[AsyncBuild]:
        """Recent builds, newest first (of model `name` only, if given)."""
        response = await self._http.get("/builds", params={"name": name} if name else None)
        if not response.is_success:
            raise error_from_response(response)
        return [AsyncBuild(self._http, BuildInfo.of(b)) for b in json_body(response)["builds"]]

    async def build(self, build_id: int) -> AsyncBuild:
        """One build by id."""
        return AsyncBuild(self._http, parse(await self._http.get(f"/builds/{int(build_id)}")))

    async def aclose(self) -> None:
        """Close the pooled connections. The client cannot be used afterwards."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                return call.settle(await self._send(call.request))
            except (ServerError, TransportError) as error:
                delay = self.retry_policy.delay(attempt, error)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _send(self, request: Request) -> httpx.Response:
        try:
            return await self._http.request(
                request.method,
                request.path,
                params=request.params,
                headers=request.headers,
                content=request.content,
            )
        except httpx.TransportError as exc:
            raise translate_transport_error(exc, request.method, request.path) from exc

    async def _probe(self, request: Request) -> bool:
        try:
            return (await self._send(request)).is_success
        except TransportError:
            return False
