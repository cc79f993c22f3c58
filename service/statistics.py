"""Triton's per-model statistics, kept for every loaded model version, and their `nv_inference_*`
Prometheus exposition.

What is counted where (Triton's names; every duration in integer nanoseconds here, in µs in the
metrics):

    success / fail       one per request that reached `DataPlane.infer`, with its wall time from
                         there to its answer (decode and encode are not included, as in Triton)
    queue                one per request, from admission by the batcher to its first rows going
                         to the device
    compute_input        one per answered request: the input transfer (host -> card) of the
                         device call(s) its rows rode (each request of a batch gets the batch's)
    compute_infer        the same for the kernel stage
    compute_output       the same for the output transfer (card -> host)
    inference_count      rows answered (Triton counts each sample of a batch)
    execution_count      successful device calls
    batch_stats          per rows-per-call: calls, and the three stages' durations

The three compute stages are the source paper's: input transfer, kernel, output transfer
(`StageTimes` of `LoadedKernel.run_into`). Nothing is sampled: every request and call counts.

The metrics are rendered from the same numbers, so `ModelStatistics` (gRPC), the HTTP stats
route and `/metrics` always agree. They follow Triton's names exactly, as counters without a
`_total` suffix, which prometheus_client would add; hence this module writes their text itself:

    nv_inference_request_success{model,version}     success.count
    nv_inference_request_failure{model,version}     fail.count
    nv_inference_count{model,version}               inference_count
    nv_inference_exec_count{model,version}          execution_count
    nv_inference_request_duration_us{model,version} (success.ns + fail.ns) / 1000
    nv_inference_queue_duration_us{model,version}   queue.ns / 1000
    nv_inference_compute_input_duration_us          compute_input.ns / 1000
    nv_inference_compute_infer_duration_us          compute_infer.ns / 1000
    nv_inference_compute_output_duration_us         compute_output.ns / 1000

Lifetime and threads: one `ServiceStatistics` per `DataPlane`, one `ModelStatistics` per loaded
model version, shared by its replicas' batchers. Written and read on the event loop only (the
batcher records on the loop when a call returns), so no lock is taken.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fpgaas.service.devices.base import StageTimes


@dataclass
class Duration:
    """A count and the cumulative nanoseconds of what it counts."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += int(seconds * 1e9)


@dataclass
class BatchStatistics:
    """Device calls of one size (rows): one count per call in each stage."""

    batch_size: int
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStatistics:
    """One model version's counts since it was loaded (Triton's ModelStatistics)."""

    name: str
    version: str
    last_inference_ms: int = 0  # ms since the epoch of the last answered request, 0 if none
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchStatistics] = field(default_factory=dict)

    # Recorded by the dataplane, once per request.
    def request_done(self, seconds: float, ok: bool) -> None:
        if ok:
            self.success.add(seconds)
            self.last_inference_ms = int(time.time() * 1000)
        else:
            self.fail.add(seconds)

    # Recorded by the batcher.
    def queued(self, seconds: float) -> None:
        """A request's rows started on the device after waiting `seconds` since admission."""
        self.queue.add(seconds)

    def executed(self, rows: int, stages: StageTimes) -> None:
        """One successful device call of `rows` rows."""
        self.execution_count += 1
        self.inference_count += rows
        batch = self.batches.get(rows)
        if batch is None:
            batch = self.batches[rows] = BatchStatistics(rows)
        batch.compute_input.add(stages.to_device_s)
        batch.compute_infer.add(stages.kernel_s)
        batch.compute_output.add(stages.from_device_s)

    def computed(self, stages: StageTimes, rode: int, finished: int) -> None:
        """A call with these stages carried rows of `rode` waiting requests and was the last call
        of `finished` of them: a request counts once, with the stage times of every call it rode."""
        for duration, seconds in (
            (self.compute_input, stages.to_device_s),
            (self.compute_infer, stages.kernel_s),
            (self.compute_output, stages.from_device_s),
        ):
            duration.count += finished
            duration.ns += int(seconds * 1e9) * rode


# (metric name, help, value of a ModelStatistics): Triton's families, in Triton's order.
_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes", "success"),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes", "failure"),
    ("nv_inference_count", "Number of inferences performed (each row of a batch counts)", "count"),
    ("nv_inference_exec_count", "Number of model executions performed (device calls)", "exec"),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds", "request"),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds", "queue"),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative compute input duration in microseconds (input transfer to the card)",
        "input",
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds (the kernel)",
        "infer",
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative inference compute output duration in microseconds (output transfer from the card)",
        "output",
    ),
)


def _value(s: ModelStatistics, what: str) -> float:
    match what:
        case "success":
            return s.success.count
        case "failure":
            return s.fail.count
        case "count":
            return s.inference_count
        case "exec":
            return s.execution_count
        case "request":
            return (s.success.ns + s.fail.ns) / 1000
        case "queue":
            return s.queue.ns / 1000
        case "input":
            return s.compute_input.ns / 1000
        case "infer":
            return s.compute_infer.ns / 1000
        case _:
            return s.compute_output.ns / 1000


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class ServiceStatistics:
    """The statistics of every loaded model version of one dataplane."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], ModelStatistics] = {}

    def model(self, name: str, version: str) -> ModelStatistics:
        """The statistics of (name, version), made on first use (at load)."""
        stats = self._models.get((name, version))
        if stats is None:
            stats = self._models[(name, version)] = ModelStatistics(name, version)
        return stats

    def drop(self, name: str, version: str) -> None:
        """Forget an unloaded version (its label leaves the metrics)."""
        self._models.pop((name, version), None)

    def all(self) -> list[ModelStatistics]:
        """Every version's statistics, by name then version."""
        return [self._models[k] for k in sorted(self._models)]

    def exposition(self) -> bytes:
        """The `nv_inference_*` families in Prometheus text format 0.0.4, labels model and version."""
        models = self.all()
        lines: list[str] = []
        for name, help_text, what in _FAMILIES:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            for s in models:
                labels = f'model="{_label(s.name)}",version="{_label(s.version)}"'
                lines.append(f"{name}{{{labels}}} {_number(_value(s, what))}")
        return ("\n".join(lines) + "\n").encode()
