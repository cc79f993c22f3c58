"""Prometheus metrics of one server, registered on that app's own `CollectorRegistry`.

All durations are in seconds; the buckets span 10 µs .. 10 s log-spaced because a kernel call
takes microseconds while a queued request under load waits milliseconds to seconds.
Thread-safe. The families are `service.instruments` ones (cheap enough for the hot path),
exported through prometheus_client; their children are bound once and reused.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from fpgaas.service.devices.base import StageTimes
from fpgaas.service.instruments import Counter, Gauge, Histogram, HistogramChild, ValueChild

# 10 µs .. 10 s, three buckets per decade.
SECONDS_BUCKETS: tuple[float, ...] = (
    *(round(m * 10.0**e, 9) for e in range(-5, 1) for m in (1.0, 2.0, 5.0)),
    10.0,
)
# Rows per device call: powers of two up to 64 Ki rows.
ROWS_BUCKETS: tuple[float, ...] = tuple(float(1 << k) for k in range(17))


class ServiceMetrics:
    """Every metric family the server exports, bound to one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.request_duration = Histogram(
            "fpgaas_request_duration_seconds",
            "HTTP request wall time, from the first byte received to the answer sent",
            ["route", "model", "status"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "fpgaas_queue_wait_seconds",
            "time a request waited in the batcher before its first rows went to the device",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "fpgaas_batch_size", "rows per device call", ["model"], buckets=ROWS_BUCKETS, registry=registry
        )
        self.device_stage = Histogram(
            "fpgaas_device_stage_seconds",
            "wall time of one stage of a device call",
            ["model", "device", "stage"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.inflight = Gauge("fpgaas_inflight_requests", "HTTP requests being served", [], registry).labels()
        self.queue_rows = Gauge(
            "fpgaas_queue_rows",
            "rows accepted by the batcher and not yet answered",
            ["model", "device"],
            registry=registry,
        )
        self.rejected = Counter(
            "fpgaas_rejected_requests",
            "requests refused to protect the server",
            ["model", "reason"],
            registry=registry,
        )
        self.errors = Counter("fpgaas_errors", "error answers by code", ["model", "code"], registry=registry)
        self.rows = Counter("fpgaas_rows", "rows answered", ["model"], registry=registry)
        self.client_disconnects = Counter(
            "fpgaas_client_disconnects",
            "requests whose client went away before the answer (not server errors)",
            ["route"],
            registry=registry,
        )
        # Shadow verification (fpgaas.service.shadow): rows of sampled device calls recomputed on
        # the CPU twin, rows that differed, sampled calls dropped (queue full or CPU budget spent).
        self.shadow_checked_rows = Counter(
            "fpgaas_shadow_checked_rows",
            "rows of device calls recomputed on the CPU twin and compared bit for bit",
            ["model", "device"],
            registry=registry,
        )
        self.shadow_mismatched_rows = Counter(
            "fpgaas_shadow_mismatched_rows",
            "rows whose device answer differed from the CPU twin's (a faulty card or bitstream)",
            ["model", "device"],
            registry=registry,
        )
        self.shadow_dropped_calls = Counter(
            "fpgaas_shadow_dropped_calls",
            "device calls sampled for a shadow check but not checked (queue full or CPU budget spent)",
            ["model", "device"],
            registry=registry,
        )
        self._durations: dict[tuple[str, str, str], HistogramChild] = {}

    def request_done(self, route: str, model: str, status: int, seconds: float) -> None:
        """Record one HTTP request. Labels are bounded: `route` is a path template, `model` a
        loaded model's name or "", `status` an HTTP status; children are bound once and reused."""
        key = (route, model, str(status))
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = self.request_duration.labels(*key)
        child.observe(seconds)

    def replica(self, model: str, device: str) -> ReplicaMetrics:
        """The children one replica (model version on a device) records into, bound once."""
        stage = self.device_stage
        return ReplicaMetrics(
            queue_wait=self.queue_wait.labels(model),
            batch_size=self.batch_size.labels(model),
            input_transfer=stage.labels(model, device, "input_transfer"),
            kernel=stage.labels(model, device, "kernel"),
            output_transfer=stage.labels(model, device, "output_transfer"),
            queue_rows=self.queue_rows.labels(model, device),
            rows=self.rows.labels(model),
        )


@dataclass(frozen=True)
class ReplicaMetrics:
    """Pre-bound metric children of one replica: no label lookup on the hot path."""

    queue_wait: HistogramChild
    batch_size: HistogramChild
    input_transfer: HistogramChild
    kernel: HistogramChild
    output_transfer: HistogramChild
    queue_rows: ValueChild
    rows: ValueChild

    def observe_stages(self, stages: StageTimes) -> None:
        """Record the three stages of one device call (seconds)."""
        self.input_transfer.observe(stages.to_device_s)
        self.kernel.observe(stages.kernel_s)
        self.output_transfer.observe(stages.from_device_s)
