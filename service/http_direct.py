"""Hot requests answered straight from the connection, without uvicorn's ASGI request cycle.

uvicorn hands every request to the app as an ASGI call: a scope, `receive` and `send`
coroutines, message dicts, and a check of every header on the way out. For the hot routes that
machinery costs more CPU than fpgaas's own work on a single row. Measured on this project's
2-core box (wrk -t1 on loopback, the server on one core): a trivial ASGI app on uvicorn
(httptools, uvloop) answers 18,000 rps at c=64 and has a c=1 p50 of 185 µs; the same answer
written from the httptools protocol by a task, 66,000 rps and 140 µs.

`DirectHttpToolsProtocol` therefore passes a *complete, small* hot request — POST to `/predict`
or a v2 infer path, a body declared by Content-Length and no larger than uvicorn's read buffer
(`HIGH_WATER_LIMIT`, so that reading is never paused for it) — to the front door
(`FrontDoor.serve_hot`) as a `ReadCall`: the body in hand, the answer written to the transport
as one HTTP/1.1 response. The front door code that decodes, infers, classifies errors and
counts is the same on both paths. Everything else takes uvicorn's ASGI path unchanged: other
routes and methods, chunked or larger bodies, `Expect: 100-continue`, a server with an access
log or a concurrency limit, an app without a front door.

Connection handling stays uvicorn's: the request cycle object (body, keep-alive, disconnect,
pipelining, write flow control) is uvicorn's own; the answer ends it as uvicorn's `send` does
(`Connection: close` and the close when keep-alive is off, e.g. while draining at shutdown;
then uvicorn's `on_response_complete`, which starts a pipelined request or arms the keep-alive
timer). A hot request whose client leaves before its body is complete is counted as a client
disconnect, as the ASGI path counts it.

On the server's only connection, the request's coroutine runs at once, in the connection's
callback, up to its first suspension; only a request that suspends (its rows wait for a batch,
a body is parsed on a thread) gets a task, which carries the coroutine on from there
(`_Continued`). A single row on the only open connection, on an idle CPU twin, is thus answered
without a task (`ReadCall.alone`). With several connections open a request gets its task at once.

Lifetime: one protocol object per TCP connection, created by uvicorn; used on the event loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from fpgaas.kernels.errors import PayloadTooLarge
from fpgaas.service.api.asgi import Answer, ClientDisconnected, HttpCall, Message
from fpgaas.service.api.front import FrontDoor, HotRoute
from fpgaas.service.api.payload import inflate

log = logging.getLogger(__name__)

_INTERNAL_ERROR = (
    STATUS_LINE[500] + b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n"
    b"connection: close\r\n\r\nInternal Server Error"
)


async def _no_message(*_: Any) -> Message:
    raise RuntimeError("a ReadCall has its body in hand and writes its answer itself")


class ReadCall(HttpCall):
    """A hot request read whole by the connection: `body` is what uvicorn's cycle collected,
    `answer` writes the response to the transport and completes the cycle."""

    def __init__(self, cycle: RequestResponseCycle, server_state: ServerState) -> None:
        super().__init__(cycle.scope, _no_message, _no_message)  # type: ignore[arg-type]
        self.cycle = cycle
        self._server = server_state

    def alone(self) -> bool:
        """The only connection the server has, and no other request in a task: then no other
        request can be read in this loop iteration to join a batch. (With several connections
        open it is not known which have a request waiting in their socket, so never alone.)"""
        if len(self._server.connections) != 1:
            return False
        tasks = self._server.tasks
        return not tasks or (len(tasks) == 1 and asyncio.current_task() in tasks)

    async def body(self, limit: int) -> bytes:
        self.check_declared_length(limit)
        cycle = self.cycle
        if cycle.disconnected:
            raise ClientDisconnected()
        body = bytes(cycle.body)
        if len(body) > limit:  # cannot be: the declared length was checked, and httptools keeps to it
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", field="body")
        return inflate(body, self.header(b"content-encoding"), limit)

    async def answer(self, answer: Answer) -> None:
        cycle = self.cycle
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if cycle.disconnected:
            raise ConnectionResetError("the client went away before its answer")
        content = [STATUS_LINE[answer.status]]
        for name, value in cycle.default_headers:  # server, date: as uvicorn sends them
            content += (name, b": ", value, b"\r\n")
        content += (b"content-type: ", answer.media_type.encode(), b"\r\ncontent-length: ")
        content += (str(len(answer.body)).encode(), b"\r\n")
        for name, value in answer.headers:
            content += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", answer.body)
        cycle.response_started = True
        cycle.transport.write(b"".join(content))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()


async def _resume(serving: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Go on, in the running task, with a coroutine that suspended in its first step."""
    await _Continued(serving, awaited)


class _Continued:
    """Awaitable that carries on a coroutine which suspended on `awaited` (what it yielded: an
    asyncio future, or None for a bare yield) outside any task: the awaiting task now gets its
    suspensions and wakes it, throws included (cancellation), as if it had run it from the start."""

    def __init__(self, serving: Coroutine[Any, Any, None], awaited: Any) -> None:
        self._serving = serving
        self._awaited = awaited

    def __await__(self) -> Generator[Any, Any, None]:
        serving, awaited = self._serving, self._awaited
        while True:
            value: Any = None
            error: BaseException | None = None
            try:
                value = yield awaited
            except BaseException as exc:  # thrown into the task: pass it on
                error = exc
            try:
                awaited = serving.send(value) if error is None else serving.throw(error)
            except StopIteration:
                return


class DirectHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that gives complete small hot requests to the app's front
    door directly (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        front = getattr(config.app, "front", None)
        direct = isinstance(front, FrontDoor) and not config.access_log and self.limit_concurrency is None
        self._front: FrontDoor | None = front if direct else None
        # The hot request whose body is still arriving, with its route.
        self._reading: tuple[RequestResponseCycle, HotRoute] | None = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        hot = self._direct_route(cycle) if self._front is not None else None
        if hot is None:
            super()._start_asgi_task(cycle, app)
        elif cycle.more_body:
            self._reading = (cycle, hot)  # started by on_message_complete
        else:
            self._start_direct(cycle, hot)  # a pipelined request, read while the one before ran

    def on_message_complete(self) -> None:
        super().on_message_complete()
        reading = self._reading
        if reading is not None and reading[0] is self.cycle and not reading[0].more_body:
            self._reading = None
            self._start_direct(*reading)

    def connection_lost(self, exc: Exception | None) -> None:
        reading, self._reading = self._reading, None
        super().connection_lost(exc)
        if reading is not None and self._front is not None:  # left mid-body, as the ASGI path counts it
            self._front.client_went_away(reading[1][0])

    def _direct_route(self, cycle: RequestResponseCycle) -> HotRoute | None:
        """The hot route of a request the connection may answer itself, else None."""
        scope = cycle.scope
        if scope["method"] != "POST" or cycle.waiting_for_100_continue:
            return None
        assert self._front is not None
        hot = self._front.hot_route(scope["path"])
        if hot is None:
            return None
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                return None
        if length is None or not length.isdigit() or int(length) > HIGH_WATER_LIMIT:
            return None
        return hot

    def _start_direct(self, cycle: RequestResponseCycle, hot: HotRoute) -> None:
        """On the server's only connection, run the request's coroutine at once, up to its first
        suspension: a single row alone on an idle CPU twin is answered there, without a task (a
        task costs ~15 µs of a c=1 request's latency on this box). If it suspends (its rows wait
        for a batch, a body parse runs on a thread), a task takes it over from there. With other
        connections open, its rows would wait for company anyway: it gets its task at once,
        without `_Continued`'s layer on every resume."""
        serving = self._serve_direct(cycle, hot)
        if len(self.server_state.connections) == 1:
            try:
                awaited = serving.send(None)
            except StopIteration:
                return
            task = self.loop.create_task(_resume(serving, awaited))
        else:
            task = self.loop.create_task(serving)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _serve_direct(self, cycle: RequestResponseCycle, hot: HotRoute) -> None:
        assert self._front is not None
        try:
            await self._front.serve_hot(ReadCall(cycle, self.server_state), hot)
        except BaseException as exc:  # the front door renders every error: this is a bug
            log.error("exception answering %s", hot[0], exc_info=exc)
            if not cycle.response_started and not cycle.disconnected:
                cycle.transport.write(_INTERNAL_ERROR)
            cycle.transport.close()
        finally:
            cycle.on_response = lambda: None  # as uvicorn's cycle ends: nothing more to start
