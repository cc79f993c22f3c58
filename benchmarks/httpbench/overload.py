"""What an open-loop phase of `bench_overload` shows, and its targets (pure functions).

A phase is one `openloop.OpenLoopRun` plus what the server said about the same seconds: its
device calls (`metrics.Counters`), its refusal counter, and its memory sampled every
`RSS_PERIOD_S`. The targets are deliverable 4 of issue 8, stated as checks on one run.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.httpbench.openloop import NO_ANSWER, OpenLoopRun, Sample

RSS_PERIOD_S = 0.25
FLAT_WINDOW_S = 5.0  # memory is compared between the first and the last this many seconds
FLAT_GROWTH_MIB = 4.0  # more growth than this from the first window to the last is a trend
FAST_REFUSAL_MS = 10.0  # a 503's p99 at most this: refused at once, not after a wait
GOODPUT_SHARE = 0.9  # answers/s under overload against the capacity measured alone
AS_BEFORE_SHARE = 0.05  # goodput after the overload within this share of the goodput before it


@dataclass(frozen=True)
class Phase:
    name: str
    run: OpenLoopRun
    device_us_per_call: float | None  # mean over the phase, from fpgaas's stage histograms
    rows_per_call: float | None
    rejected: float  # fpgaas_rejected_requests_total{reason="overloaded"} over the phase
    rss_mib: tuple[float, ...]  # the server's resident memory, every RSS_PERIOD_S
    queue_rows_max: float  # the largest fpgaas_queue_rows seen (sampled)


@dataclass(frozen=True)
class Summary:
    offered_per_s: float
    sent_per_s: float
    statuses: dict[int, int]
    answered_per_s: float  # 200s a second: the goodput
    ok_p50_ms: float
    ok_p99_ms: float
    ok_max_ms: float
    refused_p50_ms: float
    refused_p99_ms: float
    wrong_bodies: int  # 200s whose body was not the expected bytes
    refusals_without_retry_after: int


def percentile_ms(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1, nearest rank) of seconds, in ms; nan for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1e3


def summarize(run: OpenLoopRun) -> Summary:
    ok = [s.latency_s for s in run.samples if s.status == 200]
    refused = [s.latency_s for s in run.samples if s.status == 503]
    return Summary(
        offered_per_s=run.rate_per_s,
        sent_per_s=len(run.samples) / run.seconds,
        statuses=dict(sorted(Counter(s.status for s in run.samples).items())),
        answered_per_s=len(ok) / run.seconds,
        ok_p50_ms=percentile_ms(ok, 0.5),
        ok_p99_ms=percentile_ms(ok, 0.99),
        ok_max_ms=max(ok, default=float("nan")) * 1e3,
        refused_p50_ms=percentile_ms(refused, 0.5),
        refused_p99_ms=percentile_ms(refused, 0.99),
        wrong_bodies=sum(1 for s in run.samples if s.status == 200 and not s.body_ok),
        refusals_without_retry_after=sum(1 for s in run.samples if s.status == 503 and not s.retry_after),
    )


def windows(samples: Sequence[Sample], seconds: float, width_s: float) -> list[tuple[float, Summary]]:
    """The run cut by due time into windows of `width_s`: (window start, its summary)."""
    out = []
    start = 0.0
    while start < seconds - 1e-9:
        part = tuple(s for s in samples if start <= s.due_s < start + width_s)
        out.append((start, summarize(OpenLoopRun(0.0, width_s, 0, 0, 0, part))))
        start += width_s
    return out


def rss_growth_mib(rss_mib: Sequence[float]) -> float:
    """Median of the last FLAT_WINDOW_S of samples minus the median of the first: the trend."""
    k = max(1, int(FLAT_WINDOW_S / RSS_PERIOD_S))
    if len(rss_mib) < 2 * k:
        raise ValueError(f"{len(rss_mib)} memory samples: a phase needs {2 * k} for a trend")

    def median(values: Sequence[float]) -> float:
        ordered = sorted(values)
        return ordered[len(ordered) // 2]

    return median(rss_mib[-k:]) - median(rss_mib[:k])


@dataclass(frozen=True)
class Verdict:
    target: str
    met: bool
    detail: str


def targets(
    capacity_per_s: float,
    budget_ms: float,
    below: Phase,
    overload: Phase,
    after: Phase,
    baseline_rss_mib: float,
) -> list[Verdict]:
    """Deliverable 4's claims on one run: the overload phase against the capacity measured alone,
    and the phase after it against the same load before it."""
    s = summarize(overload.run)
    call_ms = (overload.device_us_per_call or float("nan")) / 1e3
    bound = budget_ms + call_ms
    growth = rss_growth_mib(overload.rss_mib)
    others = {code: n for code, n in s.statuses.items() if code not in (200, 503)}
    refused = s.statuses.get(503, 0)
    a, b = summarize(after.run), summarize(below.run)
    # Poisson arrivals at half the capacity still bunch up now and then past the budget (a few
    # refusals are right); "as before" is the same goodput, within the spread of such bunching.
    same_goodput = abs(a.answered_per_s - b.answered_per_s) <= AS_BEFORE_SHARE * b.answered_per_s
    verdicts = [
        Verdict(
            "accepted p99 <= budget + one device call",
            s.ok_p99_ms <= bound,
            f"p99 {s.ok_p99_ms:.1f} ms (max {s.ok_max_ms:.1f}) against {budget_ms:g} + {call_ms:.1f} = {bound:.1f} ms",
        ),
        Verdict(
            "memory flat under overload",
            growth <= FLAT_GROWTH_MIB,
            f"RSS {growth:+.1f} MiB from the first {FLAT_WINDOW_S:g} s to the last (at most "
            f"+{FLAT_GROWTH_MIB:g}); peak {max(overload.rss_mib):.0f} MiB against {baseline_rss_mib:.0f} "
            f"before; at most {overload.queue_rows_max:,.0f} rows queued",
        ),
        Verdict(
            f"goodput >= {GOODPUT_SHARE:g}x the capacity measured alone",
            s.answered_per_s >= GOODPUT_SHARE * capacity_per_s,
            f"{s.answered_per_s:,.1f} answers/s against {capacity_per_s:,.1f} "
            f"({s.answered_per_s / capacity_per_s:.2f}x)",
        ),
        Verdict(
            f"refusals fast: 503 p99 <= {FAST_REFUSAL_MS:g} ms, each with Retry-After",
            s.refused_p99_ms <= FAST_REFUSAL_MS and s.refusals_without_retry_after == 0 and refused > 0,
            f"{refused:,} refused, p50 {s.refused_p50_ms:.2f} ms, p99 {s.refused_p99_ms:.2f} ms, "
            f"{s.refusals_without_retry_after} without Retry-After",
        ),
        Verdict(
            "nothing answered wrongly or lost",
            s.wrong_bodies == 0 and not others and overload.rejected == refused,
            f"{s.statuses.get(200, 0):,} answers, {s.wrong_bodies} not bit-exact; other outcomes "
            f"{others or 'none'} ({NO_ANSWER}: no answer); the server counted {overload.rejected:,.0f} "
            f"refusals, the client saw {refused:,}",
        ),
        Verdict(
            "served as before once the overload ends",
            same_goodput and set(a.statuses) <= {200, 503} and a.wrong_bodies == 0 and a.ok_p99_ms <= bound,
            f"{a.answered_per_s:,.1f} answers/s, p99 {a.ok_p99_ms:.1f} ms, {a.statuses} against "
            f"{b.answered_per_s:,.1f}/s, p99 {b.ok_p99_ms:.1f} ms, {b.statuses} before it",
        ),
    ]
    return verdicts
