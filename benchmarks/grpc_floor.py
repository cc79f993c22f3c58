"""Where fpgaas's gRPC time goes: grpcio's own floor beside fpgaas's gRPC and HTTP, in one run.

    python benchmarks/grpc_floor.py [--duration 3] [--concurrency 1 8 64] [--repository model_repository]

Each server runs pinned to the first core and is driven from the second, one point after another:

- `grpc.aio echo`: a grpc.aio server on uvloop (as fpgaas runs it) whose only method answers
  `/inference.GRPCInferenceService/ModelInfer` with the request's own bytes: no protobuf parsing,
  no fpgaas code. Its latency and rate are the floor no gRPC server in Python goes under here.
- `fpgaas ServerLive`: fpgaas's gRPC front end answering its cheapest RPC (no dataplane): grpcio's
  cost inside fpgaas's process, beside uvicorn on the same loop.
- `fpgaas ModelInfer`: the single-row request bench_http's `grpc` case sends.
- `fpgaas binary /predict` (wrk) and `fpgaas JSON /predict` (wrk): the same row over HTTP/1.1, the
  same server process.

gRPC points are driven by h2load (`httpbench/h2load.py`: N streams on one connection), HTTP ones by
wrk (N connections). Besides calls/s and p50/p99 it reports the server's CPU per call, read from
/proc thread by thread (`httpbench/threads.py`): on the event loop thread and on all the others
(grpc's poller and event-engine threads, device workers). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.httpbench.cases import GRPC_METHOD, Case, make_cases  # noqa: E402
from benchmarks.httpbench.environment import ensure_tool  # noqa: E402
from benchmarks.httpbench.h2load import DEBIAN_PACKAGE, H2LOAD, grpc_frame, h2load_command, run_h2load  # noqa: E402
from benchmarks.httpbench.procs import Cores, free_port, pinned, running  # noqa: E402
from benchmarks.httpbench.servers import FPGAAS, fpgaas_spec  # noqa: E402
from benchmarks.httpbench.threads import CallCpu, ThreadCpu, cpu_per_call  # noqa: E402
from benchmarks.httpbench.wrk import WrkResult, lua_script, run_wrk, wrk_command  # noqa: E402

SERVER_LIVE = "/inference.GRPCInferenceService/ServerLive"

ECHO_SERVER = """
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


@dataclass(frozen=True)
class Row:
    what: str
    connections: int
    result: WrkResult
    cpu: CallCpu


Load = Callable[[int, int], WrkResult]  # (connections or streams, seconds) -> result


def measure(what: str, pid: int, load: Load, connections: int, seconds: int) -> Row:
    """A 1 s warm-up, then `seconds` measured with the server's CPU read around the run."""
    load(connections, 1)
    before = ThreadCpu.read(pid)
    result = load(connections, seconds)
    after = ThreadCpu.read(pid)
    calls = max(1, round(result.requests_per_s * result.duration_s))
    return Row(what, connections, result, cpu_per_call(before, after, calls))


def h2load_load(url: str, body: Path, work: Path, core: int) -> Load:
    def run(streams: int, seconds: int) -> WrkResult:
        log_file = work / "h2load.log"
        argv = h2load_command(url, body, streams, seconds, log_file)
        return run_h2load(pinned(argv, core), log_file, seconds, seconds + 60)

    return run


def wrk_load(url: str, case: Case, work: Path, core: int) -> Load:
    body = work / f"{case.name}.body"
    body.write_bytes(case.body)
    script = work / f"{case.name}.lua"
    script.write_text(lua_script(body, case.content_type))

    def run(connections: int, seconds: int) -> WrkResult:
        return run_wrk(pinned(wrk_command(url, script, connections, seconds, 5), core), seconds + 60)

    return run


def table(rows: list[Row]) -> str:
    lines = [
        "| server, call | c | calls/s | p50 ms | p99 ms | errors | loop thread CPU µs/call | other threads µs/call |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.what} | {r.connections} | {r.result.requests_per_s:,.0f} | {r.result.p50_ms:.3f} | "
            f"{r.result.p99_ms:.3f} | {r.result.errors} | {r.cpu.main_us:.0f} | {r.cpu.others_us:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--repository", type=Path, default=REPO / "model_repository")
    args = parser.parse_args(argv)
    ensure_tool(H2LOAD, DEBIAN_PACKAGE)
    ensure_tool("wrk", "wrk")
    cores = Cores.pick()
    work = Path(tempfile.mkdtemp(prefix="grpc-floor-"))
    cases = make_cases("inputs")
    infer_body = work / "grpc.body"
    infer_body.write_bytes(grpc_frame(cases["grpc"].body))
    live_body = work / "live.body"
    live_body.write_bytes(grpc_frame(b""))
    rows: list[Row] = []

    port = free_port()
    echo = subprocess.Popen(
        pinned([sys.executable, "-c", ECHO_SERVER, str(port), GRPC_METHOD], cores.server),
        stdout=subprocess.PIPE,
    )
    try:
        assert echo.stdout is not None
        if echo.stdout.readline().strip() != b"ready":
            raise SystemExit("the echo server did not start")
        time.sleep(0.5)
        load = h2load_load(f"http://127.0.0.1:{port}{GRPC_METHOD}", infer_body, work, cores.load)
        rows += [measure("grpc.aio echo", echo.pid, load, c, args.duration) for c in args.concurrency]
    finally:
        echo.terminate()
        echo.wait(timeout=10)

    spec = fpgaas_spec(FPGAAS, args.repository, "fpgaas serve, emulated device")
    port = free_port()
    with running(
        spec.name,
        spec.argv(port),
        port=port,
        ready_path=spec.ready_path,
        core=cores.server,
        log_dir=work,
        env=spec.environment(),
    ) as server:
        # `taskset` execs the server, so the pid is fpgaas's own.
        pid = server.process.pid
        grpc_url = f"http://{spec.grpc_target}"
        loads = [
            ("fpgaas gRPC ServerLive", h2load_load(grpc_url + SERVER_LIVE, live_body, work, cores.load)),
            ("fpgaas gRPC ModelInfer", h2load_load(grpc_url + GRPC_METHOD, infer_body, work, cores.load)),
            (
                "fpgaas binary /predict",
                wrk_load(server.url + cases["binary"].path, cases["binary"], work, cores.load),
            ),
            (
                "fpgaas JSON /predict",
                wrk_load(server.url + cases["json"].path, cases["json"], work, cores.load),
            ),
        ]
        for what, load in loads:
            rows += [measure(what, pid, load, c, args.duration) for c in args.concurrency]
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
