"""`serve(settings)`: the fpgaas server process, uvicorn (httptools, uvloop) running `create_app`.

`uvicorn_config(settings, app)` is the one place the server's uvicorn configuration is made
(tests start servers from it too). Connections get a read deadline and a drain at shutdown from
`fpgaas.service.http_protocol`. On SIGTERM or SIGINT the `Server`:

1. takes the connections the kernel had already accepted for it (the listen backlog) before
   closing the listener, so that none of them is reset unanswered; from then on connecting is
   refused;
2. answers every request on an accepted connection, with `Connection: close`, and closes idle
   connections (see `http_protocol` for the grace a connection between requests gets);
3. runs the app's lifespan shutdown, which drains the batchers and closes kernels and devices;
4. returns, and the process exits 0 (uvicorn would re-raise the signal here, so a server that
   had finished cleanly would die of it, exit status -15).

The gRPC front end (`fpgaas.service.api.grpc.GrpcFront`, on `FPGAAS_GRPC_PORT`, 0 for none) runs
in the same event loop on the same app state: it starts once the lifespan has loaded the models.
At step 1 its health turns NOT_SERVING; it still takes RPCs for the grace an idle HTTP
connection gets (`DRAIN_GRACE_S`: calls already on the wire are answered, not cancelled), then
refuses new ones; RPCs in progress get the same grace as HTTP requests and are answered before
step 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import logging.config
import math
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.server import HANDLED_SIGNALS

from fpgaas.service.api.grpc import GrpcFront
from fpgaas.service.app import create_app
from fpgaas.service.http_protocol import DRAIN_GRACE_S, timed_protocol
from fpgaas.service.settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """Serve on the listening `sockets` (closed at shutdown) or else on settings.host:port until
    SIGTERM or SIGINT; return once every accepted request is answered and the app is shut down."""
    logging.config.dictConfig(log_config(settings))
    app = create_app(settings)
    grpc_front = None
    if settings.grpc_port:
        grpc_front = GrpcFront(
            settings, app.state, app.state.metrics, graceful_shutdown_s(settings), drain_s=DRAIN_GRACE_S
        )
    server = Server(uvicorn_config(settings, app), grpc_front=grpc_front)
    server.run(sockets=sockets)
    if server.grpc_failed:
        raise SystemExit(3)  # uvicorn's exit status for a failed startup


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    """The uvicorn configuration of a server running the ASGI `app` with `settings`. Logging
    handlers are the process's business (`serve` installs `log_config`); this sets levels only."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=timed_protocol(settings.read_timeout_s),  # httptools, with a read deadline
        loop="uvloop",
        ws="none",  # no route speaks WebSocket
        lifespan="on",
        # uvicorn annotates seconds as int; its timer takes any float.
        timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=graceful_shutdown_s(settings),
        access_log=settings.access_log,
        log_level=settings.log_level,
        log_config=None,
    )


def graceful_shutdown_s(settings: Settings) -> int:
    """Seconds accepted requests get to finish at shutdown: a device call and some margin."""
    return max(5, math.ceil(settings.device_timeout_s) + 2)


def log_config(settings: Settings) -> dict[str, Any]:
    """The server process's logging: uvicorn's configuration, with fpgaas's own loggers
    (`fpgaas.*`) on stderr too, at the settings' level."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["fpgaas"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
    }
    config["handlers"]["fpgaas"] = {
        "formatter": "fpgaas",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["fpgaas"] = {
        "handlers": ["fpgaas"],
        "level": settings.log_level.upper(),
        "propagate": False,
    }
    return config


class Server(uvicorn.Server):
    """uvicorn's server with the shutdown described in the module docstring, and the gRPC
    front end beside it when one is given."""

    def __init__(self, config: uvicorn.Config, grpc_front: GrpcFront | None = None) -> None:
        super().__init__(config)
        self.grpc_front = grpc_front
        self.grpc_failed = False  # the gRPC port could not be bound: shut down, exit non-zero

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the lifespan (models loaded), then the HTTP listeners
        if self.grpc_front is not None and not self.should_exit:
            try:
                await self.grpc_front.start()
            except RuntimeError as exc:  # the port is taken
                log.error("the gRPC front end cannot start: %s", exc)
                self.grpc_failed = self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        backlog = self._close_listeners(sockets or [])
        loop = asyncio.get_running_loop()
        grpc_stopped = None
        if self.grpc_front is not None:  # refuses new RPCs at once, as the listeners now do
            grpc_stopped = loop.create_task(self.grpc_front.stop())
        for conn in backlog:
            try:
                # Draining from its first byte: a request it reads is answered with Connection: close.
                await loop.connect_accepted_socket(self._new_draining_protocol, sock=conn)
            except OSError:  # the client went away meanwhile
                conn.close()
                continue
        if backlog:
            log.info("shutting down: %d connection(s) taken from the listen backlog", len(backlog))
        if grpc_stopped is not None:  # RPCs in progress are answered before the lifespan drains
            await grpc_stopped
        await super().shutdown(sockets)  # closes what is closed already: a no-op

    def _close_listeners(self, sockets: list[socket.socket]) -> list[socket.socket]:
        """Close every listener and return the connections waiting in their backlogs.

        Closing a listening socket resets the connections the kernel completed but the server had
        not yet taken, after their clients may have sent a request. So one duplicate descriptor
        per listener keeps it open while the others close, its backlog is taken, then it closes:
        all without yielding to the loop, so no connection is completed in between unseen."""
        fds = {s.fileno() for server in self.servers for s in server.sockets} | {s.fileno() for s in sockets}
        keep = [socket.socket(fileno=os.dup(fd)) for fd in fds if fd >= 0]
        for server in self.servers:
            server.close()
        for sock in sockets:
            sock.close()
        backlog: list[socket.socket] = []
        for listener in keep:
            listener.setblocking(False)
            with listener:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except OSError:  # BlockingIOError: the backlog is empty
                        break
                    backlog.append(conn)
        return backlog

    def _new_draining_protocol(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        protocol.drain_at_connect = True  # type: ignore[attr-defined]
        return protocol

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signal handling, without re-raising the signal once shut down cleanly."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
