"""What the report says about the machine and the code, the load generators' presence, and the generated notes."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from benchmarks.httpbench.h2load import h2load_version
from benchmarks.httpbench.measure import Point
from benchmarks.httpbench.procs import Cores
from benchmarks.httpbench.servers import FPGAAS, REPO, kserve_version

RETRANSMITS_WORTH_NOTING = 50
_PACKAGES = ("uvicorn", "fastapi", "pydantic", "httptools", "uvloop", "orjson", "numpy", "pynq")


def ensure_tool(command: str, package: str) -> None:
    """`command` on PATH, installed with apt-get (Debian's `package`) if missing; exits saying so
    otherwise. wrk drives the HTTP cases, h2load (nghttp2-client) the gRPC ones."""
    if shutil.which(command):
        return
    print(f"{command} is missing: installing {package} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (
        ["apt-get", "install", "-y", "-qq", package],
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", package],
    ):
        try:
            subprocess.run(step, env=env, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired):
            break
        if shutil.which(command):
            return
    raise SystemExit(
        f"{command} is not installed and apt-get could not install it: `apt-get install {package}`, then rerun"
    )


def _run(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def code_state() -> str:
    """The commit, and when service/ (the server) last changed, committed or not."""
    head = _run(["git", "log", "-1", "--format=%h %cs"])
    service = _run(["git", "log", "-1", "--format=%h %cs %s", "--", "service"])
    dirty = [line for line in _run(["git", "status", "--porcelain", "--", "service"]).splitlines() if line]
    state = f"commit {head}; service/ last changed in {service}"
    return state + (
        f"; **{len(dirty)} uncommitted change(s) under service/**" if dirty else "; service/ clean"
    )


def versions(kserve_python: Path | None) -> str:
    found = []
    for name in _PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    found.append(f"kserve {kserve_version(kserve_python)}" if kserve_python else "kserve not installed")
    found.append(_run(["wrk", "-v"]).splitlines()[0] if shutil.which("wrk") else "wrk missing")
    found.append(h2load_version())
    return ", ".join(found)


def describe(
    cores: Cores, kserve_python: Path | None, load_before: tuple[float, ...], load_after: tuple[float, ...]
) -> dict[str, str]:
    """The lines of "How it was run"."""
    return {
        "Machine": f"`nproc` {cores.available} ({os.cpu_count()} CPUs), {cpu_model()}, Linux {platform.release()}",
        "Load average (1 min) before / after": f"{load_before[0]:.2f} / {load_after[0]:.2f} (the machine is shared)",
        "Python": platform.python_version(),
        "Versions": versions(kserve_python),
        "Code": code_state(),
    }


def notes(cores: Cores, points: Sequence[Point], extra: Sequence[str]) -> list[str]:
    """The report's notes: method caveats that hold for every run, then what this run showed."""
    out = list(extra)
    out += [
        "The peers compute the network in float32 numpy with random weights (fixed seed); fpgaas computes "
        "the FPGA's fixed-point bits (its CPU engine, the same artifact `make model` builds). The HTTP work "
        "per request is the same; the arithmetic differs slightly.",
        "No server writes a per-request log line: fpgaas's access log is off by default, the uvicorn peers run "
        "with `access_log=False`, and KServe runs with latency logging, its `kserve.trace` timing line and "
        "uvicorn's access log off. KServe hard-codes host 0.0.0.0; `peers/kserve_server.py` makes it listen on "
        "127.0.0.1, and the benchmark checks in /proc/net/tcp that every server listens on 127.0.0.1 only.",
        "Between a point's warm-up and its measured run the benchmark pauses (see the pinning line): wrk "
        "resets its connections when it stops, and 256 new connections opened on the same port within ~0.3 s "
        "got ~200 TCP retransmissions and 2-4 s p99s on every server, peers included (seen while writing "
        "this benchmark; a harness artifact, not a server property).",
        "wrk runs with one thread at every c, 256 included: it is pinned to one core, where a second thread "
        "would only add context switches, and one epoll thread keeps 256 connections busy.",
        "The 65,536-row requests come from an httpx loop in the benchmark process (pinned to core "
        f"{cores.load}), not wrk: c=1, sequential, one keep-alive connection, after one warm-up request; "
        "samples/s is rows x requests / the sum of the request times. The engine figure is "
        "`open_cpu_kernel(load_artifact(...)).run_into` on the same 65,536 rows, in the benchmark process "
        f"pinned to core {cores.server} with one BLAS thread, wall time.",
        "fpgaas-pynq runs the real `pynq` 3.0.1 package on emulated cards (`FPGAAS_PYNQ_EMULATED_CARDS=2`): "
        "the kernel stage is the kernel's CPU twin, not FPGA time. The overhead above the device call is "
        "wrk's p50 minus the mean device call from the metrics (a median minus a mean).",
    ]
    if cores.server == cores.load:
        out.append(
            "Only one CPU was available: servers and wrk shared it, so the figures understate every server."
        )
    stalled = [
        p for p in points if p.wrk is not None and (p.tcp_retransmits or 0) >= RETRANSMITS_WORTH_NOTING
    ]
    if stalled:
        out.append(
            "TCP retransmissions during a measured run (machine-wide /proc/net/snmp RetransSegs). Most "
            "are tail-loss probes, sent when an ACK is late on a saturated core: the data had arrived "
            "(the receiver answers with a DSACK) and nothing waits for them. Only a retransmission "
            "timeout (/proc/net/netstat TCPTimeouts) stalls a request, >= 200 ms on loopback: "
            + "; ".join(
                f"{p.server} {p.case} c={p.connections}: {p.tcp_retransmits:,} retransmitted "
                f"({'?' if p.tcp_timeouts is None else f'{p.tcp_timeouts:,}'} on a timeout), "
                f"{p.tcp_resets:,} connections reset"
                for p in stalled
            )
            + "."
        )
    for p in points:
        if p.server.startswith(FPGAAS) and p.wrk is not None and p.wrk.errors:
            w = p.wrk
            out.append(
                f"{p.server} {p.case} c={p.connections}: {w.non_2xx:,} of {w.requests:,} responses non-2xx, "
                f"{w.socket_errors:,} socket errors (connect {w.connect_errors}, read {w.read_errors}, "
                f"write {w.write_errors}, timeout {w.timeouts})."
            )
    return out
