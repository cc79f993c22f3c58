"""Build-queue metrics, read from the builds table when `/metrics` is scraped.

    fpgaas_build_queue_up                          1 if the last read of the table worked, else 0
                                                   (and none of the families below)
    fpgaas_build_queue_builds{state}               builds queued, and running, now
    fpgaas_build_queue_oldest_seconds              age of the oldest queued build (0: none queued)
    fpgaas_builds_finished_total{state}            builds that ended succeeded, failed or cancelled
    fpgaas_build_duration_seconds{state}           histogram of finished builds' durations (their
                                                   last attempt, started -> finished; a build
                                                   cancelled in the queue has none)

Why the server reads the table rather than the worker counting: the table is the one place every
transition lands (a worker that dies cannot report its build's requeue; a build cancelled in the
queue never reaches a worker), workers are scaled to zero and replaced while the table stays,
and the counters never reset: they are counts of rows, so a restarted server carries on where
the previous one stood. The price: every server replica with the management API reports the
same numbers, so dashboards and rules aggregate them with `max`, never `sum`.

Cost: one aggregate query per scrape (`BuildTable.statistics`), bounded by `READ_TIMEOUT_S`.
Not thread-safe: `exposition` runs on the event loop serving `/metrics`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from fpgaas.kernels.builds.database import BuildStatistics, BuildTable
from fpgaas.kernels.builds.records import BuildState

log = logging.getLogger(__name__)

# 1 s .. 1 day: an emulation build takes seconds to a minute, v++ synthesis hours.
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
    3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
)  # fmt: skip
READ_TIMEOUT_S: Final = 2.0  # a slow database must not hold the scrape past Prometheus' timeout
WAITING: Final = (BuildState.QUEUED, BuildState.RUNNING)
FINISHED: Final = (BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED)


class BuildMetrics:
    """The build-queue families of one server (see the module docstring)."""

    def __init__(self, table: BuildTable) -> None:
        self._table = table

    async def exposition(self) -> bytes:
        """The families in Prometheus' text format, from a fresh read of the table."""
        try:
            stats: BuildStatistics | None = await asyncio.wait_for(
                self._table.statistics(DURATION_BUCKETS), READ_TIMEOUT_S
            )
        except Exception as exc:  # a database outage must not fail the whole scrape
            log.warning("build metrics: reading the builds table failed: %s", exc)
            stats = None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(stats))
        return generate_latest(registry)


class _Snapshot(Collector):
    """A prometheus_client collector yielding one `BuildStatistics` (None: the read failed)."""

    def __init__(self, stats: BuildStatistics | None) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("fpgaas_build_queue_up", "1 if the builds table could be read, else 0")
        up.add_metric([], 0.0 if self._stats is None else 1.0)
        if self._stats is None:
            yield up
            return
        stats = self._stats
        depth = GaugeMetricFamily(
            "fpgaas_build_queue_builds", "builds queued, and running, now", labels=["state"]
        )
        for state in WAITING:
            depth.add_metric([state.value], float(stats.of(state).builds))
        oldest = GaugeMetricFamily(
            "fpgaas_build_queue_oldest_seconds", "age of the oldest queued build (0 when none is queued)"
        )
        queued = stats.of(BuildState.QUEUED)
        oldest.add_metric([], queued.oldest_s if queued.builds else 0.0)
        finished = CounterMetricFamily(
            "fpgaas_builds_finished", "builds that ended, by their final state", labels=["state"]
        )
        durations = HistogramMetricFamily(
            "fpgaas_build_duration_seconds",
            "duration of finished builds (last attempt, started to finished)",
            labels=["state"],
        )
        names = [floatToGoString(b) for b in stats.bounds] + ["+Inf"]
        for state in FINISHED:
            of = stats.of(state)
            finished.add_metric([state.value], float(of.builds))
            counts = [float(n) for n in of.le_counts] + [float(of.timed)]
            durations.add_metric([state.value], list(zip(names, counts, strict=True)), of.seconds)
        yield from (up, depth, oldest, finished, durations)
