"""The floor under fpgaas's gRPC rows: what grpcio itself costs per call on this machine.

    python benchmarks/grpc_floor.py [--duration 2] [--concurrency 1 8 64]

Starts a grpc.aio server on uvloop (as fpgaas runs it) whose only method answers
`/inference.GRPCInferenceService/ModelInfer` with the request's own bytes (no protobuf parsing, no
fpgaas code), pinned to the first core, and drives it with h2load from the second, exactly as
bench_http drives its `grpc` case (`httpbench/h2load.py`, the same single-row request): the latency
and rate no gRPC server in Python can beat here. Prints one line per concurrency.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.httpbench.cases import GRPC_METHOD, infer_grpc, inputs  # noqa: E402
from benchmarks.httpbench.environment import ensure_tool  # noqa: E402
from benchmarks.httpbench.h2load import DEBIAN_PACKAGE, H2LOAD, grpc_frame, h2load_command, run_h2load  # noqa: E402
from benchmarks.httpbench.procs import Cores, free_port, pinned  # noqa: E402

SERVER = """
import sys, grpc, uvloop

async def main(port):
    server = grpc.aio.server()

    async def echo(request, context):
        return request

    service, method = sys.argv[2].strip("/").split("/")
    handler = grpc.unary_unary_rpc_method_handler(echo)  # bytes in, the same bytes out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()

uvloop.run(main(int(sys.argv[1])))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args(argv)
    ensure_tool(H2LOAD, DEBIAN_PACKAGE)
    cores = Cores.pick()
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="grpc-floor-"))
    body = work / "grpc.body"
    body.write_bytes(grpc_frame(infer_grpc(inputs(1), "inputs").body))
    server = subprocess.Popen(
        pinned([sys.executable, "-c", SERVER, str(port), GRPC_METHOD], cores.server), stdout=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}{GRPC_METHOD}"
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"ready":
            raise SystemExit("the echo server did not start")
        time.sleep(0.5)
        for c in args.concurrency:
            log_file = work / f"c{c}.log"
            warmup = h2load_command(url, body, c, 1, log_file)
            run_h2load(pinned(warmup, cores.load), log_file, 1, 60)
            argv = h2load_command(url, body, c, args.duration, log_file)
            r = run_h2load(pinned(argv, cores.load), log_file, args.duration, args.duration + 60)
            print(
                f"grpc.aio echo, c={c}: {r.requests_per_s:,.0f} calls/s, p50 {r.p50_ms:.3f} ms, "
                f"p99 {r.p99_ms:.3f} ms, errors {r.non_2xx}"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
