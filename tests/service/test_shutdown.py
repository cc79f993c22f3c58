"""SIGTERM: the server stops accepting, answers every request it accepted, closes idle
connections, drains its batchers and exits 0.

Under load, from the clients' side: every request that got an answer got a 200 with the kernel's
numbers or a 503; every other request failed to connect (refused once the listener closed). With
a fresh connection per request nothing else is possible, since any connection the server
accepted carries a request it answers. With keep-alive connections the server also answers a
request that reaches a connection idle at SIGTERM within a short grace, with `Connection: close`,
so clients see the same. "Accepted" includes connections the kernel completed for the server but
it had not yet taken (its listen backlog): they are answered too, not reset.

Stock uvicorn, for comparison, lost requests already sent on connections it had accepted but not
yet read (clients saw `ReadError`) and exited with status -15.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvloop

from fpgaas.service.app import create_app
from fpgaas.service.server import Server, uvicorn_config
from fpgaas.service.settings import Settings
from tests.fixtures.raw_http import read_response
from tests.fixtures.servers import ServerProcess, serving_process

N_INPUTS = 6  # the tiny model of conftest.py: 6 inputs -> 2 outputs
CLIENTS = 32
LOAD_S = 1.0
BOUND_S = 10.0  # generous bound on what takes well under a second
# The graceful timeout with default settings (device_timeout_s 10: 12 s), and margin.
GRACEFUL_BOUND_S = 12 + BOUND_S
PYNQ: dict[str, Any] = {
    "device": "pynq",
    "pynq_emulated_cards": 2,
    "placement": {"tiny": ["pynq-0", "pynq-1"]},
}

Reference = Callable[[np.ndarray], np.ndarray]


def rows(n: int, seed: int = 0) -> np.ndarray:
    """n random float32 rows for the tiny model."""
    return np.random.default_rng(seed).normal(0.0, 4.0, size=(n, N_INPUTS)).astype(np.float32)


@dataclass
class Outcome:
    """One request of the load: its rows, when it started and ended (monotonic s), and what came
    back: a response, or the transport error."""

    x: np.ndarray
    started: float
    ended: float
    response: httpx.Response | None = None
    error: httpx.TransportError | None = None


async def load(url: str, keep_alive: bool, sigterm: Callable[[], None]) -> tuple[list[Outcome], float]:
    """CLIENTS clients each sending requests in a loop; once each has had an answer, LOAD_S more
    of load and then `sigterm()`; each client stops once connecting is refused. Returns every
    outcome and when the signal was sent."""
    outcomes: list[Outcome] = []
    signalled = asyncio.Event()
    warm = asyncio.Event()
    answered: set[int] = set()
    deadline = time.monotonic() + LOAD_S + 3 * BOUND_S

    async def client(index: int, http: httpx.AsyncClient) -> None:
        for n in range(1_000_000):
            x = rows(1 + (index + n) % 8, seed=index * 100_000 + n)
            outcome = Outcome(x, time.monotonic(), 0.0)
            outcomes.append(outcome)
            try:
                outcome.response = await http.post("/predict", json={"inputs": x.tolist()})
            except httpx.TransportError as exc:
                outcome.error = exc
            outcome.ended = time.monotonic()
            if outcome.response is not None:
                answered.add(index)
                if len(answered) == CLIENTS:
                    warm.set()
            if isinstance(outcome.error, httpx.ConnectError) and signalled.is_set():
                return
            if time.monotonic() > deadline:
                return

    headers = {} if keep_alive else {"Connection": "close"}
    limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
    async with AsyncExitStack() as stack:
        # Clients are made first: each builds an SSL context, ~30 ms of this loop's time.
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, timeout=30, limits=limits, headers=headers)
            )
            for _ in range(CLIENTS)
        ]
        tasks = [asyncio.create_task(client(i, http)) for i, http in enumerate(clients)]
        await asyncio.wait_for(warm.wait(), BOUND_S)
        await asyncio.sleep(LOAD_S)
        sent = time.monotonic()
        sigterm()
        signalled.set()
        await asyncio.gather(*tasks)
    return outcomes, sent


@pytest.mark.parametrize("keep_alive", [False, True], ids=["connection-per-request", "keep-alive"])
def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(
    one_model_repo: Path, reference: Reference, keep_alive: bool
) -> None:
    with serving_process(model_repository=one_model_repo, **PYNQ) as server:
        outcomes, sent = asyncio.run(
            load(server.url, keep_alive, lambda: os.kill(server.pid, signal.SIGTERM))
        )
        assert server.process.wait(timeout=GRACEFUL_BOUND_S) == 0

    answered = [o for o in outcomes if o.response is not None]
    failed = [o for o in outcomes if o.error is not None]
    for o in answered:
        assert o.response is not None
        assert o.response.status_code in (200, 503), o.response.text
        if o.response.status_code == 200:
            outputs = np.asarray(o.response.json()["outputs"], dtype=np.float32)
            np.testing.assert_array_equal(outputs, reference(o.x))
    assert [repr(o.error) for o in failed if not isinstance(o.error, httpx.ConnectError)] == []
    assert all(o.ended > sent for o in failed)  # refused only once the server was told to stop
    # The load was real: requests were answered before the signal, and across it.
    assert sum(o.ended < sent for o in answered) >= CLIENTS
    assert [o for o in answered if o.started < sent < o.ended]


def idle_keep_alive_connection(server: ServerProcess, x: np.ndarray) -> socket.socket:
    """A raw connection that has had one request answered and is kept alive."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=BOUND_S)
    sock.sendall(predict_request(x))
    status, headers, _ = read_response(sock)
    assert status == 200 and headers.get("connection") != "close"
    return sock


def predict_request(x: np.ndarray) -> bytes:
    body = json.dumps({"inputs": x.tolist()}).encode()
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def wait_until_refused(server: ServerProcess) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=BOUND_S).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.005)
    pytest.fail("the server kept accepting connections after SIGTERM")


def test_sigterm_closes_idle_keep_alive_connections_and_exits_promptly(one_model_repo: Path) -> None:
    # device_timeout_s=60 makes the graceful timeout 62 s: exiting in BOUND_S shows the server
    # did not wait on the idle connections.
    with serving_process(model_repository=one_model_repo, device_timeout_s=60) as server:
        idle = [idle_keep_alive_connection(server, rows(1, i)) for i in range(8)]
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for sock in idle:
            with sock:
                sock.settimeout(BOUND_S)
                assert sock.recv(1) == b""
        assert server.process.wait(timeout=BOUND_S) == 0
        assert time.monotonic() - signalled < BOUND_S


def test_a_request_reaching_an_idle_connection_just_after_sigterm_is_answered_with_close(
    one_model_repo: Path, reference: Reference
) -> None:
    with serving_process(model_repository=one_model_repo) as server:
        x = rows(3, 7)
        with idle_keep_alive_connection(server, rows(1)) as sock:
            server.process.send_signal(signal.SIGTERM)
            wait_until_refused(server)  # the server has begun to shut down
            sock.sendall(predict_request(x))
            status, headers, body = read_response(sock)
            assert status == 200
            np.testing.assert_array_equal(
                np.asarray(json.loads(body)["outputs"], dtype=np.float32), reference(x)
            )
            assert headers.get("connection") == "close"
            assert sock.recv(1) == b""
        assert server.process.wait(timeout=BOUND_S) == 0


def test_connections_waiting_in_the_listen_backlog_at_shutdown_are_answered(
    one_model_repo: Path, reference: Reference
) -> None:
    # Connections the kernel completed while the server's loop was busy wait in the listen
    # backlog; closing the listener would reset them after their clients sent a request.
    settings = Settings(model_repository=one_model_repo, log_level="warning")
    config = uvicorn_config(settings, create_app(settings))
    config.load()
    server = Server(config)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    address = listener.getsockname()
    inputs = [rows(2, i) for i in range(5)]

    async def start_connect_and_stop() -> list[socket.socket]:
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[listener])
        # Blocking calls: the loop does not run, so the server takes none of these connections.
        queued = [socket.create_connection(address, timeout=BOUND_S) for _ in inputs]
        for sock, x in zip(queued, inputs, strict=True):
            sock.sendall(predict_request(x))
        await server.shutdown(sockets=[listener])
        return queued

    for sock, x in zip(uvloop.run(start_connect_and_stop()), inputs, strict=True):
        with sock:
            status, headers, body = read_response(sock)
            assert status == 200
            np.testing.assert_array_equal(
                np.asarray(json.loads(body)["outputs"], dtype=np.float32), reference(x)
            )
            assert headers.get("connection") == "close"
