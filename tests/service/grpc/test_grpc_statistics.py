"""Triton's statistics and metrics count exactly what was sent, and HTTP agrees with gRPC.

This module's server is fresh (see conftest.py): after a known set of requests (sync, streamed,
asyncio, and one pinned to version 1), `ModelStatistics` counts each request once, each row
once, each device call once, and the three device stages per request and per batch size;
`GET /v2/models/{m}/versions/{v}/stats` and `/config` are the gRPC messages as JSON; the
`nv_inference_*` counters on `/metrics` are the same numbers in µs; the card gauges exist,
with no temperature or power for an emulated card (absent, not zero).
"""

from __future__ import annotations

import asyncio
import math
import queue
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from google.protobuf import json_format
from grpc_live import MODEL, GrpcServer, infer_input, names, samples
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import InferenceServerException

SYNC_ROWS = [1, 2, 3, 5, 8]
STREAM_ROWS = [4, 4, 4]
AIO_ROWS = [1] * 10
V2_REQUESTS = len(SYNC_ROWS) + len(STREAM_ROWS) + len(AIO_ROWS)
V2_ROWS = sum(SYNC_ROWS) + sum(STREAM_ROWS) + sum(AIO_ROWS)


@pytest.fixture(scope="module")
def traffic(grpc_server: GrpcServer) -> None:
    """Send the module's requests once: version 2 (the default) through every kind of call,
    2 rows to version 1, and one request for an unknown model (counted nowhere)."""
    with triton.InferenceServerClient(grpc_server.target) as client:
        inp, _ = names(client)
        for i, n in enumerate(SYNC_ROWS):
            client.infer(MODEL, [infer_input(inp, samples(n, seed=i))])
        client.infer(MODEL, [infer_input(inp, samples(2))], model_version="1")
        with pytest.raises(InferenceServerException):
            client.infer("no-such-model", [infer_input(inp, samples(1))])
        answers: queue.Queue[Any] = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put(error))
        for i, n in enumerate(STREAM_ROWS):
            client.async_stream_infer(MODEL, [infer_input(inp, samples(n, seed=50 + i))], request_id=str(i))
        assert [answers.get(timeout=30) for _ in STREAM_ROWS] == [None] * len(STREAM_ROWS)
        client.stop_stream()

    async def aio() -> None:
        async with triton_aio.InferenceServerClient(grpc_server.target) as c:
            await asyncio.gather(*(c.infer(MODEL, [infer_input(inp, samples(n, seed=90))]) for n in AIO_ROWS))

    asyncio.run(aio())


def _stats(grpc_server: GrpcServer, version: str) -> Any:
    with triton.InferenceServerClient(grpc_server.target) as client:
        (stats,) = client.get_inference_statistics(MODEL, version).model_stats
    return stats


def test_counts_match_the_requests_sent(grpc_server: GrpcServer, traffic: None) -> None:
    s = _stats(grpc_server, "2")
    assert (s.name, s.version) == (MODEL, "2")
    inference = s.inference_stats
    assert inference.success.count == V2_REQUESTS
    assert inference.fail.count == 0
    assert s.inference_count == V2_ROWS
    assert inference.queue.count == V2_REQUESTS
    for stage in (inference.compute_input, inference.compute_infer, inference.compute_output):
        assert stage.count == V2_REQUESTS
        assert stage.ns > 0
    # Each request's wall time holds its queue wait and the device call it rode.
    parts = inference.queue.ns + sum(
        x.ns for x in (inference.compute_input, inference.compute_infer, inference.compute_output)
    )
    assert inference.success.ns >= parts
    assert 1 <= s.execution_count <= V2_REQUESTS
    assert s.last_inference > 0
    # batch_stats: one entry per rows-per-call seen, covering every call and every row.
    assert sum(b.compute_infer.count for b in s.batch_stats) == s.execution_count
    assert sum(b.batch_size * b.compute_infer.count for b in s.batch_stats) == V2_ROWS

    v1 = _stats(grpc_server, "1")
    assert v1.inference_stats.success.count == 1 and v1.inference_count == 2


def test_every_version_and_every_model(grpc_server: GrpcServer, traffic: None) -> None:
    with triton.InferenceServerClient(grpc_server.target) as client:
        assert [s.version for s in client.get_inference_statistics(MODEL).model_stats] == ["1", "2"]
        assert len(client.get_inference_statistics().model_stats) == 2
        with pytest.raises(InferenceServerException) as caught:
            client.get_inference_statistics("no-such-model")
        assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_http_stats_and_config_agree_with_grpc(grpc_server: GrpcServer, traffic: None) -> None:
    """The HTTP JSON parses back into exactly the messages gRPC answers."""
    with triton.InferenceServerClient(grpc_server.target) as client:
        grpc_stats = client.get_inference_statistics(MODEL, "2")
        grpc_config = client.get_model_config(MODEL).config
    http_stats = httpx.get(f"{grpc_server.url}/v2/models/{MODEL}/versions/2/stats").json()
    assert json_format.ParseDict(http_stats, service_pb2.ModelStatisticsResponse()) == grpc_stats
    http_config = httpx.get(f"{grpc_server.url}/v2/models/{MODEL}/config").json()
    assert json_format.ParseDict(http_config, model_config_pb2.ModelConfig()) == grpc_config
    # 64-bit integers are JSON numbers, as Triton writes them (protobuf's mapping uses strings).
    assert http_config["dynamic_batching"]["max_queue_delay_microseconds"] == 200
    assert isinstance(http_stats["model_stats"][0]["inference_count"], int)
    both = httpx.get(f"{grpc_server.url}/v2/models/{MODEL}/stats").json()
    assert [s["version"] for s in both["model_stats"]] == ["1", "2"]
    missing = httpx.get(f"{grpc_server.url}/v2/models/no-such-model/stats")
    assert missing.status_code == 404


def _samples(grpc_server: GrpcServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{grpc_server.url}/metrics").text
    return {
        # prometheus_client's parser adds _total to counter samples; Prometheus keeps Triton's names.
        (family.name if family.name.startswith("nv_") else s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_triton_metrics_are_the_statistics_in_microseconds(grpc_server: GrpcServer, traffic: None) -> None:
    s = _stats(grpc_server, "2")
    metrics = _samples(grpc_server)
    labels = (("model", MODEL), ("version", "2"))
    inference = s.inference_stats
    assert metrics[("nv_inference_request_success", labels)] == inference.success.count
    assert metrics[("nv_inference_request_failure", labels)] == inference.fail.count
    assert metrics[("nv_inference_count", labels)] == s.inference_count
    assert metrics[("nv_inference_exec_count", labels)] == s.execution_count
    for name, ns in (
        ("nv_inference_request_duration_us", inference.success.ns + inference.fail.ns),
        ("nv_inference_queue_duration_us", inference.queue.ns),
        ("nv_inference_compute_input_duration_us", inference.compute_input.ns),
        ("nv_inference_compute_infer_duration_us", inference.compute_infer.ns),
        ("nv_inference_compute_output_duration_us", inference.compute_output.ns),
    ):
        assert math.isclose(metrics[(name, labels)], ns / 1000, rel_tol=1e-9), name
    text = httpx.get(f"{grpc_server.url}/metrics").text
    assert "# TYPE nv_inference_exec_count counter" in text  # Triton's names: no _total suffix
    assert "nv_inference_exec_count_total" not in text


def test_card_gauges(grpc_server: GrpcServer, traffic: None) -> None:
    metrics = _samples(grpc_server)
    card = (("card", "emulated-0"),)
    assert metrics[("fpgaas_card_healthy", (("card", "emulated-0"), ("kind", "emulated")))] == 1.0
    assert metrics[("fpgaas_card_busy_seconds_total", card)] > 0
    assert 0.0 <= metrics[("fpgaas_card_busy_ratio", card)] <= 1.0
    assert metrics[("fpgaas_card_calls_in_flight", card)] == 0.0
    # An emulated card has no sensors: no sample at all, rather than a made-up zero.
    assert not any(
        name in ("fpgaas_card_temperature_celsius", "fpgaas_card_power_watts") for name, _ in metrics
    )
    assert np.isfinite(list(metrics.values())).all()
