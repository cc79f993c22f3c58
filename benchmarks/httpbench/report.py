"""One run's results as markdown (docs/benchmarks/http.md) and a latency-throughput plot (http.png)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.httpbench.cases import GRPC, Case
from benchmarks.httpbench.measure import BigRun, LoadPlan, Point
from benchmarks.httpbench.procs import Cores
from benchmarks.httpbench.servers import FPGAAS, FPGAAS_PYNQ, PEER_NAMES
from benchmarks.httpbench.targets import Target, in_server_overhead_us, index, overhead_us


@dataclass(frozen=True)
class Run:
    """Everything one benchmark run measured, and how it was run."""

    command: str
    started: str  # ISO 8601, local time
    wall_s: float
    quick: bool
    environment: dict[str, str]  # shown in this order
    cores: Cores
    plan: LoadPlan
    concurrency: tuple[int, ...]
    servers: dict[str, tuple[str, tuple[str, ...]]]  # name -> (description, cases)
    unavailable: dict[str, str]  # server -> why it did not run
    cases: dict[str, Case]
    points: tuple[Point, ...]
    big: tuple[BigRun, ...]
    engine_rate: float | None
    engine_note: str
    notes: tuple[str, ...]


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def how_it_was_run(run: Run) -> list[str]:
    plan = run.plan
    lines = [
        f"`{run.command}`{' (quick)' if run.quick else ''}, started {run.started}, {run.wall_s / 60:.1f} min.",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in run.environment.items()]
    lines += [
        f"- Pinning: every server on core {run.cores.server}, wrk on core {run.cores.load} (`taskset -c`); "
        f"`wrk -t1 -cN --latency`, {plan.warmup_s} s warm-up run (discarded), a {plan.settle_s:g} s pause, then "
        f"{plan.duration_s} s measured per point, `--timeout {plan.timeout_s}s`, keep-alive connections."
        + (
            f" Each point is measured in {plan.rounds} rounds, every server in turn before the next round"
            f" (later rounds warm up for {plan.round(1).warmup_s} s); the tables show the round with the"
            " median p50 (its rps, p99, errors and counters are that run's) and every round's p50; the"
            " ratios and targets compare those median rounds."
            if plan.rounds > 1
            else ""
        ),
        "",
        "| server | what it is | cases |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {text} | {', '.join(cases)} |" for name, (text, cases) in run.servers.items()]
    lines += [f"| {name} | **not run**: {why} | - |" for name, why in run.unavailable.items()]
    lines += ["", "| case | route | body | rows |", "|---|---|---:|---:|"]
    lines += [
        f"| {c.name} | `POST {c.path}` ({c.content_type}) | {len(c.body):,} B | {c.rows:,} |"
        for c in run.cases.values()
    ]
    return lines


def case_table(run: Run, case: Case) -> list[str]:
    """One row per (server, c) for `case`; fpgaas rows add the batch size and device time."""
    lines = [
        f"### {case.label} (`{case.name}`)",
        "",
        "| server | c | rps (2xx/s) | p50 ms | p99 ms | errors | server CPU µs/request | rows/device call "
        "| device µs/call | TCP retrans. | p50 ms of each round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in run.points:
        if p.case != case.name:
            continue
        if p.wrk is None:
            lines.append(f"| {p.server} | {p.connections} | not measured: {p.problem} | | | | | | | | |")
            continue
        w, k = p.wrk, p.counters
        errors = f"{w.errors:,}" + (
            f" ({w.non_2xx:,} non-2xx, {w.socket_errors:,} socket)" if w.errors else ""
        )
        lines.append(
            f"| {p.server} | {p.connections} | {w.ok_per_s:,.0f} | {w.p50_ms:.3f} | {w.p99_ms:.3f} | {errors} "
            f"| {_f(p.server_cpu_us, 0)} | {_f(k.rows_per_call if k else None, 1)} "
            f"| {_f(k.device_us_per_call if k else None, 1)} "
            f"| {'-' if p.tcp_retransmits is None else f'{p.tcp_retransmits:,}'} "
            f"| {' / '.join(f'{v:.3f}' for v in p.round_p50_ms) or '-'} |"
        )
    return [*lines, ""]


def ratio_table(run: Run) -> list[str]:
    """fpgaas over each peer on the same case and c: rps ratio / p50 ratio (>1 / <1 favour fpgaas)."""
    points = index(run.points)
    peers = [name for name in PEER_NAMES if name in run.servers]
    lines = [
        "| fpgaas | case | c | " + " | ".join(f"vs {p}: rps x / p50 x" for p in peers) + " |",
        "|---|---|---:|" + "---:|" * len(peers),
    ]
    for ours in (FPGAAS, FPGAAS_PYNQ):
        for case in run.cases:
            for c in run.concurrency:
                mine = points.get((ours, case, c))
                if mine is None or mine.wrk is None:
                    continue
                cells = []
                for peer in peers:
                    theirs = points.get((peer, case, c))
                    if theirs is None or theirs.wrk is None or theirs.wrk.ok_per_s <= 0:
                        cells.append("-")
                    else:
                        rps = mine.wrk.ok_per_s / theirs.wrk.ok_per_s
                        cells.append(f"{rps:.2f} / {mine.wrk.p50_ms / theirs.wrk.p50_ms:.2f}")
                lines.append(f"| {ours} | {case} | {c} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def big_table(run: Run) -> list[str]:
    lines = [
        "| server | requests | rows/request | samples/s | median ms/request | rows/device call | ÷ engine |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in run.big:
        if b.problem:
            lines.append(f"| {b.server} ({b.label}) | not measured: {b.problem} | | | | | |")
            continue
        share = b.samples_per_s / run.engine_rate if run.engine_rate and b.samples_per_s else None
        lines.append(
            f"| {b.server} ({b.label}) | {len(b.seconds)} | {b.rows:,} | {_f(b.samples_per_s, 0)} | {_f(b.median_ms, 1)} "
            f"| {_f(b.counters.rows_per_call if b.counters else None, 0)} | {_f(share)} |"
        )
    lines.append(
        f"| engine in the benchmark process ({run.engine_note}) | | | {_f(run.engine_rate, 0)} | | | 1.00 |"
    )
    return [*lines, ""]


def overhead_table(run: Run) -> list[str]:
    """fpgaas on PYNQ at c=1: wrk p50 minus the mean device call (from the metrics delta), and
    fpgaas's own mean time per request (its request histogram) minus the mean device call."""
    points = index(run.points)
    lines = [
        "| server | case | p50 µs | mean device call µs | p50 minus mean device call µs "
        "| in fpgaas: mean request µs | in fpgaas minus mean device call µs |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for server in (FPGAAS_PYNQ, FPGAAS):
        for case in run.cases:
            p = points.get((server, case, 1))
            if p is None or p.wrk is None or p.counters is None:
                continue
            lines.append(
                f"| {server} | {case} | {p.wrk.p50_ms * 1e3:.0f} | {_f(p.counters.device_us_per_call, 1)} "
                f"| {_f(overhead_us(p), 0)} | {_f(p.counters.request_us, 0)} | {_f(in_server_overhead_us(p), 0)} |"
            )
    return [*lines, ""]


def targets_table(targets: Sequence[Target]) -> list[str]:
    lines = ["| target | result | measured |", "|---|---|---|"]
    lines += [f"| {t.text} | **{t.verdict}** | {t.measured} |" for t in targets]
    return [*lines, ""]


GRPC_NOTES = (
    "The `grpc` cases are KServe v2 over gRPC (Triton's `ModelInfer`, what CMSSW's SONIC sends) on fpgaas's",
    "gRPC port: the rows in `raw_input_contents`, FP32 back in `raw_output_contents`. wrk speaks HTTP/1.1",
    "only, so they are driven by h2load (nghttp2's C HTTP/2 load generator, `benchmarks/httpbench/h2load.py`):",
    "the pre-serialized request as a gRPC-framed body, N streams in flight on one TCP connection (one",
    "channel, as tritonclient and SONIC use one per server), each sent when the previous answer came back:",
    "the same closed loop as `wrk -cN`, from wrk's core, and C like wrk. Percentiles come from h2load's",
    "per-request log; errors add the server's `nv_inference_request_failure` over the run (h2load sees the",
    "HTTP status, not grpc-status). grpcio itself costs more per call than httptools: a trivial grpc.aio",
    "echo server (`benchmarks/grpc_floor.py`, no fpgaas code) gives the floor: see",
    '"Where the gRPC time goes" below.',
)


def markdown(run: Run, targets: Sequence[Target]) -> str:
    lines = [
        "# HTTP serving: fpgaas against its peers, in one run",
        "",
        "`benchmarks/bench_http.py` (`make bench`) starts fpgaas and three peers serving the same network shape",
        "(the muon pT regressor, 27 → 35, 20, 25, 40, 20, 15 → 1), drives each with wrk from another core,",
        "and reads fpgaas's own metrics for the batch size it reached and the time its device calls took.",
        "",
        "## How it was run",
        "",
        *how_it_was_run(run),
        "",
        "## Results",
        "",
        "rps counts 2xx responses per second (wrk's `Requests/sec` also counts non-2xx ones); p50 and p99 are",
        "wrk's latency percentiles; errors are non-2xx/3xx responses plus socket errors (connect, read, write,",
        "timeout). For fpgaas, rows/device call is Δ`fpgaas_batch_size_sum` / Δ`fpgaas_batch_size_count` and",
        'device µs/call is Δ`fpgaas_device_stage_seconds_sum` (three stages) / Δ`_count{stage="kernel"}`, both',
        "over the measured run. Server CPU µs/request is the server process's CPU time (user + system, its",
        "child processes included, /proc) over the measured run, per response. TCP retrans. is the machine's",
        "count of retransmitted TCP segments during the measured run (/proc/net/snmp, other users' traffic",
        "included). Most are tail-loss probes, spurious on a saturated core (the data had arrived) and free; the",
        "few sent on a retransmission timeout stall a request by at least 200 ms on loopback, and the notes",
        "count them.",
        "",
        "![p50 and p99 latency against throughput](http.png)",
        "",
    ]
    for case in run.cases.values():
        lines += case_table(run, case)
    lines += ["### fpgaas against each peer (same case, same c)", "", *ratio_table(run)]
    lines += ["### 65,536-row binary requests (c=1, sequential, httpx)", "", *big_table(run)]
    lines += ["### Per-request overhead above the device call (c=1)", "", *overhead_table(run)]
    if any(c.content_type == GRPC for c in run.cases.values()):
        lines += ["## gRPC", "", *GRPC_NOTES, ""]
    lines += ["## Targets", "", *targets_table(targets)]
    lines += ["## Notes", "", *[f"- {note}" for note in run.notes], ""]
    return "\n".join(lines)


def plot(run: Run, png: Path) -> None:
    """p50 (top) and p99 (bottom) latency against 2xx throughput, one panel per case, log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    cases = list(run.cases)
    fig, axes = plt.subplots(2, len(cases), figsize=(4.6 * len(cases), 8), squeeze=False)
    palette = [plt.get_cmap("tab10")(i) for i in range(10)]
    colors = {server: palette[i % 10] for i, server in enumerate(run.servers)}
    for col, case in enumerate(cases):
        for row, (attr, title) in enumerate((("p50_ms", "p50"), ("p99_ms", "p99"))):
            ax = axes[row][col]
            for server in run.servers:
                pts = [
                    p
                    for p in run.points
                    if p.server == server and p.case == case and p.wrk and p.wrk.ok_per_s > 0
                ]
                if not pts:
                    continue
                xs = [p.wrk.ok_per_s for p in pts if p.wrk]
                ys = [getattr(p.wrk, attr) for p in pts]
                ax.plot(xs, ys, marker="o", color=colors[server], label=server)
                for p, x, y in zip(pts, xs, ys, strict=True):
                    ax.annotate(
                        str(p.connections),
                        (x, y),
                        fontsize=7,
                        color="0.35",
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):  # labels at 1, 2, 5 x 10^k, plain numbers (minor ones overlap)
                axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
                axis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{run.cases[case].label}: {title}", fontsize=10)
            ax.set_xlabel("throughput, 2xx responses/s")
            ax.set_ylabel(f"{title} latency, ms")
            ax.grid(True, which="both", alpha=0.25)
            if row == 0:
                ax.legend(fontsize=7)
    fig.suptitle("Latency against throughput; point labels are wrk connections (c)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
