"""An open-loop HTTP/1.1 load generator: requests leave at Poisson arrival times, whatever the
server does, so an overloaded server cannot slow down the load it is offered.

wrk waits for an answer before it sends again on a connection (closed loop: an overloaded server
paces its own load), and hey's rate limit gives each worker its own ticker, all started together,
which turns a steady rate into bursts of one request per worker at once. Here one scheduler draws
exponential gaps (seeded) and sends each request on an idle keep-alive connection; when none is
idle the request waits for one, and its latency still counts from its scheduled time (no
coordinated omission). Answers are parsed with httptools (the parser uvicorn uses).

Idle connections are reused last-in first-out, so a slow phase keeps a few connections warm and
lets the server close the rest, instead of touching every connection just before the server's
keep-alive timeout. A request on a reused connection that the server closed before sending a
byte of answer is sent once more on a fresh connection, with its original due time: that is the
keep-alive race every HTTP/1.1 client meets (the server closed an idle connection as the request
left; RFC 9112 9.3.1 lets an idempotent request be retried), not a request the server dropped.
Every other lost request is reported as NO_ANSWER.

Every answer is checked as it arrives: a 200 must carry exactly the expected body, a 503 a
Retry-After header. Run as a program (pinned to its own core by the caller):

    python -m benchmarks.httpbench.openloop --port P --path /predict?model=m --body B --expect E \\
        --content-type application/octet-stream --rate 800 --seconds 20 --out samples.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import httptools
import uvloop

NO_ANSWER = 0  # the status of a request the connection failed under (reset, closed, timed out)


@dataclass(frozen=True)
class Sample:
    """One request: when it was due, how long its answer took from then, and what it was."""

    due_s: float  # scheduled departure, seconds since the run's start
    latency_s: float  # due time to the answer's last byte (a wait for a free connection included)
    status: int  # HTTP status, or NO_ANSWER
    retry_after: bool  # the answer carried Retry-After
    body_ok: bool  # a 200 with exactly the expected body (False for every other status)


@dataclass(frozen=True)
class OpenLoopRun:
    rate_per_s: float  # offered
    seconds: float  # length of the arrival phase
    connections: int
    reconnects: int  # connections the server closed and the generator opened again
    retried: int  # requests resent once because a reused connection closed before any answer
    samples: tuple[Sample, ...]


def raw_request(host: str, port: int, path: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


# (connection, due time, status, Retry-After present, body): called once per request.
_AnswerSink = Callable[["_Connection", float, int, bool, bytes], None]
# (connection, due time): a request lost to the keep-alive race, to be sent again.
_RetrySink = Callable[["_Connection", float], None]


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, on_answer: _AnswerSink, on_retry: _RetrySink) -> None:
        self._on_answer = on_answer
        self._on_retry = on_retry
        self._sent = 0  # requests this connection has carried, the current one included
        self._answer_started = False  # a byte of the current request's answer has arrived
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._due = 0.0
        self._body = bytearray()
        self._retry_after = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, raw: bytes, due: float) -> None:
        assert self._transport is not None and not self.busy
        self.busy, self._due = True, due
        self._sent += 1
        self._answer_started = False
        self._body.clear()
        self._retry_after = False
        self._transport.write(raw)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self._retry_after = True

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.busy = False
        status = self._parser.get_status_code()
        self._on_answer(self, self._due, status, self._retry_after, bytes(self._body))

    def data_received(self, data: bytes) -> None:
        self._answer_started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail()

    def _fail(self) -> None:
        # Closed first, so that the sinks see a dead connection and do not send on it again.
        if not self.closed.done():
            self.closed.set_result(None)
        if self._transport is not None:
            self._transport.close()
        if self.busy:
            self.busy = False
            if self._sent > 1 and not self._answer_started:
                self._on_retry(self, self._due)
            else:
                self._on_answer(self, self._due, NO_ANSWER, False, b"")


async def open_loop(
    host: str,
    port: int,
    raw: bytes,
    expected: bytes,
    *,
    rate_per_s: float,
    seconds: float,
    connections: int,
    seed: int = 0,
    drain_s: float = 10.0,
) -> OpenLoopRun:
    """Offer `rate_per_s` requests a second (Poisson) for `seconds`, over `connections` keep-alive
    connections; wait up to `drain_s` for the last answers (those still missing: NO_ANSWER)."""
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    idle: deque[_Connection] = deque()
    waiting: deque[float] = deque()  # due times of requests that found no idle connection
    reconnects = retried = 0
    reopening: set[asyncio.Task[None]] = set()  # replacements under way (kept: the loop holds weak refs)
    start = time.perf_counter()

    def reopen() -> None:
        task = loop.create_task(replace())
        reopening.add(task)
        task.add_done_callback(reopening.discard)

    def answered(conn: _Connection, due: float, status: int, retry_after: bool, body: bytes) -> None:
        now = time.perf_counter() - start
        ok = status == 200 and body == expected
        samples.append(Sample(due, now - due, status, retry_after, ok))
        if conn.closed.done():
            reopen()
        elif waiting:
            conn.send(raw, waiting.popleft())
        else:
            idle.append(conn)

    def resend(conn: _Connection, due: float) -> None:
        # First in line, on the fresh connection that replaces the lost one: a fresh connection
        # carries it, so a second loss is reported as NO_ANSWER.
        nonlocal retried
        retried += 1
        waiting.appendleft(due)
        reopen()

    async def connect() -> _Connection:
        _, protocol = await loop.create_connection(lambda: _Connection(answered, resend), host, port)
        return protocol

    async def replace() -> None:
        nonlocal reconnects
        reconnects += 1
        conn = await connect()
        if waiting:
            conn.send(raw, waiting.popleft())
        else:
            idle.append(conn)

    idle.extend(await asyncio.gather(*(connect() for _ in range(connections))))
    rng = random.Random(seed)
    start = time.perf_counter()
    due = rng.expovariate(rate_per_s)
    sent = 0
    while due < seconds:
        now = time.perf_counter() - start
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while idle and idle[-1].closed.done():
            idle.pop()
            reopen()
        if idle:
            idle.pop().send(raw, due)
        else:
            waiting.append(due)
        sent += 1
        due += rng.expovariate(rate_per_s)
    deadline = time.perf_counter() + drain_s
    while len(samples) < sent and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    end = time.perf_counter() - start
    missing = sent - len(samples)
    samples.extend(Sample(end, end, NO_ANSWER, False, False) for _ in range(missing))
    for conn in list(idle):
        conn._fail()
    return OpenLoopRun(rate_per_s, seconds, connections, reconnects, retried, tuple(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--content-type", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--expect", type=Path, required=True, help="the exact body of a 200 answer")
    parser.add_argument("--rate", type=float, required=True, help="requests per second offered")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    raw = raw_request(args.host, args.port, args.path, args.content_type, args.body.read_bytes())
    run = uvloop.run(
        open_loop(
            args.host,
            args.port,
            raw,
            args.expect.read_bytes(),
            rate_per_s=args.rate,
            seconds=args.seconds,
            connections=args.connections,
            seed=args.seed,
        )
    )
    args.out.write_text(json.dumps({**asdict(run), "samples": [asdict(s) for s in run.samples]}))


def read_run(path: Path) -> OpenLoopRun:
    doc = json.loads(path.read_text())
    samples = tuple(Sample(**s) for s in doc.pop("samples"))
    return OpenLoopRun(**doc, samples=samples)


if __name__ == "__main__":
    main()
