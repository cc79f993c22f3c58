"""Connection-level behaviour of the HTTP server: uvicorn's httptools protocol (with the direct
hot path of `fpgaas.service.http_direct`) with a read deadline, and a drain that gives every
accepted connection its answer at shutdown.

uvicorn times out idle keep-alive connections and nothing else: a client that opens a connection
and sends nothing, half a request head, or half a body holds that connection (and, mid-body, a
request task) for ever. `TimedHttpToolsProtocol` keeps one timer per connection:

    connection made, or a new request begins   -> the whole head within read_timeout_s
    head complete, then after every body chunk  -> the next chunk within read_timeout_s
    request complete                            -> no timer: the app answers, then uvicorn's
                                                   keep-alive timer runs until the next request

On expiry the connection is closed (logged at debug level; a request whose body was cut short
sees `http.disconnect`, as if the client had gone). Time spent with reading paused by uvicorn's
flow control (the app has not taken the body so far, or a pipelined request waits its turn) is
not held against the client: the timer starts again.

At shutdown uvicorn calls `shutdown()` on every connection once the listener is closed. A
connection in the middle of a request finishes it and then closes (uvicorn's own behaviour). One
between requests (just accepted, part-way through a head, or idle keep-alive) is not closed at
once, as uvicorn would: a request may be on the wire already, and closing would lose it without
an answer. It gets `DRAIN_GRACE_S` to begin one, which is answered with `Connection: close`; one
that begins no request in that time is closed.

Lifetime: one protocol object per TCP connection, created by uvicorn; used on the event loop only.
"""

from __future__ import annotations

import asyncio
import logging

from fpgaas.service.http_direct import DirectHttpToolsProtocol

log = logging.getLogger(__name__)

# Long enough for a request already sent (on the wire, or in a socket buffer on a busy loop) to
# be read; short enough that idle connections do not hold up the exit.
DRAIN_GRACE_S = 0.5


class TimedHttpToolsProtocol(DirectHttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request, and a drain at
    shutdown. Use `timed_protocol(read_timeout_s)` to get a class for `uvicorn.Config(http=...)`."""

    read_timeout_s: float = 10.0  # seconds; set per server by `timed_protocol`
    drain_at_connect = False  # set by the server on connections it takes from the backlog at shutdown

    # Per-connection state: these class-level values are each connection's starting ones (every
    # one is immutable, and assigning it on the instance shadows it), so the protocol needs no
    # constructor of its own. One timer at a time, moved lazily: the hot path only writes
    # `_deadline` (loop time, or None when nothing is awaited from the client); the timer, when it
    # fires early, re-arms.
    _deadline: float | None = None
    _awaiting = ""  # what the client owes by the deadline, for the log
    _timer: asyncio.TimerHandle | None = None
    _in_head = False  # a request has begun and its head is not complete
    _draining = False  # the server is shutting down: answer what arrives, then close

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect("a request", self.read_timeout_s)
        if self.drain_at_connect:
            self.shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            super().shutdown()  # mid-request: answered, then closed
            return
        self._draining = True
        if not self._in_head:  # mid-head, the head deadline runs already
            self._expect("a request before shutdown", DRAIN_GRACE_S)

    # Parser callbacks (called from `data_received`)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._expect("the rest of the request head", self.read_timeout_s)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False
        # For the body; a request without one completes in the same `data_received`.
        self._expect("the request body", self.read_timeout_s)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._expect("the rest of the request body", self.read_timeout_s)

    def on_message_complete(self) -> None:
        self._deadline = None
        super().on_message_complete()

    # The deadline

    def _expect(self, what: str, within_s: float) -> None:
        """The client must deliver `what` within `within_s` seconds, or be disconnected."""
        self._awaiting = what
        self._deadline = deadline = self.loop.time() + within_s
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return  # it fires first, sees the later deadline and re-arms
            self._timer.cancel()
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._deadline is None or self.transport.is_closing():
            return
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
        elif self.flow.read_paused:  # we are not reading: the client is not late
            self._expect(self._awaiting, self.read_timeout_s)
        else:
            peer = "{}:{}".format(*self.client) if self.client else "a client"
            log.debug("closing the connection of %s: %s did not arrive in time", peer, self._awaiting)
            self._deadline = None
            self.transport.close()


def timed_protocol(read_timeout_s: float) -> type[TimedHttpToolsProtocol]:
    """A `TimedHttpToolsProtocol` class whose connections wait at most `read_timeout_s` seconds
    for the rest of a request head or the next chunk of its body."""
    if not read_timeout_s > 0:
        raise ValueError(f"read_timeout_s must be > 0, got {read_timeout_s}")
    return type(
        TimedHttpToolsProtocol.__name__, (TimedHttpToolsProtocol,), {"read_timeout_s": read_timeout_s}
    )
