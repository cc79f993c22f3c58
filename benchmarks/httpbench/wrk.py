"""wrk as the load generator: a Lua script per case, one run per point, its `--latency` report parsed.

wrk 4.1 (Debian's) prints, after `--latency`:

    Running 5s test @ http://127.0.0.1:8000/predict
      1 threads and 64 connections
      Thread Stats   Avg      Stdev     Max   +/- Stdev
        Latency     1.31ms  207.79us   6.26ms   92.03%
        Req/Sec     3.06k    93.81     3.14k    90.91%
      Latency Distribution
         50%    1.29ms
         75%    1.32ms
         90%    1.36ms
         99%    2.26ms
      3355 requests in 5.10s, 747.01KB read
      Socket errors: connect 0, read 0, write 0, timeout 4      (only when one is not 0)
      Non-2xx or 3xx responses: 11                               (only when not 0)
    Requests/sec:   3050.10
    Transfer/sec:    679.12KB

Times carry a unit (us, ms, s, m, h); `parse_wrk` turns them into milliseconds.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_TIME_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+" + _TIME + r"\s*$", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in " + _TIME + ",", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)


class WrkError(RuntimeError):
    """wrk failed, or printed something that is not its report (the message says which)."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in ms; counts are responses (non-2xx included) and socket errors."""

    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int = 0
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        """Non-2xx/3xx responses plus socket errors (connect, read, write, timeout)."""
        return self.non_2xx + self.socket_errors

    @property
    def ok_per_s(self) -> float:
        """2xx/3xx responses per second: the throughput that counts (a fast 503 is not served)."""
        return (self.requests - self.non_2xx) / self.duration_s if self.duration_s > 0 else 0.0


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    """The figures of a `wrk --latency` report (format in the module docstring)."""
    percentiles = {int(p): _ms(v, u) for p, v, u in _PERCENTILE.findall(text)}
    requests = _REQUESTS.search(text)
    rps = _RPS.search(text)
    if set(percentiles) != {50, 75, 90, 99} or requests is None or rps is None:
        raise WrkError(f"not a wrk --latency report:\n{text.strip()[-2000:]}")
    socket = _SOCKET.search(text)
    connect, read, write, timeout = (int(g) for g in socket.groups()) if socket else (0, 0, 0, 0)
    non_2xx = _NON_2XX.search(text)
    return WrkResult(
        requests=int(requests.group(1)),
        duration_s=_ms(requests.group(2), requests.group(3)) / 1e3,
        requests_per_s=float(rps.group(1)),
        p50_ms=percentiles[50],
        p75_ms=percentiles[75],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        connect_errors=connect,
        read_errors=read,
        write_errors=write,
        timeouts=timeout,
    )


def lua_script(body_file: Path, content_type: str) -> str:
    """A wrk script that POSTs the bytes of `body_file` (read once, at start) with `content_type`."""
    return (
        f'local f = assert(io.open("{body_file}", "rb"))\n'
        "wrk.body = f:read('*a')\n"
        "f:close()\n"
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
    )


def wrk_command(
    url: str, script: Path, connections: int, duration_s: int, timeout_s: int, threads: int = 1
) -> list[str]:
    """`wrk` argv for one point: `threads` threads, `connections` keep-alive connections."""
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={timeout_s}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]


def run_wrk(argv: list[str], wall_timeout_s: float) -> WrkResult:
    """Run wrk (argv as `wrk_command` makes it, maybe behind `taskset`) and parse its report."""
    return parse_wrk(run_load_tool("wrk", argv, wall_timeout_s))


def run_load_tool(name: str, argv: list[str], wall_timeout_s: float) -> str:
    """Run load generator `name` (wrk or h2load) to completion; its stdout, or WrkError saying why not."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=wall_timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"{name} did not finish within {wall_timeout_s:.0f} s") from exc
    if done.returncode != 0:
        raise WrkError(f"{name} exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout
