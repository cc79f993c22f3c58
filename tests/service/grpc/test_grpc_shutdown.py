"""SIGTERM with gRPC calls in flight: the gRPC front drains as HTTP does. Every call the server
had accepted, and every call still on the wire at the signal, is answered correctly, the process
exits 0, and the port refuses calls afterwards.

The signal goes when the server's own metrics say (rows accepted, queued or answered), not after
a fixed sleep, which cannot tell where the calls are."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
import numpy as np
import tritonclient.grpc.aio as triton_aio
from grpc_live import MODEL, GrpcServer, infer_input, predict_route, samples
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.servers import ServerProcess, serving_process


def rows_accepted_and_queued(url: str) -> tuple[float, float]:
    """(rows accepted so far, rows accepted and not yet answered), summed over models and devices."""
    answered = queued = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == "fpgaas_rows_total":
                answered += sample.value
            elif sample.name == "fpgaas_queue_rows":
                queued += sample.value
    return answered + queued, queued


async def until_accepted(url: str, rows: float, *, rows_only: bool = False, timeout_s: float = 30.0) -> float:
    """Wait until the server has accepted `rows` rows since it started; return the rows it then
    still had queued (with `rows_only`, the rows it had accepted)."""
    deadline = time.monotonic() + timeout_s
    while True:
        accepted, queued = await asyncio.to_thread(rows_accepted_and_queued, url)
        if accepted >= rows:
            return accepted if rows_only else queued
        assert time.monotonic() < deadline, f"the server accepted {accepted} of {rows} rows"
        await asyncio.sleep(0.002)


Signal = Callable[[ServerProcess, float, float, list[asyncio.Future[object]]], Awaitable[None]]


def calls_across_sigterm(grpc_repo: Path, xs: list[np.ndarray], signal_when: Signal) -> GrpcServer:
    """Send each of `xs` as a gRPC call at once; `signal_when(server, before, rows, calls)` sends
    the SIGTERM when its moment comes (`before`: rows the server had accepted before the calls,
    `rows`: theirs) and asserts what held then. Every call must come back with the /predict
    route's answer, and the server exit 0. Returns the stopped server's addresses."""
    # A budget that admits every call: these tests are about the drain, not about shedding.
    with serving_process(
        grpc=True, model_repository=grpc_repo, max_queue_rows=1 << 22, max_queue_delay_ms=60_000
    ) as server:
        assert server.grpc_target is not None
        live = GrpcServer(server.url, server.grpc_target)
        expected = [predict_route(live, x) for x in xs]
        before, _ = rows_accepted_and_queued(server.url)  # the rows just answered on /predict

        async def run() -> list[np.ndarray]:
            async with triton_aio.InferenceServerClient(live.target) as client:
                calls = [asyncio.ensure_future(client.infer(MODEL, [infer_input("input_1", x)])) for x in xs]
                await signal_when(server, before, sum(len(x) for x in xs), calls)
                results = await asyncio.gather(*calls)
            return [r.as_numpy("layer5_out") for r in results]

        got = asyncio.run(run())
        assert server.process.wait(timeout=60) == 0
    for answer, want in zip(got, expected, strict=True):
        np.testing.assert_array_equal(answer, want)
    return live


def test_sigterm_answers_every_accepted_call(grpc_repo: Path) -> None:
    async def once_all_accepted_and_some_queued(
        server: ServerProcess, before: float, rows: float, calls: list[asyncio.Future[object]]
    ) -> None:
        still_queued = await until_accepted(server.url, before + rows)
        server.process.send_signal(signal.SIGTERM)
        assert still_queued > 0  # the server had work left at SIGTERM
        assert not all(c.done() for c in calls)  # and the calls were still in progress

    # 12 calls of 2.4 MB (under gRPC's 4 MB limit): far more device work than the scrapes take.
    xs = [samples(100_000, seed=i) for i in range(12)]
    live = calls_across_sigterm(grpc_repo, xs, once_all_accepted_and_some_queued)
    with grpc.insecure_channel(live.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=1.0)
            connected = True
        except grpc.FutureTimeoutError:
            connected = False
    assert not connected  # nothing listens on the gRPC port any more


def test_calls_still_on_the_wire_at_sigterm_are_answered(grpc_repo: Path) -> None:
    """A call whose bytes are still arriving when SIGTERM comes is taken and answered (health
    already says NOT_SERVING), as an HTTP request reaching an idle connection then is."""

    async def once_the_first_rows_are_accepted(
        server: ServerProcess, before: float, rows: float, calls: list[asyncio.Future[object]]
    ) -> None:
        accepted = await until_accepted(server.url, before + 1, rows_only=True)
        server.process.send_signal(signal.SIGTERM)
        assert accepted < before + rows  # calls were still on the wire

    calls_across_sigterm(
        grpc_repo, [samples(50_000, seed=i) for i in range(16)], once_the_first_rows_are_accepted
    )
