"""fpgaas's Prometheus counters that the benchmark reads: batch sizes, device-stage times, failures.

Read before and after a measured run; the difference (`Counters.minus`) belongs to that run.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Counters:
    """Cumulative: rows and calls into the device, seconds in device stages, kernel calls."""

    batch_rows: float = 0.0  # fpgaas_batch_size_sum
    batch_calls: float = 0.0  # fpgaas_batch_size_count
    device_s: float = 0.0  # fpgaas_device_stage_seconds_sum, all stages, all devices
    kernel_calls: float = 0.0  # fpgaas_device_stage_seconds_count{stage="kernel"}
    # nv_inference_request_failure, every version: how h2load's gRPC runs count failed RPCs, whose
    # grpc-status h2load never sees.
    failed_requests: float = 0.0
    # fpgaas_request_duration_seconds of the model, every route and status: fpgaas's own time per
    # HTTP request, from the ASGI call to the answer sent (no socket, HTTP parsing or loop wait).
    request_s: float = 0.0
    requests: float = 0.0

    def minus(self, earlier: Counters) -> Counters:
        return Counters(
            self.batch_rows - earlier.batch_rows,
            self.batch_calls - earlier.batch_calls,
            self.device_s - earlier.device_s,
            self.kernel_calls - earlier.kernel_calls,
            self.failed_requests - earlier.failed_requests,
            self.request_s - earlier.request_s,
            self.requests - earlier.requests,
        )

    @property
    def rows_per_call(self) -> float | None:
        """Mean rows per device call (the achieved batch size)."""
        return self.batch_rows / self.batch_calls if self.batch_calls > 0 else None

    @property
    def device_us_per_call(self) -> float | None:
        """Mean µs of one device call: input transfer + kernel + output transfer."""
        return self.device_s / self.kernel_calls * 1e6 if self.kernel_calls > 0 else None

    @property
    def request_us(self) -> float | None:
        """Mean µs fpgaas spent on one HTTP request of the model (its own request histogram)."""
        return self.request_s / self.requests * 1e6 if self.requests > 0 else None


def parse_counters(text: str, model: str) -> Counters:
    """The counters of `model` in a Prometheus text exposition."""
    names = (
        "batch_rows",
        "batch_calls",
        "device_s",
        "kernel_calls",
        "failed_requests",
        "request_s",
        "requests",
    )
    values = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name == "fpgaas_batch_size_sum":
                values["batch_rows"] += sample.value
            elif sample.name == "fpgaas_batch_size_count":
                values["batch_calls"] += sample.value
            elif sample.name == "fpgaas_device_stage_seconds_sum":
                values["device_s"] += sample.value
            elif (
                sample.name == "fpgaas_device_stage_seconds_count" and sample.labels.get("stage") == "kernel"
            ):
                values["kernel_calls"] += sample.value
            elif family.name == "nv_inference_request_failure":  # the parser names it ..._total
                values["failed_requests"] += sample.value
            elif sample.name == "fpgaas_request_duration_seconds_sum":
                values["request_s"] += sample.value
            elif sample.name == "fpgaas_request_duration_seconds_count":
                values["requests"] += sample.value
    return Counters(**values)


def scrape(url: str, model: str) -> Counters:
    """GET `url`/metrics and parse it."""
    response = httpx.get(f"{url}/metrics", timeout=10.0)
    response.raise_for_status()
    return parse_counters(response.text, model)
