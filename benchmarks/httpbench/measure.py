"""The measurements: one wrk point, a sequential loop of large requests, the engine's own rate.

Results are plain frozen dataclasses; `report.py` turns them into tables and targets.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
from numpy.typing import NDArray

from benchmarks.httpbench.cases import GRPC_METHOD, Case, grpc_response_problem, response_problem
from benchmarks.httpbench.h2load import h2load_command, run_h2load
from benchmarks.httpbench.metrics import Counters, scrape
from benchmarks.httpbench.procs import Server, pinned, tcp_counters
from benchmarks.httpbench.threads import tree_cpu_s
from benchmarks.httpbench.wrk import WrkError, WrkResult, run_wrk, wrk_command


@dataclass(frozen=True)
class LoadPlan:
    """How long each wrk point runs (whole seconds: wrk's unit), and its per-request timeout."""

    warmup_s: int
    duration_s: int
    timeout_s: int = 5
    load_core: int = 1
    # Pause between the warm-up and the measured run. wrk resets its connections when it stops; 256
    # new ones opened on the same port within ~0.3 s of that got ~200 TCP retransmissions and 2-4 s
    # p99s on every server (a benchmark artifact, gone after a 0.3 s pause).
    settle_s: float = 1.0
    # Every point is measured this many times, in rounds that each go through every server before
    # the next begins, so that a slow spell of the shared machine hits one round of each server
    # alike instead of one server's only run. Rounds after the first warm up for at most 1 s.
    rounds: int = 1

    def round(self, k: int) -> LoadPlan:
        """The plan of round k (0-based): the first warms up in full."""
        return self if k == 0 else replace(self, warmup_s=min(self.warmup_s, 1))


@dataclass(frozen=True)
class Point:
    """One (server, case, connections) run; `problem` says why there are no figures."""

    server: str
    case: str
    connections: int
    wrk: WrkResult | None = None
    counters: Counters | None = None  # fpgaas only: the run's metrics delta
    problem: str = ""
    # Machine-wide TCP counters over the measured run (other users' traffic included): segments
    # retransmitted and connections reset. Retransmissions on loopback stall a request >= 200 ms.
    tcp_retransmits: int | None = None
    tcp_resets: int | None = None
    # Of those retransmissions, the ones a retransmission timeout sent (TcpExt TCPTimeouts): the
    # rest are mostly tail-loss probes, which on a saturated core are spurious and cost nothing.
    tcp_timeouts: int | None = None
    # The p50 of every round of this point, in the order run (this point is the median one).
    round_p50_ms: tuple[float, ...] = ()
    # The server's CPU (user + system, its child processes included) over the measured run, per
    # response: at c=1 a server that is CPU-bound on its core answers in about this much plus
    # the transport, so it says which server's own work a p50 ratio is made of.
    server_cpu_us: float | None = None


def median_round(rounds: Sequence[Point]) -> Point:
    """The round with the median p50 (the lower middle one of an even count), carrying every
    round's p50: its rps, p99, errors and counters come from that one measured run, so they stay
    consistent with each other. A round without figures (the server died, the load generator
    failed) makes the point one without figures, naming the round."""
    if not rounds:
        raise ValueError("no rounds to choose from")
    p50s: list[float] = []
    for k, p in enumerate(rounds):
        if p.wrk is None:
            return (
                p if len(rounds) == 1 else replace(p, problem=f"round {k + 1} of {len(rounds)}: {p.problem}")
            )
        p50s.append(p.wrk.p50_ms)
    ranked = sorted(range(len(rounds)), key=lambda k: p50s[k])
    return replace(rounds[ranked[(len(rounds) - 1) // 2]], round_p50_ms=tuple(p50s))


@dataclass(frozen=True)
class BigRun:
    """Sequential (c=1) requests of `rows` rows each; `seconds` is the wall time of each request."""

    server: str
    label: str
    rows: int
    seconds: tuple[float, ...] = ()
    counters: Counters | None = None
    problem: str = ""

    @property
    def samples_per_s(self) -> float | None:
        total = sum(self.seconds)
        return self.rows * len(self.seconds) / total if total > 0 else None

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.seconds) * 1e3 if self.seconds else None


def measure_point(
    server: Server, case: Case, script: Path, connections: int, plan: LoadPlan, model: str | None
) -> Point:
    """Warm up, then one measured wrk run; `model` set: read fpgaas's counters around the measured run."""

    def wrk(seconds: int) -> WrkResult:
        argv = wrk_command(server.url + case.path, script, connections, seconds, plan.timeout_s)
        return run_wrk(pinned(argv, plan.load_core), wall_timeout_s=seconds + plan.timeout_s + 30)

    return _measured(server, case, connections, plan, model, wrk)


def measure_grpc_point(
    server: Server, target: str, case: Case, body: Path, connections: int, plan: LoadPlan, model: str | None
) -> Point:
    """As `measure_point`, for a gRPC case: h2load (`httpbench/h2load.py`) instead of wrk, against
    the server's gRPC `target`, sending `body` (the framed request). RPCs that failed with a
    grpc-status (which h2load cannot see) are counted as errors from the server's metrics."""
    url = f"http://{target}{case.path}"
    log_file = body.with_suffix(".h2load.log")

    def h2load(seconds: int) -> WrkResult:
        argv = h2load_command(url, body, connections, seconds, log_file)
        return run_h2load(pinned(argv, plan.load_core), log_file, seconds, seconds + plan.timeout_s + 60)

    point = _measured(server, case, connections, plan, model, h2load)
    if point.wrk is not None and point.counters is not None and point.counters.failed_requests > 0:
        failed = round(point.counters.failed_requests)
        return replace(point, wrk=replace(point.wrk, non_2xx=point.wrk.non_2xx + failed))
    return point


def _measured(
    server: Server,
    case: Case,
    connections: int,
    plan: LoadPlan,
    model: str | None,
    load: Callable[[int], WrkResult],
) -> Point:
    """Warm up with `load`, pause, then the measured `load` with fpgaas's counters and the
    machine's TCP counters read around it."""
    if not server.alive():
        return Point(
            server.name, case.name, connections, problem=f"server exited ({server.process.returncode})"
        )
    try:
        if plan.warmup_s > 0:
            load(plan.warmup_s)
            time.sleep(plan.settle_s)
        before = scrape(server.url, model) if model else None
        tcp_before = tcp_counters()
        cpu_before = tree_cpu_s(server.process.pid)
        result = load(plan.duration_s)
        cpu_s = tree_cpu_s(server.process.pid) - cpu_before
        tcp_after = tcp_counters()
        counters = scrape(server.url, model).minus(before) if model and before else None
    except (WrkError, httpx.HTTPError, ProcessLookupError) as exc:
        return Point(server.name, case.name, connections, problem=str(exc).splitlines()[0][:300])
    tcp = (
        {k: tcp_after[k] - tcp_before[k] for k in tcp_after.keys() & tcp_before.keys()}
        if tcp_before and tcp_after
        else {}
    )
    return Point(
        server.name,
        case.name,
        connections,
        result,
        counters,
        tcp_retransmits=tcp.get("RetransSegs"),
        tcp_resets=tcp.get("EstabResets"),
        tcp_timeouts=tcp.get("TCPTimeouts"),
        server_cpu_us=cpu_s * 1e6 / result.requests if result.requests > 0 else None,
    )


def grpc_first_problem(target: str, case: Case) -> str | None:
    """Send the gRPC `case` once; why the answer is wrong, or None."""
    import grpc

    with grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)]) as channel:
        try:
            answer = channel.unary_unary(GRPC_METHOD)(case.body, timeout=30.0)
        except grpc.RpcError as exc:
            return f"gRPC {exc.code()}: {exc.details()}"  # type: ignore[attr-defined]
    return grpc_response_problem(case, answer)


def first_problem(server: Server, case: Case) -> str | None:
    """Send `case` once; why the answer is wrong, or None."""
    try:
        response = httpx.post(
            server.url + case.path,
            content=case.body,
            headers={"content-type": case.content_type},
            timeout=30.0,
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return response_problem(case, response)


def big_requests(server: Server, label: str, case: Case, requests: int, model: str | None) -> BigRun:
    """One warm-up request, then `requests` sequential requests of `case` over one keep-alive connection."""
    headers = {"content-type": case.content_type}
    seconds = []
    try:
        with httpx.Client(base_url=server.url, timeout=120.0) as client:
            problem = response_problem(case, client.post(case.path, content=case.body, headers=headers))
            if problem:
                return BigRun(server.name, label, case.rows, problem=problem)
            before = scrape(server.url, model) if model else None
            for _ in range(requests):
                t0 = time.perf_counter()
                response = client.post(case.path, content=case.body, headers=headers)
                seconds.append(time.perf_counter() - t0)
                problem = response_problem(case, response)
                if problem:
                    return BigRun(server.name, label, case.rows, problem=problem)
            counters = scrape(server.url, model).minus(before) if model and before else None
    except httpx.HTTPError as exc:
        return BigRun(server.name, label, case.rows, problem=f"{type(exc).__name__}: {exc}")
    return BigRun(server.name, label, case.rows, tuple(seconds), counters)


def engine_samples_per_s(artifact: Path, x: NDArray[np.float32], calls: int, core: int) -> float:
    """Samples/s of the artifact's CPU kernel, loaded as the server loads it, on `core` (wall time).

    `calls` timed `run_into` calls on `x` after one warm-up call; this thread is pinned to `core`
    (the server's) for the duration and unpinned afterwards.
    """
    from fpgaas.kernels.artifact import load_artifact
    from fpgaas.kernels.twin import open_cpu_kernel

    kernel = open_cpu_kernel(load_artifact(artifact))
    out = np.empty((len(x), kernel.n_outputs), dtype=np.float32)
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        kernel.run_into(x, out)
        t0 = time.perf_counter()
        for _ in range(calls):
            kernel.run_into(x, out)
        elapsed = time.perf_counter() - t0
    finally:
        os.sched_setaffinity(0, previous)
    return len(x) * calls / elapsed
