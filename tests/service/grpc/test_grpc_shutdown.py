"""SIGTERM with gRPC calls in flight: the gRPC front drains as HTTP does. Every call the server
had accepted is answered correctly, the process exits 0, and the port refuses calls afterwards."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from grpc_live import MODEL, GrpcServer, infer_input, predict_route, samples

from tests.fixtures.servers import serving_process


def test_sigterm_answers_every_accepted_call(grpc_repo: Path) -> None:
    xs = [samples(8000, seed=i) for i in range(12)]  # ~100 device calls: still running at SIGTERM
    # A budget that admits every call: this test is about the drain, not about shedding.
    with serving_process(
        grpc=True, model_repository=grpc_repo, max_queue_rows=1 << 20, max_queue_delay_ms=60_000
    ) as server:
        assert server.grpc_target is not None
        live = GrpcServer(server.url, server.grpc_target)
        expected = [predict_route(live, x) for x in xs]

        async def run() -> list[np.ndarray]:
            async with triton_aio.InferenceServerClient(live.target) as client:
                calls = [asyncio.ensure_future(client.infer(MODEL, [infer_input("input_1", x)])) for x in xs]
                await asyncio.sleep(0.05)  # every call is on the wire
                server.process.send_signal(signal.SIGTERM)
                assert not all(c.done() for c in calls)  # calls were still in progress at SIGTERM
                results = await asyncio.gather(*calls)
            return [r.as_numpy("layer5_out") for r in results]

        got = asyncio.run(run())
        assert server.process.wait(timeout=60) == 0
    for answer, want in zip(got, expected, strict=True):
        np.testing.assert_array_equal(answer, want)
    with grpc.insecure_channel(live.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=1.0)
            connected = True
        except grpc.FutureTimeoutError:
            connected = False
    assert not connected  # nothing listens on the gRPC port any more
