"""The few ASGI primitives the hot routes need, without a framework in the way.

`HttpCall` is one HTTP request as the hot routes see it: its headers (looked up lazily), its
query parameters, its body read with the byte limit (declared `Content-Length` and bytes
received both count) and undone from its `Content-Encoding`, and `answer` to send a complete
response. A client that goes away mid-body raises `ClientDisconnected`, which is not an error
of the server. One `HttpCall` lives for one request, on the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fpgaas.kernels.errors import BadInput, PayloadTooLarge
from fpgaas.service.api.payload import inflate

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientDisconnected(Exception):
    """The client closed the connection before its request was read or answered."""


@dataclass(frozen=True)
class Answer:
    """A complete HTTP response: status, extra headers, body and its media type."""

    status: int
    body: bytes
    media_type: str = "application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(eq=False)
class HttpCall:
    scope: Scope
    receive: Receive
    send: Send
    model_label: str = ""  # set once the request resolved a loaded model: the metrics label
    _headers: dict[bytes, bytes] | None = field(default=None, repr=False)

    def header(self, name: bytes) -> str | None:
        """A request header by lower-case name (the last one wins), decoded as latin-1."""
        if self._headers is None:
            self._headers = dict(self.scope["headers"])
        value = self._headers.get(name)
        return None if value is None else value.decode("latin-1")

    def alone(self) -> bool:
        """True when no other HTTP request can be waiting to join this one's batch (the batcher
        then need not wait for company). Unknown behind the ASGI interface, so False there."""
        return False

    def query(self) -> dict[str, str]:
        raw: bytes = self.scope.get("query_string", b"")
        return dict(parse_qsl(raw.decode("latin-1"))) if raw else {}

    async def body(self, limit: int) -> bytes:
        """The whole body, inflated; PayloadTooLarge (413) as soon as it is known to exceed
        `limit` bytes, before or after inflation."""
        self.check_declared_length(limit)
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk: bytes = message.get("body", b"")
            if chunk:
                received += len(chunk)
                if received > limit:
                    raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", field="body")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return inflate(body, self.header(b"content-encoding"), limit)

    def check_declared_length(self, limit: int) -> None:
        """BadInput for a Content-Length that is not a byte count, PayloadTooLarge for one over
        `limit` bytes (before a byte of the body is read)."""
        declared = self.header(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadInput(f"Content-Length {declared!r} is not a byte count", field="Content-Length")
            if int(declared) > limit:
                raise PayloadTooLarge(
                    f"body of {declared} bytes exceeds the limit of {limit} bytes", field="body"
                )

    async def answer(self, answer: Answer) -> None:
        headers = [
            (b"content-type", answer.media_type.encode()),
            (b"content-length", str(len(answer.body)).encode()),
            *answer.headers,
        ]
        await self.send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": answer.body})
