"""A closed-loop gRPC load generator for the gRPC cases, since wrk speaks HTTP/1.1 only.

    python -m benchmarks.httpbench.grpcload --target 127.0.0.1:8001 --body case.bin \
        --connections 64 --duration 5 [--warmup 2] [--rows 1]

`connections` coroutines on one grpc.aio channel (HTTP/2 streams multiplexed on one TCP
connection, as tritonclient and SONIC's TritonClient use one channel per server) each send the
pre-serialized ModelInferRequest in `--body` and wait for its answer before sending the next:
the same closed loop as wrk's `-cN`. The bytes go out as they are (no per-call protobuf
serialization in the client), so the client costs what wrk's Lua script costs: little, but not
nothing. It runs in its own process (pinned by the caller to the load core, like wrk), on uvloop.
It prints one JSON object with wrk's fields (`WrkResult`): requests, duration, rps, p50/75/90/99 in
ms, and non-OK statuses counted as `non_2xx`.

Caveat when comparing with wrk's numbers: this client is Python (grpcio's C core underneath)
where wrk is C; its own per-call cost (~20-40 µs on this machine) is inside every latency it
reports, so gRPC is measured at a slight disadvantage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import uvloop

METHOD = "/inference.GRPCInferenceService/ModelInfer"


async def _run(target: str, body: bytes, connections: int, seconds: float) -> dict[str, float | int]:
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        # No serializers: the request is sent as the bytes given and the answer kept as bytes.
        call = channel.unary_unary(METHOD)
        latencies: list[float] = []
        failures = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal failures
            while (start := time.perf_counter()) < stop_at:
                try:
                    await call(body, timeout=5.0)
                except grpc.aio.AioRpcError:
                    failures += 1
                latencies.append(time.perf_counter() - start)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1e3 if latencies else np.zeros(1)
    p50, p75, p90, p99 = (float(v) for v in np.percentile(ms, [50, 75, 90, 99]))
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "requests_per_s": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": p50,
        "p75_ms": p75,
        "p90_ms": p90,
        "p99_ms": p99,
        "non_2xx": failures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--body", type=Path, required=True, help="a serialized ModelInferRequest")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--settle", type=float, default=0.0, help="pause between warm-up and the run")
    args = parser.parse_args(argv)
    body = args.body.read_bytes()
    if args.warmup > 0:
        uvloop.run(_run(args.target, body, args.connections, args.warmup))
        time.sleep(args.settle)
    print(json.dumps(uvloop.run(_run(args.target, body, args.connections, args.duration))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
