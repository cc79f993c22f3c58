"""The issue's targets, evaluated on one run's points: PASS, MISS, or not evaluated (and why).

They are reported, never asserted: a noisy shared machine can miss a target the code meets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from benchmarks.httpbench.measure import BigRun, Point
from benchmarks.httpbench.servers import BARE, FASTAPI, FPGAAS, FPGAAS_BIG, FPGAAS_PYNQ, KSERVE

Key = tuple[str, str, int]  # server, case, connections
SINGLE_ROW = ("json", "v2", "binary")


@dataclass(frozen=True)
class Target:
    """One target: `passed` None means it could not be evaluated (`measured` says why)."""

    text: str
    passed: bool | None
    measured: str

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]


def index(points: Sequence[Point]) -> dict[Key, Point]:
    """Measured points by (server, case, connections); failed points are left out."""
    return {(p.server, p.case, p.connections): p for p in points if p.wrk is not None}


def _ratio(
    text: str, ours: float | None, theirs: float | None, limit: float, at_most: bool, unit: str
) -> Target:
    if ours is None or theirs is None or theirs <= 0:
        return Target(text, None, "not measured")
    r = ours / theirs
    return Target(
        text, r <= limit if at_most else r >= limit, f"{r:.2f}x ({ours:,.{unit}} vs {theirs:,.{unit}})"
    )


def _p50(points: dict[Key, Point], key: Key) -> float | None:
    p = points.get(key)
    return p.wrk.p50_ms if p and p.wrk else None


def _rps(points: dict[Key, Point], key: Key) -> float | None:
    p = points.get(key)
    return p.wrk.ok_per_s if p and p.wrk else None


def _cpu(points: dict[Key, Point], key: Key) -> float | None:
    p = points.get(key)
    return p.server_cpu_us if p else None


def latency_targets(points: dict[Key, Point]) -> list[Target]:
    """c=1 single-row JSON: fpgaas p50 against the bare-ASGI ceiling and naive FastAPI; the
    first also gives the two servers' CPU per request, which a CPU-bound c=1 p50 follows."""
    ours = _p50(points, (FPGAAS, "json", 1))
    against_bare = _ratio(
        "c=1 JSON /predict: p50 <= 1.3x bare ASGI's", ours, _p50(points, (BARE, "json", 1)), 1.3, True, "3f"
    )
    cpu_ours, cpu_bare = _cpu(points, (FPGAAS, "json", 1)), _cpu(points, (BARE, "json", 1))
    if against_bare.passed is not None and cpu_ours and cpu_bare:
        against_bare = replace(
            against_bare,
            measured=f"{against_bare.measured}; server CPU per request {cpu_ours / cpu_bare:.2f}x "
            f"({cpu_ours:,.0f} vs {cpu_bare:,.0f} µs)",
        )
    return [
        against_bare,
        _ratio(
            "c=1 JSON /predict: p50 <= 0.5x naive FastAPI's",
            ours,
            _p50(points, (FASTAPI, "json", 1)),
            0.5,
            True,
            "3f",
        ),
    ]


def throughput_targets(points: dict[Key, Point]) -> list[Target]:
    """c=64: throughput against the ceiling and KServe; p99 <= 5 ms."""
    out = [
        _ratio(
            "c=64 JSON /predict: rps >= 0.8x bare ASGI's",
            _rps(points, (FPGAAS, "json", 64)),
            _rps(points, (BARE, "json", 64)),
            0.8,
            False,
            "0f",
        ),
        _ratio(
            "c=64 v2 JSON: rps >= 5x KServe's",
            _rps(points, (FPGAAS, "v2", 64)),
            _rps(points, (KSERVE, "v2", 64)),
            5.0,
            False,
            "0f",
        ),
    ]
    for case in SINGLE_ROW:
        p = points.get((FPGAAS, case, 64))
        text = f"c=64 {case}: p99 <= 5 ms"
        out.append(
            Target(text, p.wrk.p99_ms <= 5.0, f"{p.wrk.p99_ms:.2f} ms")
            if p and p.wrk
            else Target(text, None, "not measured")
        )
    return out


def overload_targets(points: dict[Key, Point], cases: Sequence[str]) -> list[Target]:
    """c=256: no errors and p99 <= 20 ms, per case."""
    out = []
    for case in cases:
        p = points.get((FPGAAS, case, 256))
        text = f"c=256 {case}: no errors, p99 <= 20 ms"
        if p is None or p.wrk is None:
            out.append(Target(text, None, "not measured"))
            continue
        w = p.wrk
        out.append(
            Target(text, w.errors == 0 and w.p99_ms <= 20.0, f"{w.errors} errors, p99 {w.p99_ms:.2f} ms")
        )
    return out


def front_end_targets(points: dict[Key, Point], concurrency: Sequence[int]) -> list[Target]:
    """v2 JSON and single-row binary no more than 15% worse than JSON /predict (rps and p50), every c.

    "Within 15%" is read one-sided: being faster than JSON /predict is not a miss.
    """
    out = []
    for case in ("v2", "binary"):
        text = f"{case} within 15% of JSON /predict (rps and p50) at c={', '.join(map(str, concurrency))}"
        rps, p50 = [], []
        for c in concurrency:
            mine, json = points.get((FPGAAS, case, c)), points.get((FPGAAS, "json", c))
            if mine and json and mine.wrk and json.wrk and json.wrk.ok_per_s > 0:
                rps.append((mine.wrk.ok_per_s / json.wrk.ok_per_s, c))
                p50.append((mine.wrk.p50_ms / json.wrk.p50_ms, c))
        if len(rps) < len(concurrency):
            out.append(Target(text, None, "not measured at every concurrency"))
            continue
        worst_rps, worst_p50 = min(rps), max(p50)
        ok = worst_rps[0] >= 0.85 and worst_p50[0] <= 1.15
        out.append(
            Target(
                text,
                ok,
                f"worst rps ratio {worst_rps[0]:.2f} (c={worst_rps[1]}), worst p50 ratio {worst_p50[0]:.2f} (c={worst_p50[1]})",
            )
        )
    return out


def big_request_targets(big: Sequence[BigRun], engine_rate: float | None) -> list[Target]:
    """65,536-row binary requests: fpgaas samples/s >= 50% of the engine's in-process samples/s."""
    out = []
    for run in big:
        if run.server not in (FPGAAS, FPGAAS_BIG):
            continue
        text = f"{run.rows:,}-row binary ({run.label}): samples/s >= 0.5x the engine's"
        if engine_rate is None or run.samples_per_s is None:
            out.append(Target(text, None, run.problem or "engine not measured"))
            continue
        r = run.samples_per_s / engine_rate
        out.append(
            Target(text, r >= 0.5, f"{r:.2f}x ({run.samples_per_s:,.0f} vs {engine_rate:,.0f} samples/s)")
        )
    return out


def overhead_us(point: Point | None) -> float | None:
    """wrk's p50 minus the mean device call (all three stages), µs; needs one call per request."""
    if point is None or point.wrk is None or point.counters is None:
        return None
    device = point.counters.device_us_per_call
    return point.wrk.p50_ms * 1e3 - device if device is not None else None


def in_server_overhead_us(point: Point | None) -> float | None:
    """fpgaas's own mean time per request (its request histogram) minus the mean device call,
    µs: the overhead fpgaas's code adds, without the HTTP transport every server pays."""
    if point is None or point.counters is None:
        return None
    request, device = point.counters.request_us, point.counters.device_us_per_call
    return request - device if request is not None and device is not None else None


def pynq_targets(points: dict[Key, Point]) -> list[Target]:
    """fpgaas on emulated PYNQ cards, c=1: per-request overhead above the device call <= 100 µs,
    read two ways: from wrk's p50 (the loopback TCP and HTTP parsing every server pays included)
    and from fpgaas's own request time (what its code adds)."""
    readings = (
        ("p50 minus mean device call", overhead_us),
        ("fpgaas's mean request time minus mean device call (in-server)", in_server_overhead_us),
    )
    out = []
    for label, reading in readings:
        for case in SINGLE_ROW:
            overhead = reading(points.get((FPGAAS_PYNQ, case, 1)))
            text = f"PYNQ c=1 {case}: {label} <= 100 µs"
            out.append(
                Target(text, None, "not measured")
                if overhead is None
                else Target(text, overhead <= 100.0, f"{overhead:.0f} µs")
            )
    return out


def grpc_targets(points: dict[Key, Point]) -> list[Target]:
    """Issue 10: single-row gRPC p50 at c=1 no worse than HTTP's (single-row binary /predict, the
    fastest HTTP route, and v2 JSON, its REST counterpart). gRPC is driven by h2load, HTTP by wrk:
    both C clients on the same core."""
    ours = _p50(points, (FPGAAS, "grpc", 1))
    return [
        _ratio(
            f"c=1 single-row gRPC: p50 <= {case} p50 (HTTP)",
            ours,
            _p50(points, (FPGAAS, case, 1)),
            1.0,
            True,
            "3f",
        )
        for case in ("binary", "v2")
    ]


def evaluate(
    points: Sequence[Point],
    big: Sequence[BigRun],
    engine_rate: float | None,
    cases: Sequence[str],
    concurrency: Sequence[int],
) -> list[Target]:
    """Every target, in the issue's order."""
    by_key = index(points)
    return [
        *latency_targets(by_key),
        *throughput_targets(by_key),
        *overload_targets(by_key, cases),
        *front_end_targets(by_key, concurrency),
        *big_request_targets(big, engine_rate),
        *pynq_targets(by_key),
        *grpc_targets(by_key),
    ]
