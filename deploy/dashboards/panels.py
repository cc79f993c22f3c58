"""Every panel of the fpgaas dashboard, as data: what it shows, in which unit, from which PromQL.

Queries use Grafana's `$__rate_interval` and the dashboard variable `$model` (a regex over the
loaded models' names). Metric names are the server's (`fpgaas.service.metrics`,
`fpgaas.service.card_metrics`, `fpgaas.service.build_metrics`, `fpgaas.service.statistics` for the
Triton-named `nv_inference_*`); durations in seconds unless
the name says `_us`. The real-Prometheus test runs every query here against a live server.
"""

from __future__ import annotations

from dataclasses import dataclass

M = '{model=~"$model"}'  # the model filter every per-model query carries
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat"
    width: int = 12


@dataclass(frozen=True)
class RowSpec:
    title: str
    panels: tuple[PanelSpec, ...]


def quantiles(metric: str, by: str, label: str, qs: tuple[float, ...] = (0.5, 0.99)) -> tuple[Query, ...]:
    """histogram_quantile of `metric`_bucket per `by`, one query per quantile."""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{M}[{RATE}])))",
            f"p{round(q * 100)} {label}",
        )
        for q in qs
    )


TRAFFIC = RowSpec(
    "Traffic and latency",
    (
        PanelSpec(
            "Request rate per model and route",
            "HTTP requests answered per second, any status",
            "reqps",
            (
                Query(
                    f"sum by (model, route) (rate(fpgaas_request_duration_seconds_count{M}[{RATE}]))",
                    "{{model}} {{route}}",
                ),
            ),
        ),
        PanelSpec(
            "Request latency percentiles per model and route",
            "wall time from the first byte received to the answer sent",
            "s",
            quantiles("fpgaas_request_duration_seconds", "model, route", "{{model}} {{route}}"),
        ),
        PanelSpec(
            "Rows answered per second",
            "samples (rows) through each model",
            "rowsps",
            (Query(f"sum by (model) (rate(fpgaas_rows_total{M}[{RATE}]))", "{{model}}"),),
        ),
        PanelSpec(
            "Requests in flight",
            "HTTP requests being served by each server",
            "short",
            (Query("sum by (instance) (fpgaas_inflight_requests)", "{{instance}}"),),
        ),
    ),
)

DEVICE = RowSpec(
    "Device stages, queue and batches",
    (
        PanelSpec(
            "Device stages: mean time per call",
            "the paper's three stages of one device call: input transfer (host to card), kernel, "
            "output transfer (card to host)",
            "s",
            (
                Query(
                    f"sum by (stage) (rate(fpgaas_device_stage_seconds_sum{M}[{RATE}]))"
                    f" / sum by (stage) (rate(fpgaas_device_stage_seconds_count{M}[{RATE}]))",
                    "{{stage}}",
                ),
            ),
        ),
        PanelSpec(
            "Device stages: p99 per stage and card",
            "99th percentile of each stage, per device",
            "s",
            quantiles("fpgaas_device_stage_seconds", "stage, device", "{{stage}} {{device}}", (0.99,)),
        ),
        PanelSpec(
            "Queue wait percentiles",
            "time a request waited in the batcher before its rows went to the device",
            "s",
            quantiles("fpgaas_queue_wait_seconds", "model", "{{model}}"),
        ),
        PanelSpec(
            "Batch size",
            "rows per device call: mean and 99th percentile",
            "short",
            (
                Query(
                    f"sum by (model) (rate(fpgaas_batch_size_sum{M}[{RATE}]))"
                    f" / sum by (model) (rate(fpgaas_batch_size_count{M}[{RATE}]))",
                    "mean {{model}}",
                ),
                *quantiles("fpgaas_batch_size", "model", "{{model}}", (0.99,)),
            ),
        ),
        PanelSpec(
            "Rows queued",
            "rows accepted by the batcher and not yet answered, per model and device",
            "short",
            (Query(f"sum by (model, device) (fpgaas_queue_rows{M})", "{{model}} {{device}}"),),
        ),
    ),
)

ERRORS = RowSpec(
    "Errors and load shedding",
    (
        PanelSpec(
            "503 rate per model and route",
            "answers with status 503 (overloaded, device failing, not ready) per second",
            "reqps",
            (
                Query(
                    "sum by (model, route) "
                    f'(rate(fpgaas_request_duration_seconds_count{{model=~"$model", status="503"}}[{RATE}]))',
                    "{{model}} {{route}}",
                ),
            ),
        ),
        PanelSpec(
            "Error answers by code",
            "4xx and 5xx answers per second, by the error code in their body",
            "reqps",
            (Query(f"sum by (model, code) (rate(fpgaas_errors_total{M}[{RATE}]))", "{{model}} {{code}}"),),
        ),
        PanelSpec(
            "Error fraction",
            "share of requests answered with a 5xx status",
            "percentunit",
            (
                Query(
                    "sum(rate(fpgaas_request_duration_seconds_count"
                    f'{{model=~"$model", status=~"5.."}}[{RATE}]))'
                    f" / sum(rate(fpgaas_request_duration_seconds_count{M}[{RATE}]))",
                    "5xx / all",
                ),
            ),
        ),
        PanelSpec(
            "Requests refused to protect the server",
            "fast refusals (full queue, queue-time budget, oversized body) per second, by reason",
            "reqps",
            (
                Query(
                    f"sum by (model, reason) (rate(fpgaas_rejected_requests_total{M}[{RATE}]))",
                    "{{model}} {{reason}}",
                ),
            ),
        ),
    ),
)

CARDS = RowSpec(
    "Cards",
    (
        PanelSpec(
            "Card health",
            "1 while the card serves requests, 0 while it is out of service (the server keeps probing it)",
            "short",
            (Query("min by (instance, card) (fpgaas_card_healthy)", "{{instance}} {{card}}"),),
        ),
        PanelSpec(
            "Card busy fraction",
            "share of wall time each card spent running device calls",
            "percentunit",
            (
                Query(
                    f"sum by (instance, card) (rate(fpgaas_card_busy_seconds_total[{RATE}]))",
                    "{{instance}} {{card}}",
                ),
            ),
        ),
        PanelSpec(
            "Device calls in flight per card",
            "calls running on each card now (several with overlapped buffers)",
            "short",
            (Query("sum by (instance, card) (fpgaas_card_calls_in_flight)", "{{instance}} {{card}}"),),
        ),
        PanelSpec(
            "Shadow verification: rows checked on the CPU twin",
            "rows of sampled device calls recomputed on the bit-exact twin (FPGAAS_SHADOW_FRACTION), and "
            "sampled calls dropped because the queue or the CPU budget was full",
            "short",
            (
                Query(
                    f"sum by (model, device) (rate(fpgaas_shadow_checked_rows_total{M}[{RATE}]))",
                    "rows/s checked {{model}} {{device}}",
                ),
                Query(
                    f"sum by (model, device) (rate(fpgaas_shadow_dropped_calls_total{M}[{RATE}]))",
                    "calls/s dropped {{model}} {{device}}",
                ),
            ),
        ),
        PanelSpec(
            "Shadow mismatches (card suspect while > 0)",
            "rows whose card answer differed from the twin's since the server started; any is a real "
            "fault (wrong bitstream, another model version, a marginal card), and the card stays "
            "suspect until its server restarts",
            "short",
            (
                Query(
                    f"sum by (instance, model, device) (fpgaas_shadow_mismatched_rows_total{M})",
                    "{{instance}} {{model}} {{device}}",
                ),
            ),
        ),
    ),
)

TRITON = RowSpec(
    "Triton metrics (SONIC, SuperSONIC)",
    (
        PanelSpec(
            "Queue time per execution (SuperSONIC's KEDA metric)",
            "sum(rate(nv_inference_queue_duration_us)) / (sum(rate(nv_inference_exec_count)) * 1000): "
            "ms of queueing per device execution, the quantity SuperSONIC autoscales on",
            "ms",
            (
                Query(
                    f"sum(rate(nv_inference_queue_duration_us{M}[{RATE}]))"
                    f" / (sum(rate(nv_inference_exec_count{M}[{RATE}])) * 1000)",
                    "queue ms per execution",
                ),
            ),
        ),
        PanelSpec(
            "Inferences and executions per second",
            "nv_inference_count (rows) and nv_inference_exec_count (device calls)",
            "short",
            (
                Query(f"sum by (model) (rate(nv_inference_count{M}[{RATE}]))", "inferences {{model}}"),
                Query(f"sum by (model) (rate(nv_inference_exec_count{M}[{RATE}]))", "executions {{model}}"),
            ),
        ),
    ),
)

# The build queue is one table shared by every server replica, and each reports the same
# numbers (`fpgaas.service.build_metrics`): aggregate with max, never sum. Builds are rare, so
# rates take an hour's window rather than the scrape-sized one.
BUILDS = RowSpec(
    "Builds",
    (
        PanelSpec(
            "Build queue depth",
            "builds waiting for a worker (queued) and being built (running)",
            "short",
            (Query("max by (state) (fpgaas_build_queue_builds)", "{{state}}"),),
        ),
        PanelSpec(
            "Oldest queued build",
            "how long the oldest queued build has waited for a worker (0: none queued)",
            "s",
            (Query("max(fpgaas_build_queue_oldest_seconds)", "oldest queued"),),
        ),
        PanelSpec(
            "Builds finished in the last hour",
            "builds that ended in the last hour, by outcome: succeeded, failed, cancelled",
            "short",
            (Query("max by (state) (increase(fpgaas_builds_finished_total[1h]))", "{{state}}"),),
        ),
        PanelSpec(
            "Build duration percentiles (last hour)",
            "time from a worker starting a build (its last attempt) to its end, by outcome",
            "s",
            tuple(
                Query(
                    f"histogram_quantile({q}, max by (le, state) "
                    "(rate(fpgaas_build_duration_seconds_bucket[1h])))",
                    f"p{round(q * 100)} {{{{state}}}}",
                )
                for q in (0.5, 0.95)
            ),
        ),
    ),
)

ROWS: tuple[RowSpec, ...] = (TRAFFIC, DEVICE, CARDS, ERRORS, BUILDS, TRITON)
