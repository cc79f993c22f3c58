"""Where a single-row JSON /predict spends its server-side time, without the network.

    python benchmarks/profile_hot_path.py [--repository model_repository] [--requests 3000]

Drives the ASGI apps in-process with one canned request (no sockets, no HTTP parsing: those cost
the same in every uvicorn-based server) and reports CPU µs per request, best of 5 rounds:

- fpgaas's whole app (front door -> dataplane -> batcher -> device -> answer);
- the bare-ASGI peer of `bench_http` (orjson + numpy float32 forward pass per request);
- the device call alone (`LoadedKernel.run_into` of one row: the bit-exact fixed-point engine);

then a cProfile of fpgaas's requests grouped by module, as shares of its time (cProfile inflates
small calls, so read the shares, not the µs). Thread CPU time is used because the machine is
shared: it does not count time other processes take.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import uvloop

ROW = "[0.8,1.1,1.3,0.3,0.5,0.2,0,0,0,0,0,0,1,1,0,0,1,1,1,1,1,1,1,1,0,1,1.8]"
BODY = ('{"model": "muon-pt", "inputs": [' + ROW + "]}").encode()
# The same row as a v2 JSON infer request (the bare-ASGI peer answers it too).
V2_BODY = (
    '{"inputs": [{"name": "inputs", "shape": [1, 27], "datatype": "FP32", "data": ' + ROW + "}]}"
).encode()
CASES = {"json": ("/predict", BODY), "v2": ("/v2/models/muon-pt/infer", V2_BODY)}
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

# Module groups of the cProfile breakdown: the first pattern found in a function's file wins.
GROUPS = (
    ("device call (bit-exact engine, buffers)", ("kernels/engine", "kernels/twin", "devices/")),
    ("metrics and Triton statistics", ("instruments", "metrics", "statistics", "prometheus_client")),
    ("batcher", ("batching",)),
    ("JSON decode, rows, encode", ("payload", "orjson")),
    ("dataplane (resolve, check_rows)", ("dataplane",)),
    ("front door, body read, answer", ("front", "asgi", "predict")),
    ("numpy internals", ("numpy",)),
)


async def _drive(app: App, n: int, concurrency: int = 1, case: str = "json") -> float:
    """CPU µs per request of n requests (after 300 warm-up ones) from `concurrency` concurrent
    clients, best of 5 rounds."""
    path, body = CASES[case]
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def client(requests: int) -> None:
        for _ in range(requests):
            await app(dict(scope), receive, send)

    async def round_of(requests: int) -> None:
        if concurrency == 1:
            await client(requests)
        else:
            await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))

    await round_of(300)
    if sent[0]["status"] != 200:
        raise SystemExit(f"the app answered {sent[0]['status']}: {sent[1]['body'][:300]!r}")
    best = float("inf")
    # With concurrency, batches of more than 16 rows run on a device worker thread: the process's
    # CPU time counts it too (and, like thread time, not other processes' load).
    clock = time.thread_time if concurrency == 1 else time.process_time
    for _ in range(5):
        start = clock()
        await round_of(n)
        best = min(best, (clock() - start) / n * 1e6)
        sent.clear()
    return best


def _kernel_us(repository: Path, trusted: list[Path] | None, n: int) -> float:
    from fpgaas.kernels.artifact import load_artifact
    from fpgaas.service.devices.emulated import EmulatedDevice

    kernel = EmulatedDevice().load(load_artifact(repository / "muon-pt" / "1"), 1024)
    x = np.asarray([[float(v) for v in ROW.strip("[]").split(",")]], dtype=np.float32)
    out = np.empty((1, kernel.n_outputs), dtype=np.float32)
    best = float("inf")
    for _ in range(5):
        start = time.thread_time()
        for _ in range(n):
            kernel.run_into(x, out)
        best = min(best, (time.thread_time() - start) / n * 1e6)
    kernel.close()
    return best


def _groups(profile: cProfile.Profile) -> list[tuple[str, float]]:
    stats = pstats.Stats(profile)
    by_group: Counter[str] = Counter()
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _, function), (_, _, tottime, _, _) in raw.items():
        where = f"{filename}:{function}"
        name = next((g for g, patterns in GROUPS if any(p in where for p in patterns)), "everything else")
        by_group[name] += tottime
    total = sum(by_group.values())
    return [(name, share / total) for name, share in by_group.most_common()]


async def _main(args: argparse.Namespace) -> None:
    from benchmarks.peers.bare_asgi import create_app as bare_app
    from benchmarks.peers.network import muon_network
    from fpgaas.service.app import create_app
    from fpgaas.service.settings import Settings

    extra: dict[str, Any] = {"trusted_keys": args.trusted_keys} if args.trusted_keys else {}
    settings = Settings(model_repository=args.repository, grpc_port=0, **extra)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        ours = await _drive(app, args.requests, args.concurrency, args.case)
        bare = await _drive(bare_app(muon_network()), args.requests, args.concurrency, args.case)
        kernel = _kernel_us(args.repository, args.trusted_keys, args.requests)
        profile = cProfile.Profile()
        profile.enable()
        await _drive(app, args.requests // 3, args.concurrency, args.case)
        profile.disable()
    print("| what | CPU µs per request |\n|---|---:|")
    print(f"| fpgaas app, {args.case}, 1 row, {args.concurrency} client(s) | {ours:.1f} |")
    print(f"| bare-ASGI peer, same request | {bare:.1f} |")
    print(f"| fpgaas device call alone (run_into, 1 row) | {kernel:.1f} |")
    print(f"| fpgaas app minus its device call | {ours - kernel:.1f} |")
    print("\n| fpgaas, cProfile by module | share of its time |\n|---|---:|")
    for name, share in _groups(profile):
        print(f"| {name} | {share * 100:.1f} % |")
    if args.top:
        print()
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--trusted-keys", type=Path, action="append", help="public key file or directory")
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument(
        "--case", choices=sorted(CASES), default="json", help="single-row JSON /predict or v2 infer"
    )
    parser.add_argument("--concurrency", type=int, default=1, help="concurrent in-process clients")
    parser.add_argument("--top", type=int, default=0, help="also print the N functions with most own time")
    uvloop.install()
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
