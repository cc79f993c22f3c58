"""h2load (nghttp2's HTTP/2 load generator, Debian's `nghttp2-client`) driving the gRPC cases.

wrk speaks HTTP/1.1 only. gRPC is HTTP/2 POSTs of length-prefixed messages, so a C HTTP/2 client
can send the pre-serialized ModelInferRequest as a request body, with the gRPC headers, exactly as
grpcio puts it on the wire: `h2load -c1 -mN` keeps N streams in flight on one TCP connection (one
channel, as tritonclient and SONIC's TritonClient use one per server), each sent when the previous
answer came back: the same closed loop as `wrk -cN`, and C like wrk, so neither protocol's
numbers carry a Python client's cost.

h2load reports latency only as min/mean/max, so the per-request log (`--log-file`: start µs,
HTTP status, µs to the end of the response) gives the percentiles. It sees the HTTP status, not
grpc-status, which travels in the trailers: failed RPCs are counted from the server's own
`nv_inference_request_failure` around the run (`measure.measure_grpc_point`), and every case is
checked once with a real gRPC client before it is loaded (`measure.grpc_first_problem`).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

from benchmarks.httpbench.wrk import WrkError, WrkResult, run_load_tool

H2LOAD = "h2load"
DEBIAN_PACKAGE = "nghttp2-client"


def grpc_frame(message: bytes) -> bytes:
    """One gRPC message on the wire: uncompressed flag, 4-byte big-endian length, the message."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def h2load_command(url: str, body: Path, streams: int, seconds: int, log_file: Path) -> list[str]:
    """One connection, `streams` RPCs in flight, for `seconds`, each request logged to `log_file`."""
    return [
        H2LOAD,
        "-t1",
        "-c1",
        f"-m{streams}",
        f"-D{seconds}",
        f"--data={body}",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"--log-file={log_file}",
        url,
    ]


def parse_log(text: str, duration_s: float) -> WrkResult:
    """wrk's fields from h2load's per-request log: tab-separated start µs, status, µs taken."""
    statuses = []
    micros = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            raise WrkError(f"h2load log line is not start/status/duration: {line[:120]!r}")
        statuses.append(int(fields[1]))
        micros.append(int(fields[2]))
    if not micros:
        raise WrkError("h2load logged no request")
    ms = np.asarray(micros, dtype=np.float64) / 1e3
    p50, p75, p90, p99 = (float(v) for v in np.percentile(ms, [50, 75, 90, 99]))
    # Status -1 marks a stream that never got a response (reset, or cut at the end of the run).
    non_2xx = sum(1 for s in statuses if s != 200 and s != -1)
    return WrkResult(
        requests=len(micros),
        duration_s=duration_s,
        requests_per_s=len(micros) / duration_s,
        p50_ms=p50,
        p75_ms=p75,
        p90_ms=p90,
        p99_ms=p99,
        non_2xx=non_2xx,
        read_errors=sum(1 for s in statuses if s == -1),
    )


def run_h2load(argv: list[str], log_file: Path, seconds: int, wall_timeout_s: float) -> WrkResult:
    """Run h2load (argv from `h2load_command`, possibly wrapped by taskset) and parse its log."""
    log_file.unlink(missing_ok=True)
    run_load_tool(H2LOAD, argv, wall_timeout_s)
    try:
        text = log_file.read_text()
    except OSError as exc:
        raise WrkError(f"h2load wrote no log: {exc}") from exc
    return parse_log(text, float(seconds))


def h2load_version() -> str:
    """h2load's version line for the report, or that it is missing."""
    if shutil.which(H2LOAD) is None:
        return "h2load missing"
    done = subprocess.run([H2LOAD, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip() or done.stderr.strip()
